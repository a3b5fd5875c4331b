#!/usr/bin/env python3
"""Container health check for the Streamsight image (installed as ``streamsight-healthcheck``).

    streamsight-healthcheck [URL] [--json-field NAME=VALUE]

* With a URL (argument or ``STREAMSIGHT_HEALTHCHECK_URL``): healthy when it answers 2xx within
  ``STREAMSIGHT_HEALTHCHECK_TIMEOUT`` seconds (default 5) and, with ``--json-field``, when the JSON
  body has that top-level field with that value (e.g. the Spark master's ``/json/`` ``status=ALIVE``).
* Without a URL: healthy when the Streamsight settings load (one-shot commands have nothing to probe).

Exit status 0 healthy, 1 unhealthy (Docker's convention); the reason goes to stdout, where
``docker inspect`` shows it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request


def probe(url: str, timeout: float, field: str | None) -> str | None:
    """``None`` when healthy, otherwise the reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # a local URL by design
            body = response.read()
            status = response.status
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"
    if not 200 <= status < 300:
        return f"{url}: HTTP {status}"
    if field:
        name, _, expected = field.partition("=")
        try:
            actual = json.loads(body).get(name)
        except (ValueError, AttributeError):
            return f"{url}: not a JSON object"
        if str(actual) != expected:
            return f"{url}: {name}={actual!r}, expected {expected!r}"
    return None


def settings_load() -> str | None:
    try:
        from streamsight.settings import load_settings

        load_settings()
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", with its message
        return f"settings: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamsight-healthcheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", default=os.environ.get("STREAMSIGHT_HEALTHCHECK_URL") or None)
    parser.add_argument("--json-field", default=None, help="NAME=VALUE expected in the JSON body")
    args = parser.parse_args(argv)
    timeout = float(os.environ.get("STREAMSIGHT_HEALTHCHECK_TIMEOUT", "5"))
    reason = probe(args.url, timeout, args.json_field) if args.url else settings_load()
    print(reason or "healthy")
    return 1 if reason else 0


if __name__ == "__main__":
    sys.exit(main())
