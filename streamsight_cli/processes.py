"""Stopping the child processes the CLI starts (local servers, benchmarked jobs)."""

from __future__ import annotations

import signal
import subprocess


def stop_process(proc: subprocess.Popen, timeout: float, *, kill_wait: float = 10.0) -> None:
    """SIGTERM (a controlled shutdown), then SIGKILL if it has not exited after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=kill_wait)
