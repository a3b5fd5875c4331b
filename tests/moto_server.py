"""A real moto server (AWS APIs on loopback) for tests: the ``moto_server`` of ``.venv-infra``.

``make test`` creates ``.venv-infra`` (requirements-infra.lock) before running pytest.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INFRA_BIN = ROOT / ".venv-infra" / "bin"
T_MOTO_START = 60


class MotoError(RuntimeError):
    pass


# What boto3 needs to sign requests to moto's server (any values do); no profile may override them.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def use_test_credentials(monkeypatch: Any) -> None:
    """Set :data:`CREDENTIALS` in this test's environment and drop ``AWS_PROFILE``."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto(log: Path, *, low_priority: bool = False, timeout: float = T_MOTO_START
               ) -> tuple[subprocess.Popen, str]:
    """Start ``moto_server`` on a free loopback port (at nice 19 with ``low_priority``);
    ``(process, endpoint URL)`` once it listens, within ``timeout`` seconds."""
    binary = INFRA_BIN / "moto_server"
    if not binary.exists():
        raise MotoError(f"{binary} is missing: run `make setup-infra` (make test does it)")
    port = free_port()
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}  # AmazonSSMManagedInstanceCore
    with open(log, "w") as fh:
        args = [str(binary), "-H", "127.0.0.1", "-p", str(port)]
        if low_priority:
            from tests.conftest import background_command

            args = background_command(args)
        proc = subprocess.Popen(args,
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise MotoError(f"moto_server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                stop(proc)
                raise MotoError(f"moto_server did not listen on 127.0.0.1:{port} within {timeout:.0f}s") from None
            time.sleep(0.1)  # poll interval; the loop is bounded by the deadline


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
