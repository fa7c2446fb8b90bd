"""to_thread, Python asyncio: the overhead of asyncio.to_thread with a trivial function.

Usage: py_to_thread.py seq|conc
  seq:  one task makes N calls, one after the other
  conc: 64 worker tasks make N calls in all
The default executor (ThreadPoolExecutor, min(32, cpus + 4) threads) is warmed by 64 calls first.
"""
import asyncio
import os
import sys
import time

MODE = sys.argv[1] if len(sys.argv) > 1 else "seq"
N = int(os.environ.get("BENCH_N") or (20000 if MODE == "seq" else 50000))
CONC = 64


def trivial(x):
    return x


async def main():
    await asyncio.gather(*(asyncio.to_thread(trivial, i) for i in range(CONC)))
    t0 = time.perf_counter()
    total = 0
    if MODE == "seq":
        for i in range(1, N + 1):
            total += await asyncio.to_thread(trivial, i)
    else:
        items = iter(range(1, N + 1))

        async def worker():
            s = 0
            for i in items:
                s += await asyncio.to_thread(trivial, i)
            return s

        total = sum(await asyncio.gather(*(worker() for _ in range(CONC))))
    wall = time.perf_counter() - t0
    assert total == N * (N + 1) // 2
    return wall


wall = asyncio.run(main())
key = "seq_calls_per_s" if MODE == "seq" else "conc_calls_per_s"
print(f"RESULT name=to_thread impl=asyncio {key}={N / wall:.6g} {MODE}_wall_s={wall:.6g} "
      f"{MODE}_n={N}", flush=True)
