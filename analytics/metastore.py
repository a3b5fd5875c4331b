"""The lake's tables by name, in a catalog: ``<database>.<stream>_<table>``.

* ``hive`` (locally): Spark's built-in catalog on an embedded Hive metastore (Derby, in
  ``catalog.metastore_dir``): ``CREATE TABLE ... USING delta LOCATION '<table uri>'``, so
  ``spark-sql`` started with :func:`spark_sql_args` (and ``streamsight sql``) finds them by name. An
  embedded metastore admits one process at a time.
* ``glue`` (the ``aws`` profile): the AWS Glue Data Catalog, through its API: one table per lake
  table with ``table_type=DELTA`` at the table's ``s3://`` location, which Athena (engine v3) and
  Trino's Delta Lake connector read natively; the database is Terraform's (``terraform/modules/lake``).
* ``none``: nothing is registered.

A table that does not exist yet in the lake is not registered (it will be at the next
registration after the stream has created it), nor is one the file system does not let this user
read. Registering is idempotent; a table registered at another location (the lake moved) is
registered again at the lake's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from analytics.views import NO_ACCESS
from streamsight import jars
from streamsight.contracts import Contract
from streamsight.errors import ConfigError
from streamsight.hadoop import access_denied
from streamsight.lake import TABLE_FORMAT, is_table, table_columns, table_uri

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from streamsight.settings import Settings

log = logging.getLogger(__name__)


def spark_sql_args(settings: Settings) -> list[str]:
    """Options for Spark's own ``spark-sql`` shell to see the registered tables: Delta Lake's jars
    and settings, and the metastore."""
    from streamsight.spark import DELTA_CONF, hive_conf

    conf = {**DELTA_CONF, **hive_conf(settings)}
    return ["--jars", ",".join(str(p) for p in jars.classpath("spark")),
            *[arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")]]


def _tables(settings: Settings, contracts: Iterable[Contract]) -> list[tuple[Contract, str, str, str]]:
    """(contract, table, name, uri) of every lake table of ``contracts``."""
    return [(c, table, name, table_uri(settings.lake_uri, c, table))
            for c in contracts for table, name in c.table_names().items()]


def register_tables(spark: SparkSession, settings: Settings,
                    contracts: Mapping[str, Contract] | Iterable[Contract]) -> dict[str, str]:
    """Register every existing lake table of ``contracts`` in the configured catalog; returns
    ``<database>.<name>`` -> its location, or ``(not created yet)``."""
    selected = list(contracts.values()) if isinstance(contracts, Mapping) else list(contracts)
    kind, database = settings.catalog.kind, settings.catalog.database
    if kind == "none":
        return {}
    out = {f"{database}.{n}": "(not created yet)" for _, _, n, _ in _tables(settings, selected)}
    existing = []
    for c, t, n, u in _tables(settings, selected):
        try:
            if is_table(spark, u):
                existing.append((c, t, n, u))
        except Exception as exc:  # a table this user may not read is not theirs to register
            if (denied := access_denied(exc)) is None:
                raise
            out[f"{database}.{n}"] = f"{NO_ACCESS}{denied})"
    if kind == "hive":
        _register_hive(spark, settings, existing)
    else:
        _register_glue(settings, existing)
    out.update({f"{database}.{n}": u for _, _, n, u in existing})
    return out


def _register_hive(spark: SparkSession, settings: Settings, tables: list[tuple[Contract, str, str, str]]) -> None:
    if spark.conf.get("spark.sql.catalogImplementation", "in-memory") != "hive":
        raise ConfigError("catalog.kind=hive needs a session with the metastore (streamsight.spark.build_session"
                          "(..., catalog=True)); this one has Spark's in-memory catalog")
    database = settings.catalog.database
    try:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    except Exception as exc:
        if "Another instance of Derby may have already booted the database" in str(exc) or "XSDB6" in str(exc):
            raise ConfigError(f"STREAMSIGHT_CATALOG__METASTORE_DIR: the metastore in {settings.catalog.metastore_dir} "
                              "is in use by another process (an embedded metastore admits one at a time); wait for "
                              "it, or give this command another metastore_dir") from None
        raise
    for _contract, _table, name, uri in tables:
        qualified = f"`{database}`.`{name}`"
        if spark.catalog.tableExists(f"{database}.{name}"):
            described = spark.sql(f"DESCRIBE TABLE EXTENDED {qualified}").collect()
            location = next((r["data_type"] for r in described if r["col_name"] == "Location"), None)
            if location == uri:
                continue
            spark.sql(f"DROP TABLE {qualified}")  # an external table: its files stay where they are
            log.info("%s.%s moves from %s to %s", database, name, location, uri)
        spark.sql(f"CREATE TABLE {qualified} USING {TABLE_FORMAT} LOCATION '{uri}'")


def glue_location(uri: str) -> str:
    """The ``s3://`` form of an ``s3a://`` URI (what Athena and Glue expect)."""
    if uri.startswith("s3a://"):
        return "s3://" + uri[len("s3a://"):]
    if uri.startswith("s3://"):
        return uri
    raise ConfigError(f"STREAMSIGHT_LAKE_DIR: catalog.kind=glue needs the lake on S3 (s3a://...), not {uri}")


def _register_glue(settings: Settings, tables: list[tuple[Contract, str, str, str]]) -> None:
    import boto3

    client = boto3.client("glue", region_name=settings.aws.region, endpoint_url=settings.aws.endpoint_url)
    database = settings.catalog.database
    try:
        client.get_database(Name=database)
    except client.exceptions.EntityNotFoundException:
        raise ConfigError(f"STREAMSIGHT_CATALOG__DATABASE: the Glue database {database!r} does not exist in "
                          f"{settings.aws.region} (terraform/modules/lake creates it)") from None
    for contract, table, name, uri in tables:
        columns, partitions = table_columns(contract, table)
        table_input: dict[str, Any] = {
            "Name": name,
            "Description": f"{contract.name} {table} (Delta Lake table; Streamsight)",
            "TableType": "EXTERNAL_TABLE",
            "Parameters": {"table_type": "DELTA", "EXTERNAL": "TRUE", "spark.sql.sources.provider": TABLE_FORMAT,
                           "classification": "delta"},
            "StorageDescriptor": {
                "Location": glue_location(uri),
                "Columns": [{"Name": c, "Type": t} for c, t in columns if c not in partitions],
            },
            "PartitionKeys": [{"Name": c, "Type": t} for c, t in columns if c in partitions],
        }
        try:
            client.create_table(DatabaseName=database, TableInput=table_input)
        except client.exceptions.AlreadyExistsException:
            client.update_table(DatabaseName=database, TableInput=table_input)
        log.info("registered %s.%s in Glue at %s", database, name, table_input["StorageDescriptor"]["Location"])
