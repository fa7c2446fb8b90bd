#!/bin/sh
# bench/http_nginx.sh: a private nginx for the HTTP benchmarks (used by bench/run.lua).
#
#   bench/http_nginx.sh start [WATCH_PID]   prints "DIR PORT SLOW" (SLOW=1 when /slow works)
#   bench/http_nginx.sh stop DIR            stops it and removes DIR
#
# nginx listens on 127.0.0.1 and a free ephemeral port, 1 worker, with its config, pid, logs and
# temp paths in a fresh temp dir, access_log off, keep-alive (keepalive_requests 100000):
#   /1k    a 1 KiB static file
#   /slow  waits 100 ms then answers "ok"; /slow2s waits 2 s (both need the echo module,
#          Debian libnginx-mod-http-echo; without it SLOW=0 and they are absent)
# With WATCH_PID, a watchdog stops nginx when that process exits, so nginx never outlives the run.
set -eu

NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
ECHO_SO=/usr/lib/nginx/modules/ngx_http_echo_module.so

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

write_conf() { # dir port with_echo
  d=$1 port=$2 echo=$3
  {
    [ "$echo" = 1 ] && echo "load_module $ECHO_SO;"
    cat <<EOF
worker_processes 1;
worker_rlimit_nofile 65536;
daemon on;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 30000; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  keepalive_timeout 120s;
  keepalive_requests 100000;
  sendfile on;
  tcp_nodelay on;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$port backlog=16384;
    root $d/www;
    location = /1k { }
EOF
    [ "$echo" = 1 ] && echo "    location = /slow { echo_sleep 0.1; echo ok; }" &&
      echo "    location = /slow2s { echo_sleep 2; echo ok; }"
    echo "  }"
    echo "}"
  } >"$d/nginx.conf"
}

case "${1:-}" in
start)
  d=$(mktemp -d /tmp/lasync-bench-nginx.XXXXXX)
  chmod 755 "$d"
  mkdir -p "$d/tmp" "$d/www"
  head -c 1024 /dev/zero | tr '\0' 'x' >"$d/www/1k"
  slow=0
  [ -r "$ECHO_SO" ] && slow=1
  tries=0
  while :; do
    port=$(free_port)
    write_conf "$d" "$port" "$slow"
    if ! "$NGINX" -t -q -p "$d" -c "$d/nginx.conf" >/dev/null 2>&1 && [ "$slow" = 1 ]; then
      slow=0 # the echo module does not load: serve /1k only
      write_conf "$d" "$port" 0
    fi
    if "$NGINX" -p "$d" -c "$d/nginx.conf" 2>"$d/start.err"; then break; fi
    tries=$((tries + 1))
    if [ "$tries" -ge 5 ]; then cat "$d/start.err" >&2; rm -rf "$d"; exit 1; fi
  done
  i=0
  while [ ! -s "$d/nginx.pid" ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  if [ -n "${2:-}" ]; then
    watch=$2
    master=$(cat "$d/nginx.pid")
    # detached watchdog: stops nginx when the watched process (bench/run.lua) is gone
    nohup sh -c "while kill -0 $watch 2>/dev/null && [ -d '$d' ]; do sleep 1; done;
      [ -d '$d' ] && kill -QUIT $master 2>/dev/null; sleep 2; rm -rf '$d'" \
      >/dev/null 2>&1 </dev/null &
  fi
  echo "$d $port $slow"
  ;;
stop)
  d=${2:?usage: $0 stop DIR}
  if [ -s "$d/nginx.pid" ]; then
    pid=$(cat "$d/nginx.pid")
    kill -QUIT "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  case "$d" in /tmp/lasync-bench-nginx.*) rm -rf "$d" ;; esac
  ;;
*)
  echo "usage: $0 start [WATCH_PID] | stop DIR" >&2
  exit 2
  ;;
esac
