"""llm_pipeline, Python asyncio + aiohttp: the program of bench/lasync_llm_pipeline.lua without
any tracing: 10,000 calls of the fake LLM API (examples/support/fake_llm.lua, in a process of
its own), at most 256 at a time (a Semaphore), a 429 retried after its Retry-After (the wait
holds no slot), up to 8 retries. Prints the client's CPU time per call, the wall time and the
ideal schedule (computed as the lasync program does)."""
import asyncio
import os
import subprocess
import time

import aiohttp

N = int(os.environ.get("BENCH_N") or 10000)
C = 256
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def main():
    srv = subprocess.Popen([ROOT + "/build/lasync", ROOT + "/examples/support/fake_llm.lua",
                            "0", "1"], stdout=subprocess.PIPE, text=True)
    port = int(srv.stdout.readline().split()[1])
    base = f"http://127.0.0.1:{port}"
    sem = asyncio.Semaphore(C)
    most = [1]
    connector = aiohttp.TCPConnector(limit=C)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def complete(i):
            for attempt in range(1, 10):
                async with sem:
                    async with session.post(base + "/v1/complete",
                                            json={"prompt": f"document {i} text"}) as r:
                        if r.status == 429:
                            delay = float(r.headers.get("Retry-After", "0.05"))
                        else:
                            r.raise_for_status()
                            body = await r.json(content_type=None)
                            most[0] = max(most[0], attempt)
                            return body["tokens"]
                await asyncio.sleep(delay)
            raise RuntimeError("too many retries")

        cpu0, t0 = time.process_time(), time.perf_counter()
        tokens = await asyncio.gather(*(complete(i) for i in range(1, N + 1)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        assert len(tokens) == N and tokens[-1] == 4
        async with session.get(base + "/stats") as r:
            stats = await r.json(content_type=None)
    srv.terminate()
    srv.wait()
    ideal = stats["latency"] / C + (most[0] - 1) * 0.2
    print(f"RESULT name=llm_pipeline impl=asyncio cpu_us_per_call={cpu / N * 1e6:.6g}"
          f" wall_s={wall:.6g} ideal_s={ideal:.6g} wall_over_ideal={wall / ideal:.6g} n={N}"
          f" limited={stats['limited']} requests={stats['requests']}", flush=True)


asyncio.run(main())
