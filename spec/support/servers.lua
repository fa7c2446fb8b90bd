-- Test servers for the specs: subprocesses on 127.0.0.1 and an ephemeral port. Each one lives
-- while its standard input is open: stop() closes it (no signals, no shell), and a runner that
-- dies takes its servers with it.
local M = {}

local function wait_for_file(path, seconds)
  local deadline = os.time() + seconds
  while os.time() <= deadline do
    local f = io.open(path)
    if f then
      local line = f:read("l")
      f:close()
      if line then return line end
    end
    os.execute("sleep 0.02")
  end
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Servers and tools run without the ASan runtime that `make check-asan` preloads into lua5.4.
local CLEAN = "exec env -u LD_PRELOAD "

local function python_server(scheme, extra)
  local file = os.tmpname()
  os.remove(file)
  local p = assert(io.popen(CLEAN .. "python3 spec/support/httpserver.py " .. q(file)
                            .. (extra or ""), "w"))
  local line = wait_for_file(file, 10)
  os.remove(file)
  local port = (line or ""):match("^(%d+) %d+$")
  assert(port, "the test " .. scheme .. " server did not start")
  local s = { port = tonumber(port), url = scheme .. "://127.0.0.1:" .. port }
  function s.stop() p:close() end
  return s
end

-- spec/support/httpserver.py over HTTP: {port =, url =, stop = function}.
function M.http() return python_server("http") end

-- A self-signed certificate for 127.0.0.1, made now: {dir =, cert =, key =, remove = fn}.
function M.certificate()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. q(dir)))
  local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
  assert(os.execute(CLEAN .. "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
    .. "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " .. q(key) .. " -out "
    .. q(cert) .. " >/dev/null 2>&1"), "openssl could not make a certificate")
  return { dir = dir, cert = cert, key = key,
           remove = function() os.execute("rm -rf " .. q(dir)) end }
end

-- The same server over HTTPS with the given certificate.
function M.https(c) return python_server("https", " " .. q(c.cert) .. " " .. q(c.key)) end

-- nghttpd (Debian nghttp2-server) serving `dir` over HTTP/2 with TLS (certificate c, see
-- M.certificate), or over cleartext (prior knowledge) without c.
function M.h2(dir, c)
  local f = assert(io.popen(CLEAN .. "python3 -c 'import socket; s=socket.socket(); "
    .. "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'"))
  local port = tonumber(f:read("l"))
  f:close()
  local tls = c and (" " .. q(c.key) .. " " .. q(c.cert)) or ""
  local p = assert(io.popen(CLEAN .. "nghttpd " .. (c and "" or "--no-tls ") .. "-a 127.0.0.1 -d "
                            .. q(dir) .. " " .. port .. tls .. " >/dev/null 2>&1", "w"))
  -- wait until it accepts: a connect with curl's CLI would be another dependency, so retry
  for _ = 1, 100 do
    local ok = os.execute(CLEAN .. "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", "
      .. port .. "), 0.1)' 2>/dev/null")
    if ok then break end
    os.execute("sleep 0.05")
  end
  local s = { port = port, url = (c and "https" or "http") .. "://127.0.0.1:" .. port }
  function s.stop()
    os.execute(CLEAN .. "pkill -f 'nghttpd .*-d " .. dir:gsub("'", "") .. "'")
    p:close()
  end
  return s
end

return M
