-- The HTTP client against a fake API: a transport function stands in for the network, so this
-- runs anywhere (and is how to unit-test code that calls an API). It shows a client with
-- retries (a refused connection, then a 503 with Retry-After, then success), JSON in and out,
-- a fan-out with async.map, and a streamed Server-Sent Events answer read with resp:sse().
-- Run it with the interpreter: build/lasync examples/http_fake.lua
local async = require("lasync")
local http = require("lasync.http")
local cjson = require("cjson")

-- {====== the fake API ======}

local log = {}                 -- every attempt the fake server saw: "METHOD path"
local failures_left = {}       -- per path: the attempts that still fail

local function respond_json(status, value)
  return { status = status, headers = { ["Content-Type"] = "application/json" },
           body = cjson.encode(value) }
end

-- A request header, from the list of "Name: value" strings a transport receives.
local function header_of(req, name)
  for _, line in ipairs(req.headers) do
    local n, v = line:match("^([^:]+):%s*(.*)$")
    if n and n:lower() == name:lower() then return v end
  end
end

local function fake_api(req)
  async.sleep(0.01)                                         -- network latency
  local path = req.url:match("^https://api%.example/v1(/[^?]*)")
  log[#log + 1] = req.method .. " " .. path

  -- /flaky: refused once, then 503 with Retry-After, then fine
  if path == "/flaky" then
    local left = failures_left[path] or 2
    failures_left[path] = left - 1
    if left == 2 then error(async.new_error("connect", "Connection refused", { url = req.url })) end
    if left == 1 then return { status = 503, headers = { ["Retry-After"] = "0" } } end
    return respond_json(200, { message = "third time lucky" })
  end

  -- /echo: JSON in, JSON out
  if path == "/echo" then
    local body = cjson.decode(req.body)
    return respond_json(201, { you_sent = body.text, type = header_of(req, "content-type") })
  end

  -- /users/<id>
  local id = path:match("^/users/(%d+)$")
  if id then return respond_json(200, { name = "user " .. id }) end

  -- /chat: a streamed answer, as LLM APIs send it
  if path == "/chat" then
    local events = {}
    for _, word in ipairs({ "Streams", "arrive", "event", "by", "event." }) do
      events[#events + 1] = "event: token\ndata: " .. cjson.encode({ text = word }) .. "\n\n"
    end
    events[#events + 1] = ": a comment, ignored\n\nevent: done\ndata: {}\n\n"
    return { status = 200, headers = { ["Content-Type"] = "text/event-stream" },
             body = table.concat(events) }
  end

  return { status = 404, body = "no route for " .. path }
end

-- {====== the client code: the same against the real API, without `transport` ======}

local api = http.client{
  base_url = "https://api.example/v1",
  headers = { Authorization = "Bearer test-key" },
  timeout = 10,
  retry = { attempts = 3, backoff = 0.02 },
  transport = fake_api,
}

-- 1. Retries: the client hides a refused connection and a 503.
local resp = api:get("flaky")
print(("1. GET /flaky: %d %s after %d attempts"):format(resp.status, resp:json().message, #log))

-- 2. JSON: json= encodes the body and sets Content-Type; resp:json() decodes.
local echoed = api:post("echo", { json = { text = "hi" } }):raise_for_status():json()
print(("2. POST /echo: you_sent=%s, sent as %s"):format(echoed.you_sent, echoed.type))

-- 3. Errors: a 404 is a response; raise_for_status makes it an error of kind "http".
local missing = api:get("nowhere")
local ok, err = pcall(missing.raise_for_status, missing)
print(("3. GET /nowhere: ok=%s, %s"):format(tostring(missing.ok), tostring(err)))
assert(not ok and err.kind == "http" and err.status == 404)

-- 4. Fan-out: 20 users, at most 5 requests in flight.
local ids = {}
for i = 1, 20 do ids[i] = i end
local t0 = async.now()
local users = async.map(function(id) return api:get("users/" .. id):json().name end, ids,
                        { concurrency = 5 })
local elapsed = async.now() - t0
print(("4. %d users, first %q, last %q"):format(users.n, users[1], users[20]))
assert(elapsed >= 0.035, "at most 5 in flight: 4 rounds of 10 ms")

-- 5. Server-Sent Events: stream = true, then resp:sse(); <close> ends the transfer.
do
  local stream <close> = api:post("chat", { json = { prompt = "hello" }, stream = true,
                                            read_timeout = 30 })
  local words = {}
  for ev in stream:sse() do
    if ev.event == "done" then break end
    words[#words + 1] = cjson.decode(ev.data).text
  end
  print("5. streamed: " .. table.concat(words, " "))
end

print(("%d requests reached the fake server"):format(#log))
