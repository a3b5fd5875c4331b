"""What every stage's HTTP routes share: the error body, and reading a bounded JSON body."""

from __future__ import annotations

import socket
from typing import Any

from fastapi import HTTPException, Request
from pydantic import BaseModel

from streamsight.validation import parse_json_bytes


class ErrorBody(BaseModel):
    detail: str
    request_id: str | None = None


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body is {declared} bytes, more than api.max_body_bytes {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the body is more than api.max_body_bytes {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def json_body(request: Request, limit: int) -> Any:
    """The request's JSON value: 415 unless it says JSON, 413 over ``limit`` bytes, 400 unless it is
    exactly one UTF-8 JSON value."""
    if not is_json(request.headers.get("content-type")):
        raise HTTPException(415, f"send application/json (got {request.headers.get('content-type') or 'no Content-Type'})")
    raw = await read_body(request, limit)
    try:
        return parse_json_bytes(raw)
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except ValueError as exc:
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from None


def listening_socket(host: str, port: int, setting: str, backlog: int = 2048) -> tuple[socket.socket, str]:
    """A socket listening on ``host:port`` (0: a free port) and its base URL; a port that cannot be
    bound fails naming ``setting``."""
    from streamsight.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{setting}: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(backlog)
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return sock, f"http://{shown}:{sock.getsockname()[1]}"
