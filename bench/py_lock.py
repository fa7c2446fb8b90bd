"""lock / semaphore, Python asyncio: uncontended acquire+release pairs in one task.

Usage: py_lock.py lock|semaphore acquire|with
  acquire: `await x.acquire(); x.release()` (the target peer)
  with:    `async with x: pass` (context-manager form, for information)
The primitive is asyncio.Lock() or asyncio.Semaphore(1); no other task exists, so every acquire
finds it free and completes without suspending.

Usage: py_lock.py lock pingpong
  lock_contended: two tasks each loop `await lock.acquire(); count; lock.release()` until N
  acquisitions are counted. asyncio.Lock is fair (release wakes the first waiter, and the
  releaser's next acquire queues behind it while that waiter is pending), so the acquisitions
  alternate between the tasks. The main task holds the lock while both tasks start and queue,
  then releases it; timed from that release until gather returns. Each task checks the parity of
  the shared count it sees (task 1 even, task 2 odd): any acquisition out of turn fails the run.
"""
import asyncio
import os
import sys
import time

N = int(os.environ.get("BENCH_N") or 2000000)
KIND = sys.argv[1] if len(sys.argv) > 1 else "lock"
MODE = sys.argv[2] if len(sys.argv) > 2 else "acquire"
IMPL = "asyncio" if MODE == "acquire" else "asyncio-with"


async def main():
    x = asyncio.Lock() if KIND == "lock" else asyncio.Semaphore(1)
    # sanity: acquiring takes it, releasing frees it
    assert (await x.acquire()) is True and x.locked()
    x.release()
    assert not x.locked()
    if MODE == "acquire":
        t0 = time.perf_counter()
        for _ in range(N):
            await x.acquire()
            x.release()
        wall = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        for _ in range(N):
            async with x:
                pass
        wall = time.perf_counter() - t0
    assert not x.locked()
    return wall


async def pingpong():
    assert KIND == "lock", "pingpong is for the lock only"
    n_total = int(os.environ.get("BENCH_N") or 1000000)
    lock = asyncio.Lock()
    count = 0
    started = 0

    async def player(parity):
        nonlocal count, started
        started += 1
        acquire, release = lock.acquire, lock.release
        n = 0
        while True:
            await acquire()
            c = count
            if c >= n_total:
                release()
                return n
            if c & 1 != parity:
                raise AssertionError(f"lock_contended: task {parity + 1} got acquisition {c + 1}"
                                     " out of turn (the Lock was not handed over)")
            count = c + 1
            n += 1
            release()

    await lock.acquire()
    a = asyncio.create_task(player(0))
    b = asyncio.create_task(player(1))
    await asyncio.sleep(0)  # both tasks run up to their first acquire and queue there
    assert started == 2 and lock.locked(), "the players did not start"
    t0 = time.perf_counter()
    lock.release()
    na, nb = await asyncio.gather(a, b)
    wall = time.perf_counter() - t0
    assert count == n_total, "wrong count"
    assert na == (n_total + 1) // 2 and nb == n_total // 2, "acquisitions not shared out evenly"
    assert not lock.locked()
    return wall, n_total


if MODE == "pingpong":
    wall, n = asyncio.run(pingpong())
    print(f"RESULT name=lock_contended impl=asyncio handoffs_per_s={n / wall:.6g}"
          f" ns_per_handoff={wall / n * 1e9:.6g} wall_s={wall:.6g} n={n}", flush=True)
    sys.exit(0)

wall = asyncio.run(main())
print(f"RESULT name={KIND} impl={IMPL} pairs_per_s={N / wall:.6g} ns_per_pair={wall / N * 1e9:.6g}"
      f" wall_s={wall:.6g} n={N}", flush=True)
