"""The shipped ``cloudtrail`` stream on the real attack simulation (../shared/data/cloudtrail): the
delivery files through the file producer and a real Apache Kafka into the lake; fields addressed by
path inside nested objects; the analyst's gold aggregates; the attack-technique model on a time
split, never reading the user agent, scoring the nested records without Spark as MLlib does."""

from __future__ import annotations

import itertools
import json
import re
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest

from ingestion import sources
from ingestion.producer import produce
from streamsight.contracts import load_contracts
from tests.conftest import DATA_DIR
from tests.integration.helpers import isolated_contract, use_stream_env

pytestmark = pytest.mark.integration

CLOUDTRAIL = DATA_DIR / "cloudtrail"


def _records() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(CLOUDTRAIL.glob("*.json")):
        out += json.loads(path.read_text(encoding="utf-8"))["Records"]
    return out


def _expected(r: dict[str, Any]) -> dict[str, Any]:
    """The contract's derived columns, computed here from the record."""
    identity = r.get("userIdentity") or {}
    agent = (r.get("userAgent") or "").lower()
    verb = re.match(r"^([A-Z][a-z]+)", r["eventName"])
    return {"identity_type": identity.get("type") or "none",
            "principal": identity.get("arn") or identity.get("invokedBy") or "unknown",
            "action": verb.group(1) if verb else "", "failed": int(r.get("errorCode") is not None),
            "attack_technique": int("stratus-red-team" in agent and "terraform" not in agent)}


def test_cloudtrail_files_stream_with_paths_aggregates_and_an_attack_model(spark, kafka_broker, tmp_path,
                                                                             monkeypatch):
    from pyspark.ml.functions import vector_to_array

    from ml.online import RegistryFiles
    from ml.registry import ModelRegistry
    from ml.train import PROBABILITY, train_model
    from streaming_jobs.pipeline import StreamJob
    from streamsight.lake import models_uri, read_table, table_uri
    from streamsight.settings import load_settings

    contracts_dir = isolated_contract(tmp_path, kafka_broker, base="cloudtrail")
    use_stream_env(monkeypatch, tmp_path, kafka_broker, contracts_dir)
    settings = load_settings()
    contract = load_contracts(contracts_dir)["cloudtrail"]
    records = _records()
    by_id = {r["eventID"]: r for r in records}

    # The producer and the stream give every record the same verdict: all 2,900 are valid.
    files = sorted(CLOUDTRAIL.glob("*.json"))  # the folder also holds the data's LICENSE
    sent = produce(settings, contract, itertools.chain.from_iterable(sources.file_source(contract, f) for f in files),
                   progress=False)
    assert (sent.sent, sent.invalid) == (len(records), 0)
    job = StreamJob(spark, settings, contract, kafka_broker.bootstrap_servers)
    job.run_until_idle()

    def table(name: str) -> Any:
        return read_table(spark, table_uri(settings.lake_uri, contract, name))

    assert table("dead_letter").count() == 0
    silver = table("silver").collect()
    assert sorted(r["eventID"] for r in silver) == sorted(by_id)
    # Paths inside the nested objects, and the rest of the derived columns, as computed here.
    derived = list(_expected(records[0]))
    assert all({c: row[c] for c in derived} == _expected(by_id[row["eventID"]]) for row in silver)
    assert json.loads(silver[0]["userIdentity"]) == by_id[silver[0]["eventID"]]["userIdentity"]  # its JSON text

    # Gold: each identity's calls in the hour 11:00-12:00. The watermark (the latest event time
    # less 30 minutes) passed 12:00 in the last batch; a later call runs the batch that closes it.
    later = {**records[0], "eventID": "later-call", "eventTime": "2023-07-10T13:30:00Z"}
    produce(settings, contract, [sources.Event(payload=later)], progress=False)
    job.run_until_idle()
    gold = [r for r in table("gold_calls_by_principal_1h").collect()
            if r["window_start"] == datetime(2023, 7, 10, 11, tzinfo=UTC).replace(tzinfo=None)]
    hour: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["eventTime"] < "2023-07-10T12:00:00Z":
            hour[_expected(r)["principal"]].append(r)
    assert {g["principal"]: (g["calls"], g["failed_calls"]) for g in gold} == {
        p: (len(rs), sum(r.get("errorCode") is not None for r in rs)) for p, rs in hour.items()}
    for g in gold:  # count_distinct is Spark's approx_count_distinct (HyperLogLog++, 5 % relative error)
        rs = hour[g["principal"]]
        for metric, field in (("actions", "eventName"), ("services", "eventSource"), ("regions", "awsRegion")):
            exact = len({r[field] for r in rs})
            assert abs(g[metric] - exact) <= max(1, 0.1 * exact), (g["principal"], metric, g[metric], exact)

    # First sightings: each identity's first call in each region and to each service, in its hour;
    # the later call (a region and service already seen) moved nothing.
    for name, field in (("new_regions_by_principal_1h", "awsRegion"), ("new_services_by_principal_1h", "eventSource")):
        first: dict[tuple[str, str], str] = {}
        for r in [*records, later]:
            key = (_expected(r)["principal"], r[field])
            first[key] = min(first.get(key, r["eventTime"]), r["eventTime"])
        rows = table(f"gold_{name}").collect()
        assert len(rows) == len(first) and len(first) > 5, name
        for g in rows:
            seen = datetime.fromisoformat(first[(g["principal"], g[field])].replace("Z", "+00:00")).replace(tzinfo=None)
            assert g["first_seen_at"] == seen and g["window_start"] == seen.replace(minute=0, second=0), (name, g)
    # the README's query of new regions per identity per hour, on the analysts' views
    from analytics.views import register_views

    register_views(spark, settings, {"cloudtrail": contract})
    per_hour = spark.sql("SELECT principal, window_start, count(*) AS new_regions, collect_list(awsRegion) AS regions "
                         "FROM cloudtrail_gold_new_regions_by_principal_1h GROUP BY principal, window_start").collect()
    assert sum(r["new_regions"] for r in per_hour) == len(table("gold_new_regions_by_principal_1h").collect())

    # The attack-technique model: first 70 % by event time trains, the last 30 % tests; the user
    # agent is the label's source and nothing the model reads.
    assert contract.model is not None and "userAgent" not in contract.model_reads()
    # Silver as rows written before the label column was declared (it lacks it): training derives it.
    meta = train_model(spark, settings, contract, silver=table("silver").drop("attack_technique"), train_fraction=0.7,
                       promote=True, algorithms=("logistic_regression",))  # the candidates' comparison is test_train's
    labels = [_expected(r)["attack_technique"] for r in records]
    assert 0 < sum(labels) < len(labels)
    assert meta["metrics"]["auc_pr"] > 3 * meta["baseline_metrics"]["auc_pr"]

    # Without Spark (the API, the serving process), on the records as delivered (nested objects),
    # the production version gives MLlib's probabilities.
    served = RegistryFiles(models_uri(settings.lake_uri)).served(contract.model.name)
    model = ModelRegistry(spark, models_uri(settings.lake_uri)).load(contract.model.name, served.version)
    scored = model.transform(table("silver")).select("eventID", vector_to_array(PROBABILITY)[1].alias("p")).collect()
    expected = {r["eventID"]: r["p"] for r in scored}
    ids = sorted(by_id)
    got = served.scorer.probabilities([by_id[i] for i in ids])
    assert list(got) == pytest.approx([expected[i] for i in ids], rel=1e-9, abs=1e-12)
    assert len({round(p, 6) for p in got}) > 20
