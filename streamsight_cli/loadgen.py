"""A bounded HTTP load generator for ``streamsight bench api|predict``, run as its own process.

``python -m streamsight_cli.loadgen URL --key-env VAR --bodies FILE --connections C --seconds S
--warmup-seconds W [--rate R]`` POSTs the request bodies of FILE (one JSON value per line, used in
turn; an array counts as its length in records) to URL from C concurrent connections (aiohttp's
client, asyncio) for W + S seconds, and prints one JSON object: requests, records and status codes
of the S measured seconds, records per second, and the latency percentiles (ms) of the measured
requests.

Without ``--rate`` each connection sends its next request as soon as the last is answered (closed
loop: throughput). With ``--rate`` requests are due at a fixed rate whatever the answers (open loop)
and a request's latency counts from when it was due, so time spent waiting for a free connection
is in the figures. The key is read from the environment variable named by --key-env, never from the
command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any


def percentile(ordered: list[float], q: float) -> float:
    """The element at index ``int(q * n)`` of a sorted list (nan when empty)."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(url: str, key: str, bodies: list[bytes], records: list[int], *, connections: int,
              seconds: float, warmup_seconds: float, rate: float | None = None) -> dict[str, Any]:
    import aiohttp

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    started = time.perf_counter()
    measure_from = started + warmup_seconds
    until = measure_from + seconds
    latencies: list[float] = []
    drain_s = None
    statuses: Counter[int] = Counter()
    sent_records = 0
    accepted_total = 0  # warm-up included: what the raw topic must hold
    errors: Counter[str] = Counter()
    turn = 0

    async def post(client: aiohttp.ClientSession, i: int) -> int:
        async with client.post(url, data=bodies[i], headers=headers) as answer:
            await answer.read()
            return answer.status

    async def send(client: aiohttp.ClientSession, i: int, start: float, counted: Callable[[float, float], bool]) -> None:
        """POST body ``i``; its latency runs from ``start``, and it is measured when it started after the
        warm-up and ``counted(start, end)`` holds."""
        nonlocal sent_records, accepted_total
        try:
            status = await post(client, i)
        except (aiohttp.ClientError, TimeoutError) as exc:
            if start >= measure_from:
                errors[type(exc).__name__] += 1
            return
        end = time.perf_counter()
        ok = 200 <= status < 300
        if ok:
            accepted_total += records[i]
        if start >= measure_from and counted(start, end):
            latencies.append((end - start) * 1000)
            statuses[status] += 1
            if ok:
                sent_records += records[i]

    async def worker(client: aiohttp.ClientSession) -> None:
        nonlocal turn
        while time.perf_counter() < until:
            i = turn % len(bodies)
            turn += 1
            await send(client, i, time.perf_counter(), lambda _start, end: end <= until)

    async def paced(client: aiohttp.ClientSession, free: asyncio.Semaphore, due: float, i: int) -> None:
        async with free:
            await send(client, i, due, lambda start, _end: start < until)

    async def open_loop(client: aiohttp.ClientSession, per_second: float) -> None:
        free = asyncio.Semaphore(connections)
        tasks = []
        n = 0
        while True:
            due = started + n / per_second
            if due >= until:
                break
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(paced(client, free, due, n % len(bodies))))
            n += 1
        await asyncio.gather(*tasks)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:
        if rate:
            await open_loop(client, rate)
            drain_s = time.perf_counter() - until  # how long after the last due request the last answer came
        else:
            await asyncio.gather(*(worker(client) for _ in range(connections)))
    latencies.sort()
    return {
        "requests": len(latencies), "records_accepted": sent_records, "records_accepted_total": accepted_total,
        "seconds": seconds,
        "records_per_s": round(sent_records / seconds, 1), "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.50), 3), "p95_ms": round(percentile(latencies, 0.95), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3), "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors), "connections": connections, "rate": rate,
        "drain_s": None if drain_s is None else round(drain_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--key-env", required=True)
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=None, help="requests per second (open loop)")
    args = parser.parse_args()
    lines = [line for line in args.bodies.read_bytes().splitlines() if line.strip()]
    records = [len(v) if isinstance(v := json.loads(line), list) else 1 for line in lines]
    result = asyncio.run(run(args.url, os.environ[args.key_env], lines, records, connections=args.connections,
                             seconds=args.seconds, warmup_seconds=args.warmup_seconds, rate=args.rate))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
