"""Table maintenance: compact small files and expire what the retention no longer keeps.

``streamsight lake maintain`` runs, for each lake table of each stream:

1. its retention properties, from the contract's ``retention`` or the settings' (Delta's
   ``deletedFileRetentionDuration`` and ``logRetentionDuration``): versions older than the log
   retention stop being readable, their log entries going at Delta's next checkpoint;
2. ``OPTIMIZE``: small files rewritten into larger ones (a ``dataChange=false`` commit, which the
   streaming readers of the table skip, so gold reading silver is not disturbed);
3. ``VACUUM`` with the files retention: files no version inside it needs are deleted.

On a local or HDFS lake it is safe while the streams run: Delta resolves a compaction against
concurrent appends through the file system's atomic rename. On S3 it is not: Delta's S3 log store
assumes one writing process per table, so run it with the streams stopped (``--streams-stopped``
says so). A streaming reader further behind than the files retention would miss deleted files, and
a write still in progress has files no version names yet, so the files retention must be at least
:data:`MIN_FILES_RETENTION_S` (one hour; the default is 7 days).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from streaming_jobs.lake_writer import create_table
from streamsight.contracts import Contract, interval_seconds
from streamsight.errors import ConfigError
from streamsight.lake import is_table, retention, table_columns, table_properties, table_uri
from streamsight.spark import session_conf

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from streamsight.settings import Settings

log = logging.getLogger(__name__)

# VACUUM deletes files no version names once they are older than the retention: a write still in
# progress has such files, so the retention must outlast any write.
MIN_FILES_RETENTION_S = 3600


def maintain_table(spark: SparkSession, uri: str, *, files_retention_hours: float) -> dict[str, Any]:
    """Compact the Delta table at ``uri`` and delete files older than the retention that no version
    inside it needs; what was done."""
    from delta.tables import DeltaTable

    table = DeltaTable.forPath(spark, uri)
    before = table.detail().first()
    optimized = table.optimize().executeCompaction().first()
    metrics = optimized["metrics"] if optimized is not None else None
    # The configured retention is deliberate, even below Delta's 7-day safety check.
    with session_conf(spark, "spark.databricks.delta.retentionDurationCheck.enabled", "false"):
        doomed = spark.sql(f"VACUUM delta.`{uri}` RETAIN {files_retention_hours} HOURS DRY RUN").count()
        with _jvm_console_on_stderr(spark):  # VACUUM prints a line to the JVM's standard output
            table.vacuum(files_retention_hours)
    after = table.detail().first()
    latest = table.history(1).first()
    return {
        "files_before": int(before["numFiles"]) if before is not None else None,
        "files_after": int(after["numFiles"]) if after is not None else None,
        "files_compacted": int(metrics["numFilesRemoved"]) if metrics is not None else 0,
        "files_written": int(metrics["numFilesAdded"]) if metrics is not None else 0,
        "files_deleted": doomed,
        "version": int(latest["version"]) if latest is not None else None,
    }


@contextmanager
def _jvm_console_on_stderr(spark: SparkSession) -> Iterator[None]:
    """The JVM's ``System.out`` goes to its ``System.err`` in the block (a command's standard output
    stays its own: JSON)."""
    system = spark._jvm.java.lang.System  # type: ignore[union-attr]
    out = system.out
    system.setOut(system.err)
    try:
        yield
    finally:
        system.setOut(out)


def check(settings: Settings, contracts: list[Contract], tables: Iterable[str] | None, *,
          streams_stopped: bool) -> None:
    """ConfigError for a table name no contract has, a files retention under
    :data:`MIN_FILES_RETENTION_S`, or a lake on S3 without ``streams_stopped``."""
    wanted = set(tables) if tables is not None else None
    known = {t for c in contracts for t in c.table_names()}
    if wanted is not None and wanted - known:
        raise ConfigError(f"--table: no table {', '.join(sorted(wanted - known))} (tables: {', '.join(sorted(known))})")
    if settings.lake_uri.startswith(("s3a://", "s3://")) and not streams_stopped:
        raise ConfigError("the lake is on S3, where Delta admits one writing process per table: stop the streams, "
                          "then run `streamsight lake maintain --streams-stopped`")
    for contract in contracts:
        files = retention(contract, settings)[0]
        if interval_seconds(files) < MIN_FILES_RETENTION_S:
            raise ConfigError(f"{contract.name}: files retention {files!r} (contract retention.files, else "
                              f"STREAMSIGHT_RETENTION__FILES) is under {MIN_FILES_RETENTION_S // 3600} hour(s): VACUUM "
                              "would delete the files of writes still in progress")


def maintain(spark: SparkSession, settings: Settings, contracts: Iterable[Contract],
             tables: Iterable[str] | None = None, *, streams_stopped: bool = False) -> dict[str, dict[str, Any]]:
    """:func:`maintain_table` on every existing lake table of ``contracts`` (or only ``tables``,
    names like ``silver`` or ``gold_by_type_1h``); ``<stream>_<table>`` -> what was done.

    Nothing is done unless :func:`check` passes.
    """
    contracts = list(contracts)
    check(settings, contracts, tables, streams_stopped=streams_stopped)
    wanted = set(tables) if tables is not None else None
    out: dict[str, dict[str, Any]] = {}
    for contract in contracts:
        properties = table_properties(contract, settings)
        hours = interval_seconds(retention(contract, settings)[0]) / 3600
        for table, name in contract.table_names().items():
            if wanted is not None and table not in wanted:
                continue
            uri = table_uri(settings.lake_uri, contract, table)
            if not is_table(spark, uri):
                continue
            columns, partitions = table_columns(contract, table)
            create_table(spark, uri, columns, partitions, properties)  # the retention properties, up to date
            out[name] = {"uri": uri, "files_retention_hours": hours, **maintain_table(spark, uri, files_retention_hours=hours)}
            log.info("maintained %s: %s", name, out[name])
    return out
