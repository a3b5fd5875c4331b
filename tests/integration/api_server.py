"""``streamsight serve`` as a real process on loopback with the tests' API keys."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from streamsight_cli.api import digest
from tests.integration.helpers import ROOT, cli_env

KEYS = {"writer": "ss_writer-key-for-tests-0123456789", "admin": "ss_any-stream-key-for-tests-0123456789",
        "reader": "ss_reader-key-for-tests-0123456789", "scorer": "ss_scorer-key-for-tests-0123456789",
        "other": "ss_other-stream-key-0123456789", "slow": "ss_rate-limited-key-0123456789"}


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]
    log: Path
    contract: Any
    servers: str
    lake: Path

    def post(self, path: str, body: Any = None, *, key: str | None = "writer", content: bytes | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        sent = {"Authorization": f"Bearer {KEYS[key]}"} if key else {}
        if content is None:
            content, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
        return httpx.post(self.url + path, content=content, headers={**sent, **(headers or {})}, timeout=30)

    def get(self, path: str, *, key: str | None = None) -> httpx.Response:
        sent = {"Authorization": f"Bearer {KEYS[key]}"} if key else {}
        return httpx.get(self.url + path, headers=sent, timeout=30)


def _keys_file(directory: Path, stream: str) -> Path:
    entries = [
        {"name": "writer", "sha256": digest(KEYS["writer"]), "scopes": ["events:write"], "streams": [stream]},
        {"name": "admin", "sha256": digest(KEYS["admin"]), "scopes": ["events:write", "predict"], "streams": ["*"]},
        {"name": "scorer", "sha256": digest(KEYS["scorer"]), "scopes": ["predict"]},
        {"name": "reader", "sha256": digest(KEYS["reader"]), "scopes": ["predictions:read"], "streams": [stream]},
        {"name": "other", "sha256": digest(KEYS["other"]), "scopes": ["events:write"], "streams": ["another_stream"]},
        {"name": "slow", "sha256": digest(KEYS["slow"]), "scopes": ["events:write"], "rate_limit": "2/minute"},
    ]
    path = directory / "api-keys.yaml"
    path.write_text(yaml.safe_dump(entries), encoding="utf-8")
    return path


def start_server(directory: Path, servers: str, contracts_dir: Path, extra_env: dict[str, str] | None = None,
                 **api: str) -> Server:
    """``streamsight serve --port 0`` with the test keys; its first stdout line is its URL."""
    from streamsight.contracts import load_contracts
    from tests.conftest import TestBroker

    contract = next(iter(load_contracts(contracts_dir).values()))
    env = {**cli_env(directory, TestBroker("external", servers), contracts_dir), "STREAMSIGHT_LOG_LEVEL": "INFO",
           "STREAMSIGHT_API__KEYS_FILE": str(_keys_file(directory, contract.name)),
           **{f"STREAMSIGHT_API__{k.upper()}": v for k, v in api.items()}, **(extra_env or {})}
    log = directory / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "streamsight_cli", "serve", "--port", "0"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    url = (proc.stdout.readline() if proc.stdout else "").strip()
    if not url.startswith("http://"):
        proc.kill()
        raise AssertionError(f"serve did not start: {url!r}\n{log.read_text()}")
    return Server(url, proc, log, contract, servers, Path(env["STREAMSIGHT_LAKE_DIR"]))


def stop_server(server: Server) -> None:
    """SIGTERM: uvicorn drains, the app's shutdown flushes the producer, then the process ends by the signal."""
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(timeout=60)
    assert code in (0, -signal.SIGTERM), server.log.read_text()[-3000:]
    assert "Application shutdown complete" in server.log.read_text()
