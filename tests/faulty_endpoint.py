"""A fault-injecting HTTP proxy in front of a real serving process (``streamsight deploy --target
local``): a test stand-in for a SageMaker endpoint that throttles, fails, answers late or is gone.

The first attempt of each distinct body gets the next fault of ``faults`` (in turn); any later
attempt of the same body is forwarded. So a client that retries gets every record scored by the
endpoint, and one that does not loses some. :meth:`FaultyEndpoint.kill` closes the listening socket
(connections are refused); :meth:`FaultyEndpoint.revive` listens on the same port again.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# fault -> (status, the runtime's x-amzn-ErrorType); "slow" answers after slow_s instead
ERRORS = {
    "throttle": (400, "ThrottlingException"),
    "not_ready": (429, "ModelNotReadyException"),
    "internal": (500, "InternalFailure"),
    "unavailable": (503, "ServiceUnavailable"),
}


class FaultyEndpoint:
    def __init__(self, upstream: str, faults: list[str], *, slow_s: float = 2.0) -> None:
        unknown = [f for f in faults if f not in ERRORS and f != "slow"]
        assert not unknown, unknown
        self.upstream = urlsplit(upstream)
        self.faults, self.slow_s = list(faults), slow_s
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self._attempts: Counter[str] = Counter()
        self._next = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultyEndpoint:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._fault(body)
                if fault in ERRORS:
                    status, code = ERRORS[fault]
                    self._send(status, json.dumps({"message": f"injected {fault}"}).encode(),
                               {"Content-Type": "application/json", "x-amzn-ErrorType": code})
                    return
                if fault == "slow":
                    time.sleep(proxy.slow_s)  # the injected fault itself: an answer later than the client waits
                status, headers, answer = proxy._forward(self.path, body, dict(self.headers))
                self._send(status, answer, headers)

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a slow answer

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def kill(self) -> None:
        """Stop listening: connections are refused."""
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def revive(self, faults: list[str] | None = None) -> None:
        if faults is not None:
            self.faults = list(faults)
        self.start()

    def _fault(self, body: bytes) -> str | None:
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            self._attempts[digest] += 1
            if self._attempts[digest] > 1 or not self.faults:
                self.forwarded += 1
                return None
            fault = self.faults[self._next % len(self.faults)]
            self._next += 1
            self.injected[fault] += 1
            if fault == "slow":
                self.forwarded += 1
            return fault

    def _forward(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            keep = {k: v for k, v in headers.items() if k.lower() in ("content-type", "accept")}
            conn.request("POST", path, body=body, headers=keep)
            answer = conn.getresponse()
            return answer.status, {k: v for k, v in answer.getheaders() if k.lower() in (
                "content-type", "x-amzn-errortype", "x-amzn-invoked-production-variant")}, answer.read()
        finally:
            conn.close()
