"""lock / semaphore, Python asyncio: uncontended acquire+release pairs in one task.

Usage: py_lock.py lock|semaphore acquire|with
  acquire: `await x.acquire(); x.release()` (the target peer)
  with:    `async with x: pass` (context-manager form, for information)
The primitive is asyncio.Lock() or asyncio.Semaphore(1); no other task exists, so every acquire
finds it free and completes without suspending.
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


wall = asyncio.run(main())
print(f"RESULT name={KIND} impl={IMPL} pairs_per_s={N / wall:.6g} ns_per_pair={wall / N * 1e9:.6g}"
      f" wall_s={wall:.6g} n={N}", flush=True)
