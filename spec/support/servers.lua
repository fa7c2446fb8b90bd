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

-- Starts spec/support/httpserver.py; returns {port =, url =, stop = function}.
function M.http()
  local file = os.tmpname()
  os.remove(file)
  local p = assert(io.popen("exec python3 spec/support/httpserver.py " .. file, "w"))
  local line = wait_for_file(file, 10)
  os.remove(file)
  local port = (line or ""):match("^(%d+) %d+$")
  assert(port, "the test HTTP server did not start")
  local s = { port = tonumber(port), url = "http://127.0.0.1:" .. port }
  function s.stop() p:close() end
  return s
end

return M
