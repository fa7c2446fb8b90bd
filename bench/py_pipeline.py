"""pipeline, Python asyncio: one producer puts N items into asyncio.Queue(100), 4 consumer tasks
get them until they see a sentinel (the producer puts one None per consumer after the items;
asyncio.Queue has no close before Python 3.13). Items per second from the first create_task until
gather returns. min_share = the fewest items one consumer got (put/get do not suspend while they
can complete, so one consumer may drain a full queue before the others run)."""
import asyncio
import os
import time

N = int(os.environ.get("BENCH_N") or 1000000)
MAXSIZE = 100
CONSUMERS = 4


async def main():
    q = asyncio.Queue(MAXSIZE)
    got = [0, 0]  # count, sum over all consumers
    per = []

    async def producer():
        put = q.put
        for i in range(1, N + 1):
            await put(i)
        for _ in range(CONSUMERS):
            await put(None)

    async def consumer():
        get = q.get
        count = total = 0
        while True:
            v = await get()
            if v is None:
                break
            count += 1
            total += v
        got[0] += count
        got[1] += total
        per.append(count)

    t0 = time.perf_counter()
    tasks = [asyncio.create_task(producer())]
    tasks += [asyncio.create_task(consumer()) for _ in range(CONSUMERS)]
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    assert got[0] == N and got[1] == N * (N + 1) // 2, "consumers got wrong items"
    return wall, min(per)


wall, min_share = asyncio.run(main())
print(f"RESULT name=pipeline impl=asyncio items_per_s={N / wall:.6g}"
      f" ns_per_item={wall / N * 1e9:.6g} wall_s={wall:.6g} n={N} min_share={min_share}",
      flush=True)
