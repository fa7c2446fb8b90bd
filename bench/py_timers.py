"""timers, Python asyncio: N tasks each doing asyncio.sleep(0.05) concurrently, then gather.

Mode "time" (default): wall time from the first create_task until gather returns, and peak RSS
(ru_maxrss) growth over that span per task.
Mode "mem": Python heap per sleeping task at the peak, traced by tracemalloc (started before the
baseline): a probe task created after the N sleepers runs gc.collect() and reads the traced
memory; minus the baseline, divided by N. `early` counts sleepers already woken at the probe.
"""
import asyncio
import gc
import os
import resource
import sys
import time
import tracemalloc

N = int(os.environ.get("BENCH_N") or 100000)
DELAY = 0.05
MODE = sys.argv[1] if len(sys.argv) > 1 else "time"
woke = 0


async def sleeper():
    global woke
    await asyncio.sleep(DELAY)
    woke += 1


def maxrss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def main():
    if MODE == "mem":
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tasks = [asyncio.create_task(sleeper()) for _ in range(N)]
        probe_out = {}

        async def probe():
            probe_out["early"] = woke
            gc.collect()
            probe_out["peak"] = tracemalloc.get_traced_memory()[0]

        probe_task = asyncio.create_task(probe())
        await asyncio.gather(*tasks)
        await probe_task
        assert woke == N
        per = (probe_out["peak"] - base) / N
        print(f"RESULT name=timers impl=asyncio bytes_per_task={per:.6g}"
              f" early={probe_out['early']} n={N}",
              flush=True)
    else:
        gc.collect()
        rss0 = maxrss_bytes()
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(sleeper()) for _ in range(N)]
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
        rss1 = maxrss_bytes()
        assert woke == N
        per = (rss1 - rss0) / N
        print(f"RESULT name=timers impl=asyncio wall_s={wall:.6g} rss_bytes_per_task={per:.6g}"
              f" n={N}", flush=True)


if MODE == "mem":
    tracemalloc.start()
asyncio.run(main())
