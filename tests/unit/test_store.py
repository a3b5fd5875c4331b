"""The predictions store's items: what the stream job writes and what the API answers, per task."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from boto3.dynamodb.types import TypeSerializer

from streamsight.store import _item, _plain

ROW = {"key": "M1", "event_id": "e-1", "event_time": datetime(2026, 12, 7, 8, 30, tzinfo=UTC), "model_name": "m",
       "model_version": 3, "scored_at": datetime(2026, 12, 7, 8, 30, 1, tzinfo=UTC), "scored_by": "mllib"}


def _roundtrip(row: dict) -> tuple[dict, dict]:
    item = _item("s", row)
    return item, _plain({k: TypeSerializer().serialize(v) for k, v in item.items()})


@pytest.mark.parametrize(("scored", "answered"), [
    ({"probability": 0.8125, "prediction": 1, "predicted_class": None, "predicted_value": None},
     {"probability": 0.8125, "prediction": 1}),
    ({"probability": 0.5, "prediction": 2, "predicted_class": "virginica", "predicted_value": None},
     {"probability": 0.5, "prediction": 2, "predicted_class": "virginica"}),
    ({"probability": None, "prediction": None, "predicted_class": None, "predicted_value": 41.25},
     {"probability": None, "prediction": None, "predicted_value": 41.25}),
])
def test_each_task_s_prediction_is_stored_and_read_back(scored, answered):
    item, plain = _roundtrip({**ROW, **scored})
    assert item["pk"] == "s#M1" and "None" not in repr(item)  # nothing null is written
    assert plain == {"key": "M1", "event_id": "e-1", "event_time": "2026-12-07T08:30:00.000000Z", "model_name": "m",
                     "scored_at": "2026-12-07T08:30:01.000000Z", "model_version": 3, "scored_by": "mllib", **answered}
