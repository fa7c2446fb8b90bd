#!/usr/bin/env python3
"""An independent HTTP/1.1 test server for lasync's HTTP specs (Python standard library only).

With CERT and KEY files as second and third arguments it serves HTTPS.
Binds 127.0.0.1 on an ephemeral port, writes "PORT PID" to the file named by its first argument
(or stdout), serves until its standard input closes (the spec runner holds it), and exits by
itself after LASYNC_TEST_SERVER_LIMIT seconds (default 600) so nothing outlives a run.
Endpoints:
  /status/<code>             that status, body "status <code>"
  /echo (any method)         JSON: method, path, query, target (the request line's target:
                             an absolute URL when sent through a proxy), headers, body
  /delay/<seconds>           waits, then "late"
  /drip/<n>/<interval>       chunked: n lines "line <i>", one every interval seconds
  /bytes/<n>                 n bytes, sent in 64 KiB writes
  /gzip                      a gzip-encoded body ("hello gzip" x 100)
  /br, /zstd                 "hello " then "br" (or "zstd") x 100, brotli- (zstd-) encoded
  /redirect/<n>              302 to /redirect/<n-1>, and /redirect/0 is 200 "landed"
  /loop                      302 to itself
  /drop                      promises 100000 bytes, sends 1000, then shuts the connection
  /idle-close/<seconds>      "then closed" (kept alive), then closes the idle connection later
  /retry-after/<key>/<n>/<v> 429 with Retry-After: <v> for the first n requests of <key>, then 200
  /sse/<name>                a Server-Sent Events stream from SSE_STREAMS (chunk by chunk)
"""
import gzip, json, os, socket, socketserver, ssl, subprocess, sys, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

SSE_STREAMS = {
    # a BOM, a comment, CRLF and CR line ends, multi-line data, id and retry carried over,
    # an event split across chunks, and an unterminated event at the end (discarded)
    "edge": [b"\xef\xbb\xbf: comment\r\n", b"event: greet\r\ndata: hello\r\n", b"data: world\r\n\r\n",
             b"data: plain\r\r", b"id: 7\nretry: 1500\nda", b"ta: with id\n\n", b"data: next\n\n",
             b"data:no space\n\n", b"event: x\ndata\n\n", b"data: lost at the end\n"],
}

counts = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        # headers and body go out in separate writes: without this, Nagle + delayed ACK add
        # 40 ms to every response
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def reply(self, code, body, ctype="text/plain", headers=()):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def route(self):
        url = urllib.parse.urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
        head = parts[0] if parts else ""
        if head == "status":
            code = int(parts[1])
            return self.reply(code, "status %d" % code)
        if head == "echo":
            return self.reply(200, json.dumps({
                "method": self.command, "path": url.path, "query": url.query,
                "target": self.path,  # absolute when the request came through a proxy
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("latin-1")}), "application/json")
        if head == "delay":
            time.sleep(float(parts[1]))
            return self.reply(200, "late")
        if head == "drip":
            count, interval = int(parts[1]), float(parts[2])
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(count):
                self.chunk(b"line %d\n" % i)
                time.sleep(interval)
            self.wfile.write(b"0\r\n\r\n")
            return
        if head == "bytes":
            total = int(parts[1])
            self.send_response(200)
            self.send_header("Content-Length", str(total))
            self.end_headers()
            block = b"x" * 65536
            left = total
            while left > 0:
                k = min(left, len(block))
                self.wfile.write(block[:k])
                left -= k
            return
        if head in ("br", "zstd"):  # compressed by the Debian tools of those names
            tool = ["brotli", "-c"] if head == "br" else ["zstd", "-q", "-c"]
            packed = subprocess.run(tool, input=b"hello " + head.encode() * 100,
                                    stdout=subprocess.PIPE, check=True).stdout
            return self.reply(200, packed, headers=[("Content-Encoding", head)])
        if head == "gzip":
            return self.reply(200, gzip.compress(b"hello gzip" * 100),
                              headers=[("Content-Encoding", "gzip")])
        if head == "redirect":
            left = int(parts[1])
            if left == 0:
                return self.reply(200, "landed")
            return self.reply(302, "", headers=[("Location", "/redirect/%d" % (left - 1))])
        if head == "loop":
            return self.reply(302, "", headers=[("Location", "/loop")])
        if head == "drop":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if head == "idle-close":
            # a normal keep-alive response; the server then drops the idle connection
            self.reply(200, "then closed")
            self.wfile.flush()
            time.sleep(float(parts[1]))
            self.close_connection = True
            return
        if head == "retry-after":
            key, limit, value = parts[1], int(parts[2]), parts[3]
            with lock:
                counts[key] = counts.get(key, 0) + 1
                seen = counts[key]
            if seen <= limit:
                return self.reply(429, "slow down", headers=[("Retry-After", value)])
            return self.reply(200, "attempt %d" % seen)
        if head == "sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in SSE_STREAMS[parts[1]]:
                self.chunk(piece)
                time.sleep(0.01)
            self.wfile.write(b"0\r\n\r\n")
            return
        return self.reply(404, "no route for %s" % url.path)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = route


class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # clients that hang up early (cancelled or aborted transfers) are expected here
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def main():
    limit = float(os.environ.get("LASYNC_TEST_SERVER_LIMIT", "600"))
    server = Server(("127.0.0.1", 0), Handler)
    if len(sys.argv) > 3:  # httpserver.py PORTFILE CERT KEY: serve HTTPS
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    line = "%d %d\n" % (server.server_address[1], os.getpid())
    if len(sys.argv) > 1:
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(line)
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    else:
        print(line, end="", flush=True)
    threading.Timer(limit, lambda: os._exit(0)).start()
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
