"""``streamsight serve``: the HTTP service (FastAPI on uvicorn) and its API keys.

The app factory includes each stage's router (``ingestion.http_api`` publishes events,
``ml.http_api`` scores records) behind the cross-cutting parts that live here:

* API keys (``api.auth: keys``): ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; only
  SHA-256 digests are stored (settings ``api.keys`` and the YAML file ``api.keys_file`` that
  ``streamsight api-key create`` appends to). ``401`` without a known key, ``403`` for a scope or
  stream the key does not have, ``429`` with ``Retry-After`` over the key's rate limit (the
  ``limits`` library's moving window, per key, in this process).
* Request ids: ``X-Request-ID`` is taken from the request (letters, digits, ``._-``, at most 128)
  or made, returned on every answer and written in every error body and log line.
* One JSON log line per request (python-json-logger); Prometheus metrics at ``/metrics``.
* Errors: ``4xx`` say what is wrong; ``500`` says only "internal error" and the request id (the
  traceback goes to the log).
* ``/healthz`` (the process answers), ``/readyz`` (a Kafka broker answers, and each contract's
  production model, if it has one, loads).
* ``/dashboard``: the page ``streamsight dashboard`` last wrote (``Settings.dashboard_file``). A
  browser gives the key as HTTP Basic's password (the 401 asks for it).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import TypeAdapter, ValidationError

from streamsight.errors import ConfigError
from streamsight.settings import ApiKey, Settings
from streamsight.web import ErrorBody, listening_socket

if TYPE_CHECKING:  # pragma: no cover
    from streamsight.contracts import Contract

log = logging.getLogger("streamsight.api")
access_log = logging.getLogger("streamsight.api.access")

KEY_PREFIX = "ss_"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_KEYS = TypeAdapter(list[ApiKey])


# -- API keys ------------------------------------------------------------------------------------

def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_keys(settings: Settings) -> list[ApiKey]:
    """The keys in settings and in the keys file; a bad file fails naming it and the entry."""
    keys = list(settings.api.keys)
    path = settings.api_keys_file
    if path.exists():
        try:
            keys.extend(_KEYS.validate_python(_file_entries(path)))
        except yaml.YAMLError as exc:
            raise ConfigError(f"STREAMSIGHT_API__KEYS_FILE (api.keys_file): {path} is not valid YAML: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"STREAMSIGHT_API__KEYS_FILE (api.keys_file): {path}, entry {where}: {first['msg']}") from None
    names = [k.name for k in keys]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"STREAMSIGHT_API__KEYS (api.keys): key name(s) used twice: {', '.join(twice)}")
    return keys


def create_key(settings: Settings, name: str, scopes: Iterable[str], streams: Iterable[str],
               rate_limit: str | None = None) -> str:
    """Make a key, append its digest to the keys file (mode 0600) and return the key itself."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entry = ApiKey(name=name, sha256=digest(key), scopes=tuple(scopes), streams=tuple(streams),  # type: ignore[arg-type]
                   rate_limit=rate_limit)
    if any(k.name == name for k in load_keys(settings)):
        raise ConfigError(f"an API key named {name!r} exists; revoke it first")
    path = settings.api_keys_file
    _write_private(path, [*_file_entries(path), entry.model_dump(mode="json", exclude_none=True)])
    return key


def revoke_key(settings: Settings, name: str) -> bool:
    """Remove the key ``name`` from the keys file; False if it is not there."""
    path = settings.api_keys_file
    doc = _file_entries(path)
    kept = [entry for entry in doc if not (isinstance(entry, dict) and entry.get("name") == name)]
    if len(kept) == len(doc):
        return False
    _write_private(path, kept)
    return True


def _file_entries(path: Path) -> list[Any]:
    """The entries of a keys file as YAML gives them (none if there is no file)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    return list(doc or [])


def _write_private(path: Path, doc: list[Any]) -> None:
    """Replace ``path`` with ``doc`` as YAML, readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        yaml.safe_dump(doc, out, sort_keys=False)
    partial.replace(path)


class KeyRing:
    """Authenticates requests by key digest and applies scopes, streams and rate limits."""

    def __init__(self, keys: list[ApiKey], default_limit: str, enabled: bool = True) -> None:
        from limits import parse
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self.enabled = enabled
        self._by_digest = {k.sha256: k for k in keys}
        self._limits = {k.name: parse(k.rate_limit or default_limit) for k in keys}
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    @staticmethod
    def presented(request: Request) -> str | None:
        """The key: a bearer token, ``X-API-Key``, or the password of HTTP Basic (what a browser sends)."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        if scheme.lower() == "basic" and value.strip():
            try:
                _user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return password or None
        return request.headers.get("x-api-key") or None

    def check(self, request: Request, scope: str, *, all_streams: bool = False,
              challenge: str = "Bearer") -> ApiKey | None:
        """The request's key if it may use ``scope`` (on the path's stream, if any; on every stream with
        ``all_streams``); raises 401 (with ``challenge`` as WWW-Authenticate), 403 or 429."""
        if not self.enabled:
            return None
        presented = self.presented(request)
        if presented is None:
            raise HTTPException(401, "an API key is required (Authorization: Bearer <key> or X-API-Key)",
                                headers={"WWW-Authenticate": challenge})
        key = self._by_digest.get(digest(presented))
        if key is None:
            raise HTTPException(401, "the API key is not valid", headers={"WWW-Authenticate": challenge})
        request.state.api_key = key.name
        if scope not in key.scopes:
            raise HTTPException(403, f"key {key.name!r} does not have the scope {scope!r}")
        stream = request.path_params.get("stream") or request.query_params.get("stream")
        if stream is not None and "*" not in key.streams and stream not in key.streams:
            raise HTTPException(403, f"key {key.name!r} may not use stream {stream!r}")
        if all_streams and "*" not in key.streams:
            raise HTTPException(403, f"key {key.name!r} may use only some streams; this page shows every stream")
        limit = self._limits[key.name]
        if not self._limiter.hit(limit, key.name):
            reset = self._limiter.get_window_stats(limit, key.name).reset_time
            wait = max(1, int(reset - time.time() + 0.999))
            raise HTTPException(429, f"key {key.name!r} is over its rate limit of {limit}",
                                headers={"Retry-After": str(wait)})
        return key

    def require(self, scope: str) -> Callable[[Request], Awaitable[None]]:
        """A FastAPI dependency: the request needs a key with ``scope``."""
        async def dependency(request: Request) -> None:  # async: FastAPI would run a plain def in a thread
            self.check(request, scope)
        return dependency


# -- metrics -------------------------------------------------------------------------------------

class ApiMetrics:
    """Prometheus metrics of one app, in their own registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("streamsight_api_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.seconds = Histogram("streamsight_api_request_seconds", "Time to answer a request",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.events = Counter("streamsight_api_events", "Records received, by outcome",
                              ["stream", "outcome"], registry=self.registry)
        self.rejections = Counter("streamsight_api_rejected_records", "Records rejected, by reason code",
                                  ["stream", "code"], registry=self.registry)

        self.predictions = Counter("streamsight_api_predictions", "Records scored, by model version",
                                   ["model", "version"], registry=self.registry)

    def predicted(self, model: str, version: int, n: int) -> None:
        self.predictions.labels(model, str(version)).inc(n)

    def accepted(self, stream: str, n: int) -> None:
        self.events.labels(stream, "accepted").inc(n)

    def rejected(self, stream: str, code: str) -> None:
        self.events.labels(stream, "rejected").inc()
        self.rejections.labels(stream, code).inc()


# -- the app -------------------------------------------------------------------------------------

class RequestContext:
    """Pure ASGI middleware (no per-request task, unlike ``@app.middleware``): the request id, the
    access log line and the metrics of every request, and the ``500`` answer of an unhandled error
    (the traceback to the log; the body only says "internal error" and the request id)."""

    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        tag = (b"x-request-id", request_id.encode("latin-1"))
        started = time.perf_counter()
        status = 500
        answered = False

        async def send_tagged(message: dict[str, Any]) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                message["headers"] = [*message.get("headers", ()), tag]
            await send(message)

        try:
            await self.app(scope, receive, send_tagged)
        except Exception:
            log.exception("request %s failed", request_id)
            if not answered:
                body = json.dumps({"detail": "internal error", "request_id": request_id}).encode()
                await send_tagged({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.seconds.labels(scope["method"], route).observe(elapsed)
            client = scope.get("client")
            access_log.info("request", extra={
                "request_id": request_id, "method": scope["method"], "path": scope["path"], "route": route,
                "status": status, "ms": round(elapsed * 1000, 3), "key": state.get("api_key"),
                "client": client[0] if client else None})


class DashboardBuilder:
    """``streamsight dashboard`` as a child process of the server: started with the app, stopped (SIGTERM,
    then SIGKILL after 30 s) when the app shuts down; on Linux the kernel also ends it if the server dies."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                     preexec_fn=_end_with_parent if sys.platform == "linux" else None)
        log.info("dashboard builder started (pid %s)", self.proc.pid)

    def state(self) -> str:
        code = None if self.proc is None else self.proc.poll()
        return "running" if self.proc is not None and code is None else f"exited with {code}"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _end_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def create_app(settings: Settings, contracts: dict[str, Contract], servers: str, keys: KeyRing,
               dashboard: DashboardBuilder | None = None) -> FastAPI:
    """The FastAPI app: the stages' routers behind keys, request ids, logs and metrics; the app's
    shutdown stops ``dashboard``."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    import streamsight
    from ingestion import http_api
    from ml import http_api as model_api
    from ml.online import ModelCatalog, RegistryFiles

    metrics = ApiMetrics()
    catalog = ModelCatalog(RegistryFiles.of(settings), settings.api.model_refresh_s)
    served_models = sorted({c.model.name for c in contracts.values() if c.model is not None})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        publisher = http_api.AsyncPublisher(settings, servers)
        app.state.events = http_api.EventIngest(contracts, publisher, settings.api, metrics)
        app.state.publisher = publisher
        store = None
        if settings.predictions_store.kind == "dynamodb":
            from streamsight.store import DynamoPredictions

            store = DynamoPredictions.from_settings(settings)
        app.state.models = model_api.Predictor(catalog, settings.api, metrics, store=store, streams=tuple(
            sorted(name for name, c in contracts.items() if c.model is not None)))
        try:
            yield
        finally:
            publisher.close()
            if dashboard is not None:
                await asyncio.to_thread(dashboard.stop)

    app = FastAPI(title="Streamsight", version=streamsight.__version__, lifespan=lifespan,
                  description="Publish events to Streamsight's streams; score records with their models.")

    def _request_id(request: Request) -> str | None:
        return getattr(request.state, "request_id", None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail, "request_id": _request_id(request)}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = ["{}: {}".format(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(problems), "request_id": _request_id(request)}, status_code=400)

    app.add_middleware(RequestContext, metrics=metrics)

    refusals: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorBody, "description": "No API key, or not a valid one"},
        403: {"model": ErrorBody, "description": "The key lacks the scope or the stream"},
        429: {"model": ErrorBody, "description": "Over the key's rate limit; retry after Retry-After"}}
    app.include_router(http_api.router, dependencies=[Depends(keys.require("events:write"))], responses=refusals)
    app.include_router(model_api.router, dependencies=[Depends(keys.require("predict"))], responses=refusals)
    app.include_router(model_api.stored_router, dependencies=[Depends(keys.require("predictions:read"))],
                       responses=refusals)

    @app.get("/healthz", tags=["operations"], summary="The process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="A Kafka broker answers; the contracts' production models load",
             responses={503: {"description": "Not ready"}})
    async def readyz(request: Request) -> JSONResponse:
        from ml.online import ModelUnavailable

        broker = await request.app.state.publisher.reachable()
        models: dict[str, Any] = {}
        for name in served_models:
            try:
                served = await asyncio.to_thread(catalog.get, name)
                models[name] = served.version if served is not None else "none in production"
            except ModelUnavailable as exc:
                models[name] = f"cannot be served: {exc}"
        ready = broker and not any(str(v).startswith("cannot") for v in models.values())
        body = {"status": "ready" if ready else "not ready", "broker": broker, "models": models}
        if dashboard is not None:  # informative: a stopped builder leaves /dashboard stale, the API works
            body["dashboard_builder"] = dashboard.state()
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/dashboard", tags=["dashboard"], response_class=HTMLResponse,
             summary="The live page: each stream's last window of throughput, dead letters, latency, riskiest keys",
             responses={**refusals, 503: {"model": ErrorBody, "description": "Not built yet; retry after Retry-After"}})
    async def dashboard_page(request: Request) -> HTMLResponse:
        """What `streamsight dashboard` last built (the page reloads itself). A browser may give the key
        as the password of HTTP Basic; the key needs the scope ``dashboard:read`` and every stream."""
        keys.check(request, "dashboard:read", all_streams=True, challenge='Basic realm="streamsight", charset="UTF-8"')
        try:
            page = await asyncio.to_thread(settings.dashboard_file.read_bytes)
        except FileNotFoundError:
            raise HTTPException(503, "the dashboard has not been built yet: run `streamsight dashboard` (or "
                                "`streamsight serve --dashboard`)",
                                headers={"Retry-After": str(round(settings.dashboard.refresh_s))}) from None
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry).decode("utf-8"), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        """FastAPI's document, with 400 where it says 422 (this app answers 400 for a bad parameter), and
        each stream's events path with its contract's schema as the body."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for path in doc["paths"].values():
                for operation in path.values():
                    invalid = operation["responses"].pop("422", None)
                    if invalid is not None:
                        operation["responses"].setdefault("400", {"description": "Invalid parameter", "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
            generic = doc["paths"].get(http_api.EVENTS_PATH, {}).get("post")
            for name, contract in sorted(contracts.items()) if generic else ():
                stream_path = http_api.EVENTS_PATH.replace("{stream}", name)
                doc["paths"][stream_path] = {"post": http_api.stream_operation(generic, contract)}
            generic = doc["paths"].get(model_api.PREDICT_PATH, {}).get("post")
            for contract in sorted(contracts.values(), key=lambda c: c.name) if generic else ():
                if contract.model is not None:
                    model_path = model_api.PREDICT_PATH.replace("{name}", contract.model.name)
                    doc["paths"][model_path] = {"post": model_api.model_operation(generic, contract)}
            for unused in ("HTTPValidationError", "ValidationError"):
                doc.get("components", {}).get("schemas", {}).pop(unused, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _json_logging(level: str) -> None:
    from pythonjsonlogger.json import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                       rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def serve(settings: Settings, contracts: dict[str, Contract], servers: str, *, host: str, port: int,
          announce: Callable[[str], None], dashboard: list[str] | None = None) -> None:
    """Bind ``host:port`` (0: a free port), call ``announce`` with the base URL, serve until SIGTERM
    (with the dashboard builder ``dashboard``, a command, alongside)."""
    import uvicorn

    if settings.api.auth == "keys":
        keys = load_keys(settings)
        if not keys:
            raise ConfigError("STREAMSIGHT_API__KEYS (api.keys): no API keys; make one with `streamsight api-key "
                              f"create NAME` (it goes to {settings.api_keys_file}) or set api.auth: none")
        ring = KeyRing(keys, settings.api.rate_limit)
    else:
        ring = KeyRing([], settings.api.rate_limit, enabled=False)
    _json_logging(settings.log_level)
    if not ring.enabled:
        log.warning("api.auth is none: every client may use the API")
    sock, url = listening_socket(host, port, "STREAMSIGHT_API__PORT (api.port)")
    builder = DashboardBuilder(dashboard) if dashboard else None
    if builder is not None:
        builder.start()  # before the app's threads exist (a fork with threads may deadlock in preexec_fn)
    app = create_app(settings, contracts, servers, ring, builder)
    announce(url)
    config = uvicorn.Config(app, log_config=None, access_log=False, server_header=False,
                            timeout_graceful_shutdown=max(5, int(settings.api.publish_timeout_s) + 2))
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if builder is not None:
            builder.stop()


__all__ = ["ApiMetrics", "DashboardBuilder", "KeyRing", "create_app", "create_key", "digest", "load_keys", "revoke_key", "serve"]
