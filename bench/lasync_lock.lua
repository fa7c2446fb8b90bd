-- lock / semaphore, lasync: uncontended acquire+release pairs in one task (the main task).
--
--   lua5.4 bench/lasync_lock.lua lock|semaphore acquire|guard
--     acquire: `x:acquire(); x:release()` (the target)
--     guard:   `do local _ <close> = x:guard() end` (the scoped form, for information)
-- The primitive is async.Lock() or async.Semaphore(1); no other task exists, so every acquire
-- finds it free and completes without suspending.
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local async = require("lasync")
local N = B.size(2000000)
local kind = arg[1] or "lock"
local mode = arg[2] or "acquire"
local impl = mode == "acquire" and "lasync" or "lasync-" .. mode

local function is_free(x)
  if kind == "lock" then return not x:locked() end
  return x:value() == 1
end

local function main()
  local x
  if kind == "lock" then x = async.Lock() else x = async.Semaphore(1) end
  -- sanity: acquiring takes it, releasing frees it, the guard releases at block exit
  assert(x:acquire() == true and not is_free(x), "acquire did not take the " .. kind)
  x:release()
  assert(is_free(x), "release did not free the " .. kind)
  do
    local _ <close> = x:guard()
    assert(not is_free(x), "guard did not take the " .. kind)
  end
  assert(is_free(x), "the guard did not release the " .. kind .. " at block exit")
  collectgarbage("collect")
  local t0, wall
  if mode == "acquire" then
    t0 = B.clock()
    for _ = 1, N do
      x:acquire()
      x:release()
    end
    wall = B.clock() - t0
  elseif mode == "guard" then
    t0 = B.clock()
    for _ = 1, N do
      local _ <close> = x:guard()
    end
    wall = B.clock() - t0
  else
    error("unknown mode " .. tostring(mode))
  end
  assert(is_free(x), "the " .. kind .. " is held after the loop")
  B.result(kind, impl, { "pairs_per_s", N / wall, "ns_per_pair", wall / N * 1e9, "wall_s", wall,
    "n", N, "clock", B.clock_name })
end

if async.current_task() then main() else async.run(main) end
