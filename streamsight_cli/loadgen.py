"""A bounded HTTP load generator for ``streamsight bench api``, run as its own process.

``python -m streamsight_cli.loadgen URL --key-env VAR --bodies FILE --connections C --seconds S
--warmup-seconds W`` POSTs the request bodies of FILE (one JSON array per line, used in turn) to
URL from C concurrent connections (httpx, asyncio) for W + S seconds, and prints one JSON object:
requests, records and status codes of the S measured seconds, records per second, and the
latency percentiles (ms) of the measured requests. The key is read from the environment variable
named by --key-env, never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any


def percentile(ordered: list[float], q: float) -> float:
    """The element at index ``int(q * n)`` of a sorted list (nan when empty)."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(url: str, key: str, bodies: list[bytes], records: list[int], *, connections: int,
              seconds: float, warmup_seconds: float) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    started = time.perf_counter()
    measure_from = started + warmup_seconds
    until = measure_from + seconds
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    sent_records = 0
    accepted_total = 0  # warm-up included: what the raw topic must hold
    errors: Counter[str] = Counter()
    turn = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent_records, accepted_total, turn
        while True:
            now = time.perf_counter()
            if now >= until:
                return
            i = turn % len(bodies)
            turn += 1
            t0 = time.perf_counter()
            try:
                answer = await client.post(url, content=bodies[i], headers=headers)
                status = answer.status_code
            except httpx.HTTPError as exc:
                if t0 >= measure_from:
                    errors[type(exc).__name__] += 1
                continue
            t1 = time.perf_counter()
            if status == 202:
                accepted_total += records[i]
            if t0 >= measure_from and t1 <= until:
                latencies.append((t1 - t0) * 1000)
                statuses[status] += 1
                if status == 202:
                    sent_records += records[i]

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        await asyncio.gather(*(worker(client) for _ in range(connections)))
    latencies.sort()
    return {
        "requests": len(latencies), "records_accepted": sent_records, "records_accepted_total": accepted_total,
        "seconds": seconds,
        "records_per_s": round(sent_records / seconds, 1), "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.50), 3), "p95_ms": round(percentile(latencies, 0.95), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3), "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors), "connections": connections,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--key-env", required=True)
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    args = parser.parse_args()
    lines = [line for line in args.bodies.read_bytes().splitlines() if line.strip()]
    records = [len(json.loads(line)) for line in lines]
    result = asyncio.run(run(args.url, os.environ[args.key_env], lines, records, connections=args.connections,
                             seconds=args.seconds, warmup_seconds=args.warmup_seconds))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
