"""The lake report: PNG charts per stream and one self-contained HTML file.

:func:`build_report` registers the lake views, runs every named query
(:mod:`analytics.catalog`, ``analytics/queries/*.sql``) for each selected stream and writes

* ``<reports_dir>/<stream>/<query>.png`` -- one chart per named query that returned rows,
* ``<reports_dir>/<stream>/<query>.csv`` -- the query result behind each chart,
* the HTML report, with every chart embedded as a base64 ``data:`` URI (the file can be mailed or
  archived on its own):

  - all streams (``stream=None``): ``<reports_dir>/report.html``
  - one stream: ``<reports_dir>/<stream>/report.html``

:func:`build_dashboard` writes the live page ``<reports_dir>/dashboard/index.html`` (served at
``GET /dashboard``): the same summary, model card and renderers, for the queries whose header says
``dashboard: yes``, over the rows written in the last window (:func:`analytics.views.register_views`
``since``); the page reloads itself.

For each stream the HTML shows a summary (row count of every lake table, the dead-letter share,
data freshness), the model card (production version and its metrics, versions seen in the
predictions), then one panel per chart with its SQL in a ``<details>`` block. A query whose tables
are empty shows a "no data yet" panel instead of a chart (and any old PNG of it is removed); a query
the stream cannot run (no model, no categorical feature) is listed as skipped with the reason; a
query that fails shows its one-line error -- the report is still written.

Dead-letter share = dead_letter rows / (silver rows + dead_letter rows): the share of the records
that went through validation and were rejected. Records dropped by the contract's filter or by
de-duplication are in neither table.

Charts are drawn with Matplotlib's Agg renderer through :class:`matplotlib.figure.Figure` (no
pyplot, no global backend switch). Times are shown in the Spark session time zone.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.ticker import FuncFormatter, MaxNLocator

from analytics.catalog import NamedQuery, QuerySkipped, load_named_queries
from analytics.catalog import category as catalog_category
from analytics.sql import NUMERIC_TYPE, SqlError, SqlResult, cell_text, execute
from analytics.views import EMPTY, REGISTRY_VIEW, refused, register_views
from streamsight.contracts import Contract
from streamsight.errors import ConfigError
from streamsight.lake import table_uri

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from pyspark.sql import SparkSession

    from streamsight.settings import Settings

log = logging.getLogger(__name__)

MAX_CHART_ROWS = 100_000  # rows fetched per chart query
HTML_TABLE_ROWS = 20
FIG_WIDTH_IN = 10.0
DPI = 120
LAYER_COLORS = {"bronze": "#a6761d", "silver": "#6b7b8c", "dead_letter": "#d62728"}
STAGE_COLORS = {"p50_s": "#9ecae1", "p95_s": "#4292c6", "p99_s": "#08519c"}


@dataclass
class Panel:
    """One named query's outcome for one stream."""

    name: str
    title: str
    description: str
    status: str  # "chart" | "empty" | "table" | "skipped" | "error"
    sql: str | None = None
    note: str = ""
    result: SqlResult | None = None
    png: Path | None = None


@dataclass
class StreamReport:
    contract: Contract
    tables: list[tuple[str, str, int, str]] = field(default_factory=list)  # table, view, rows, location
    dead_letter_share: float | None = None
    freshness: dict[str, str] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    panels: list[Panel] = field(default_factory=list)


# -- entry point ------------------------------------------------------------------------------------

def build_report(
    spark: SparkSession,
    settings: Settings,
    contracts: Mapping[str, Contract] | Iterable[Contract],
    stream: str | None = None,
) -> Path:
    """Run the named queries, write PNGs and the HTML report; return the HTML path."""
    by_name = {c.name: c for c in (contracts.values() if isinstance(contracts, Mapping) else contracts)}
    if stream is not None and stream not in by_name:
        known = ", ".join(sorted(by_name)) or "none"
        raise ConfigError(f"no contract for stream {stream!r} (known: {known})")
    selected = [by_name[stream]] if stream is not None else [by_name[n] for n in sorted(by_name)]
    reports_dir = Path(settings.reports_dir)
    views = register_views(spark, settings, selected)
    queries = load_named_queries()
    reports = [_stream_report(spark, settings, c, views, queries, reports_dir / c.name) for c in selected]
    out = reports_dir / stream / "report.html" if stream is not None else reports_dir / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tz = _tz_name(spark)
    out.write_text(_render_html(reports, settings, tz), encoding="utf-8")
    log.info("report written to %s", out)
    return out


@dataclass(frozen=True)
class Live:
    """What makes a page the live dashboard: its window and how often it reloads."""

    window: str
    since: dt.datetime
    refresh_s: float


def build_dashboard(
    spark: SparkSession,
    settings: Settings,
    contracts: Mapping[str, Contract] | Iterable[Contract],
    *,
    window: str,
    refresh_s: float,
    now: dt.datetime | None = None,
) -> Path:
    """Every stream's dashboard panels over the rows written in the ``window`` (an interval such as
    ``"1 hour"``) before ``now``; the page reloads every ``refresh_s`` seconds. Written atomically
    (a reader never sees half a page); returns its path."""
    from streamsight.contracts import interval_seconds

    by_name = {c.name: c for c in (contracts.values() if isinstance(contracts, Mapping) else contracts)}
    selected = [by_name[n] for n in sorted(by_name)]
    since = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=interval_seconds(window))
    out = settings.dashboard_file
    out.parent.mkdir(parents=True, exist_ok=True)
    views = register_views(spark, settings, selected, since=since)
    queries = {name: q for name, q in load_named_queries().items() if q.dashboard}
    reports = [_stream_report(spark, settings, c, views, queries, out.parent / c.name) for c in selected]
    partial = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    partial.write_text(_render_html(reports, settings, _tz_name(spark), Live(window, since, refresh_s)),
                       encoding="utf-8")
    partial.replace(out)
    log.info("dashboard written to %s", out)
    return out


def _tz_name(spark: SparkSession) -> str:
    try:
        return spark.conf.get("spark.sql.session.timeZone") or "local time"
    except Exception:
        return "local time"


# -- per stream -------------------------------------------------------------------------------------

def _run(spark: SparkSession, sql: str, limit: int | None = MAX_CHART_ROWS,
         refused: dict[str, str] | None = None) -> SqlResult:
    return execute(spark, sql, limit=limit, refused=refused)


def _stream_report(
    spark: SparkSession,
    settings: Settings,
    contract: Contract,
    views: dict[str, str],
    queries: dict[str, NamedQuery],
    out_dir: Path,
) -> StreamReport:
    report = StreamReport(contract=contract)
    out_dir.mkdir(parents=True, exist_ok=True)
    _summarise(spark, settings, contract, views, report)
    threshold = (report.model or {}).get("threshold")
    for query in queries.values():
        report.panels.append(_panel(spark, contract, query, out_dir, threshold, refused(views)))
    return report


def _summarise(
    spark: SparkSession, settings: Settings, contract: Contract, views: dict[str, str], report: StreamReport
) -> None:
    names = contract.table_names()
    present = [(t, v) for t, v in names.items() if not views.get(v, EMPTY).startswith("(")]
    counts: dict[str, int] = {}
    if present:
        sql = "\nUNION ALL\n".join(f"SELECT '{t}' AS t, count(*) AS n FROM {v}" for t, v in present)
        try:
            counts = {row[0]: int(row[1]) for row in _run(spark, sql, None).rows}
        except SqlError as exc:
            log.warning("%s: row counts failed: %s", contract.name, exc)
    for table, view in names.items():
        status = views.get(view, EMPTY)
        location = table_uri(settings.lake_uri, contract, table)
        if status == EMPTY:
            location = f"{location} (not created yet)"
        elif status.startswith("("):
            location = f"{location} {status}"
        report.tables.append((table, view, counts.get(table, 0), location))
    silver, dead = counts.get("silver", 0), counts.get("dead_letter", 0)
    report.dead_letter_share = dead / (silver + dead) if silver + dead else None

    if not views.get(names["silver"], EMPTY).startswith("("):
        event_time = contract.event_time.field.replace("`", "``")
        try:
            result = _run(spark, f"SELECT max(`{event_time}`), max(_ingest_time) FROM {names['silver']}")
            zone = _tz_name(spark)
            for label, value in zip(("latest event time", "latest silver write"), result.rows[0]):
                if value is not None:
                    report.freshness[label] = f"{cell_text(value, 'timestamp', result.time_zone)} ({zone})"
        except SqlError as exc:
            log.warning("%s: freshness query failed: %s", contract.name, exc)

    if contract.model is not None:
        report.model = _model_card(spark, contract, names["predictions"], views)


def _model_card(spark: SparkSession, contract: Contract, predictions_view: str, views: dict[str, str]) -> dict[str, Any]:
    assert contract.model is not None
    name = contract.model.name.replace("\\", "\\\\").replace("'", "\\'")
    card: dict[str, Any] = {"name": contract.model.name, "versions": [], "production": None, "scoring": []}
    try:
        result = _run(spark, f"SELECT * FROM {REGISTRY_VIEW} WHERE model_name = '{name}' ORDER BY version")
        rows = [dict(zip(result.columns, r)) for r in result.rows]
        card["versions"] = rows
        production = next((r for r in rows if r["is_production"]), None)
        card["production"] = production
        card["shown"] = production or (rows[-1] if rows else None)
        card["threshold"] = (card["shown"] or {}).get("threshold")
        if views.get(predictions_view, EMPTY) != EMPTY:
            scoring = _run(
                spark,
                f"SELECT model_version, count(*) AS n FROM {predictions_view} "
                "GROUP BY model_version ORDER BY model_version",
            )
            card["scoring"] = [(r[0], int(r[1])) for r in scoring.rows]
    except SqlError as exc:
        log.warning("%s: model card failed: %s", contract.name, exc)
    return card


def _panel(
    spark: SparkSession, contract: Contract, query: NamedQuery, out_dir: Path, threshold: float | None,
    refused: dict[str, str] | None = None,
) -> Panel:
    png = out_dir / f"{query.name}.png"
    csv = out_dir / f"{query.name}.csv"
    try:
        title = query.render_title(contract)
    except ValueError:
        title = query.title
    panel = Panel(name=query.name, title=title, description=_safe_sub(query.description, contract),
                  status="chart")
    try:
        panel.sql = query.render(contract)
    except QuerySkipped as exc:
        panel.status, panel.note = "skipped", exc.reason
        _remove(png, csv)
        return panel
    try:
        panel.result = _run(spark, panel.sql, refused=refused)
    except SqlError as exc:
        panel.status, panel.note = "error", str(exc)
        _remove(png, csv)
        return panel
    if not panel.result.rows:
        panel.status, panel.note = "empty", "The tables behind this chart have no rows."
        _remove(png, csv)
        return panel
    if panel.result.truncated:
        panel.note = f"Only the first {MAX_CHART_ROWS} result rows are used."
    _write_csv(panel.result, csv)
    renderer = RENDERERS.get(query.name)
    if renderer is None:
        panel.status = "table"
        _remove(png)
        return panel
    try:
        fig = renderer(_frame(panel.result), contract, title, _ChartContext(panel.result, threshold))
        fig.savefig(png, dpi=DPI, format="png")
        panel.png = png
    except Exception as exc:
        log.exception("%s/%s: chart failed", contract.name, query.name)
        panel.status, panel.note = "table", f"Chart could not be drawn: {exc}"
        _remove(png)
    return panel


def _safe_sub(text: str, contract: Contract) -> str:
    from analytics.catalog import placeholders, substitute

    try:
        return substitute(text, placeholders(contract))
    except ValueError:
        return text


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _write_csv(result: SqlResult, path: Path) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(result.columns)
        for row in result.rows:
            writer.writerow(["" if v is None else cell_text(v, k, result.time_zone, None) for v, k in zip(row, result.types)])


def _frame(result: SqlResult) -> pd.DataFrame:
    """Result as pandas; timestamps as naive datetimes in the session time zone, decimals as floats."""
    from decimal import Decimal

    import pandas as pd

    rows = []
    for row in result.rows:
        out = []
        for value, kind in zip(row, result.types):
            if isinstance(value, dt.datetime) and kind == "timestamp":
                value = value.astimezone(result.time_zone).replace(tzinfo=None)
            elif isinstance(value, Decimal):
                value = float(value)
            out.append(value)
        rows.append(out)
    return pd.DataFrame(rows, columns=result.columns)


# -- charts -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _ChartContext:
    result: SqlResult
    threshold: float | None

    @property
    def tz(self) -> str:
        zone = self.result.time_zone
        return str(zone) if zone is not None else "local time"


def _figure(height: float = 4.8) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(FIG_WIDTH_IN, height), layout="constrained")
    return fig


def _legend(fig: Figure, title: str | None = None) -> None:
    """Legend outside the plot area, right of it, so it never hides data."""
    fig.legend(loc="outside right upper", frameon=False, title=title, fontsize=9, title_fontsize=9,
               alignment="left")


def _style(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=13, loc="left", pad=10)
    ax.set_xlabel(xlabel, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def _plot_throughput(df: pd.DataFrame, contract: Contract, title: str, ctx: _ChartContext) -> Figure:
    import matplotlib.dates as mdates
    import pandas as pd

    fig = _figure()
    ax = fig.add_subplot()
    wide = df.pivot_table(index="minute", columns="layer", values="events", aggfunc="sum")
    wide.index = pd.to_datetime(wide.index)
    span = int((wide.index.max() - wide.index.min()) / pd.Timedelta(minutes=1)) + 1
    if span <= 50_000:  # minutes without writes are zeros, not gaps to interpolate over
        wide = wide.reindex(pd.date_range(wide.index.min(), wide.index.max(), freq="min"))
    wide = wide.fillna(0)
    for layer in [c for c in ("bronze", "silver", "dead_letter") if c in wide.columns] + [
        c for c in wide.columns if c not in LAYER_COLORS
    ]:
        marker = "o" if len(wide) <= 60 else None
        ax.plot(wide.index, wide[layer], label=layer, color=LAYER_COLORS.get(layer), marker=marker,
                markersize=4, linewidth=1.6)
    locator = mdates.AutoDateLocator(minticks=3, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    if len(wide) == 1:
        center = wide.index[0]
        ax.set_xlim(center - pd.Timedelta(minutes=2), center + pd.Timedelta(minutes=2))
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(fig, title="table")
    _style(ax, f"{contract.name}: {title}", f"lake write time, per minute ({ctx.tz})", "records per minute")
    return fig


def _plot_dead_letter(df: pd.DataFrame, contract: Contract, title: str, ctx: _ChartContext) -> Figure:
    df = df.sort_values("records", ascending=True)
    fig = _figure(max(3.0, 0.45 * len(df) + 1.8))
    ax = fig.add_subplot()
    bars = ax.barh(df["error_code"].astype(str), df["records"], color=LAYER_COLORS["dead_letter"], alpha=0.85)
    labels = [f"{int(n):,}  ({p:.1f}%)" for n, p in zip(df["records"], df["pct"].astype(float))]
    ax.bar_label(bars, labels=labels, padding=4, fontsize=9)
    ax.set_xlim(0, float(df["records"].max()) * 1.25)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _style(ax, f"{contract.name}: {title}", "dead-letter records (count)", "error code")
    ax.grid(True, axis="x", alpha=0.3)
    ax.grid(False, axis="y")
    return fig


def _plot_latency(df: pd.DataFrame, contract: Contract, title: str, ctx: _ChartContext) -> Figure:
    import numpy as np

    fig = _figure()
    ax = fig.add_subplot()
    x = np.arange(len(df))
    width = 0.25
    for i, (col, label) in enumerate((("p50_s", "p50"), ("p95_s", "p95"), ("p99_s", "p99"))):
        values = df[col].astype(float)
        bars = ax.bar(x + (i - 1) * width, values, width, label=label, color=STAGE_COLORS[col])
        ax.bar_label(bars, labels=[_seconds(v) for v in values], padding=2, fontsize=8)
    ax.set_xticks(x, [f"{s}\n(n={int(n):,})" for s, n in zip(df["stage"], df["events"])])
    top = float(df[["p50_s", "p95_s", "p99_s"]].astype(float).max().max())
    ax.set_ylim(min(0.0, float(df[["p50_s"]].astype(float).min().min())), top * 1.18 if top > 0 else 1)
    _legend(fig, title="percentile")
    _style(ax, f"{contract.name}: {title}", "lake table", "latency (seconds, produce → lake write)")
    return fig


def _seconds(value: float) -> str:
    if value != value:  # NaN
        return ""
    return f"{value:.3f} s" if abs(value) < 10 else f"{value:,.1f} s"


def _plot_probability(df: pd.DataFrame, contract: Contract, title: str, ctx: _ChartContext) -> Figure:
    import numpy as np

    fig = _figure()
    ax = fig.add_subplot()
    starts = np.round(np.arange(20) * 0.05, 2)
    category = catalog_category(contract) or "category"
    for name, group in df.groupby("category", sort=True):
        counts = dict(zip(np.round(group["bucket_start"].astype(float), 2), group["predictions"].astype(int)))
        y = [counts.get(s, 0) for s in starts]
        total = int(sum(y))
        ax.step(np.append(starts, 1.0), [*y, y[-1]], where="post", linewidth=1.8,
                label=f"{category} = {name} (n={total:,})")
    ax.set_yscale("symlog", linthresh=1)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    ax.set_xlim(0, 1)
    ax.set_xticks(np.round(np.arange(0, 1.01, 0.1), 1))
    ax.set_ylim(bottom=0)
    if ctx.threshold is not None:
        ax.axvline(ctx.threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {ctx.threshold:g}")
    _legend(fig, title=category)
    _style(ax, f"{contract.name}: {title}", "predicted failure probability (bucket width 0.05)",
           "predictions (count, symlog scale)")
    return fig


def _plot_top_risk(df: pd.DataFrame, contract: Contract, title: str, ctx: _ChartContext) -> Figure:
    key = df.columns[0]
    df = df.iloc[::-1]  # highest at the top
    fig = _figure(max(3.5, 0.32 * len(df) + 1.8))
    ax = fig.add_subplot()
    labels = df[key].astype(str)
    bars = ax.barh(labels, df["max_probability"].astype(float), color="#e6550d", alpha=0.8, label="max")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in df["max_probability"].astype(float)], padding=3, fontsize=8)
    ax.scatter(df["avg_probability"].astype(float), labels, marker="D", color="black", s=18, zorder=3, label="average")
    ax.scatter(df["latest_probability"].astype(float), labels, marker="o", facecolors="none",
               edgecolors="#3182bd", s=40, zorder=3, label="latest")
    if ctx.threshold is not None:
        ax.axvline(ctx.threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {ctx.threshold:g}")
    ax.set_xlim(0, 1.08)
    _legend(fig, title="probability")
    _style(ax, f"{contract.name}: {title}", "predicted failure probability", key)
    ax.grid(True, axis="x", alpha=0.3)
    ax.grid(False, axis="y")
    return fig


def _plot_model_metrics(df: pd.DataFrame, contract: Contract, title: str, ctx: _ChartContext) -> Figure:
    import numpy as np

    fig = _figure()
    ax = fig.add_subplot()
    x = np.arange(len(df))
    unit_scale = "rmse" not in df.columns
    if not unit_scale:  # a regression model: errors in the label's unit
        metrics = [("rmse", "RMSE", "#2ca25f"), ("mae", "MAE", "#99d8c9")]
        base_col, base_label = "baseline_rmse", "baseline RMSE (training mean)"
    elif "f1_macro" in df.columns:  # a multiclass model
        metrics = [("accuracy", "accuracy", "#2ca25f"), ("f1_macro", "macro F1", "#99d8c9"),
                   ("f1_weighted", "weighted F1", "#756bb1")]
        base_col, base_label = "baseline_f1_macro", "baseline macro F1"
    else:
        metrics = [("auc_pr", "AUC-PR", "#2ca25f"), ("auc_roc", "AUC-ROC", "#99d8c9"), ("f1", "F1", "#756bb1")]
        base_col, base_label = "baseline_auc_pr", "baseline AUC-PR"
    width = 0.26
    for i, (col, label, color) in enumerate(metrics):
        values = df[col].astype(float)
        bars = ax.bar(x + (i - (len(metrics) - 1) / 2) * width, values.fillna(0), width, label=label, color=color)
        ax.bar_label(bars, labels=["" if v != v else f"{v:.2f}" for v in values], padding=2, fontsize=8)
    baseline = df[base_col].astype(float)
    if baseline.notna().any():
        for xi, value in zip(x, baseline):
            if value == value:
                ax.hlines(value, xi - 1.5 * width, xi + 1.5 * width, colors="black", linestyles="--", linewidth=1.2)
        ax.plot([], [], color="black", linestyle="--", linewidth=1.2, label=base_label)
    ticks = [f"v{int(v)}" + ("\n(production)" if prod else "") for v, prod in zip(df["version"], df["is_production"])]
    ax.set_xticks(x, ticks)
    if unit_scale:
        ax.set_ylim(0, 1.08)
    _legend(fig, title="metric")
    _style(ax, f"{contract.name}: {title}", "model version",
           "score (0–1)" if unit_scale else f"error ({contract.model.label if contract.model else 'label'})")
    return fig


def _plot_predicted_classes(df: pd.DataFrame, contract: Contract, title: str, ctx: _ChartContext) -> Figure:
    import numpy as np

    fig = _figure()
    ax = fig.add_subplot()
    classes = sorted(df["predicted_class"].astype(str).unique())
    actual = sorted(df["actual"].astype(str).unique(), key=lambda a: (a == "(unlabelled)", a))
    x = np.arange(len(classes))
    bottom = np.zeros(len(classes))
    bars = None
    for name in actual:
        rows = df[df["actual"].astype(str) == name].set_index("predicted_class")["predictions"]
        heights = np.array([float(rows.get(c, 0)) for c in classes])
        bars = ax.bar(x, heights, 0.6, bottom=bottom, label=name, color="#bdbdbd" if name == "(unlabelled)" else None)
        bottom += heights
    if bars is not None:  # the totals, on the top segments
        ax.bar_label(bars, labels=[f"{int(v):,}" for v in bottom], padding=2, fontsize=8)
    ax.set_xticks(x, classes)
    label = contract.model.label if contract.model else "label"
    _legend(fig, title=f"actual {label}")
    _style(ax, f"{contract.name}: {title}", "predicted class", "predictions (count)")
    return fig


RENDERERS: dict[str, Callable[[Any, Contract, str, _ChartContext], Any]] = {
    "throughput": _plot_throughput,
    "dead_letter_reasons": _plot_dead_letter,
    "latency": _plot_latency,
    "probability_distribution": _plot_probability,
    "top_risk": _plot_top_risk,
    "model_metrics": _plot_model_metrics,
    "predicted_classes": _plot_predicted_classes,
}


# -- HTML -------------------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1180px;
padding:24px;color:#1f2328;line-height:1.45}
h1{margin-bottom:4px}h2{border-bottom:2px solid #d0d7de;padding-bottom:4px;margin-top:40px}
.meta{color:#57606a;font-size:14px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.panel{border:1px solid #d0d7de;border-radius:6px;padding:12px 16px;margin:18px 0}
.panel h3{margin:0 0 4px 0}.desc{color:#57606a;font-size:14px;margin:0 0 8px 0}
.panel img{max-width:100%;height:auto;display:block}
.nodata,.skipped,.error{padding:28px;text-align:center;border-radius:6px;font-size:15px}
.nodata{background:#f6f8fa;color:#57606a}.skipped{background:#fff8c5;color:#6e5600}
.error{background:#ffebe9;color:#82071e}
.note{font-size:13px;color:#57606a}
pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:12px}
details{margin-top:8px}summary{cursor:pointer;color:#0969da;font-size:14px}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _result_table(result: SqlResult, max_rows: int = HTML_TABLE_ROWS) -> str:
    numeric = [bool(NUMERIC_TYPE.match(k)) for k in result.types]
    head = "".join(f"<th>{_esc(c)}</th>" for c in result.columns)
    body = []
    for row in result.rows[:max_rows]:
        cells = "".join(
            f"<td class='num'>{_esc(cell_text(v, k, result.time_zone))}</td>" if num
            else f"<td>{_esc(cell_text(v, k, result.time_zone))}</td>"
            for v, k, num in zip(row, result.types, numeric)
        )
        body.append(f"<tr>{cells}</tr>")
    more = len(result.rows) - max_rows
    tail = f"<p class='note'>… {more:,} more rows in the CSV file.</p>" if more > 0 else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{tail}"


def _summary_html(rep: StreamReport, live: Live | None) -> str:
    rows = "".join(
        f"<tr><td>{_esc(t)}</td><td><code>{_esc(v)}</code></td><td class='num'>{n:,}</td>"
        f"<td><code>{_esc(loc)}</code></td></tr>"
        for t, v, n, loc in rep.tables
    )
    parts = [
        "<h3>Summary</h3>",
        f"<table><tr><th>table</th><th>view</th><th>{'rows written in the window' if live else 'rows'}</th>"
        f"<th>location</th></tr>{rows}</table>",
    ]
    share = "–" if rep.dead_letter_share is None else f"{100 * rep.dead_letter_share:.2f}%"
    facts = [("dead-letter share", share + " of validated records (dead_letter / (silver + dead_letter))")]
    facts += list(rep.freshness.items())
    parts.append("<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in facts) + "</table>")
    parts.append(_model_html(rep))
    return "\n".join(parts)


def _model_html(rep: StreamReport) -> str:
    contract = rep.contract
    if contract.model is None:
        return "<h3>Model</h3><p class='note'>This stream's contract declares no model.</p>"
    card = rep.model or {}
    shown = card.get("shown")
    head = f"<h3>Model <code>{_esc(contract.model.name)}</code></h3>"
    if not shown:
        return head + "<p class='note'>No model version is registered yet.</p>"
    which = "production version" if card.get("production") else "latest version (no production alias)"
    rows = [
        (which, f"v{shown['version']}"),
        ("registered versions", ", ".join(f"v{r['version']}" for r in card.get("versions", [])) or "–"),
        ("created at", _fmt(shown.get("created_at"))),
    ]
    metrics: tuple[tuple[str, str], ...]
    if shown.get("task") == "regression":
        metrics = (("rmse", "RMSE"), ("mae", "MAE"), ("r2", "R²"))
    elif shown.get("task") == "multiclass":
        metrics = (("accuracy", "accuracy"), ("f1_macro", "macro F1"), ("f1_weighted", "weighted F1"),
                   ("log_loss", "log loss"))
    else:
        rows.append(("threshold", _fmt(shown.get("threshold"))))
        metrics = (("auc_pr", "AUC-PR"), ("auc_roc", "AUC-ROC"), ("f1", "F1"), ("precision", "precision"),
                   ("recall", "recall"))
    for key, label in metrics:
        base = shown.get(f"baseline_{key}")
        extra = f" (baseline {_fmt(base)})" if base is not None else ""
        rows.append((label, _fmt(shown.get(key)) + extra))
    if any(shown.get(k) is not None for k in ("tp", "fp", "tn", "fn")):
        rows.append(("confusion (tp / fp / tn / fn)", " / ".join(_fmt(shown.get(k)) for k in ("tp", "fp", "tn", "fn"))))
    scoring = card.get("scoring") or []
    rows.append(("versions in predictions", ", ".join(f"v{v}: {n:,} rows" for v, n in scoring) or "none yet"))
    return head + "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows) + "</table>"


def _panel_html(stream: str, panel: Panel) -> str:
    parts = [f"<div class='panel' id='{_esc(stream)}-{_esc(panel.name)}'>", f"<h3>{_esc(panel.title)}</h3>"]
    if panel.description:
        parts.append(f"<p class='desc'>{_esc(panel.description)}</p>")
    if panel.status == "chart" and panel.png is not None:
        data = base64.b64encode(panel.png.read_bytes()).decode("ascii")
        parts.append(f"<img alt='{_esc(panel.title)}' src='data:image/png;base64,{data}'>")
    elif panel.status == "empty":
        parts.append(f"<div class='nodata'>No data yet. <span class='note'>{_esc(panel.note)}</span></div>")
    elif panel.status == "skipped":
        parts.append(f"<div class='skipped'>Skipped: {_esc(panel.note)}.</div>")
    elif panel.status == "error":
        parts.append(f"<div class='error'>Query failed: {_esc(panel.note)}</div>")
    if panel.note and panel.status in ("chart", "table"):
        parts.append(f"<p class='note'>{_esc(panel.note)}</p>")
    if panel.result is not None and panel.result.rows:
        open_attr = " open" if panel.status == "table" else ""
        parts.append(f"<details{open_attr}><summary>Data ({len(panel.result.rows):,} rows)</summary>"
                     f"{_result_table(panel.result)}</details>")
    if panel.sql:
        parts.append(f"<details><summary>SQL</summary><pre>{_esc(panel.sql)}</pre></details>")
    parts.append("</div>")
    return "\n".join(parts)


def _render_html(reports: list[StreamReport], settings: Settings, tz: str, live: Live | None = None) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    names = [r.contract.name for r in reports]
    nav = " · ".join(f"<a href='#stream-{_esc(n)}'>{_esc(n)}</a>" for n in names)
    sections = []
    for rep in reports:
        c = rep.contract
        skipped = [p for p in rep.panels if p.status == "skipped"]
        notes = ""
        if skipped:
            notes = "<p class='note'>Skipped for this stream: " + "; ".join(
                f"<b>{_esc(p.name)}</b> ({_esc(p.note)})" for p in skipped) + ".</p>"
        panels = "\n".join(_panel_html(c.name, p) for p in rep.panels if p.status != "skipped")
        sections.append(
            f"<section id='stream-{_esc(c.name)}'><h2>{_esc(c.name)}</h2>"
            f"<p class='desc'>{_esc(c.description)}</p>{_summary_html(rep, live)}"
            f"<h3>Charts</h3>{notes}{panels}</section>"
        )
    if live is None:
        title, head, scope, refresh = "Streamsight report", "Streamsight lake report", "", ""
    else:
        since = live.since.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        title, head = "Streamsight dashboard", "Streamsight live dashboard"
        refresh = f"<meta http-equiv='refresh' content='{max(1, round(live.refresh_s))}'>"
        scope = (f"Rows written in the last {_esc(live.window)} (since {since}) · "
                 f"rebuilt every {live.refresh_s:g} s · ")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>{refresh}"
        f"<title>{title}: {_esc(', '.join(names))}</title><style>{_CSS}</style></head><body>"
        f"<h1>{head}</h1>"
        f"<p class='meta'>{scope}Generated {now} · lake <code>{_esc(settings.lake_uri)}</code> · "
        f"times in {_esc(tz)} · streams: {nav or 'none'}</p>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
