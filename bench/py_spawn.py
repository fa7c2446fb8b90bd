"""spawn, Python asyncio: create_task N coroutines that return at once, then gather them."""
import asyncio
import os
import time

N = int(os.environ.get("BENCH_N") or 200000)


async def work(i):
    return i


async def main():
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(work(i)) for i in range(N)]
    results = await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    assert len(results) == N and results[-1] == N - 1
    return wall


wall = asyncio.run(main())
print(f"RESULT name=spawn impl=asyncio tasks_per_s={N / wall:.6g} wall_s={wall:.6g} n={N}",
      flush=True)
