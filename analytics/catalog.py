"""Named queries: ``analytics/queries/<name>.sql``, one per report chart.

A query file starts with a header of ``-- key: value`` comment lines:

* ``title`` -- chart title (may use the *raw* placeholders below, e.g. ``by {category_name}``),
* ``description`` -- one sentence for the report (repeatable; lines are joined),
* ``requires`` -- comma list of capabilities the stream must have, else the query is skipped with
  a note: ``model`` (the contract declares a model), ``binary`` or ``multiclass`` (its model's
  task) and ``category`` (predictions have a column to group by: :func:`category`),
* ``order`` -- position in the report (default 1000, then by name),
* ``dashboard`` -- ``yes``: the query is also a panel of the live dashboard (``streamsight dashboard``).

Placeholders in the SQL (contract-driven, so no stream's column names are hard-coded):

====================  =================================================================
``{stream}``          the stream name; views are ``{stream}_silver``, ``{stream}_bronze``...
``{key}``             the message key column, as a quoted identifier (`` `machine_id` ``)
``{event_time}``      the event-time column, quoted identifier
``{label}``           the model's label column, quoted identifier (needs ``model``)
``{category}``        the model's first categorical feature (else the first string field it reads), quoted
                      identifier (needs ``category``)
``{model_literal}``   the model name as a SQL string literal (``'machine_failure'``)
``*_name`` variants   ``{key_name}``, ``{category_name}``, ``{model_name}``... : raw names, for titles
====================  =================================================================

A line ending in ``-- @if <capability>`` is kept only when the stream has that capability (the
marker is removed), so one query can cover optional tables, e.g. predictions latency.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from streamsight.contracts import Contract

QUERIES_DIR = Path(__file__).resolve().parent / "queries"
CAPABILITIES = ("model", "binary", "multiclass", "regression", "category")
_HEADER = re.compile(r"^--\s*([a-z_]+)\s*:\s*(.*?)\s*$")
_IF = re.compile(r"--\s*@if\s+([a-z_]+)\s*$")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_REASONS = {
    "model": "the stream's contract declares no model, so there are no predictions",
    "binary": "the stream's model is not a binary one (no probability of one positive label)",
    "multiclass": "the stream's model is not a multiclass one (no predicted classes)",
    "regression": "the stream's model is not a regression one (no predicted values)",
    "category": "the stream's model has no categorical feature to group by",
}


class QuerySkipped(Exception):
    """The stream lacks something the query needs; ``reason`` says what."""

    def __init__(self, query: str, reason: str) -> None:
        super().__init__(f"{query}: skipped, {reason}")
        self.query = query
        self.reason = reason


@dataclass(frozen=True)
class NamedQuery:
    name: str
    title: str
    description: str
    requires: tuple[str, ...]
    order: int
    template: str
    path: Path
    dashboard: bool = False

    def render(self, contract: Contract) -> str:
        """The runnable SQL for one stream. Raises :class:`QuerySkipped`."""
        caps = capabilities(contract)
        for need in self.requires:
            if need not in caps:
                if need in ("binary", "multiclass", "regression") and "model" not in caps:
                    need = "model"
                raise QuerySkipped(self.name, _REASONS.get(need, f"needs {need}"))
        lines = []
        for line in self.template.splitlines():
            match = _IF.search(line)
            if match:
                if match.group(1) not in caps:
                    continue
                line = line[: match.start()].rstrip()
            lines.append(line)
        return substitute("\n".join(lines), placeholders(contract), self.name).strip() + "\n"

    def render_title(self, contract: Contract) -> str:
        return substitute(self.title, placeholders(contract), self.name)


def category(contract: Contract) -> str | None:
    """The column predictions are grouped by: the model's first categorical feature, else the first
    string field it reads (through its derived features, say), else None."""
    if contract.model is None:
        return None
    if contract.model.categorical_features:
        return contract.model.categorical_features[0]
    strings = {f.name for f in contract.fields if f.json_type == "string"} - {contract.key, *contract.dedup_key}
    return next((f for f in contract.model_reads() if f in strings), None)


def capabilities(contract: Contract) -> set[str]:
    caps: set[str] = set()
    if contract.model is not None:
        caps.update(("model", contract.model.task))
        if category(contract) is not None:
            caps.add("category")
    return caps


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def placeholders(contract: Contract) -> dict[str, str]:
    raw: dict[str, str] = {"key": contract.key, "event_time": contract.event_time.field}
    values = {"stream": contract.name}
    if contract.model is not None:
        raw["label"] = contract.model.label
        values["model_literal"] = _literal(contract.model.name)
        values["model_name"] = contract.model.name
        grouped_by = category(contract)
        if grouped_by is not None:
            raw["category"] = grouped_by
    for name, column in raw.items():
        values[name] = _ident(column)
        values[f"{name}_name"] = column
    return values


def substitute(text: str, values: dict[str, str], where: str = "query") -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"{where}: unknown or unavailable placeholder {{{name}}}")
        return values[name]

    return _PLACEHOLDER.sub(repl, text)


def parse(path: Path) -> NamedQuery:
    text = path.read_text(encoding="utf-8")
    meta: dict[str, list[str]] = {}
    body_start = 0
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _HEADER.match(line.strip())
        if not match:
            body_start = i
            break
        meta.setdefault(match.group(1), []).append(match.group(2))
    else:
        body_start = len(lines)
    requires = tuple(
        r.strip() for r in ",".join(meta.get("requires", [])).split(",") if r.strip()
    )
    unknown = [r for r in requires if r not in CAPABILITIES]
    if unknown:
        raise ValueError(f"{path}: unknown requirement(s) {unknown}; known: {', '.join(CAPABILITIES)}")
    dashboard = (meta.get("dashboard") or ["no"])[0].lower()
    if dashboard not in ("yes", "no"):
        raise ValueError(f"{path}: dashboard must be yes or no, not {dashboard!r}")
    return NamedQuery(
        name=path.stem,
        title=" ".join(meta.get("title", [path.stem.replace("_", " ")])),
        description=" ".join(meta.get("description", [])),
        requires=requires,
        order=int((meta.get("order") or ["1000"])[0]),
        template="\n".join(lines[body_start:]),
        path=path,
        dashboard=dashboard == "yes",
    )


def load_named_queries(directory: Path | str | None = None) -> dict[str, NamedQuery]:
    """All named queries in report order."""
    folder = Path(directory) if directory is not None else QUERIES_DIR
    queries = [parse(p) for p in sorted(folder.glob("*.sql"))]
    queries.sort(key=lambda q: (q.order, q.name))
    return {q.name: q for q in queries}
