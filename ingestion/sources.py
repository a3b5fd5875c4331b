"""Producer sources: each yields :class:`Event` objects for one stream contract.

* :func:`file_source` — JSON Lines, CloudTrail-style ``{"Records": [...]}`` JSON, or CSV (values
  coerced to the contract's field types). A line that is not JSON is passed on as raw bytes, so the
  producer can dead-letter it with a reason instead of losing it.
* :func:`ai4i_source` — replays the AI4I 2020 predictive-maintenance CSV as machine telemetry.
* :func:`synthetic_source` — realistic telemetry for many machines (the AI4I failure physics), or,
  for any other contract, schema-driven random records; optional injected faults.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from streamsight.contracts import Contract, interval_seconds
from streamsight.errors import ConfigError

AI4I_START = datetime(2020, 1, 1, tzinfo=timezone.utc)


@dataclass
class Event:
    """One message to send. ``payload`` for a record, ``raw`` for bytes that are not one."""

    payload: dict[str, Any] | None = None
    raw: bytes | None = None
    fault: str | None = None  # which injected fault this is, for the producer's summary


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
    types = {f.name: f.json_type for f in contract.fields}
    out: dict[str, Any] = {}
    for name, value in row.items():
        if value is None or value == "":
            continue
        kind = types.get(name)
        try:
            if kind == "integer":
                out[name] = int(float(value)) if float(value).is_integer() else value
            elif kind == "number":
                out[name] = float(value)
            elif kind == "boolean":
                out[name] = value.strip().lower() in ("1", "true", "yes")
            else:
                out[name] = value
        except ValueError:
            out[name] = value  # left as text: the validator reports TYPE_MISMATCH
    return out


def file_source(contract: Contract, path: Path) -> Iterator[Event]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--source file: {path} does not exist")
    paths = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        if p.suffix.lower() == ".csv":
            with p.open(encoding="utf-8-sig", newline="") as fh:
                for row in csv.DictReader(fh):
                    yield Event(payload=_coerce(contract, row))
            continue
        text = p.read_text(encoding="utf-8-sig")
        stripped = text.lstrip()
        if stripped.startswith("{") and '"Records"' in stripped[:200]:
            try:
                records = json.loads(text)["Records"]
            except (json.JSONDecodeError, KeyError, TypeError):
                records = None
            if isinstance(records, list):
                for rec in records:
                    yield Event(payload=rec) if isinstance(rec, dict) else Event(raw=json.dumps(rec).encode())
                continue
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                yield Event(raw=line.encode())
                continue
            yield Event(payload=obj) if isinstance(obj, dict) else Event(raw=line.encode())


def ai4i_source(path: Path, *, start: datetime = AI4I_START, step_seconds: float = 60.0,
                skip: int = 0, limit: int | None = None) -> Iterator[Event]:
    """AI4I 2020 rows as telemetry: event time = ``start + (UDI - 1) * step``; label and modes kept."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--source ai4i: dataset {path} not found (STREAMSIGHT_AI4I_CSV)")
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


@dataclass
class _Machine:
    machine_id: str
    type: str
    air_k: float
    wear: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


_OSF_LIMIT = {"L": 11000, "M": 12000, "H": 13000}
_WEAR_ADD = {"L": 2, "M": 3, "H": 5}


def _telemetry_record(m: _Machine, rng: random.Random, ts: datetime, seq: int | str) -> dict[str, Any]:
    """One reading following the AI4I generation rules (Matzka 2020)."""
    m.air_k += rng.gauss(0, 0.2) + (300.0 - m.air_k) * 0.01
    process_k = m.air_k + 10 + rng.gauss(0, 1.0)
    rpm = max(1100.0, rng.gauss(1540, 180))
    torque = max(3.0, rng.gauss(40, 10))
    m.wear += _WEAR_ADD[m.type]
    power_w = torque * rpm * 2 * math.pi / 60
    twf = int(200 <= m.wear <= 240 and rng.random() < 0.02)
    hdf = int(process_k - m.air_k < 8.6 and rpm < 1380)
    pwf = int(power_w < 3500 or power_w > 9000)
    osf = int(m.wear * torque > _OSF_LIMIT[m.type])
    rnf = int(rng.random() < 0.001)
    failure = int(twf or hdf or pwf or osf or rnf)
    record = {
        "event_id": f"{m.machine_id}-{seq}",
        "machine_id": m.machine_id,
        "event_time": _iso(ts),
        "type": m.type,
        "air_temperature_k": round(m.air_k, 1),
        "process_temperature_k": round(process_k, 1),
        "rotational_speed_rpm": float(round(rpm)),
        "torque_nm": round(torque, 1),
        "tool_wear_min": m.wear,
        "machine_failure": failure,
        "twf": twf, "hdf": hdf, "pwf": pwf, "osf": osf, "rnf": rnf,
        "source": "synthetic",
    }
    if failure or m.wear > 250:
        m.wear = 0  # the tool is replaced after a failure or at end of life
    return record


def _random_record(contract: Contract, rng: random.Random, ts: datetime, seq: int | str) -> dict[str, Any]:
    """A schema-valid random record for a contract the telemetry generator does not know."""
    out: dict[str, Any] = {}
    for f in contract.fields:
        if f.name == contract.event_time.field:
            fmt = contract.event_time.format
            out[f.name] = (int(ts.timestamp() * 1000) if fmt == "epoch_millis"
                           else ts.timestamp() if fmt == "epoch_seconds" else _iso(ts))
        elif f.enum:
            out[f.name] = rng.choice(f.enum)
        elif f.json_type in ("number", "integer"):
            lo = f.minimum if f.minimum is not None else 0
            hi = f.maximum if f.maximum is not None else lo + 1000
            value = rng.uniform(lo, hi)
            out[f.name] = int(value) if f.json_type == "integer" else round(value, 3)
        elif f.json_type == "boolean":
            out[f.name] = rng.random() < 0.5
        elif f.json_type == "string":
            out[f.name] = f"{f.name}-{seq}" if f.name in contract.dedup_key else f"{f.name}-{rng.randint(1, 50)}"
        elif f.json_type == "object":
            out[f.name] = {"seq": seq}
        else:
            out[f.name] = [seq]
    return out


_TELEMETRY_FIELDS = {"event_id", "machine_id", "event_time", "type", "air_temperature_k",
                     "process_temperature_k", "rotational_speed_rpm", "torque_nm", "tool_wear_min"}


def synthetic_source(contract: Contract, *, machines: int = 200, seed: int = 7,
                     faults: FaultSpec | None = None, start: datetime | None = None,
                     interval_ms: int = 1000, realtime: bool = False) -> Iterator[Event]:
    """Endless synthetic events; the caller bounds it with ``--count`` or ``--duration``.

    Event time advances ``interval_ms`` per machine round (or follows the wall clock when
    ``realtime``). Faults: ``malformed`` (truncated JSON), ``schema`` (a contract violation),
    ``duplicates`` (an earlier event re-sent), ``late`` (event time ``late_by`` in the past).
    Event ids carry the seed (``<machine>-<seed>-<n>``), so runs with different seeds never collide
    in de-duplication.
    """
    rng = random.Random(seed)
    faults = faults or FaultSpec()
    telemetry = {f.name for f in contract.fields} >= _TELEMETRY_FIELDS
    fleet = [_Machine(f"SYN-{i:05d}", rng.choices("LMH", weights=(5, 3, 2))[0], rng.gauss(300, 1.5),
                      wear=rng.randint(0, 200)) for i in range(machines)]
    clock = start or datetime.now(timezone.utc).replace(microsecond=0)
    recent: list[dict[str, Any]] = []
    late_by = timedelta(seconds=interval_seconds(faults.late_by))
    seq = 0
    while True:
        ts = datetime.now(timezone.utc) if realtime else clock + timedelta(milliseconds=interval_ms * (seq // machines))
        roll = rng.random()
        if recent and roll < faults.duplicates:
            yield Event(payload=dict(rng.choice(recent)), fault="duplicate")
            continue
        roll -= faults.duplicates
        m = fleet[seq % machines]
        seq += 1
        ident = f"{seed}-{seq}"
        record = (_telemetry_record(m, rng, ts, ident) if telemetry else _random_record(contract, rng, ts, ident))
        if roll < faults.malformed:
            text = json.dumps(record)
            yield Event(raw=text[: rng.randint(1, len(text) - 2)].encode(), fault="malformed")
            continue
        roll -= faults.malformed
        if roll < faults.schema:
            yield Event(payload=_break(contract, record, rng), fault="schema")
            continue
        roll -= faults.schema
        if roll < faults.late:
            record[contract.event_time.field] = _iso(ts - late_by) if isinstance(
                record[contract.event_time.field], str) else record[contract.event_time.field]
            fault = "late"
        else:
            fault = None
        recent.append(record)
        if len(recent) > 1000:
            recent.pop(0)
        yield Event(payload=record, fault=fault)


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
        broken[f.name] = (f.maximum + 1000) if f.maximum is not None else (f.minimum - 1000)
    return broken
