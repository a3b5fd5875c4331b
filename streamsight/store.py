"""The online predictions store: one DynamoDB table, written by the streaming job, read by the API.

Item layout (one item per scored event)::

    pk   "<stream>#<key>"                       partition key: one stream's one key (a machine)
    sk   "<event time, ISO 8601 UTC>#<event id>" sort key: newest last, unique per event
    stream, key, event_id, event_time, probability, prediction, model_name, model_version, scored_at,
    scored_by, predicted_class (multiclass models only), predicted_value (regression models only;
    their probability and prediction are absent)

plus the global secondary index ``by_stream`` (``stream``, ``sk``) for a stream's newest predictions
across keys. A put of an event replaces that event's item (same ``pk`` and ``sk``), so a replayed
micro-batch writes nothing twice. ``settings.predictions_store.kind: dynamodb`` turns it on; the
table comes from Terraform in the ``aws`` profile and from :meth:`DynamoPredictions.ensure_table`
locally (tests run it against moto's server, a stand-in for DynamoDB).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from streamsight.errors import StreamsightError

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Iterable

    from streamsight.settings import Settings

BY_STREAM = "by_stream"
MAX_LIMIT = 1000


class StoreError(StreamsightError):
    """The store cannot be reached or refused a call."""


def sort_key(event_time: datetime, event_id: str) -> str:
    return f"{iso(event_time)}#{event_id}"


def iso(moment: datetime) -> str:
    """UTC, microseconds, ``Z``: strings that sort as the instants do."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DynamoPredictions:
    """Puts and queries of the predictions table (boto3)."""

    def __init__(self, table: str, *, region: str, endpoint_url: str | None = None, timeout_s: float = 5.0) -> None:
        self.table_name = table
        self.region = region
        self.endpoint_url = endpoint_url
        self.timeout_s = timeout_s
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DynamoPredictions:
        store = settings.predictions_store
        return cls(store.table, region=settings.aws.region, endpoint_url=settings.aws.endpoint_url)

    def config(self) -> dict[str, Any]:
        """What a Spark task needs to build its own client (this object holds an unpicklable one)."""
        return {"table": self.table_name, "region": self.region, "endpoint_url": self.endpoint_url,
                "timeout_s": self.timeout_s}

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client("dynamodb", region_name=self.region, endpoint_url=self.endpoint_url,
                                        config=Config(connect_timeout=self.timeout_s, read_timeout=self.timeout_s,
                                                      retries={"mode": "standard", "max_attempts": 5}))
        return self._client

    def check(self) -> None:
        """Fail fast, naming the setting, when the table cannot be described (missing, unreachable)."""
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client("dynamodb", region_name=self.region, endpoint_url=self.endpoint_url,
                              config=Config(connect_timeout=3, read_timeout=5, retries={"total_max_attempts": 1}))
        where = f" at {self.endpoint_url}" if self.endpoint_url else f" in {self.region}"
        try:
            client.describe_table(TableName=self.table_name)
        except ClientError as exc:
            raise StoreError(f"STREAMSIGHT_PREDICTIONS_STORE__TABLE (predictions_store.table): DynamoDB table "
                             f"{self.table_name!r}{where}: {exc.response['Error']['Code']}: "
                             f"{exc.response['Error'].get('Message', '')}") from None
        except BotoCoreError as exc:
            raise StoreError(f"STREAMSIGHT_AWS__ENDPOINT_URL (aws.endpoint_url): DynamoDB{where} cannot be reached: "
                             f"{exc}") from None

    def ensure_table(self) -> None:
        """Create the table (on demand) and its index if it does not exist; wait until it is active."""
        from botocore.exceptions import ClientError

        try:
            self.client.describe_table(TableName=self.table_name)
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise StoreError(f"predictions_store.table {self.table_name!r}: {exc}") from None
        strings = [{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "stream")]
        self.client.create_table(
            TableName=self.table_name, BillingMode="PAY_PER_REQUEST", AttributeDefinitions=strings,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[{"IndexName": BY_STREAM, "Projection": {"ProjectionType": "ALL"}, "KeySchema": [
                {"AttributeName": "stream", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]}])
        self.client.get_waiter("table_exists").wait(TableName=self.table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    def put(self, stream: str, rows: Iterable[dict[str, Any]]) -> int:
        """Put one item per row (the predictions table's columns by name, plus ``key``, ``event_id``
        and ``event_time``); unprocessed items are retried by boto3's batch writer. Returns the count."""
        import boto3

        resource = boto3.resource("dynamodb", region_name=self.region, endpoint_url=self.endpoint_url,
                                  config=self.client.meta.config)
        count = 0
        with resource.Table(self.table_name).batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for row in rows:
                batch.put_item(Item=_item(stream, row))
                count += 1
        return count

    def query(self, stream: str, *, key: str | None = None, since: datetime | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
        """The newest predictions of ``stream`` (of one ``key``, if given) at or after ``since``, at
        most ``limit``, newest first."""
        from botocore.exceptions import BotoCoreError, ClientError

        condition = "#p = :p" + (" AND sk >= :s" if since is not None else "")
        values: dict[str, Any] = {":p": {"S": f"{stream}#{key}" if key is not None else stream}}
        if since is not None:
            values[":s"] = {"S": iso(since)}
        args: dict[str, Any] = {"TableName": self.table_name, "KeyConditionExpression": condition,
                                "ExpressionAttributeNames": {"#p": "pk" if key is not None else "stream"},
                                "ExpressionAttributeValues": values, "ScanIndexForward": False,
                                "Limit": min(limit, MAX_LIMIT)}
        if key is None:
            args["IndexName"] = BY_STREAM
        try:
            items = self.client.query(**args)["Items"]
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(str(exc)) from None
        return [_plain(item) for item in items]


def _item(stream: str, row: dict[str, Any]) -> dict[str, Any]:
    event_time: datetime = row["event_time"]
    item = {
        "pk": f"{stream}#{row['key']}", "sk": sort_key(event_time, row["event_id"]), "stream": stream,
        "key": str(row["key"]), "event_id": row["event_id"], "event_time": iso(event_time),
        "model_name": row["model_name"], "model_version": int(row["model_version"]),
        "scored_at": iso(row["scored_at"]), "scored_by": row.get("scored_by") or "mllib",
    }
    if row.get("probability") is not None:
        item["probability"] = Decimal(repr(float(row["probability"])))
    if row.get("prediction") is not None:
        item["prediction"] = int(row["prediction"])
    if row.get("predicted_class") is not None:
        item["predicted_class"] = str(row["predicted_class"])
    if row.get("predicted_value") is not None:
        item["predicted_value"] = Decimal(repr(float(row["predicted_value"])))
    return item


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """A low-level DynamoDB item as the API answers it."""
    out: dict[str, Any] = {}
    for name in ("key", "event_id", "event_time", "model_name", "scored_at"):
        out[name] = item[name]["S"]
    out["probability"] = float(item["probability"]["N"]) if "probability" in item else None
    out["prediction"] = int(item["prediction"]["N"]) if "prediction" in item else None
    out["model_version"] = int(item["model_version"]["N"])
    out["scored_by"] = item.get("scored_by", {}).get("S", "mllib")  # items written before the attribute
    if "predicted_class" in item:
        out["predicted_class"] = item["predicted_class"]["S"]
    if "predicted_value" in item:
        out["predicted_value"] = float(item["predicted_value"]["N"])
    return out


def put_partition(config: dict[str, Any], stream: str, key: str, id_columns: list[str], event_time: str) -> Any:
    """A ``foreachPartition`` function: each row of the predictions DataFrame to the table (the event
    id is the de-duplication key, its columns joined by ``|``)."""

    def write(rows: Iterable[Any]) -> None:
        store = DynamoPredictions(config["table"], region=config["region"], endpoint_url=config["endpoint_url"],
                                  timeout_s=config["timeout_s"])
        store.put(stream, ({**row.asDict(), "key": row[key], "event_time": row[event_time],
                            "event_id": "|".join(str(row[c]) for c in id_columns)} for row in rows))

    return write
