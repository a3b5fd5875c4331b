"""The benchmark's arithmetic (streamsight_cli.bench.measure, keeping_up) on a small real lake.

The ``streamsight bench`` runs are benchmarks, not tests (they take minutes); what they report is
computed here from Delta silver / predictions tables and batch records written by real Spark.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from streamsight_cli.bench import _percentiles, _pipeline_measured, keeping_up, measure

T0 = 1_800_000_000.0  # produce times are offsets from this (epoch seconds)
# (batch id, commit offset) and the produce offsets of each batch's silver rows.
BATCHES = {0: (2.0, [0.5, 1.0]), 1: (5.0, [3.0, 4.0, 4.5]), 2: (9.0, [8.0])}
PREDICTED = {0, 1}  # batch 2's rows have no prediction yet
EARLY = -1.0  # a row produced before the measured window, in batch 0


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-lake")
    ts = lambda offset: datetime.fromtimestamp(T0 + offset, tz=UTC)  # noqa: E731
    silver = [(f"e{b}-{i}", ts(off), b) for b, (_, offs) in BATCHES.items() for i, off in enumerate(offs)]
    silver.append(("early", ts(EARLY), 0))
    spark.createDataFrame(silver, "event_id string, _kafka_timestamp timestamp, _batch_id long") \
        .write.format("delta").save(str(root / "silver"))
    spark.createDataFrame([(e, b) for e, _, b in silver if b in PREDICTED], "event_id string, _batch_id long") \
        .write.format("delta").save(str(root / "predictions"))
    stats = spark.createDataFrame([(b, ts(commit), len(offs)) for b, (commit, offs) in BATCHES.items()],
                                  "batch_id long, committed_at timestamp, silver long")
    commits, rows, predicted, _ = _pipeline_measured(spark, SimpleNamespace(uri=lambda table: str(root / table)), stats)
    return commits, rows, predicted


def expected(first: float, last: float, batches: dict[int, tuple[float, list[float]]]) -> dict:
    rows = [(b, commit, off) for b, (commit, offs) in batches.items() for off in offs if first <= off < last]
    silver = sorted(commit - off for _, commit, off in rows)
    predicted = sorted(commit - off for b, commit, off in rows if b in PREDICTED)
    span = max(commit for _, commit, _ in rows) - min(off for _, _, off in rows)
    return {"silver_rows": len(silver), "prediction_rows": len(predicted), "silver": silver,
            "predicted": predicted, "span": span, "batches": len({b for b, _, _ in rows})}


def ones(values: list[float]) -> list[tuple[float, float]]:
    return [(v, 1.0) for v in values]


def test_measures_rows_produced_in_the_window(lake):
    got = measure(*lake, started=T0)
    want = expected(0.0, float("inf"), BATCHES)
    assert (got["silver_rows"], got["prediction_rows"], got["micro_batches"]) == (
        want["silver_rows"], want["prediction_rows"], want["batches"])  # the early row is left out
    assert got["silver_per_s"] == pytest.approx(want["silver_rows"] / want["span"], abs=0.1)
    assert got["predictions_per_s"] == pytest.approx(want["prediction_rows"] / want["span"], abs=0.1)
    assert got["latency_silver_s"] == _percentiles(ones(want["silver"]))
    assert got["latency_predictions_s"] == _percentiles(ones(want["predicted"]))
    assert got["latency_silver_s"]["p99"] == max(want["silver"])


def test_warmup_window_ends_where_the_measured_one_starts(lake):
    split = T0 + 3.0
    warm, measured = measure(*lake, started=T0, until=split), measure(*lake, started=split)
    assert warm["silver_rows"] + measured["silver_rows"] == expected(0.0, float("inf"), BATCHES)["silver_rows"]
    assert warm["latency_silver_s"] == _percentiles(ones(expected(0.0, 3.0, BATCHES)["silver"]))
    assert measured["latency_predictions_s"] == _percentiles(ones(expected(3.0, float("inf"), BATCHES)["predicted"]))


def test_percentiles_pick_nearest_rank():
    values = ones([float(v) for v in range(1, 101)])  # 1..100
    assert _percentiles(values) == {"p50": 51.0, "p95": 96.0, "p99": 100.0}
    assert all(math.isnan(v) for v in _percentiles([]).values())  # no rows, no figure
    # weights: 10 at 1.0 and 90 at 2.0 weigh as 100 rows; a share of 0.1 each is one row in ten
    assert _percentiles([(1.0, 10.0), (2.0, 90.0)]) == _percentiles(ones([1.0] * 10 + [2.0] * 90))
    assert _percentiles([(1.0, 0.1)] * 94 + [(5.0, 0.1)] * 6)["p95"] == 5.0


def test_keeping_up_compares_commits_with_what_was_produced():
    # Commits (time, silver rows): one before the window (earlier runs), three inside, one after.
    commits = [(5.0, 100), (12.0, 400), (15.0, 600), (21.0, 900), (40.0, 800)]
    got = keeping_up(commits, since=10.0, until=30.0, produced=2_700, before=100)
    assert got["job_rows_per_s"] == pytest.approx((600 + 900) / (21.0 - 12.0), abs=0.1)
    assert got["behind_at_end"] == 2_700 - (400 + 600 + 900)  # the 800 came after the producer stopped
    assert keeping_up(commits, since=30.0, until=35.0, produced=0, before=0)["job_rows_per_s"] is None
    assert keeping_up(commits, since=0.0, until=50.0, produced=2_700, before=100)["behind_at_end"] == 0


def test_cli_rejects_bad_arguments_before_starting_anything():
    import os
    import subprocess
    import sys

    from tests.integration.helpers import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args, wanted in ((["capacity", "--events", "10"], "--events"), (["everything"], "No such command")):
        proc = subprocess.run([sys.executable, "-m", "streamsight_cli", "bench", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and wanted in proc.stderr, proc.stderr
