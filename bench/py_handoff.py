"""handoff, Python asyncio: a producer task puts N items into asyncio.Queue(1), a consumer task
gets them; items per second from the first create_task until gather returns."""
import asyncio
import os
import time

N = int(os.environ.get("BENCH_N") or 500000)


async def main():
    q = asyncio.Queue(1)
    got = [0, 0]  # count, sum

    async def producer():
        put = q.put
        for i in range(1, N + 1):
            await put(i)

    async def consumer():
        get = q.get
        count = total = 0
        for _ in range(N):
            v = await get()
            count += 1
            total += v
        got[0], got[1] = count, total

    t0 = time.perf_counter()
    await asyncio.gather(asyncio.create_task(producer()), asyncio.create_task(consumer()))
    wall = time.perf_counter() - t0
    assert got[0] == N and got[1] == N * (N + 1) // 2, "consumer got wrong items"
    assert q.empty()
    return wall


wall = asyncio.run(main())
print(f"RESULT name=handoff impl=asyncio items_per_s={N / wall:.6g}"
      f" ns_per_item={wall / N * 1e9:.6g} wall_s={wall:.6g} n={N}", flush=True)
