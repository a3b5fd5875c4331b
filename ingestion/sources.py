"""Producer sources: each yields :class:`Event` objects (one record each) or, where records come
many at a time, :class:`~ingestion.columnar.EventBatch` objects, for one stream contract.

* :func:`file_source` — JSON Lines (each line's bytes, as they are: the producer's validator
  decides), CloudTrail-style ``{"Records": [...]}`` JSON, or CSV (values coerced to the contract's
  field types).
* :func:`ai4i_source` — replays the AI4I 2020 predictive-maintenance CSV as machine telemetry.
* :func:`iris_source` — Fisher's iris measurements, one event per flower, in a fixed shuffled order.
* :func:`synthetic_source` — realistic telemetry for many machines (the AI4I failure physics),
  vibration sequences of degrading pump and fan bearings, or, for any other contract,
  schema-driven random records; optional injected faults; in batches.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingestion.columnar import EventBatch, rows_as_dicts
from streamsight.contracts import Contract, interval_seconds
from streamsight.errors import ConfigError

AI4I_START = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass
class Event:
    """One record to send: ``payload`` (an object) or ``raw`` (its bytes, e.g. a line of a file, which
    the producer's validator parses); ``rejection`` when the source already knows it is not one."""

    payload: dict[str, Any] | None = None
    raw: bytes | None = None
    fault: str | None = None  # which injected fault this is, for the producer's summary
    rejection: Any = None  # a streamsight.validation.Rejection


@dataclass
class FaultSpec:
    """Shares of injected faults (0..1 each) for the synthetic source."""

    malformed: float = 0.0
    schema: float = 0.0
    duplicates: float = 0.0
    late: float = 0.0
    late_by: str = "5 minutes"

    @classmethod
    def parse(cls, text: str | None) -> FaultSpec:
        """``"malformed=0.01,schema=0.02,duplicates=0.03,late=0.02"`` -> FaultSpec."""
        spec = cls()
        if not text:
            return spec
        for part in text.split(","):
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in ("malformed", "schema", "duplicates", "late", "late_by"):
                raise ConfigError(f"--faults: unknown fault {name!r} (malformed, schema, duplicates, late, late_by)")
            if name == "late_by":
                interval_seconds(value)
                spec.late_by = value.strip()
                continue
            try:
                share = float(value)
            except ValueError:
                raise ConfigError(f"--faults: {name}={value!r} is not a number") from None
            if not 0 <= share <= 1:
                raise ConfigError(f"--faults: {name}={share} must be between 0 and 1")
            setattr(spec, name, share)
        return spec


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _coerce(contract: Contract, row: dict[str, str]) -> dict[str, Any]:
    """A CSV row as a record: empty cells are absent, cells of number, integer and boolean fields
    become those types where they read as such (else they stay text, and the validator says so)."""
    types = {f.name: f.json_type for f in contract.fields}
    out: dict[str, Any] = {}
    for name, value in row.items():
        if value is None or value == "":
            continue
        kind = types.get(name)
        if kind == "integer":
            try:
                out[name] = int(value)
                continue
            except ValueError:
                pass
        if kind in ("integer", "number"):
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                out[name] = int(number) if kind == "integer" and number.is_integer() else number
                continue
        if kind == "boolean" and value.strip().lower() in ("true", "false"):
            out[name] = value.strip().lower() == "true"
            continue
        out[name] = value
    return out


CLOUDTRAIL_PROBE = 4096  # bytes read to tell a CloudTrail delivery file ({"Records": [...]}) from JSON Lines


def _lines(fh: Any) -> Iterator[bytes]:
    """A binary file's lines without their line ends (a UTF-8 byte order mark at the start dropped)."""
    first = True
    for line in fh:
        if first and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        first = False
        yield line.rstrip(b"\r\n")


def _csv_rows(contract: Contract, path: Path) -> Iterator[Event]:
    """A CSV file's rows; a row with more or fewer cells than the header is rejected
    (``MALFORMED_RECORD``), text that is not UTF-8 is kept as it was for the validator to reject."""
    from streamsight.validation import Rejection

    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        for row in reader:
            if not row:
                yield Event(raw=b"")  # a blank line: counted, not sent
            elif len(row) != len(header):
                raw = ",".join(row).encode("utf-8", "surrogateescape")
                yield Event(raw=raw, rejection=Rejection(
                    "MALFORMED_RECORD", f"CSV row {reader.line_num} has {len(row)} cells, the header {len(header)}"))
            else:
                yield Event(payload=_coerce(contract, dict(zip(header, row))))


def file_source(contract: Contract, path: Path) -> Iterator[Event]:
    """Every record of a file (or of every file of a directory, by name): JSON Lines (each line's
    bytes, checked by the producer), CSV, or a CloudTrail delivery file (``{"Records": [...]}``)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--source file: {path} does not exist")
    paths = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        if p.suffix.lower() == ".csv":
            yield from _csv_rows(contract, p)
            continue
        with p.open("rb") as fh:
            head = fh.read(CLOUDTRAIL_PROBE).lstrip(b"\xef\xbb\xbf \t\r\n")
        if head.startswith(b"{") and b'"Records"' in head:
            records = _cloudtrail_records(p)
            if records is not None:
                for rec in records:
                    yield Event(payload=rec) if isinstance(rec, dict) else Event(raw=json.dumps(rec).encode())
                continue
        with p.open("rb") as fh:
            for line in _lines(fh):
                yield Event(raw=line)


def _cloudtrail_records(path: Path) -> list[Any] | None:
    """The ``Records`` of a CloudTrail delivery file, or None if it is not one (read as lines then)."""
    try:
        doc = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (ValueError, RecursionError):  # not one JSON document, or not UTF-8
        return None
    records = doc.get("Records") if isinstance(doc, dict) else None
    return records if isinstance(records, list) else None


def ai4i_source(path: Path, *, start: datetime = AI4I_START, step_seconds: float = 60.0,
                skip: int = 0, limit: int | None = None) -> Iterator[Event]:
    """AI4I 2020 rows as telemetry: event time = ``start + (UDI - 1) * step``; label and modes kept."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--source ai4i: dataset {path} not found (give its path with --path)")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if i < skip:
                continue
            if limit is not None and i >= skip + limit:
                return
            udi = int(row["UDI"])
            yield Event(payload={
                "event_id": f"ai4i-{udi}",
                "machine_id": row["Product ID"],
                "event_time": _iso(start + timedelta(seconds=(udi - 1) * step_seconds)),
                "type": row["Type"],
                "air_temperature_k": float(row["Air temperature [K]"]),
                "process_temperature_k": float(row["Process temperature [K]"]),
                "rotational_speed_rpm": float(row["Rotational speed [rpm]"]),
                "torque_nm": float(row["Torque [Nm]"]),
                "tool_wear_min": int(row["Tool wear [min]"]),
                "machine_failure": int(row["Machine failure"]),
                "twf": int(row["TWF"]), "hdf": int(row["HDF"]), "pwf": int(row["PWF"]),
                "osf": int(row["OSF"]), "rnf": int(row["RNF"]),
                "source": "ai4i",
            })


IRIS_START = datetime(2024, 5, 1, tzinfo=UTC)


def iris_source(path: Path, *, start: datetime = IRIS_START, step_seconds: float = 60.0,
                seed: int = 1936) -> Iterator[Event]:
    """Fisher's iris CSV (``sepal_length, ..., species``) as measurement events. The file is sorted
    by species, so its rows are sent in an order shuffled with ``seed`` (the same every time), each
    ``step_seconds`` after the one before: a split by event time then sees every species.
    ``specimen_id`` is ``iris-<row number in the file>``."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--source iris: dataset {path} not found (give its path with --path)")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    for i, row_index in enumerate(order):
        row = rows[row_index]
        yield Event(payload={
            "specimen_id": f"iris-{row_index + 1:03d}",
            "measured_at": _iso(start + timedelta(seconds=i * step_seconds)),
            "sepal_length_cm": float(row["sepal_length"]), "sepal_width_cm": float(row["sepal_width"]),
            "petal_length_cm": float(row["petal_length"]), "petal_width_cm": float(row["petal_width"]),
            "species": row["species"],
        })


_TELEMETRY_FIELDS = ("event_id", "machine_id", "event_time", "type", "air_temperature_k",
                     "process_temperature_k", "rotational_speed_rpm", "torque_nm", "tool_wear_min")
_OSF_LIMIT = {"L": 11000, "M": 12000, "H": 13000}
_WEAR_ADD = {"L": 2, "M": 3, "H": 5}
BATCH_EVENTS = 10_000  # about this many events per batch the synthetic source yields (Arrow
# compute has a fixed cost per call: batches of 1,000 spent most of their time in it)


class _Fleet:
    """Machines following the AI4I generation rules (Matzka 2020), one reading each per round."""

    def __init__(self, machines: int, rng: np.random.Generator) -> None:
        self.ids = pa.array([f"SYN-{i:05d}" for i in range(machines)], pa.string())
        self.types = rng.choice(np.array(["L", "M", "H"]), size=machines, p=[0.5, 0.3, 0.2])
        self.air_k = rng.normal(300, 1.5, machines)
        self.wear = rng.integers(0, 201, machines)
        self.wear_add = np.vectorize(_WEAR_ADD.get)(self.types)
        self.osf_limit = np.vectorize(_OSF_LIMIT.get)(self.types)
        self.type_col = pa.array(self.types.tolist(), pa.string())

    def round(self, rng: np.random.Generator, seq_ids: pa.Array, event_time: pa.Array) -> dict[str, Any]:
        n = len(self.air_k)
        self.air_k = self.air_k + rng.normal(0, 0.2, n) + (300.0 - self.air_k) * 0.01
        process_k = self.air_k + 10 + rng.normal(0, 1.0, n)
        rpm = np.maximum(1100.0, rng.normal(1540, 180, n))
        torque = np.maximum(3.0, rng.normal(40, 10, n))
        self.wear = self.wear + self.wear_add
        power_w = torque * rpm * 2 * math.pi / 60
        twf = (self.wear >= 200) & (self.wear <= 240) & (rng.random(n) < 0.02)
        hdf = (process_k - self.air_k < 8.6) & (rpm < 1380)
        pwf = (power_w < 3500) | (power_w > 9000)
        osf = self.wear * torque > self.osf_limit
        rnf = rng.random(n) < 0.001
        failure = twf | hdf | pwf | osf | rnf
        columns = {
            "event_id": pc.binary_join_element_wise(self.ids, seq_ids, "-"),
            "machine_id": self.ids,
            "event_time": event_time,
            "type": self.type_col,
            "air_temperature_k": np.round(self.air_k, 1),
            "process_temperature_k": np.round(process_k, 1),
            "rotational_speed_rpm": np.round(rpm),
            "torque_nm": np.round(torque, 1),
            "tool_wear_min": self.wear.copy(),
            "machine_failure": failure.astype(np.int64),
            "twf": twf.astype(np.int64), "hdf": hdf.astype(np.int64), "pwf": pwf.astype(np.int64),
            "osf": osf.astype(np.int64), "rnf": rnf.astype(np.int64),
            "source": pa.array(["synthetic"] * n, pa.string()),
        }
        self.wear = np.where(failure | (self.wear > 250), 0, self.wear)  # tool replaced after a failure or at end of life
        return columns


_SEQUENCE_FIELDS = ("sequence_id", "sensor_id", "asset", "model", "failure")
_ASSETS = {"pump": ("pump_vibration", 2.8), "fan": ("fan_vibration", 1.4)}  # model, healthy mm/s


class _Sensors:
    """Vibration sensors on pumps and fans, one sequence of ``samples`` RMS velocity readings (mm/s)
    each per round. A bearing degrades at its own pace; wear raises the level and the rise within a
    sequence and adds impulses, and past 0.85 it fails (``failure`` 1, 2 % of labels flipped). A
    failed bearing is replaced, on average after a few rounds."""

    def __init__(self, sensors: int, samples: int, rng: np.random.Generator) -> None:
        self.ids = pa.array([f"VS-{i:05d}" for i in range(sensors)], pa.string())
        kinds = rng.choice(np.array(list(_ASSETS)), size=sensors, p=[0.6, 0.4])
        self.asset = pa.array(kinds.tolist(), pa.string())
        self.model = pa.array([_ASSETS[k][0] for k in kinds], pa.string())
        self.base = np.array([_ASSETS[k][1] for k in kinds]) * rng.lognormal(0, 0.15, sensors)
        self.wear = rng.uniform(0, 0.9, sensors)
        self.pace = rng.uniform(0.002, 0.02, sensors)
        self.samples = samples

    def round(self, rng: np.random.Generator, seq_ids: pa.Array, event_time: pa.Array) -> dict[str, Any]:
        n, k = len(self.base), self.samples
        self.wear = self.wear + self.pace * rng.uniform(0.5, 1.5, n)
        rise = np.linspace(0.0, 1.0, k)[None, :] * (self.base * 1.5 * self.wear**2)[:, None]
        level = (self.base * (1 + 2.5 * self.wear**3))[:, None]
        impulses = (rng.random((n, k)) < 0.3 * self.wear[:, None] ** 4) * (self.base * 4)[:, None]
        readings = np.clip(level + rise + impulses + rng.normal(0, 1, (n, k)) * (0.15 * self.base)[:, None], 0.01, 100)
        failing = self.wear > 0.85
        failure = failing ^ (rng.random(n) < 0.02)
        columns: dict[str, Any] = {
            "sequence_id": pc.binary_join_element_wise(self.ids, seq_ids, "-"),
            "sensor_id": self.ids, "ts": event_time, "asset": self.asset, "model": self.model,
            **{f"v{i + 1}": np.round(readings[:, i], 3) for i in range(k)},
            "failure": failure.astype(np.int64),
        }
        self.wear = np.where(failing & (rng.random(n) < 0.3), 0.0, self.wear)  # the bearing is replaced
        return columns


_LOG_FIELDS = ("@ptr", "@timestamp", "@message", "@logStream", "@log", "anomaly")
_ACCOUNT = "123456789012"
# log group -> (stream prefix, normal message templates); {r} a request id, {n} a number, {ms} a duration
_SERVICES = {
    "/ecs/checkout-api": ("checkout-api/app", [
        "INFO [http-nio-8080-exec-{n}] c.s.checkout.OrderController - POST /orders 201 {ms}ms request_id={r}",
        "INFO [http-nio-8080-exec-{n}] c.s.checkout.CartController - GET /carts/{n} 200 {ms}ms request_id={r}",
        "DEBUG [http-nio-8080-exec-{n}] c.s.checkout.PriceService - priced cart {n} with {n} items in {ms}ms"]),
    "/ecs/payments-worker": ("payments-worker/worker", [
        "INFO payments.worker: captured payment {r} amount={n}.00 EUR in {ms}ms",
        "INFO payments.worker: settlement batch {n} queued ({n} payments)",
        "DEBUG payments.ledger: balance of merchant {n} reconciled"]),
    "/aws/lambda/notify-customer": ("2026/12/01/[$LATEST]", [
        "START RequestId: {r} Version: $LATEST",
        "INFO sent order confirmation {n} to customer {n} via email",
        "END RequestId: {r}",
        "REPORT RequestId: {r}\tDuration: {ms}.{n} ms\tBilled Duration: {ms} ms\tMemory Size: 256 MB"]),
}
_ERRORS = [
    "ERROR [http-nio-8080-exec-{n}] c.s.checkout.OrderController - POST /orders 503 {ms}ms: inventory unavailable",
    "ERROR payments.worker: capture {r} failed: upstream timeout after {ms}ms",
    "ERROR HikariPool-1 - Connection is not available, request timed out after {ms}ms.",
    "FATAL payments.batch: settlement batch {n} aborted: lock wait timeout exceeded",
]
_FRAMES = ["com.shop.checkout.OrderService.place(OrderService.java:{n})",
           "com.shop.checkout.OrderController.create(OrderController.java:{n})",
           "org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:{n})",
           "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:{n})",
           "java.base/java.lang.Thread.run(Thread.java:{n})"]


class _AppLogs:
    """Instances of three services writing CloudWatch-style log events, one per round each. Normal
    lines are requests and jobs (a few are long debug dumps); anomalies (``anomaly`` 1) are stack
    traces, error lines of a few flaky instances, and failures of the payments worker's nightly
    batch window (01:00-03:59 UTC). 0.5 % of labels are flipped."""

    def __init__(self, streams: int, rng: np.random.Generator) -> None:
        groups = list(_SERVICES)
        self.group = [groups[i % len(groups)] for i in range(streams)]
        self.stream = pa.array([f"{_SERVICES[g][0]}/{rng.integers(16**12):012x}" for g in self.group], pa.string())
        self.log = pa.array([f"{_ACCOUNT}:{g}" for g in self.group], pa.string())
        self.flaky = rng.random(streams) < 0.1
        self.batch = np.array([g == "/ecs/payments-worker" for g in self.group])

    @staticmethod
    def _fill(template: str, rng: np.random.Generator) -> str:
        out = template
        while "{" in out:
            out = (out.replace("{r}", f"{rng.integers(16**8):08x}-{rng.integers(16**4):04x}", 1)
                   .replace("{n}", str(int(rng.integers(1, 5000))), 1).replace("{ms}", str(int(rng.gamma(2, 40))), 1))
        return out

    def round(self, rng: np.random.Generator, seq_ids: pa.Array, event_time: pa.Array) -> dict[str, Any]:
        n = len(self.group)
        hour = (np.asarray(event_time.to_numpy(zero_copy_only=False), dtype=np.int64) // 3_600_000) % 24
        night = (hour >= 1) & (hour <= 3)
        p = np.where(self.flaky, 0.08, 0.004) + np.where(self.batch & night, 0.15, 0.0)
        anomalous = rng.random(n) < p
        messages = []
        for i in range(n):
            if not anomalous[i]:
                template = rng.choice(_SERVICES[self.group[i]][1])
                message = self._fill(str(template), rng)
                if rng.random() < 0.01:  # a long, normal debug dump
                    message += " payload=" + json.dumps({"items": [{"sku": int(rng.integers(1_000_000)), "qty": 1}
                                                                  for _ in range(int(rng.integers(5, 40)))]})
            elif rng.random() < 0.4:  # a stack trace
                frames = rng.choice(_FRAMES, size=int(rng.integers(5, 40)))
                message = (self._fill(str(rng.choice(_ERRORS)), rng) + "\njava.lang.IllegalStateException: \"order\", "
                           "état inattendu\n" + "\n".join("\tat " + self._fill(str(f), rng) for f in frames))
            else:
                message = self._fill(str(rng.choice(_ERRORS)), rng)
            messages.append(message)
        label = anomalous ^ (rng.random(n) < 0.005)
        return {
            "@ptr": pc.binary_join_element_wise(pa.array(["ptr"] * n), seq_ids, "-"),
            "@timestamp": event_time, "@message": pa.array(messages, pa.string()),
            "@logStream": self.stream, "@log": self.log, "anomaly": label.astype(np.int64),
        }


def _sequence_samples(names: set[str]) -> int:
    """How many ``v<i>`` readings a sensor-sequence contract declares (0: not such a contract)."""
    if not names >= set(_SEQUENCE_FIELDS):
        return 0
    k = 0
    while f"v{k + 1}" in names:
        k += 1
    return k


def _event_time(contract: Contract, ts: datetime) -> Any:
    fmt = contract.event_time.format
    return int(ts.timestamp() * 1000) if fmt == "epoch_millis" else ts.timestamp() if fmt == "epoch_seconds" else _iso(ts)


def _random_columns(contract: Contract, rng: np.random.Generator, n: int, seq_ids: pa.Array,
                    event_time: pa.Array) -> dict[str, Any]:
    """Schema-valid random columns for a contract the telemetry generator does not know."""
    out: dict[str, Any] = {}
    for f in contract.fields:
        if f.name == contract.event_time.field:
            out[f.name] = event_time
        elif f.enum:
            out[f.name] = pa.array([f.enum[i] for i in rng.integers(0, len(f.enum), n)])
        elif f.json_type in ("number", "integer"):
            lo = f.minimum if f.minimum is not None else 0
            hi = f.maximum if f.maximum is not None else lo + 1000
            values = rng.uniform(lo, hi, n)
            out[f.name] = np.trunc(values).astype(np.int64) if f.json_type == "integer" else np.round(values, 3)
        elif f.json_type == "boolean":
            out[f.name] = rng.random(n) < 0.5
        elif f.json_type in ("object", "array"):  # Arrow struct/list: such records take the producer's row path
            seqs = seq_ids.to_pylist()
            out[f.name] = pa.array([{"seq": s} for s in seqs] if f.json_type == "object" else [[s] for s in seqs])
        elif f.name in contract.dedup_key:
            out[f.name] = pc.binary_join_element_wise(f.name, seq_ids, "-")
        else:
            out[f.name] = pc.binary_join_element_wise(f.name, pa.array(rng.integers(1, 51, n)).cast(pa.string()), "-")
    return out


def synthetic_source(contract: Contract, *, machines: int = 200, seed: int = 7,
                     faults: FaultSpec | None = None, start: datetime | None = None,
                     interval_ms: int = 1000, realtime: bool = False) -> Iterator[EventBatch]:
    """Endless synthetic events, as :class:`~ingestion.columnar.EventBatch` objects of about
    ``BATCH_EVENTS`` events; the caller bounds it with ``--count`` or ``--duration``.

    Telemetry contracts (the ``machine_telemetry`` fields) get the AI4I physics for ``machines``
    machines, sensor-sequence contracts (``sensor_sequences``: its ids, ``asset``, ``model``,
    ``failure`` and readings ``v1``..``vN``) degrading bearings for ``machines`` sensors,
    application-log contracts (``app_logs``: the CloudWatch fields and ``anomaly``) services'
    log lines and anomalies from ``machines`` log streams; other
    contracts of string, number, integer and boolean fields get schema-driven random records
    (object and array fields too, though records with them take the producer's slower row path).
    Each round every machine emits one reading, and event time advances ``interval_ms``
    per round (or follows the wall clock when ``realtime``).  Faults, as shares: ``duplicates``
    (an earlier record of an earlier round re-sent, about that share of all events), and of the
    round's own records ``malformed`` (truncated JSON), ``schema`` (a contract violation) and
    ``late`` (event time ``late_by`` in the past).  Event ids carry the seed
    (``<machine>-<seed>-<n>``), so runs with different seeds never collide in de-duplication.
    """
    if realtime and start is not None:
        raise ValueError("synthetic_source: start and realtime exclude each other (realtime stamps events "
                         "with the wall clock)")
    rng = np.random.default_rng(seed)
    row_rng = random.Random(seed)  # for the per-record faults
    faults = faults or FaultSpec()
    names = {f.name for f in contract.fields}
    fleet: _Fleet | _Sensors | _AppLogs | None = None
    if names >= set(_TELEMETRY_FIELDS):
        fleet = _Fleet(machines, rng)
    elif samples := _sequence_samples(names):
        fleet = _Sensors(machines, samples, rng)
    elif names >= set(_LOG_FIELDS) and contract.event_time.format == "epoch_millis":
        fleet = _AppLogs(machines, rng)
    per_round = machines
    rounds_per_batch = max(1, BATCH_EVENTS // per_round)
    clock = start or datetime.now(UTC).replace(microsecond=0)
    late_by = timedelta(seconds=interval_seconds(faults.late_by))
    dup_rate = faults.duplicates / (1 - faults.duplicates) if faults.duplicates < 1 else 0.0
    recent: pa.Table | None = None  # the last records of earlier rounds, for duplicates
    seq = 0
    n_round = 0
    while True:
        tables: list[pa.Table] = []
        fault_cols: list[list[str | None]] = []
        extra: list[Event] = []
        for _ in range(rounds_per_batch):
            ts = datetime.now(UTC) if realtime else clock + timedelta(milliseconds=interval_ms * n_round)
            n_round += 1
            seq_ids = pa.array(np.arange(seq + 1, seq + per_round + 1)).cast(pa.string())
            seq_ids = pc.binary_join_element_wise(str(seed), seq_ids, "-")
            seq += per_round
            roll = rng.random(per_round)
            late = (roll >= faults.malformed + faults.schema) & (roll < faults.malformed + faults.schema + faults.late)
            stamp = _event_time(contract, ts)
            times = (pa.array(np.where(late, _event_time(contract, ts - late_by), stamp)) if late.any()
                     else pa.array([stamp] * per_round))
            columns = (fleet.round(rng, seq_ids, times) if fleet is not None
                       else _random_columns(contract, rng, per_round, seq_ids, times))
            table = pa.table(columns)
            broken = roll < faults.malformed + faults.schema
            if broken.any():
                for record, r in zip(rows_as_dicts(table.filter(pa.array(broken))), roll[broken]):
                    if r < faults.malformed:
                        text = json.dumps(record)
                        extra.append(Event(raw=text[: row_rng.randint(1, len(text) - 2)].encode(), fault="malformed"))
                    else:
                        extra.append(Event(payload=_break(contract, record, row_rng), fault="schema"))
                table = table.filter(pa.array(~broken))
                late = late[~broken]
            round_faults: list[str | None] = ["late" if x else None for x in late]
            dups = rng.binomial(per_round, dup_rate) if recent is not None and dup_rate else 0
            if dups:
                picked = recent.take(rng.integers(0, recent.num_rows, dups))  # type: ignore[union-attr]
                tables += [table, picked]
                round_faults += ["duplicate"] * dups
            else:
                tables.append(table)
            fault_cols.append(round_faults)
            if dup_rate:
                recent = table if recent is None else pa.concat_tables([recent, table])
                recent = recent.slice(max(0, recent.num_rows - 1000)).combine_chunks()
        faults_array = pa.array([x for col in fault_cols for x in col], pa.string())
        yield EventBatch(pa.concat_tables(tables), faults_array, extra)


def _break(contract: Contract, record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Break one rule of the contract: drop a required field, wrong type, or out of range."""
    broken = dict(record)
    required = [f for f in contract.fields if f.required]
    f = rng.choice(required)
    how = rng.choice(("missing", "type", "range"))
    if how == "missing":
        broken.pop(f.name, None)
    elif how == "type" or (f.minimum is None and f.maximum is None and not f.enum):
        broken[f.name] = [1, 2] if f.json_type == "string" else "not-a-number"
    elif f.enum:
        broken[f.name] = "??" if f.json_type == "string" else 99
    else:
        broken[f.name] = (f.maximum + 1000) if f.maximum is not None else (f.minimum or 0) - 1000
    return broken
