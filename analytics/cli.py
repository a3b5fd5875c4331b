"""Functions behind ``streamsight sql``, ``report`` and ``dashboard`` (the root CLI wires them up).

Both build their Spark session with ``streamsight.spark.build_session`` (imported when called);
``sql``'s has the catalog (the embedded metastore, with ``catalog.kind=hive``). Pass ``spark=`` to
reuse an existing session instead (tests, notebooks).

Exit codes of :func:`sql_command`: 0 success, 1 the query failed (one-line message on stderr), 2 a
configuration problem (contracts directory, settings).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from streamsight.errors import StreamsightError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from streamsight.settings import Settings

EXIT_OK = 0
EXIT_QUERY_FAILED = 1
EXIT_CONFIG = 2


def _session(settings: Settings, app_name: str, spark: SparkSession | None, *, catalog: bool = False) -> SparkSession:
    if spark is not None:
        return spark
    from streamsight.spark import build_session

    return build_session(settings, app_name, catalog=catalog)


def sql_command(
    settings: Settings,
    query: str,
    as_json: bool,
    *,
    limit: int | None = None,
    output: Path | None = None,
    spark: SparkSession | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one SQL statement over the lake's tables and print the result; returns the exit code.

    The tables are registered in the catalog (:func:`analytics.metastore.register_tables`) and as
    views. Text output is a fixed-width table; ``as_json`` prints JSON Lines (one object per row).
    At most ``limit`` rows are printed (default 1000; 0: all); when the result had more, JSON mode
    writes a warning to stderr (stdout stays valid JSON Lines). With ``output`` the rows (all, or the
    first ``limit``) go to that file instead (:func:`analytics.sql.export`), whose extension is
    checked before anything runs, and stderr says how many.
    """
    from analytics.metastore import register_tables
    from analytics.sql import (
        DEFAULT_LIMIT,
        SqlError,
        clean_query,
        execute,
        export,
        format_json_lines,
        format_table,
        output_format,
    )
    from analytics.views import refused, register_views
    from streamsight.contracts import load_contracts

    out = out or sys.stdout
    err = err or sys.stderr
    if output is None and limit is None:
        limit = DEFAULT_LIMIT
    limit = limit or None  # 0: every row
    try:
        clean_query(query)
        if output is not None:
            output_format(output)
        contracts = load_contracts(settings.contracts_dir)
        session = _session(settings, "streamsight-sql", spark, catalog=True)
        if settings.catalog.kind == "hive" and session.conf.get("spark.sql.catalogImplementation") == "hive":
            register_tables(session, settings, contracts)
        views = register_views(session, settings, contracts)
        if output is not None:
            written = export(session, query, output, limit=limit, refused=refused(views))
            print(f"wrote {written} rows to {output}", file=err)
            return EXIT_OK
        result = execute(session, query, limit=limit, refused=refused(views))
    except SqlError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_QUERY_FAILED
    except StreamsightError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_CONFIG
    if as_json:
        out.write(format_json_lines(result))
        if result.truncated:
            print(f"warning: only the first {limit} rows were printed (--limit 0 prints all)", file=err)
    else:
        out.write(format_table(result))
    out.flush()
    return EXIT_OK


def report_command(settings: Settings, stream: str | None, *, spark: SparkSession | None = None) -> Path:
    """Build the HTML report (all streams, or one) and return its path.

    Raises :class:`~streamsight.errors.ConfigError` for an unknown stream or a bad contracts dir.
    """
    from analytics.report import build_report
    from streamsight.contracts import load_contracts

    contracts = load_contracts(settings.contracts_dir)
    if stream is not None and stream not in contracts:
        from streamsight.errors import ConfigError

        known = ", ".join(sorted(contracts)) or "none"
        raise ConfigError(f"no contract for stream {stream!r} in {settings.contracts_dir} (known: {known})")
    session = _session(settings, "streamsight-report", spark)
    return build_report(session, settings, contracts, stream)


def dashboard_command(settings: Settings, *, once: bool = False, spark: SparkSession | None = None,
                      stop: threading.Event | None = None) -> Path:
    """Build the live dashboard every ``dashboard.refresh_s`` seconds until ``stop`` is set, or once;
    returns its path.

    A build that fails (the lake unreachable for a moment) is logged and retried at the next tick;
    the page keeps its last good version meanwhile.
    """
    import logging

    from analytics.report import build_dashboard
    from streamsight.contracts import load_contracts

    log = logging.getLogger("streamsight.dashboard")
    contracts = load_contracts(settings.contracts_dir)
    session = _session(settings, "streamsight-dashboard", spark)
    stop = stop or threading.Event()
    options = settings.dashboard
    while True:
        started = time.monotonic()
        try:
            build_dashboard(session, settings, contracts, window=options.window, refresh_s=options.refresh_s)
        except StreamsightError:
            raise
        except Exception as exc:
            if once:
                raise
            log.warning("the dashboard could not be built (retrying in %s s): %s", options.refresh_s, exc)
        if once or stop.wait(max(0.0, options.refresh_s - (time.monotonic() - started))):
            return settings.dashboard_file
