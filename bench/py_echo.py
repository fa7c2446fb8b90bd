"""echo, Python asyncio streams (or uvloop): a TCP echo server and client connections in one
process (the asyncio streams example); each client does round trips of a 100-byte line.
  python3 bench/py_echo.py CONNS [uvloop]
Round trips per second over all connections, from the first connect to the last reply."""
import asyncio
import os
import sys
import time

CONNS = int(sys.argv[1]) if len(sys.argv) > 1 else 1
IMPL = sys.argv[2] if len(sys.argv) > 2 else "asyncio"
TOTAL = int(os.environ.get("BENCH_N") or (20000 if CONNS == 1 else 100000))
PER = TOTAL // CONNS
LINE = b"x" * 99 + b"\n"

if IMPL == "uvloop":
    import uvloop
    uvloop.install()


async def handle(reader, writer):
    while True:
        line = await reader.readline()
        if not line:
            break
        writer.write(line)
        await writer.drain()
    writer.close()


async def client(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(PER):
        writer.write(LINE)
        await writer.drain()
        if await reader.readline() != LINE:
            raise RuntimeError("bad echo")
    writer.close()
    await writer.wait_closed()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t0 = time.perf_counter()
    await asyncio.gather(*(client(port) for _ in range(CONNS)))
    wall = time.perf_counter() - t0
    server.close()
    await server.wait_closed()
    return wall


wall = asyncio.run(main())
n = PER * CONNS
name = "echo1" if CONNS == 1 else f"echo{CONNS}"
print(f"RESULT name={name} impl={IMPL} rt_per_s={n / wall:.6g} wall_s={wall:.6g} n={n}"
      f" conns={CONNS}", flush=True)
