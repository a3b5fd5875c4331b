"""Contracts: derived columns and multiclass models -- what loads, and each kind of error, named with the file and the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamsight.contracts import ContractError, load_contract
from tests.integration.helpers import CONTRACTS

BASE = yaml.safe_load((CONTRACTS / "machine_telemetry.yaml").read_text(encoding="utf-8"))
BASE["reference"]["path"] = str((CONTRACTS / BASE["reference"]["path"]).resolve())


def _write(tmp_path: Path, change: Any) -> Path:
    doc = copy.deepcopy(BASE)
    change(doc)
    path = tmp_path / "machine_telemetry.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_the_shipped_derived_columns_load_in_order():
    contract = load_contract(CONTRACTS / "machine_telemetry.yaml")
    assert [d.name for d in contract.derived][:3] == ["temperature_difference_k", "power_w", "strain_over_limit_nm_min"]
    assert contract.model is not None and set(contract.model.features) <= {d.name for d in contract.derived}
    # the model reads these fields, through its derived features
    assert contract.model_reads() == ["type", "air_temperature_k", "process_temperature_k", "rotational_speed_rpm",
                                      "torque_nm", "tool_wear_min"]


def _derive(**entry: Any) -> Any:
    return lambda doc: doc["derived"].append({"name": "extra", "type": "double", **entry})


@pytest.mark.parametrize(("change", "says"), [
    (_derive(expr="torque_nm *"), r"derived\.7\.extra\.expr: not a Spark SQL expression"),
    (_derive(expr="torque_nm * speed"), r"derived\.7\.extra\.expr: 'speed' is not a field"),
    (_derive(expr="sum(torque_nm)"), r"derived\.7\.extra\.expr: SUM\(torque_nm\): aggregates and windows"),
    (_derive(expr="my_udf(torque_nm)"), r"derived\.7\.extra\.expr: my_udf\(\): not a function"),
    (_derive(expr="(SELECT 1)"), r"derived\.7\.extra\.expr: a subquery"),
    (_derive(expr="torque_nm / tool_wear_min"), r"derived\.7\.extra\.expr: torque_nm / tool_wear_min: a division "
     r"fails the batch on a zero divisor: use try_divide"),
    (_derive(expr="CAST(type AS INT)"), r"derived\.7\.extra\.expr: CAST fails the batch .* use try_cast"),
    (_derive(expr="1", type="decimal"), r"derived\.7\.type: Input should be 'double'"),
    (_derive(name="torque_nm", expr="1"), r"derived\.7\.torque_nm: 'torque_nm' is already a column"),
    (_derive(name="Bad-Name", expr="1"), r"derived\.7\.name: Value error, must be lower_snake_case"),
    (lambda doc: doc["derived"].insert(0, {"name": "early", "type": "double", "expr": "power_w * 2"}),
     r"derived\.0\.early\.expr: 'power_w' is not a field"),  # a derived column reads only those declared before it
    (lambda doc: doc["derived"].append({"name": "band", "type": "string", "expr": "'high'"})
     or doc["model"]["features"].append("band"), r"model\.features: derived column 'band' is string"),
    (lambda doc: doc.update(filter="torque > 0"), r"filter: 'torque' is not a field"),
    (lambda doc: doc["model"]["features"].append("event_time"), r"model\.features: 'event_time' is the event time"),
    (lambda doc: doc["model"].update(text_features=["torque_nm"]),
     r"model\.text_features: 'torque_nm' is number; a text feature is a string"),
    (lambda doc: doc["model"].update(text_features=["notes"]), r"model\.text_features: 'notes' is not a field"),
    (lambda doc: doc["model"].update(text_features=["type"], categorical_features=["type"],
                                     features=[*doc["model"]["features"], "type"]),
     r"model\.text_features: 'type' is also a feature"),
    (lambda doc: doc["model"].update(text_features=["type"], text_buckets=8),
     r"model\.text_buckets: Input should be greater than or equal to 16"),
    (lambda doc: doc["model"].update(text_features=["type"], text_encoding="embedded", text_buckets=64),
     r"model\.text_buckets: does not apply to text_encoding embedded"),
    (lambda doc: doc["model"].update(text_features=["type"], text_dimensions=64),
     r"model\.text_dimensions: does not apply to text_encoding hashed"),
    (lambda doc: doc["model"].update(text_features=["type"], text_encoding="embedded", text_dimensions=100),
     r"model\.text_dimensions: Input should be 64, 128 or 256"),
    (lambda doc: doc["model"].update(text_features=["type"], text_encoding="embedded", scoring="online"),
     r"model\.text_encoding: the hot path \(model\.scoring: online\) runs no Python"),
    (lambda doc: doc["derived"].append({"name": "failed_twice", "type": "int", "expr": "machine_failure * 2"})
     or doc["model"]["features"].append("failed_twice"),
     r"model\.features: the label 'machine_failure' is read by a feature \(directly or through a derived column\)"),
    (lambda doc: doc["aggregates"][0].update(first_seen=["machine_id"]),
     r"aggregate 'by_type_1h': first_seen rows have no metrics"),
    (lambda doc: doc["aggregates"][0].update(first_seen=["machine_id"], metrics=[], slide="5 minutes"),
     r"aggregate 'by_type_1h': a first sighting falls in one window"),
    (lambda doc: doc["aggregates"][0].update(first_seen=["serial"], metrics=[]),
     r"aggregates\.by_type_1h\.first_seen: 'serial' is not a field"),
    (lambda doc: doc["aggregates"][0].update(first_seen=["type"], metrics=[]),
     r"aggregates\.by_type_1h\.first_seen: 'type' is also in group_by"),
    (lambda doc: doc["aggregates"][0].update(metrics=[]), r"aggregate 'by_type_1h': needs metrics \(or first_seen\)"),
])
def test_a_bad_derived_column_fails_at_load_naming_file_and_field(tmp_path, change, says):
    path = _write(tmp_path, change)
    with pytest.raises(ContractError, match=says) as raised:
        load_contract(path)
    assert str(path) in str(raised.value)


def test_derived_columns_are_usable_in_the_filter_and_aggregates(tmp_path):
    def change(doc: dict[str, Any]) -> None:
        doc["filter"] = "power_w > 0"
        doc["aggregates"][0]["metrics"].append({"name": "avg_power_w", "agg": "avg", "column": "power_w"})
        doc["aggregates"][0]["group_by"] = ["type", "power_risk"]

    contract = load_contract(_write(tmp_path, change))
    assert contract.filter == "power_w > 0" and contract.aggregates[0].group_by == ["type", "power_risk"]


IRIS = yaml.safe_load((CONTRACTS / "iris.yaml").read_text(encoding="utf-8"))


def _iris(tmp_path: Path, **model: Any) -> Path:
    doc = copy.deepcopy(IRIS)
    doc["model"].update(model)
    doc["model"] = {k: v for k, v in doc["model"].items() if v is not None}
    path = tmp_path / "iris.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_a_multiclass_model_takes_its_classes_from_the_label_enum_or_its_own_list(tmp_path):
    assert load_contract(CONTRACTS / "iris.yaml").model_classes() == ["setosa", "versicolor", "virginica"]
    ordered = load_contract(_iris(tmp_path, classes=["virginica", "setosa", "versicolor"]))
    assert ordered.model_classes() == ["virginica", "setosa", "versicolor"]
    assert load_contract(CONTRACTS / "machine_telemetry.yaml").model_classes() is None  # binary


@pytest.mark.parametrize(("model", "says"), [
    ({"positive_label": 1}, r"model\.positive_label: a multiclass model has no positive label"),
    ({"classes": ["setosa", "versicolor", "rose"]}, r"model\.classes: .* are not the values of 'species'"),
    ({"classes": ["setosa", "setosa", "virginica"]}, r"model\.classes: .* lists a class twice"),
    ({"classes": ["setosa"]}, r"model\.classes: List should have at least 2 items"),
    ({"scoring": "online"}, r"model\.scoring: the hot path \(online\) scores binary models"),
    ({"label": "petal_width_cm", "features": ["sepal_length_cm"]},
     r"model\.label: a multiclass label must be a string or an integer; 'petal_width_cm' is number"),
    ({"task": "binary", "classes": ["a", "b"]}, r"model\.classes: only a multiclass model"),
    ({"task": "ranking"}, r"model\.task: Input should be 'binary', 'multiclass' or 'regression'"),
    ({"label": "petal_width_cm"}, r"model\.features: the label 'petal_width_cm' is read by a feature"),
])
def test_a_bad_multiclass_model_fails_at_load_naming_the_setting(tmp_path, model, says):
    with pytest.raises(ContractError, match=says) as raised:
        load_contract(_iris(tmp_path, **model))
    assert "iris.yaml" in str(raised.value)


PETAL_WIDTH = {"task": "regression", "label": "petal_width_cm", "classes": None,
               "features": ["sepal_length_cm", "sepal_width_cm", "petal_length_cm"]}


def test_a_regression_model_predicts_a_numeric_label(tmp_path):
    contract = load_contract(_iris(tmp_path, **PETAL_WIDTH))
    assert contract.model is not None and contract.model.task == "regression"
    assert contract.model_classes() is None


@pytest.mark.parametrize(("model", "says"), [
    ({"label": "species", "features": IRIS["model"]["features"]},
     r"model\.label: a regression label must be a number; 'species' is string"),
    ({"positive_label": 1}, r"model\.positive_label: a regression model has no positive label"),
    ({"classes": [0, 1]}, r"model\.classes: only a multiclass model"),
    ({"scoring": "online"}, r"model\.scoring: the hot path \(online\) scores binary models; a regression model"),
    ({"features": ["sepal_length_cm", "petal_width_cm"]}, r"the label 'petal_width_cm' is read by a feature"),
])
def test_a_bad_regression_model_fails_at_load_naming_the_setting(tmp_path, model, says):
    with pytest.raises(ContractError, match=says) as raised:
        load_contract(_iris(tmp_path, **{**PETAL_WIDTH, **model}))
    assert "iris.yaml" in str(raised.value)


def _nested(**spec: Any) -> Any:
    return lambda doc: doc["schema"]["properties"].update(site={"type": "object", **spec})


@pytest.mark.parametrize(("change", "says"), [
    (_nested(properties={"hall": {"type": "object"}}),
     r"schema\.properties\.site\.properties\.hall\.type: must be one of \['boolean', 'integer', 'number', 'string'\] "
     r"\(an object's declared fields and an array's items are scalars\)"),
    (_nested(properties={"hall": {"type": "string", "items": {}}}),
     r"schema\.properties\.site\.properties\.hall: unsupported keyword\(s\) \['items'\]"),
    (_nested(properties={"hall": {"type": "string"}}, required=["room"]),
     r"schema\.properties\.site\.required: 'room' is not one of its properties"),
    (_nested(properties={"it's \"x\"": {"type": "string"}}),
     r"schema\.properties\.site\.properties: .*cannot hold both ' and \""),
    (_nested(properties={"hall": {"type": "string", "format": "uuid"}}),
     r"schema\.properties\.site\.properties\.hall\.format: 'uuid' is not one of"),
    (lambda doc: doc["schema"]["properties"].update(site={"type": "string", "properties": {}}),
     r"schema\.properties\.site: unsupported keyword\(s\) \['properties'\]"),
    (lambda doc: doc["schema"]["properties"].update(site={"type": "array", "items": {"type": "array"}}),
     r"schema\.properties\.site\.items\.type: must be one of .* an array's items are scalars"),
    (lambda doc: doc["schema"]["properties"].update(site={"type": "array", "items": {"type": "string", "minItems": 1}}),
     r"schema\.properties\.site\.items: unsupported keyword\(s\) \['minItems'\]"),
    (lambda doc: doc["schema"]["properties"].update(site={"type": "object", "items": {"type": "string"}}),
     r"schema\.properties\.site: unsupported keyword\(s\) \['items'\]"),
])
def test_a_bad_declared_field_of_an_object_fails_at_load(tmp_path, change, says):
    path = _write(tmp_path, change)
    with pytest.raises(ContractError, match=says) as raised:
        load_contract(path)
    assert str(path) in str(raised.value)


def test_an_objects_declared_fields_are_known_to_both_validators():
    fields = {f.name: f for f in load_contract(CONTRACTS / "cloudtrail.yaml").fields}
    inner = {g.name: g for g in fields["userIdentity"].inner}
    assert inner["userIdentity.accountId"].pattern == "^[0-9]{12}$" and not inner["userIdentity.type"].required
    assert fields["requestParameters"].inner == ()  # an object with no declared fields: any object
