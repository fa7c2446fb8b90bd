-- docs/check_common.lua: what docs/check_examples.lua and docs/check_links.lua share.
--
--   local C = dofile((arg[0]:match("^(.*)/") or ".") .. "/check_common.lua")
--   local verbose, targets = C.args(arg)    -- "-v", then the files to check
local M = {}

-- The command line: whether -v was given, and the other arguments (files to check).
function M.args(argv)
  local verbose, targets = false, {}
  for _, a in ipairs(argv) do
    if a == "-v" then verbose = true else targets[#targets + 1] = a end
  end
  return verbose, targets
end

-- The lines a shell command prints.
function M.list(cmd)
  local out = {}
  local p = assert(io.popen(cmd))
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

-- The whole content of a file.
function M.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

return M
