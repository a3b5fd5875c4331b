"""Records both validators are held to: the producer's (streamsight/validation.py) and the stream's
(streaming_jobs/validation.py). Each case is a message value, as bytes, and the reason code it must
get (None: valid).

* :func:`telemetry_cases`: for ``conf/contracts/machine_telemetry.yaml``: 100 real AI4I readings,
  tricky valid records, and 71 bad ones;
* :func:`shapes_cases`: for :data:`SHAPES`, a contract that uses what the telemetry one does not
  (pattern, date format, exclusive bounds, booleans, objects and arrays, epoch millis).

``single_line`` cases can also travel as lines of a JSON Lines file.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AI4I_CSV = ROOT.parent / "shared" / "data" / "ai4i2020" / "ai4i2020.csv"


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    code: str | None  # the reason code both validators must give; None: valid

    @property
    def single_line(self) -> bool:
        return b"\n" not in self.raw and b"\r" not in self.raw and self.raw.strip() != b""


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def ai4i_records(n: int = 100) -> list[dict[str, Any]]:
    """The first ``n`` AI4I 2020 rows as machine_telemetry records."""
    out = []
    with AI4I_CSV.open(encoding="utf-8-sig", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if i >= n:
                break
            udi = int(row["UDI"])
            out.append({
                "event_id": f"ai4i-{udi}", "machine_id": row["Product ID"],
                "event_time": f"2020-01-{1 + udi // 1440:02d}T{udi // 60 % 24:02d}:{udi % 60:02d}:00Z",
                "type": row["Type"], "air_temperature_k": float(row["Air temperature [K]"]),
                "process_temperature_k": float(row["Process temperature [K]"]),
                "rotational_speed_rpm": float(row["Rotational speed [rpm]"]), "torque_nm": float(row["Torque [Nm]"]),
                "tool_wear_min": int(row["Tool wear [min]"]), "machine_failure": int(row["Machine failure"]),
            })
    return out


def telemetry_cases() -> list[Case]:
    good = ai4i_records(100)
    base = {**good[0], "event_id": "t-base"}
    n = [0]

    def rec(code: str | None, name: str, drop: tuple[str, ...] = (), **changes: Any) -> Case:
        n[0] += 1
        record = {k: v for k, v in {**base, "event_id": f"t-{n[0]}", **changes}.items() if k not in drop}
        return Case(name, _dumps(record), code)

    def raw(code: str | None, name: str, value: bytes) -> Case:
        return Case(name, value, code)

    body = _dumps(base)
    torque = b'"torque_nm":' + json.dumps(base["torque_nm"]).encode()
    cases = [Case(f"ai4i-{i + 1}", _dumps(r), None) for i, r in enumerate(good)]
    cases += [
        # valid, though tricky
        rec(None, "integer written 12.0", tool_wear_min=12.0),
        rec(None, "integer written 1e2", tool_wear_min=1e2),
        raw(None, "integer as an exponent literal", body.replace(b'"tool_wear_min":0', b'"tool_wear_min":1E2')),
        rec(None, "number given as an integer", torque_nm=40),
        rec(None, "optional field absent", drop=("machine_failure",)),
        rec(None, "optional field null (null counts as absent)", machine_failure=None),
        rec(None, "unknown extra fields", extra={"nested": [1, {"x": None}]}, note="ok"),
        rec(None, "unicode text", machine_id="M-ü€😀"),
        raw(None, "escaped surrogate pair", body.replace(b'"machine_id":"', b'"machine_id":"\\ud83d\\ude00')),
        raw(None, "escaped NUL in a string", body.replace(b'"machine_id":"', b'"machine_id":"\\u0000')),
        rec(None, "event time with an offset", event_time="2020-01-01T05:30:00+05:30"),
        rec(None, "event time with nanoseconds", event_time="2020-01-01T00:00:00.123456789Z"),
        rec(None, "leap day", event_time="2020-02-29T00:00:00Z"),
        raw(None, "whitespace around and inside", b" \t" + body.replace(b",", b", ") + b"\n"),
        raw(None, "duplicate key, the last one valid", body.replace(b'{"event_id"', b'{"torque_nm":-5,"event_id"', 1)),
        rec(None, "a string of exactly maxLength", event_id="e" * 64),
        rec(None, "bounds are inclusive", torque_nm=200.0, air_temperature_k=250),
        raw(None, "nested 999 levels (in an extra field)",
            body[:-1] + b',"deep":' + b"[" * 998 + b"]" * 998 + b"}"),
        # bytes, syntax and shape
        raw("NOT_UTF8", "invalid UTF-8 bytes", b"\xff\xfe" + body),
        raw("NOT_UTF8", "invalid byte inside a string", body.replace(b'"machine_id":"', b'"machine_id":"\xc3\x28')),
        raw("NOT_UTF8", "overlong UTF-8 encoding", body.replace(b'"machine_id":"', b'"machine_id":"\xc0\xaf')),
        raw("NOT_UTF8", "UTF-8 encoded surrogate", body.replace(b'"machine_id":"', b'"machine_id":"\xed\xa0\x80')),
        raw("NOT_UTF8", "Latin-1 text", body.replace(b'"machine_id":"', b'"machine_id":"caf\xe9')),
        raw("MALFORMED_JSON", "escaped lone surrogate", body.replace(b'"machine_id":"', b'"machine_id":"\\ud800')),
        raw("MALFORMED_JSON", "escaped low surrogate first", body.replace(b'"machine_id":"', b'"machine_id":"\\ude00\\ud83d')),
        raw("MALFORMED_JSON", "empty value", b""),
        raw("MALFORMED_JSON", "whitespace only", b"   "),
        raw("MALFORMED_JSON", "truncated", body[:40]),
        raw("MALFORMED_JSON", "trailing garbage", body + b" xyz"),
        raw("MALFORMED_JSON", "two objects on one line", body + body),
        raw("MALFORMED_JSON", "two objects with a comma", body + b"," + body),
        raw("MALFORMED_JSON", "an extra closing brace", body + b"}"),
        raw("MALFORMED_JSON", "closing the sentinel wrapper early", body + b'],[{}'),
        raw("MALFORMED_JSON", "nested 100,000 levels", b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        raw("MALFORMED_JSON", "nested 1,000 levels (in an extra field)",
            body[:-1] + b',"deep":' + b"[" * 999 + b"]" * 999 + b"}"),
        raw("MALFORMED_JSON", "NaN", body.replace(torque, b'"torque_nm":NaN')),
        raw("MALFORMED_JSON", "Infinity", body.replace(torque, b'"torque_nm":-Infinity')),
        raw("MALFORMED_JSON", "single quotes", body.replace(b'"', b"'")),
        raw("MALFORMED_JSON", "trailing comma", body[:-1] + b",}"),
        raw("MALFORMED_JSON", "a comment", b"/* c */" + body),
        raw("MALFORMED_JSON", "unquoted keys", body.replace(b'"event_id"', b"event_id")),
        raw("MALFORMED_JSON", "byte order mark", b"\xef\xbb\xbf" + body),
        raw("MALFORMED_JSON", "raw control character in a string", body.replace(b'"machine_id":"', b'"machine_id":"\x01')),
        raw("MALFORMED_JSON", "leading zeros", body.replace(b'"tool_wear_min":0', b'"tool_wear_min":007')),
        raw("MALFORMED_JSON", "hexadecimal number", body.replace(b'"tool_wear_min":0', b'"tool_wear_min":0x1F')),
        raw("MALFORMED_JSON", "number with a bare dot", body.replace(b'"tool_wear_min":0', b'"tool_wear_min":.5')),
        raw("NOT_AN_OBJECT", "an array", b"[" + body + b"]"),
        raw("NOT_AN_OBJECT", "a string", b'"machine"'),
        raw("NOT_AN_OBJECT", "a number", b"42"),
        raw("NOT_AN_OBJECT", "null", b"null"),
        # the schema, field by field
        rec("MISSING_FIELD", "a required field absent", drop=("torque_nm",)),
        rec("MISSING_FIELD", "a required field null", torque_nm=None),
        raw("MISSING_FIELD", "an empty object", b"{}"),
        rec("MISSING_FIELD", "missing beats a later type error", drop=("machine_id",), torque_nm="x"),
        rec("TYPE_MISMATCH", "number as a string", torque_nm="42.8"),
        rec("TYPE_MISMATCH", "number as a boolean", torque_nm=True),
        rec("TYPE_MISMATCH", "integer with a fraction", tool_wear_min=1.5),
        rec("TYPE_MISMATCH", "integer as a string", tool_wear_min="12"),
        rec("TYPE_MISMATCH", "string as a number", machine_id=123),
        rec("TYPE_MISMATCH", "string as an object", machine_id={"id": "M1"}),
        rec("TYPE_MISMATCH", "string as an array", machine_id=["M1"]),
        rec("TYPE_MISMATCH", "enum value of the wrong type", type=1),
        rec("TYPE_MISMATCH", "the first field's error wins", machine_id=5, torque_nm=-1),
        rec("OUT_OF_RANGE", "integer beyond 64 bits (its bound is checked first)", tool_wear_min=2**63),
        raw("TYPE_MISMATCH", "integer field given a 400-digit integer",
            body.replace(b'"tool_wear_min":0', b'"tool_wear_min":1' + b"0" * 400)),
        raw("TYPE_MISMATCH", "integer field given 1e400",
            body.replace(b'"tool_wear_min":0', b'"tool_wear_min":1e400')),
        rec("OUT_OF_RANGE", "below the minimum", torque_nm=-0.1),
        rec("OUT_OF_RANGE", "above the maximum", rotational_speed_rpm=99999),
        rec("OUT_OF_RANGE", "an integer above the maximum", tool_wear_min=1001),
        raw("OUT_OF_RANGE", "number field given 1e400",
            body.replace(torque, b'"torque_nm":1e400')),
        rec("BAD_LENGTH", "an earlier field's length error beats a range error", torque_nm=500, machine_id=""),
        rec("NOT_IN_ENUM", "string not in the enum", type="X"),
        rec("NOT_IN_ENUM", "integer not in the enum", machine_failure=2),
        rec("NOT_IN_ENUM", "enum is case-sensitive", type="l"),
        rec("BAD_LENGTH", "empty string", event_id=""),
        rec("BAD_LENGTH", "too long", machine_id="M" * 33),
        rec("BAD_FORMAT", "event time in words", event_time="yesterday"),
        rec("BAD_FORMAT", "event time without a time zone", event_time="2020-01-01T00:00:00"),
        rec("BAD_FORMAT", "event time with a space", event_time="2020-01-01 00:00:00Z"),
        rec("BAD_FORMAT", "event time in lower case", event_time="2020-01-01t00:00:00z"),
        rec("BAD_FORMAT", "event time offset beyond 18 hours", event_time="2020-01-01T00:00:00+19:00"),
        rec("BAD_FORMAT", "event time with ten fraction digits", event_time="2020-01-01T00:00:00.1234567891Z"),
        rec("BAD_FORMAT", "event time a leap second", event_time="2020-12-31T23:59:60Z"),
        rec("BAD_FORMAT", "event time year 0", event_time="0000-01-01T00:00:00Z"),
        rec("BAD_FORMAT", "event time with a trailing newline", event_time="2020-01-01T00:00:00Z\n"),
        rec("BAD_EVENT_TIME", "no such day", event_time="2020-02-30T00:00:00Z"),
        rec("BAD_EVENT_TIME", "no such day in a non-leap year", event_time="2021-02-29T00:00:00Z"),
        raw("NOT_IN_ENUM", "duplicate key, the last one wins",
            body.replace(f'"type":"{base["type"]}"'.encode(), f'"type":"{base["type"]}","type":"Q"'.encode(), 1)),
        raw("RECORD_TOO_LARGE", "more than max_record_bytes", body[:-1] + b',"pad":"' + b"x" * 2_000_000 + b'"}'),
    ]
    return cases


SHAPES: dict[str, Any] = {
    "name": "shapes",
    "key": "id",
    "event_time": {"field": "ts", "format": "epoch_millis"},
    "dedup_key": ["id"],
    "max_record_bytes": 4096,
    "schema": {
        "type": "object",
        "required": ["id", "ts", "ok"],
        "properties": {
            "id": {"type": "string", "pattern": "^s-[0-9]+$"},
            "ts": {"type": "integer"},
            "ok": {"type": "boolean"},
            "day": {"type": "string", "format": "date"},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "level": {"type": "number", "enum": [1.5, 2]},
            "free": {"type": "number"},
            "tags": {"type": "array"},
            "meta": {"type": "object"},
            "who.am": {"type": "object", "required": ["name"], "properties": {  # declared fields; a dot in its name
                "name": {"type": "string", "minLength": 1},
                "age": {"type": "integer", "minimum": 0},
                "score": {"type": "number", "maximum": 1},
                "role": {"type": "string", "enum": ["admin", "user"]},
                "on": {"type": "boolean"},
                "it's": {"type": "string", "format": "date"},
            }},
            "labels": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}},  # checked elements
            "counts": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        },
    },
    "partition_by": [],
}


def shapes_cases() -> list[Case]:
    base = {"id": "s-1", "ts": 1_600_000_000_000, "ok": True, "day": "2020-02-29", "ratio": 0.5, "level": 2,
            "free": -1.25, "tags": ["a", 1], "meta": {"k": [None]},
            "who.am": {"name": "ada", "age": 36, "score": 0.5, "role": "admin", "on": True, "it's": "2020-01-01",
                    "more": {"x": [1]}},
            "labels": ["a", "c"], "counts": [0, 3, 2.0]}

    def who(**changes: Any) -> dict[str, Any]:
        return {k: v for k, v in {**base["who.am"], **changes}.items() if v is not ...}

    def rec(code: str | None, name: str, drop: tuple[str, ...] = (), **changes: Any) -> Case:
        record = {k: v for k, v in {**base, **changes}.items() if k not in drop}
        return Case(name, _dumps(record), code)

    body = _dumps(base)
    return [
        rec(None, "everything set"),
        rec(None, "only the required fields", drop=("day", "ratio", "level", "free", "tags", "meta")),
        rec(None, "number enum written as an integer", level=2.0),
        rec(None, "epoch millis at the last millisecond of year 9999", ts=253_402_300_799_999),
        rec(None, "a large integer in an unbounded number", free=12345678901234567890123),
        rec("PATTERN_MISMATCH", "id not matching the pattern", id="x-1"),
        rec("TYPE_MISMATCH", "boolean as an integer", ok=1),
        rec("TYPE_MISMATCH", "boolean as a string", ok="true"),
        rec("TYPE_MISMATCH", "array given an object", tags={"a": 1}),
        rec("TYPE_MISMATCH", "object given an array", meta=[1]),
        raw_case("TYPE_MISMATCH", "unbounded number overflowing a double",
                 body.replace(b'"free":-1.25', b'"free":1' + b"0" * 400)),
        raw_case("TYPE_MISMATCH", "unbounded number 1e400", body.replace(b'"free":-1.25', b'"free":1e400')),
        rec("OUT_OF_RANGE", "exclusive minimum", ratio=0),
        rec("OUT_OF_RANGE", "exclusive maximum", ratio=1.0),
        rec("NOT_IN_ENUM", "number not in the enum", level=3),
        rec("BAD_FORMAT", "date that is a date-time", day="2020-01-01T00:00:00Z"),
        rec("BAD_FORMAT", "date with a one-digit month", day="2020-1-01"),
        rec("BAD_EVENT_TIME", "epoch millis after year 9999", ts=253_402_300_800_000),
        rec("BAD_EVENT_TIME", "epoch millis before year 1", ts=-62_135_596_800_001),
        rec("TYPE_MISMATCH", "epoch millis beyond 64 bits", ts=2**64),
        rec("MISSING_FIELD", "a required boolean absent", drop=("ok",)),
        # an object's declared fields, checked as JSON Schema checks them: its type, then its required
        # fields, then each declared field in order; a JSON null inside it is a value, not an absence
        rec(None, "an object with only its required field", **{"who.am": {"name": "b"}}),
        rec(None, "an object's integer written 36.0", **{"who.am": who(age=36.0)}),
        rec(None, "an object's undeclared field of any type", **{"who.am": who(more=None)}),
        rec("MISSING_FIELD", "an object without its required field", **{"who.am": who(name=...)}),
        rec("MISSING_FIELD", "an empty object with a required field", **{"who.am": {}}),
        rec("MISSING_FIELD", "an object's required field before its types", **{"who.am": {"age": "x"}}),
        rec("TYPE_MISMATCH", "an object's required field null", **{"who.am": who(name=None)}),
        rec("TYPE_MISMATCH", "an object's optional field null", **{"who.am": who(age=None)}),
        rec("TYPE_MISMATCH", "an object's string given a number", **{"who.am": who(name=7)}),
        rec("TYPE_MISMATCH", "an object's integer 36.5", **{"who.am": who(age=36.5)}),
        rec("TYPE_MISMATCH", "an object's boolean as a string", **{"who.am": who(on="true")}),
        rec("TYPE_MISMATCH", "an object's number given an object", **{"who.am": who(score={"v": 1})}),
        rec("TYPE_MISMATCH", "an object given a string", **{"who.am": "ada"}),
        rec("OUT_OF_RANGE", "an object's integer below its minimum", **{"who.am": who(age=-1)}),
        rec("OUT_OF_RANGE", "an object's number above its maximum", **{"who.am": who(score=1.5)}),
        rec("NOT_IN_ENUM", "an object's string not in its enum", **{"who.am": who(role="root")}),
        rec("BAD_LENGTH", "an object's string too short", **{"who.am": who(name="")}),
        rec("BAD_FORMAT", "an object's date that is not one, under a quoted name", **{"who.am": who(**{"it's": "2020-13-01"})}),
        rec("OUT_OF_RANGE", "an earlier field's error before an object's", ratio=0, **{"who.am": {}}),
        rec("TYPE_MISMATCH", "an object's first declared error wins", **{"who.am": who(name=1, age=-1)}),
        # an array's elements, each against its items schema: the first element that breaks a rule
        rec(None, "empty arrays", labels=[], counts=[]),
        rec("TYPE_MISMATCH", "an array element of another type", labels=["a", 1]),
        rec("TYPE_MISMATCH", "an array element null", labels=[None]),
        rec("NOT_IN_ENUM", "an array element not in its enum", labels=["a", "z"]),
        rec("TYPE_MISMATCH", "an array's integer element 1.5", counts=[1, 1.5]),
        rec("OUT_OF_RANGE", "an array element below its minimum", counts=[2, -1]),
        rec("OUT_OF_RANGE", "an array's first bad element decides", counts=[-1, "x"]),
        rec("TYPE_MISMATCH", "an array with items given an object", labels={"a": 1}),
        rec("MISSING_FIELD", "an earlier object's error before an array's", counts=[-1], **{"who.am": {}}),
        raw_case("RECORD_TOO_LARGE", "over 4096 bytes", body[:-1] + b',"pad":"' + b"y" * 5000 + b'"}'),
    ]


def raw_case(code: str | None, name: str, value: bytes) -> Case:
    return Case(name, value, code)


def app_log_cases() -> list[Case]:
    """``app_logs``: CloudWatch's ``@``-named fields (quoted wherever SQL names them), multi-line
    Unicode messages, epoch-millisecond event times."""
    base = {"@ptr": "ptr-1", "@timestamp": 1_733_616_000_123, "@message": "INFO started in 812ms",
            "@logStream": "checkout-api/app/0123456789ab", "@log": "123456789012:/ecs/checkout-api", "anomaly": 0}

    def rec(code: str | None, name: str, drop: tuple[str, ...] = (), **changes: Any) -> Case:
        record = {k: v for k, v in {**base, **{k.replace("at_", "@"): v for k, v in changes.items()}}.items()
                  if k not in drop}
        return Case(name, _dumps(record), code)

    trace = 'ERROR boom\njava.lang.IllegalStateException: "order", état inattendu\n\tat a.B.c(B.java:12)'
    return [
        rec(None, "a log event"),
        rec(None, "a multi-line stack trace with quotes, commas and accents", at_message=trace),
        rec(None, "an empty message", at_message=""),
        rec(None, "no label (live data)", drop=("anomaly",)),
        rec("MISSING_FIELD", "no @message", drop=("@message",)),
        rec("MISSING_FIELD", "@logStream null", at_logStream=None),
        rec("TYPE_MISMATCH", "@timestamp as text", at_timestamp="2024-12-08T00:00:00Z"),
        rec("TYPE_MISMATCH", "@message as an object", at_message={"msg": "x"}),
        rec("OUT_OF_RANGE", "@timestamp before 1970", at_timestamp=-1),
        rec("BAD_LENGTH", "@log empty", at_log=""),
        rec("NOT_IN_ENUM", "anomaly 2", anomaly=2),
        rec("TYPE_MISMATCH", "anomaly as text", anomaly="1"),
        rec("BAD_LENGTH", "@ptr empty", at_ptr=""),
        rec("BAD_EVENT_TIME", "@timestamp after year 9999", at_timestamp=253_402_300_800_000),
        rec("TYPE_MISMATCH", "@timestamp fractional", at_timestamp=1_733_616_000_123.5),
    ]
