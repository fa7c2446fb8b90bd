-- lock / semaphore, lasync: uncontended acquire+release pairs in one task (the main task), and
-- lock_contended: two tasks ping-ponging one Lock.
--
--   lua5.4 bench/lasync_lock.lua lock|semaphore acquire|guard
--     acquire: `x:acquire(); x:release()` (the target)
--     guard:   `do local _ <close> = x:guard() end` (the scoped form, for information)
-- The primitive is async.Lock() or async.Semaphore(1); no other task exists, so every acquire
-- finds it free and completes without suspending.
--
--   lua5.4 bench/lasync_lock.lua lock pingpong
--     two tasks each loop `l:acquire(); count; l:release()` until N acquisitions are counted.
--     The Lock is fair (a release with a waiter queued hands the lock to it, and the releaser's
--     next acquire queues behind), so the acquisitions alternate between the tasks: every one is
--     a handoff from the other task. The main task holds the lock while both tasks start and
--     queue, then releases it; timed from that release until gather returns. Each task checks
--     the parity of the shared count it sees (task 1 even, task 2 odd): any acquisition out of
--     turn fails the run.
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local async = require("lasync")
local kind = arg[1] or "lock"
local mode = arg[2] or "acquire"
local N = B.size(mode == "pingpong" and 1000000 or 2000000)
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

local function pingpong()
  assert(kind == "lock", "pingpong is for the lock only")
  local l = async.Lock()
  local count, started = 0, 0

  local function player(parity)
    started = started + 1
    local n = 0
    while true do
      l:acquire()
      local c = count
      if c >= N then
        l:release()
        return n
      end
      if c % 2 ~= parity then
        error(("lock_contended: task %d got acquisition %d out of turn (the Lock was not handed"
          .. " over)"):format(parity + 1, c + 1))
      end
      count = c + 1
      n = n + 1
      l:release()
    end
  end

  l:acquire()
  local a, b = async.spawn(player, 0), async.spawn(player, 1)
  async.yield() -- both tasks run up to their first acquire and queue there
  assert(started == 2 and l:locked(), "the players did not start")
  collectgarbage("collect")
  local t0 = B.clock()
  l:release()
  local r = async.gather({ a, b })
  local wall = B.clock() - t0
  assert(count == N, "wrong count")
  assert(r[1] == (N + 1) // 2 and r[2] == N // 2, "the acquisitions were not shared out evenly")
  assert(not l:locked(), "the lock is held after the loop")
  B.result("lock_contended", "lasync", { "handoffs_per_s", N / wall, "ns_per_handoff",
    wall / N * 1e9, "wall_s", wall, "n", N, "clock", B.clock_name })
end

local entry = mode == "pingpong" and pingpong or main
if async.current_task() then entry() else async.run(entry) end
