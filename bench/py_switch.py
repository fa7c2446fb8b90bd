"""switch, Python asyncio: one task doing N asyncio.sleep(0)."""
import asyncio
import os
import time

N = int(os.environ.get("BENCH_N") or 1000000)


async def main():
    sleep = asyncio.sleep
    t0 = time.perf_counter()
    for _ in range(N):
        await sleep(0)
    return time.perf_counter() - t0


wall = asyncio.run(main())
print(f"RESULT name=switch impl=asyncio ns_per_switch={wall / N * 1e9:.6g} wall_s={wall:.6g}"
      f" n={N}", flush=True)
