-- bench/run.lua: run the lasync benchmarks beside their peers and report medians and ratios.
--
--   lua5.4 bench/run.lua            (what `make bench` runs, after building)
--
-- Environment:
--   BENCH_RUNS=5        processes per program; programs are interleaved run by run (the order
--                       rotates each run) so drifting machine noise spreads over every program
--   BENCH_ONLY=a,b      only these benchmarks (spawn, switch, timers, lock, semaphore,
--                       flow_call, flow_mem, flow_trace, llm_pipeline,
--                       lock_contended, handoff, pipeline, http, http_burst, http_mem, echo1,
--                       echo100, to_thread)
--   BENCH_N=n           override every problem size (smoke tests; RESULTS.md says so)
--   BENCH_TIMEOUT=120   seconds before one program run counts as hung
--   BENCH_LASYNC_CMD    how to run lasync programs (default: lua5.4; e.g. build/lasync)
--   LUA, PYTHON, NODE   the interpreters (default lua5.4, python3, node)
--   LUA53               the interpreter for lua-http (default lua5.3; Debian has no 5.4 lua-http)
--   CC                  the C compiler for bench/c_curl_*.c (default cc)
--
-- The http benchmarks start a private nginx (bench/http_nginx.sh: 127.0.0.1, a free port, 1
-- worker, everything in a temp dir) before the first run and stop it after the last; a watchdog
-- stops it too if this script dies. The C peers are compiled on demand into bench/out/.
--
-- Each program prints one "RESULT name=... impl=... key=value ..." line. Missing peers (no node,
-- no python3, no lua-luv) are reported as n/a. The exit status is non-zero only when a lasync
-- program fails (error, bad output or timeout); its output is kept in bench/out/.
-- Writes bench/RESULTS.md (machine, versions, date, tables, method) and bench/out/raw.txt.

local ROOT = (arg and arg[0] or ""):match("^(.*)/bench/run%.lua$") or "."
local RUNS = math.tointeger(tonumber(os.getenv("BENCH_RUNS") or "")) or 5
local TIMEOUT = tonumber(os.getenv("BENCH_TIMEOUT") or "") or 120
local SIZE_OVERRIDE = os.getenv("BENCH_N")
local LUA = os.getenv("LUA") or "lua5.4"
local PYTHON = os.getenv("PYTHON") or "python3"
local NODE = os.getenv("NODE") or "node"
local LASYNC = os.getenv("BENCH_LASYNC_CMD") or LUA

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Run a shell command from the repository root; returns its output (stdout + stderr, or stdout
-- only with quiet) and whether it exited 0, and the exit code.
local function sh(cmd, quiet)
  local p = io.popen("cd " .. quote(ROOT) .. " && " .. cmd .. (quiet and " 2>/dev/null" or " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok == true, code
end

local function first_line(s) return (s or ""):match("^%s*([^\n]*)") end

local function file_exists(path)
  local f = io.open(ROOT .. "/" .. path, "r")
  if f then f:close() end
  return f ~= nil
end

-- {{{ what is available

local have = {}
have.lasync = file_exists("build/lib/lasync/core.so")
have.lua = select(2, sh(LUA .. " -v", true))
have.luv = have.lua and select(2, sh(LUA .. " -e 'require(\"luv\")'", true))
have.python = select(2, sh(PYTHON .. " -c 'import asyncio'", true))
have.node = select(2, sh(NODE .. " -e 0", true))
have.timeout = select(2, sh("command -v timeout", true))
-- uvloop for the echo benchmarks: Debian's python3-uvloop, when PYTHON is another python
local UVLOOP_PY = PYTHON
have.uvloop = select(2, sh(PYTHON .. " -c 'import uvloop'", true))
if not have.uvloop and select(2, sh("/usr/bin/python3 -c 'import uvloop'", true)) then
  UVLOOP_PY, have.uvloop = "/usr/bin/python3", true
end

local function wants(name)
  local o = os.getenv("BENCH_ONLY")
  return not o or o == "" or ("," .. o .. ","):find("," .. name .. ",", 1, true) ~= nil
end

-- {{{ the HTTP server and peers (only when an http benchmark is selected)

local CC = os.getenv("CC") or "cc"
local LUA53 = os.getenv("LUA53") or "lua5.3"
local HTTP = { url = "http://127.0.0.1:1", n = math.tointeger(tonumber(SIZE_OVERRIDE or "")) }
-- lua-http's pure-Lua dependencies are registered by Debian for Lua 5.1/5.2 only
local LUAHTTP_ENV = "LUA_PATH='/usr/share/lua/5.3/?.lua;/usr/share/lua/5.3/?/init.lua;"
  .. "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;;' "
local AIOHTTP_PY = PYTHON
local missing_http = {}

local function own_pid()
  local f = io.open("/proc/self/stat", "r")
  if not f then return nil end
  local pid = f:read("l"):match("^(%d+)")
  f:close()
  return pid
end

local function stop_nginx()
  if HTTP.dir then
    sh("bench/http_nginx.sh stop " .. quote(HTTP.dir), true)
    HTTP.dir = nil
  end
end

if wants("http") or wants("http_burst") or wants("http_mem") then
  if not select(2, sh("command -v nginx || test -x /usr/sbin/nginx", true)) then
    missing_http.nginx = "nginx is not installed (Debian: nginx-light)"
  else
    local out, ok = sh("bench/http_nginx.sh start " .. (own_pid() or ""), true)
    local dir, port, slow = out:match("(%S+)%s+(%d+)%s+(%d)")
    if ok and dir then
      HTTP.dir, HTTP.url, HTTP.slow = dir, "http://127.0.0.1:" .. port, slow == "1"
      have.nginx = true
      have.nginx_slow = HTTP.slow
      if not HTTP.slow then
        missing_http.nginx_slow = "no server that can wait: nginx's echo module"
          .. " (Debian libnginx-mod-http-echo) is missing"
      end
    else
      missing_http.nginx = "bench/http_nginx.sh could not start nginx: " .. first_line(out)
    end
  end
  missing_http.nginx_slow = missing_http.nginx_slow or missing_http.nginx
  local cflags = "$(pkg-config --cflags --libs libcurl libuv)"
  for _, prog in ipairs({ "c_curl_poll", "c_curl_uv" }) do
    local out, ok = sh(CC .. " -O2 -o bench/out/" .. prog .. " bench/" .. prog .. ".c " .. cflags)
    if ok then have[prog] = have.nginx
    else
      missing_http[prog] = missing_http.nginx or ("cannot compile bench/" .. prog .. ".c: "
        .. first_line(out))
    end
  end
  if select(2, sh(PYTHON .. " -c 'import aiohttp'", true)) then
    have.aiohttp = have.nginx
  elseif select(2, sh("/usr/bin/python3 -c 'import aiohttp'", true)) then
    AIOHTTP_PY = "/usr/bin/python3" -- Debian's python3-aiohttp, when PYTHON is another python
    have.aiohttp = have.nginx
  else
    missing_http.aiohttp = missing_http.nginx or "aiohttp is not installed (Debian: python3-aiohttp)"
  end
  if select(2, sh(LUAHTTP_ENV .. LUA53 .. " -e 'require(\"http.client\")'", true)) then
    have.luahttp = have.nginx
  else
    missing_http.luahttp = missing_http.nginx
      or ("lua-http is not usable (Debian lua-http under " .. LUA53 .. ")")
  end
  if select(2, sh("command -v wrk", true)) then have.wrk = have.nginx
  else missing_http.wrk = missing_http.nginx or "wrk is not installed" end
  have.lasync_http = have.lasync and have.nginx
  have.lasync_slow = have.lasync and have.nginx_slow
  missing_http.lasync_http = missing_http.nginx
  missing_http.lasync_slow = missing_http.nginx_slow
end

local function http_cmd(cmd) return "env BENCH_HTTP_URL=" .. HTTP.url .. " " .. cmd end
local HTTP_N = tostring(HTTP.n or 20000)

-- }}}

local missing_reason = {
  lasync = "build/lib/lasync/core.so is missing (build with `make`)",
  llm_aiohttp = "aiohttp is not installed (Debian: python3-aiohttp)",
  lua = LUA .. " not found",
  luv = "lua-luv is not installed (require('luv') fails)",
  python = PYTHON .. " not found",
  node = NODE .. " not found",
  uvloop = "uvloop is not installed (Debian: python3-uvloop)",
}
for k, v in pairs(missing_http) do missing_reason[k] = v end

-- }}}
-- {{{ the benchmarks

-- Each impl has one or more commands; each prints one RESULT line and their fields are merged
-- (the timers programs run once for wall time and once, in another process, for heap memory).
-- `info` marks variants shown for context, not used by the targets.
local BENCHES = {
  {
    name = "spawn",
    title = "spawn: create and gather 200,000 tasks that return at once",
    metrics = { { key = "tasks_per_s", label = "tasks/s", higher = true } },
    impls = {
      { impl = "lasync", needs = "lasync", cmds = { LASYNC .. " bench/lasync_spawn.lua" } },
      { impl = "lasync-ctx", needs = "lasync", info = true,
        cmds = { LASYNC .. " bench/lasync_spawn.lua ctx" },
        note = "the spawner set two ContextVars: every task shares its context" },
      { impl = "node", needs = "node", cmds = { NODE .. " bench/node_spawn.js await1" },
        note = "async fn with one `await null`, Promise.all" },
      { impl = "node-eager", needs = "node", info = true,
        cmds = { NODE .. " bench/node_spawn.js eager" },
        note = "async fn without await (runs synchronously), Promise.all" },
      { impl = "asyncio", needs = "python", cmds = { PYTHON .. " bench/py_spawn.py" },
        note = "create_task + gather" },
      { impl = "luv", needs = "luv", cmds = { LUA .. " bench/luv_spawn.lua" },
        note = "hand-written scheduler on luv" },
      { impl = "coro", needs = "lua", cmds = { LUA .. " bench/coro_spawn.lua" }, info = true,
        note = "bare create+resume, the floor" },
    },
  },
  {
    name = "switch",
    title = "switch: one task doing 1,000,000 sleep(0)",
    metrics = { { key = "ns_per_switch", label = "ns/switch", higher = false } },
    impls = {
      { impl = "lasync", needs = "lasync", cmds = { LASYNC .. " bench/lasync_switch.lua" },
        note = "async.sleep(0)" },
      { impl = "asyncio", needs = "python", cmds = { PYTHON .. " bench/py_switch.py" },
        note = "asyncio.sleep(0)" },
      { impl = "node", needs = "node", cmds = { NODE .. " bench/node_switch.js immediate" },
        note = "await new Promise(r => setImmediate(r))" },
      { impl = "node-microtask", needs = "node", info = true,
        cmds = { NODE .. " bench/node_switch.js microtask" },
        note = "await null (never lets timers/I/O run)" },
      { impl = "luv", needs = "luv", cmds = { LUA .. " bench/luv_switch.lua" },
        note = "requeue + one uv_run(nowait) per round" },
      { impl = "coro", needs = "lua", cmds = { LUA .. " bench/coro_switch.lua" }, info = true,
        note = "bare resume/yield, the floor" },
    },
  },
  {
    name = "timers",
    title = "timers: 100,000 tasks each sleeping 50 ms concurrently",
    metrics = {
      { key = "wall_s", label = "wall ms", higher = false, scale = 1000 },
      { key = "bytes_per_task", label = "heap B/task", higher = false },
      { key = "rss_bytes_per_task", label = "peak RSS B/task", higher = false },
    },
    impls = {
      { impl = "lasync", needs = "lasync",
        cmds = { LASYNC .. " bench/lasync_timers.lua time",
                 LASYNC .. " bench/lasync_timers.lua mem" },
        note = "async.sleep(0.05); heap: collectgarbage" },
      { impl = "node", needs = "node",
        cmds = { NODE .. " bench/node_timers.js time",
                 NODE .. " --expose-gc bench/node_timers.js mem" },
        note = "await setTimeout promise; heap: heapUsed" },
      { impl = "asyncio", needs = "python",
        cmds = { PYTHON .. " bench/py_timers.py time", PYTHON .. " bench/py_timers.py mem" },
        note = "asyncio.sleep(0.05); heap: tracemalloc" },
      { impl = "luv", needs = "luv",
        cmds = { LUA .. " bench/luv_timers.lua time", LUA .. " bench/luv_timers.lua mem" },
        note = "one uv timer per sleep; heap: collectgarbage" },
      { impl = "coro", needs = "lua", cmds = { LUA .. " bench/coro_timers.lua" },
        note = "parked bare coroutines, the memory floor (memory only: nothing wakes them)" },
    },
  },
  {
    name = "lock",
    title = "lock: uncontended Lock acquire+release pairs in one task (2,000,000)",
    metrics = { { key = "pairs_per_s", label = "pairs/s", higher = true } },
    impls = {
      { impl = "lasync", needs = "lasync", cmds = { LASYNC .. " bench/lasync_lock.lua lock acquire" },
        note = "`l:acquire(); l:release()`" },
      { impl = "lasync-guard", needs = "lasync", info = true,
        cmds = { LASYNC .. " bench/lasync_lock.lua lock guard" },
        note = "`local _ <close> = l:guard()` per iteration" },
      { impl = "asyncio", needs = "python", cmds = { PYTHON .. " bench/py_lock.py lock acquire" },
        note = "`await lock.acquire(); lock.release()`" },
      { impl = "asyncio-with", needs = "python", info = true,
        cmds = { PYTHON .. " bench/py_lock.py lock with" }, note = "`async with lock: pass`" },
      { impl = "calls", needs = "lua", info = true, cmds = { LUA .. " bench/lua_calls.lua lock" },
        note = "two empty Lua method calls, the floor for `l:acquire(); l:release()`" },
    },
  },
  {
    name = "semaphore",
    title = "semaphore: uncontended Semaphore(1) acquire+release pairs in one task (2,000,000)",
    metrics = { { key = "pairs_per_s", label = "pairs/s", higher = true } },
    impls = {
      { impl = "lasync", needs = "lasync",
        cmds = { LASYNC .. " bench/lasync_lock.lua semaphore acquire" },
        note = "`s:acquire(); s:release()`" },
      { impl = "lasync-guard", needs = "lasync", info = true,
        cmds = { LASYNC .. " bench/lasync_lock.lua semaphore guard" },
        note = "`local _ <close> = s:guard()` per iteration" },
      { impl = "asyncio", needs = "python",
        cmds = { PYTHON .. " bench/py_lock.py semaphore acquire" },
        note = "`await sem.acquire(); sem.release()`" },
      { impl = "asyncio-with", needs = "python", info = true,
        cmds = { PYTHON .. " bench/py_lock.py semaphore with" }, note = "`async with sem: pass`" },
      { impl = "calls", needs = "lua", info = true,
        cmds = { LUA .. " bench/lua_calls.lua semaphore" },
        note = "two empty Lua method calls, the floor for `s:acquire(); s:release()`" },
    },
  },
  {
    name = "lock_contended",
    title = "lock_contended: two tasks ping-ponging one Lock, 1,000,000 handoffs",
    metrics = { { key = "handoffs_per_s", label = "handoffs/s", higher = true } },
    impls = {
      { impl = "lasync", needs = "lasync", cmds = { LASYNC .. " bench/lasync_lock.lua lock pingpong" },
        note = "2 tasks each looping `l:acquire(); count; l:release()`; the fair Lock hands it to"
          .. " the other task each time (checked)" },
      { impl = "asyncio", needs = "python", cmds = { PYTHON .. " bench/py_lock.py lock pingpong" },
        note = "2 tasks each looping `await lock.acquire(); count; lock.release()`; alternation"
          .. " checked the same way" },
    },
  },
  {
    name = "handoff",
    title = "handoff: a producer task puts 500,000 items into Queue(1), a consumer task gets them",
    metrics = { { key = "items_per_s", label = "items/s", higher = true } },
    impls = {
      { impl = "lasync", needs = "lasync", cmds = { LASYNC .. " bench/lasync_handoff.lua" },
        note = "async.Queue(1), `q:put(i)` / `q:get()`" },
      { impl = "asyncio", needs = "python", cmds = { PYTHON .. " bench/py_handoff.py" },
        note = "asyncio.Queue(1), `await q.put(i)` / `await q.get()`" },
    },
  },
  {
    name = "pipeline",
    title = "pipeline: 1,000,000 items from one producer through Queue(100) to 4 consumers",
    metrics = { { key = "items_per_s", label = "items/s", higher = true } },
    impls = {
      { impl = "lasync", needs = "lasync", cmds = { LASYNC .. " bench/lasync_pipeline.lua" },
        note = "async.Queue(100); producer closes it, consumers get until nil" },
      { impl = "asyncio", needs = "python", cmds = { PYTHON .. " bench/py_pipeline.py" },
        note = "asyncio.Queue(100); producer puts one None sentinel per consumer" },
    },
  },
  {
    name = "http",
    title = "http: 20,000 GETs of a 1 KiB file from nginx by 64 concurrent tasks over keep-alive",
    metrics = { { key = "req_per_s", label = "req/s", higher = true } },
    impls = {
      { impl = "lasync", needs = "lasync_http",
        cmds = { http_cmd(LASYNC .. " bench/lasync_http.lua http") },
        note = "one http.client(), async.map over 64 workers, each `c:get(url)` in a loop" },
      { impl = "c_curl_uv", needs = "c_curl_uv",
        cmds = { "bench/out/c_curl_uv " .. HTTP.url .. "/1k " .. HTTP_N .. " 64" },
        note = "C, curl-multi driven from libuv (multi-uv style: uv_poll per socket, "
          .. "closed on CURL_POLL_REMOVE), 64 reused easy handles" },
      { impl = "c_curl_uv_tuned", needs = "c_curl_uv", info = true,
        cmds = { "bench/out/c_curl_uv " .. HTTP.url .. "/1k " .. HTTP_N .. " 64 tuned" },
        note = "the same with CURLOPT_NOSIGNAL and 0 ms timers (as lasync sets them)" },
      { impl = "c_curl_poll", needs = "c_curl_poll",
        cmds = { "bench/out/c_curl_poll " .. HTTP.url .. "/1k " .. HTTP_N .. " 64" },
        note = "C, curl_multi_perform + curl_multi_poll, 64 reused easy handles" },
      { impl = "lua-http", needs = "luahttp",
        cmds = { http_cmd(LUAHTTP_ENV .. LUA53 .. " bench/luahttp_http.lua") },
        note = "lua-http 0.4 on cqueues under " .. LUA53
          .. ", 64 coroutines each on one kept-alive connection" },
      { impl = "aiohttp", needs = "aiohttp", cmds = { http_cmd(AIOHTTP_PY .. " bench/py_aiohttp.py") },
        note = "one ClientSession, TCPConnector(limit=64), 64 worker tasks" },
      { impl = "wrk", needs = "wrk", info = true, cmds = { "bench/wrk_http.sh " .. HTTP.url .. "/1k" },
        note = "`wrk -t1 -c64 -d3s`: the ceiling (nginx's limit here)" },
    },
  },
  {
    name = "http_burst",
    title = "http_burst: 1,000 concurrent GETs of an endpoint that waits 100 ms",
    metrics = { { key = "wall_s", label = "wall ms", higher = false, scale = 1000 } },
    impls = {
      { impl = "lasync", needs = "lasync_slow",
        cmds = { http_cmd(LASYNC .. " bench/lasync_http.lua burst") },
        note = "1,000 tasks (async.map without a limit) on one http.client(); "
          .. "nginx + echo module `echo_sleep 0.1`" },
    },
  },
  {
    name = "http_mem",
    title = "http_mem: 10,000 GETs in flight at once to an endpoint that waits 2 s",
    metrics = {
      { key = "bytes_per_req", label = "heap B/req", higher = false },
      { key = "rss_bytes_per_req", label = "RSS B/req", higher = false },
      { key = "wall_s", label = "wall ms", higher = false, scale = 1000 },
    },
    impls = {
      { impl = "lasync", needs = "lasync_slow", cmds = { http_cmd(LASYNC .. " bench/lasync_http.lua mem") },
        note = "10,000 spawned tasks each `c:get(url)`; heap: collectgarbage, RSS: VmHWM growth" },
    },
  },
  {
    name = "echo1",
    title = "echo1: TCP echo round trips of a 100-byte line, 1 connection (20,000), in one process",
    metrics = { { key = "rt_per_s", label = "round trips/s", higher = true } },
    impls = {
      { impl = "lasync", needs = "lasync", cmds = { LASYNC .. " bench/lasync_echo.lua 1" },
        note = "async.tcp.serve + tcp.connect; `s:write(line, \"\\n\")`, `s:read_line()`" },
      { impl = "asyncio", needs = "python", cmds = { PYTHON .. " bench/py_echo.py 1" },
        note = "asyncio streams: start_server + open_connection; write, drain, readline" },
      { impl = "uvloop", needs = "uvloop", cmds = { UVLOOP_PY .. " bench/py_echo.py 1 uvloop" },
        note = "the same program on uvloop" },
    },
  },
  {
    name = "echo100",
    title = "echo100: TCP echo round trips of a 100-byte line, 100 concurrent connections "
      .. "(1,000 each), in one process",
    metrics = { { key = "rt_per_s", label = "round trips/s", higher = true } },
    impls = {
      { impl = "lasync", needs = "lasync", cmds = { LASYNC .. " bench/lasync_echo.lua 100" },
        note = "100 client tasks (gather) and 100 handler tasks" },
      { impl = "asyncio", needs = "python", cmds = { PYTHON .. " bench/py_echo.py 100" },
        note = "asyncio streams, 100 client coroutines (gather)" },
      { impl = "uvloop", needs = "uvloop", cmds = { UVLOOP_PY .. " bench/py_echo.py 100 uvloop" },
        note = "the same program on uvloop" },
    },
  },
  {
    name = "to_thread",
    title = "to_thread: calls/s of a trivial function on the thread pool (20,000 one after the"
      .. " other; 50,000 by 64 concurrent tasks)",
    metrics = {
      { key = "seq_calls_per_s", label = "sequential calls/s", higher = true },
      { key = "conc_calls_per_s", label = "64 tasks calls/s", higher = true },
    },
    impls = {
      { impl = "lasync", needs = "lasync",
        cmds = { LASYNC .. " bench/lasync_to_thread.lua seq",
                 LASYNC .. " bench/lasync_to_thread.lua conc" },
        note = "`async.to_thread(fn, i)`; libuv pool (4 threads), worker Lua states reused" },
      { impl = "asyncio", needs = "python",
        cmds = { PYTHON .. " bench/py_to_thread.py seq", PYTHON .. " bench/py_to_thread.py conc" },
        note = "`await asyncio.to_thread(fn, i)`; default executor" },
    },
  },
}

-- lasync.flow (issue 10)
BENCHES[#BENCHES + 1] = {
  name = "flow_call",
  title = "flow_call: a tracked call of a node whose function returns at once (100,000)",
  metrics = { { key = "us_per_call", label = "us/call", higher = false } },
  impls = {
    { impl = "lasync", needs = "lasync", cmds = { LASYNC .. " bench/lasync_flow.lua call" },
      note = "`node(i)` inside a flow.session (recorded, previews on), no log" },
    { impl = "spawn_await", needs = "lasync", cmds = { LASYNC .. " bench/lasync_flow.lua spawn" },
      note = "`async.spawn(fn, i):await()` of the same function, untracked: the peer" },
    { impl = "lasync-untracked", needs = "lasync", info = true,
      cmds = { LASYNC .. " bench/lasync_flow.lua untracked" },
      note = "`node(i)` outside any session (its policy only)" },
    { impl = "lasync-log", needs = "lasync", info = true,
      cmds = { LASYNC .. " bench/lasync_flow.lua log" },
      note = "as lasync, with the JSON-lines log on" },
  },
}
BENCHES[#BENCHES + 1] = {
  name = "flow_mem",
  title = "flow_mem: heap bytes per recorded call, 100,000 calls, previews off",
  metrics = { { key = "bytes_per_call", label = "heap B/call", higher = false } },
  impls = {
    { impl = "lasync", needs = "lasync", cmds = { LASYNC .. " bench/lasync_flow.lua mem" },
      note = "collectgarbage before and after, the run's records alive" },
  },
}
BENCHES[#BENCHES + 1] = {
  name = "flow_trace",
  title = "flow_trace: run:save_trace of 100,000 recorded calls",
  metrics = { { key = "trace_s", label = "seconds", higher = false } },
  impls = {
    { impl = "lasync", needs = "lasync", cmds = { LASYNC .. " bench/lasync_flow.lua trace" },
      note = "Chrome Trace Event JSON, previews on (about 16 MB)" },
  },
}
local LLM_PY = have.python and select(2, sh(PYTHON .. " -c 'import aiohttp'", true)) and PYTHON
  or (select(2, sh("/usr/bin/python3 -c 'import aiohttp'", true)) and "/usr/bin/python3") or nil
have.llm_aiohttp = LLM_PY ~= nil and have.lasync
BENCHES[#BENCHES + 1] = {
  name = "llm_pipeline",
  title = "llm_pipeline: 10,000 calls of a fake LLM API (50-200 ms, 10% 429 with Retry-After),"
    .. " 256 at a time, with retries",
  metrics = {
    { key = "cpu_us_per_call", label = "client CPU us/call", higher = false },
    { key = "wall_over_ideal", label = "wall / ideal", higher = false },
  },
  impls = {
    { impl = "lasync", needs = "lasync", cmds = { LASYNC .. " bench/lasync_llm_pipeline.lua" },
      note = "a flow node (concurrency 256, retries honouring Retry-After), flow.map, the run "
        .. "traced and logged" },
    { impl = "asyncio", needs = "llm_aiohttp",
      cmds = { (LLM_PY or PYTHON) .. " bench/py_llm_pipeline.py" },
      note = "aiohttp ClientSession, asyncio.Semaphore(256), gather of 10,000 coroutines, "
        .. "retries after Retry-After; no tracing" },
  },
}

local only = os.getenv("BENCH_ONLY")
if only and only ~= "" then
  local keep = {}
  for _, b in ipairs(BENCHES) do
    if ("," .. only .. ","):find("," .. b.name .. ",", 1, true) then keep[#keep + 1] = b end
  end
  BENCHES = keep
end

-- }}}
-- {{{ running

os.execute("mkdir -p " .. quote(ROOT .. "/bench/out"))
local raw = assert(io.open(ROOT .. "/bench/out/raw.txt", "w"))
local lasync_failed = false

local function parse_result(out)
  for line in out:gmatch("[^\n]+") do
    if line:match("^RESULT ") then
      local fields = {}
      for k, v in line:gmatch("(%S+)=(%S+)") do fields[k] = tonumber(v) or v end
      return fields, line
    end
  end
  return nil
end

local function save_log(entry, i, out)
  local name = ("bench/out/%s-%s-%d.log"):format(entry.bench, entry.impl, i)
  local f = io.open(ROOT .. "/" .. name, "w")
  if f then f:write(out) f:close() end
  return name
end

-- One run of every command of an entry; on failure marks the entry failed (it is not run again).
local function run_entry(entry)
  local merged = {}
  for i, cmd in ipairs(entry.cmds) do
    local full = have.timeout and ("timeout -k 5 " .. TIMEOUT .. " " .. cmd) or cmd
    local t0 = os.time()
    local out, ok, code = sh(full)
    local fields, line = parse_result(out)
    local why
    if not ok then
      if code == 124 or code == 137 then
        why = ("timed out after %ds (hung?): %s"):format(TIMEOUT, cmd)
      else
        why = ("`%s` exited with status %s"):format(cmd, tostring(code))
      end
    elseif not fields then
      why = ("`%s` printed no RESULT line"):format(cmd)
    end
    if why then
      local log = save_log(entry, i, out)
      entry.failed = why .. " (output in " .. log .. ")"
      local tail = {}
      for l in out:gmatch("[^\n]+") do tail[#tail + 1] = l end
      io.stderr:write(("  FAILED %s/%s: %s\n"):format(entry.bench, entry.impl, entry.failed))
      for j = math.max(1, #tail - 15), #tail do io.stderr:write("    | ", tail[j], "\n") end
      if entry.impl == "lasync" then lasync_failed = true end
      return
    end
    raw:write(line, "\n")
    if os.time() - t0 > TIMEOUT / 2 then
      io.stderr:write(("  note: %s took %ds\n"):format(cmd, os.time() - t0))
    end
    for k, v in pairs(fields) do merged[k] = v end
  end
  entry.samples[#entry.samples + 1] = merged
end

local entries = {}
for _, b in ipairs(BENCHES) do
  for _, e in ipairs(b.impls) do
    e.bench, e.samples = b.name, {}
    if not have[e.needs] then e.missing = missing_reason[e.needs] end
    if e.missing and e.impl == "lasync" and e.needs == "lasync" then
      lasync_failed = true
      io.stderr:write(("  FAILED %s/lasync: %s\n"):format(b.name, e.missing))
    end
    entries[#entries + 1] = e
  end
end

local started = os.time()
local started_date = os.date("!%Y-%m-%d %H:%M:%S UTC")
for r = 1, RUNS do
  io.stderr:write(("run %d/%d\n"):format(r, RUNS))
  -- interleave: one process of every program per run, starting one further along each run
  for k = 0, #entries - 1 do
    local e = entries[(k + r - 1) % #entries + 1]
    if not e.missing and not e.failed then run_entry(e) end
  end
end
raw:close()
stop_nginx()
local elapsed = os.time() - started

-- }}}
-- {{{ statistics and formatting

local function median(xs)
  local s = {}
  for _, x in ipairs(xs) do s[#s + 1] = x end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

local function values(entry, key)
  local xs = {}
  for _, s in ipairs(entry.samples) do
    if type(s[key]) == "number" then xs[#xs + 1] = s[key] end
  end
  return xs
end

local function stat(entry, key)
  local xs = values(entry, key)
  if #xs == 0 then return nil end
  local lo, hi = math.huge, -math.huge
  for _, x in ipairs(xs) do lo, hi = math.min(lo, x), math.max(hi, x) end
  return { med = median(xs), lo = lo, hi = hi, n = #xs }
end

local function fmt_num(v, metric)
  if v == nil then return "n/a" end
  v = v * (metric.scale or 1)
  if metric.key:match("_per_s$") then
    if v >= 1e6 then return ("%.2fM"):format(v / 1e6) end
    return ("%.0fk"):format(v / 1e3)
  end
  if v >= 100 then return ("%.0f"):format(v) end
  if v >= 10 then return ("%.1f"):format(v) end
  return ("%.2f"):format(v)
end

-- how many times better lasync is than the peer: > 1 means lasync wins
local function ratio(lasync, peer, metric)
  if not lasync or not peer or lasync <= 0 or peer <= 0 then return nil end
  if metric.higher then return lasync / peer end
  return peer / lasync
end

local function fmt_ratio(x)
  if not x then return "n/a" end
  if x >= 10 then return ("%.1fx"):format(x) end
  return ("%.2fx"):format(x)
end

local function find(bench, impl)
  for _, e in ipairs(bench.impls) do
    if e.impl == impl then return e end
  end
end

local function status_of(e)
  if e.missing then return "n/a: " .. e.missing end
  if e.failed then return "FAILED: " .. e.failed end
  return nil
end

-- Markdown table for one benchmark.
local function bench_table(b)
  local lines = {}
  local head = { "impl" }
  local rule = { "---" }
  for _, m in ipairs(b.metrics) do
    head[#head + 1] = m.label .. " (median)"
    head[#head + 1] = "min-max"
    head[#head + 1] = "lasync x"
    rule[#rule + 1] = "---:"
    rule[#rule + 1] = "---:"
    rule[#rule + 1] = "---:"
  end
  head[#head + 1] = "runs"
  head[#head + 1] = "what"
  rule[#rule + 1] = "---:"
  rule[#rule + 1] = "---"
  lines[#lines + 1] = "| " .. table.concat(head, " | ") .. " |"
  lines[#lines + 1] = "|" .. table.concat(rule, "|") .. "|"
  local lasync = find(b, "lasync")
  for _, e in ipairs(b.impls) do
    local row = { e.impl .. (e.info and " (info)" or "") }
    for _, m in ipairs(b.metrics) do
      local st = stat(e, m.key)
      local ls = lasync and stat(lasync, m.key)
      row[#row + 1] = st and fmt_num(st.med, m) or "n/a"
      row[#row + 1] = st and (fmt_num(st.lo, m) .. "-" .. fmt_num(st.hi, m)) or ""
      row[#row + 1] = (st and ls) and fmt_ratio(ratio(ls.med, st.med, m)) or "n/a"
    end
    row[#row + 1] = tostring(#e.samples)
    local note = e.note or ""
    local flags = {}
    for _, s in ipairs(e.samples) do
      if type(s.early) == "number" and s.early > 0 then flags.early = true end
      if s.gc == "no" then flags.nogc = true end
      if s.clock and s.clock ~= "hrtime" then flags.clock = s.clock end
    end
    if flags.early then note = note .. "; WARNING: some sleepers woke before the heap probe" end
    if flags.nogc then note = note .. "; heap without a forced GC" end
    if flags.clock then note = note .. "; clock=" .. flags.clock end
    local st = status_of(e)
    if st then note = (note ~= "" and note .. "; " or "") .. st end
    row[#row + 1] = note
    lines[#lines + 1] = "| " .. table.concat(row, " | ") .. " |"
  end
  return table.concat(lines, "\n")
end

local function stat_of(bench_name, impl, key)
  for _, b in ipairs(BENCHES) do
    if b.name == bench_name then
      local e = find(b, impl)
      return e and stat(e, key)
    end
  end
end

-- Targets from the issue. Each: description, verdict ("MET", "NOT MET", "n/a"), values; a
-- comparison between two measured medians also says when the min-max ranges overlap (the
-- verdict is then within this machine's run-to-run noise). `factor` (the "k x peer" targets)
-- scales the peer's range before that overlap check, so it compares lasync with k x the peer.
local function targets()
  local out = {}
  local function add(bench, text, key, peer_impl, ok_fn, show, fixed, factor)
    local present = false
    for _, b in ipairs(BENCHES) do if b.name == bench then present = true end end
    if not present then return end
    local ls = stat_of(bench, "lasync", key)
    local ps = peer_impl and stat_of(bench, peer_impl, key)
    local l, p = ls and ls.med, fixed or (ps and ps.med)
    local verdict
    local detail = ""
    if l == nil then verdict = "n/a (no lasync result)"
    elseif p == nil then verdict = "n/a (no " .. peer_impl .. " result)"
    else
      verdict = ok_fn(l, p) and "MET" or "NOT MET"
      detail = show(l, p)
      local f = factor or 1
      if ps and ls.lo <= ps.hi * f and ps.lo * f <= ls.hi then
        detail = detail .. "; min-max ranges overlap (within noise)"
      end
    end
    out[#out + 1] = { bench = bench, text = text, verdict = verdict, detail = detail }
  end
  add("spawn", "spawn: lasync tasks/s >= node's", "tasks_per_s", "node",
    function(l, p) return l >= p end,
    function(l, p) return ("lasync %.3gM/s vs node %.3gM/s"):format(l / 1e6, p / 1e6) end)
  add("switch", "switch: lasync ns/switch <= asyncio's / 10", "ns_per_switch", "asyncio",
    function(l, p) return l <= p / 10 end,
    function(l, p) return ("lasync %.0f ns vs asyncio/10 = %.0f ns"):format(l, p / 10) end)
  add("timers", "timers: lasync wall <= node's", "wall_s", "node",
    function(l, p) return l <= p end,
    function(l, p) return ("lasync %.0f ms vs node %.0f ms"):format(l * 1000, p * 1000) end)
  add("timers", "timers: lasync heap B/task <= asyncio's", "bytes_per_task", "asyncio",
    function(l, p) return l <= p end,
    function(l, p)
      return ("lasync %.0f B/task vs asyncio %.0f B/task (lasync x %.2f)"):format(l, p, p / l)
    end)
  add("timers", "timers: lasync heap B/task <= 1.35 x coro's (a parked bare coroutine)",
    "bytes_per_task", "coro", function(l, p) return l <= 1.35 * p end,
    function(l, p)
      return ("lasync %.0f B/task vs 1.35 x coro %.0f B = %.0f B (lasync / coro = %.2f)")
        :format(l, p, 1.35 * p, l / p)
    end, nil, 1.35)
  local function rate(unit, k)
    return function(l, p)
      return ("lasync %.3gM %s/s vs %s x asyncio %.3gM/s = %.3gM/s (lasync x %.2f)")
        :format(l / 1e6, unit, k, p / 1e6, p * k / 1e6, l / p)
    end
  end
  add("lock", "lock: lasync acquire+release pairs/s >= 1.5x asyncio's", "pairs_per_s", "asyncio",
    function(l, p) return l >= 1.5 * p end, rate("pairs", 1.5), nil, 1.5)
  add("semaphore", "semaphore: lasync acquire+release pairs/s >= 1.5x asyncio's", "pairs_per_s",
    "asyncio", function(l, p) return l >= 1.5 * p end, rate("pairs", 1.5), nil, 1.5)
  add("lock_contended", "lock_contended: lasync handoffs/s >= 5x asyncio's", "handoffs_per_s",
    "asyncio", function(l, p) return l >= 5 * p end, rate("handoffs", 5), nil, 5)
  add("handoff", "handoff: lasync Queue(1) items/s >= 10x asyncio's", "items_per_s", "asyncio",
    function(l, p) return l >= 10 * p end, rate("items", 10), nil, 10)
  local function rps(name, k)
    return function(l, p)
      return ("lasync %.3gk req/s vs %s%s %.3gk = %.3gk (lasync x %.2f)")
        :format(l / 1e3, k == 1 and "" or (k .. " x "), name, p / 1e3, p * k / 1e3, l / p)
    end
  end
  add("http", "http: lasync req/s >= c_curl_uv's (C, curl-multi from libuv)", "req_per_s",
    "c_curl_uv", function(l, p) return l >= p end, rps("c_curl_uv", 1))
  add("http", "http: lasync req/s >= 75% of c_curl_poll's (C, curl_multi_poll)", "req_per_s",
    "c_curl_poll", function(l, p) return l >= 0.75 * p end, rps("c_curl_poll", 0.75), nil, 0.75)
  add("http", "http: lasync req/s >= 2x lua-http's", "req_per_s", "lua-http",
    function(l, p) return l >= 2 * p end, rps("lua-http", 2), nil, 2)
  add("http", "http: lasync req/s >= 5x aiohttp's", "req_per_s", "aiohttp",
    function(l, p) return l >= 5 * p end, rps("aiohttp", 5), nil, 5)
  add("http_burst", "http_burst: 1,000 concurrent 100 ms requests all done in < 200 ms", "wall_s",
    nil, function(l, p) return l < p end,
    function(l) return ("lasync %.0f ms"):format(l * 1000) end, 0.2)
  local function rts(name, k)
    return function(l, p)
      return ("lasync %.3gk round trips/s vs %s%s %.3gk = %.3gk (lasync x %.2f)")
        :format(l / 1e3, k == 1 and "" or (k .. " x "), name, p / 1e3, p * k / 1e3, l / p)
    end
  end
  add("echo1", "echo1: lasync round trips/s >= 2x asyncio streams'", "rt_per_s", "asyncio",
    function(l, p) return l >= 2 * p end, rts("asyncio", 2), nil, 2)
  add("echo100", "echo100: lasync round trips/s >= 2x asyncio streams'", "rt_per_s", "asyncio",
    function(l, p) return l >= 2 * p end, rts("asyncio", 2), nil, 2)
  add("http_mem", "http_mem: 10,000 requests in flight at once without errors", "n", nil,
    function(l, p) return l >= p end,
    function(l) return ("%d requests, all answered 200 with the right body"):format(l) end, 10000)
  local function calls(l, p)
    return ("lasync %.3gk calls/s vs asyncio %.3gk (lasync x %.2f)"):format(l / 1e3, p / 1e3, l / p)
  end
  add("to_thread", "to_thread: lasync sequential calls/s >= asyncio's", "seq_calls_per_s",
    "asyncio", function(l, p) return l >= p end, calls)
  add("to_thread", "to_thread: lasync calls/s from 64 tasks >= asyncio's", "conc_calls_per_s",
    "asyncio", function(l, p) return l >= p end, calls)
  add("flow_call", "flow_call: a tracked call costs <= 3x an untracked spawn(fn):await()",
    "us_per_call", "spawn_await", function(l, p) return l <= 3 * p end,
    function(l, p)
      return ("lasync %.2f us vs 3 x spawn_await %.2f us = %.2f us (lasync / spawn_await = %.2f)")
        :format(l, p, 3 * p, l / p)
    end, nil, 3)
  add("flow_mem", "flow_mem: 100,000 recorded calls use <= 600 B each (previews off)",
    "bytes_per_call", nil, function(l, p) return l <= p end,
    function(l) return ("lasync %.0f B/call"):format(l) end, 600)
  add("flow_trace", "flow_trace: save_trace of 100,000 calls in < 1 s", "trace_s", nil,
    function(l, p) return l < p end, function(l) return ("lasync %.2f s"):format(l) end, 1)
  add("llm_pipeline", "llm_pipeline: lasync client CPU per call <= 1/3 of asyncio+aiohttp's",
    "cpu_us_per_call", "asyncio", function(l, p) return l <= p / 3 end,
    function(l, p)
      return ("lasync %.0f us vs asyncio/3 = %.0f us (asyncio / lasync = %.2f)")
        :format(l, p / 3, p / l)
    end, nil, 1 / 3)
  add("llm_pipeline", "llm_pipeline: lasync wall time within 10% of the ideal schedule",
    "wall_over_ideal", nil, function(l, p) return l <= p end,
    function(l) return ("lasync wall / ideal = %.3f"):format(l) end, 1.1)
  return out
end

-- }}}
-- {{{ report

local function cmd_line(cmd)
  local out, ok = sh(cmd, true)
  out = first_line(out)
  if not ok or out == "" then return "n/a" end
  return out
end

local function cpu_model()
  local f = io.open("/proc/cpuinfo", "r")
  if not f then return "n/a" end
  local text = f:read("a")
  f:close()
  return text:match("model name%s*:%s*([^\n]+)") or text:match("Hardware%s*:%s*([^\n]+)") or "n/a"
end

local machine = {
  { "date", started_date },
  { "cpu", cpu_model() },
  { "nproc", cmd_line("nproc") },
  { "kernel", cmd_line("uname -sr") },
  { "lua", cmd_line(LUA .. " -v") },
  { "python", cmd_line(PYTHON .. " --version") },
  { "node", cmd_line(NODE .. " --version") },
  { "libuv (pkg-config)", cmd_line("pkg-config --modversion libuv") },
  { "lua-luv", have.luv and (cmd_line("dpkg-query -W -f='${Version}' lua-luv") .. ", linked libuv "
      .. cmd_line(LUA .. " -e 'print(require(\"luv\").version_string())'")) or "n/a" },
  { "lasync", (function()
      local rev = cmd_line("git rev-parse --short HEAD")
      local dirty = select(1, sh("git status --porcelain -- csrc lua", true)) ~= ""
      if rev == "n/a" then rev = "no commit" end
      return rev .. (dirty and " (working tree modified)" or "") .. "; run with `" .. LASYNC .. "`"
    end)() },
  { "runs", ("%d per program (BENCH_RUNS), %ds in all"):format(RUNS, elapsed) },
}
if SIZE_OVERRIDE then
  machine[#machine + 1] = { "sizes", "overridden by BENCH_N=" .. SIZE_OVERRIDE }
end

local tgt = targets()

-- terminal
print()
for _, m in ipairs(machine) do print(("%-20s %s"):format(m[1] .. ":", m[2])) end
for _, b in ipairs(BENCHES) do
  print()
  print("## " .. b.title)
  print(bench_table(b))
end
print()
print("## targets")
for _, t in ipairs(tgt) do print(("%-8s %s  (%s)"):format(t.verdict, t.text, t.detail)) end
print()
print("lasync x = how many times better lasync is than that impl (its rate / the impl's rate, or")
print("the impl's time or memory / lasync's); > 1 means lasync is ahead.")

-- RESULTS.md
local md = {}
local function w(s) md[#md + 1] = s or "" end
w("# lasync benchmark results")
w()
w("Written by `make bench` (`lua5.4 bench/run.lua`); every number below was measured in the same")
w("run.")
w()
w("## Machine")
w()
for _, m in ipairs(machine) do w(("- %s: %s"):format(m[1], m[2])) end
w()
w("## Targets")
w()
w("| target | result | values |")
w("|---|---|---|")
for _, t in ipairs(tgt) do w(("| %s | %s | %s |"):format(t.text, t.verdict, t.detail)) end
for _, b in ipairs(BENCHES) do
  w()
  w("## " .. b.title)
  w()
  w(bench_table(b))
end
w()
w("`lasync x` = how many times better lasync is than that impl: lasync's rate / its rate, or its")
w("time or memory / lasync's; > 1 means lasync is ahead. `(info)` rows are context, not targets.")
w()
w("## Method")
w()
w(([[
- Each program is a separate process that measures itself and prints one `RESULT` line; each was
  run %d times, interleaved (one process of every program per round, the order rotating each
  round), and the table shows the median and the range. No warm-up: every number is a cold
  single shot of the stated size, as a script would see it.
- Clocks: Lua programs use libuv's monotonic `hrtime` through lua-luv (plain Lua has no fine wall
  clock), Python `time.perf_counter`, Node `process.hrtime`. Timing starts before the first task
  is created and stops when gather/Promise.all returns, inside the program (no startup time).
- lasync programs run under plain `%s` with `async.run` (the same interpreter as the Lua
  peers); tasks are spawned with `async.spawn` and collected with `async.gather(list)`.
- spawn: every task returns at once. Node's async functions run eagerly up to their first
  `await`, so its task does one `await null` to pass through the scheduler once, as a spawned
  lasync task or an asyncio task does (the issue's "one await per task"; `node-eager` is the
  no-await variant). `coro` is create+resume of a bare coroutine, the floor.
- switch: one task doing 1,000,000 `sleep(0)`. Node's equivalent of yielding to the event loop
  is `setImmediate`; `await null` (microtask, never lets timers or I/O run) is shown for context.
  The luv scheduler requeues the task and polls libuv once (`uv_run(NOWAIT)`) per round.
- timers: 100,000 tasks each sleeping 50 ms. Wall time and peak RSS growth (VmHWM, ru_maxrss,
  resourceUsage().maxRSS) come from one process; heap per task from another, where a probe task
  started after all sleepers (so all are suspended in their sleep) forces a full GC and reads
  the heap: Lua `collectgarbage("count")`, Node `heapUsed` (`--expose-gc`), Python
  `tracemalloc`; minus a baseline taken before the spawns, divided by the task count. The heap
  figures include the list of tasks and the gather state, as a user's program would have them.
  `coro` is the floor: bare coroutines parked at a yield (memory only: nothing wakes them). The
  memory targets compare lasync's heap per task with asyncio's and with 1.35 x coro's, all three
  measured in the same run.
- lock, semaphore: one task (the main task) runs 2,000,000 acquire+release pairs on a Lock or a
  Semaphore(1) that no other task touches, so no acquire suspends (asyncio's uncontended
  acquire does not yield either); timed around the loop only. The target rows are the explicit
  calls; the scoped forms (lasync `local _ <close> = x:guard()` in the loop body, asyncio
  `async with x: pass`) are shown for information. `calls` is plain Lua calling two empty
  methods in the same shape (`x:acquire(); x:release()`): no Lock called that way can beat it.
- lock_contended: two tasks each loop `acquire; count; release` on one Lock until 1,000,000
  acquisitions are counted. Both Locks are fair (a release with a waiter queued hands the lock
  to it; the releaser's next acquire queues behind), so the acquisitions alternate and each is a
  handoff through the scheduler. The main task holds the lock while both tasks start and queue
  on it, then releases it; timed from that release until gather returns. Each task checks the
  parity of the shared count it sees (the first task even, the second odd) and fails the run on
  an acquisition out of turn; at the end each task must have made half of them.
- handoff: a producer task puts the integers 1..500,000 into a Queue(1) and a consumer task gets
  them (each item passes through the scheduler); timed from the first spawn until gather
  returns; the consumer checks the count and the sum.
- pipeline: one producer puts 1,000,000 integers into a Queue(100), 4 consumer tasks get them;
  timed from the first spawn until gather returns; the count and sum over all consumers are
  checked. lasync's producer ends with `q:close()` (consumers stop when `get` returns nil);
  asyncio.Queue has no close before Python 3.13, so its producer puts one `None` sentinel per
  consumer (4 extra items out of 1,000,000). Neither put nor get suspends while it can complete,
  so work arrives in bursts and one consumer may take most items (the RESULT lines' `min_share`
  is the fewest items one consumer got). Both sides run the full size in the same run (asyncio
  takes about a second), every program with the default run count.
- http: a private nginx (bench/http_nginx.sh: Debian nginx-light, 1 worker, 127.0.0.1 on a free
  port, access_log off, keepalive_requests 100000) serves a 1 KiB file; it shares the machine's
  cores with the client, so every number here is client + server. 20,000 GETs by 64 concurrent
  tasks (or handles or connections) over keep-alive; each program connects once untimed (lasync,
  aiohttp) or not at all before timing (the C programs, whose first 64 requests connect), checks
  every status and body length, and times from the first request to the last answer. The C
  programs (compiled with `cc -O2` against libcurl and libuv) reuse 64 easy handles:
  `c_curl_poll` on curl's own `curl_multi_poll` loop, `c_curl_uv` driving curl-multi from libuv
  the way curl's docs/examples/multi-uv.c does (a uv_poll_t per socket made on first use and
  closed on CURL_POLL_REMOVE, one uv_timer_t, curl_multi_socket_action). lua-http is Debian's
  0.4 under lua5.3 (Debian has no 5.4 build of it), one connection per coroutine (it has no
  pool). aiohttp is Debian's python3-aiohttp. wrk (`-t1 -c64 -d3s`) is the ceiling.
- http_burst: 1,000 tasks at once each GET an nginx location that answers after 100 ms (the
  echo module's `echo_sleep 0.1`), so each needs its own connection; wall time from the first
  spawn until all answered, including the 1,000 connects.
- http_mem: 10,000 tasks each GET a location that answers after 2 s; once every task has
  started its request and 0.5 s more have passed (none answered yet: `early` in the RESULT line
  counts answers before the probe), a probe takes the Lua heap after a full GC and VmRSS; minus
  a baseline before the spawns, per request. RSS B/req uses the peak (VmHWM) growth, so it
  includes libcurl's buffers and connections (curl allocates about 16 KiB of receive buffer per
  transfer).
- to_thread: the overhead of a call, with a function that returns its argument: 20,000 calls
  one after the other by one task, and 50,000 calls by 64 tasks at once (lasync `async.map` with
  concurrency 64, asyncio 64 worker tasks); each program first makes 64 calls untimed so that the
  pool's threads (and lasync's worker Lua states) exist, then times the calls and checks the sum
  of the results. lasync runs on libuv's pool (4 threads by default), asyncio on its default
  executor (a ThreadPoolExecutor of min(32, cores + 4) threads).
- flow_call: a node whose function returns its argument, called 100,000 times in a loop by one
  task after 1,000 untimed calls: inside a `flow.session` (every call recorded, with previews of
  its argument and result; no log, trace or report), outside any session, and with the log on;
  the peer is `async.spawn(fn, i):await()` of the same function (a task per call, the untracked
  cost the issue compares with).
- flow_mem: the Lua heap (collectgarbage("count") after two full collections) before and after
  100,000 recorded calls of a node with `capture = false`, divided by the calls.
- flow_trace: the wall time of `run:save_trace` for a run of 100,000 recorded calls (previews
  on), the file included.
- llm_pipeline: both programs start the fake LLM API (examples/support/fake_llm.lua under
  build/lasync, seed 1: the same answers and latencies in the same order of requests) in a
  process of their own, make 10,000 completion calls with at most 256 in flight, retry a 429
  after its Retry-After (a wait holds no slot), and check every answer. CPU is the client's own
  process time (lasync: os.clock, Python: time.process_time) over the calls; the server's is
  not counted. The ideal schedule is the latency the server served, summed, / 256, plus the
  longest chain of Retry-After waits of one call; it says how well the concurrency was used.
- Raw RESULT lines of the last run are in bench/out/raw.txt (not committed).]])
  :format(RUNS, LASYNC))
w()

local f = assert(io.open(ROOT .. "/bench/RESULTS.md", "w"))
f:write(table.concat(md, "\n"))
f:close()
print("wrote bench/RESULTS.md")

if lasync_failed then
  io.stderr:write("bench: a lasync program failed (see above)\n")
  os.exit(1)
end
os.exit(0)

-- }}}
