"""http, Python aiohttp: 20,000 GETs of BENCH_HTTP_URL/1k by 64 tasks over keep-alive, one
ClientSession with TCPConnector(limit=64); every response's status and body length are checked."""
import asyncio
import os
import time

import aiohttp

N = int(os.environ.get("BENCH_N") or 20000)
C = 64
URL = os.environ["BENCH_HTTP_URL"] + "/1k"


async def main():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=C)) as session:

        async def get():
            async with session.get(URL) as r:
                body = await r.read()
                if r.status != 200 or len(body) != 1024:
                    raise RuntimeError(f"bad response: {r.status}, {len(body)} bytes")

        await get()  # not timed: connects once

        async def worker(k):
            for _ in range(k):
                await get()
            return k

        per = [N // C + (1 if w < N % C else 0) for w in range(C)]
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(worker(k) for k in per))
        wall = time.perf_counter() - t0
        assert sum(counts) == N
        return wall


wall = asyncio.run(main())
print(f"RESULT name=http impl=aiohttp req_per_s={N / wall:.6g} wall_s={wall:.6g} n={N}", flush=True)
