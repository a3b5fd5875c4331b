"""Production models for online scoring, read from the registry without Spark.

:class:`RegistryFiles` reads the registry's files (``aliases.json``, ``metadata.json``,
``scorer.json``; and writes ``backend.json``) through delta-rs's object store (local disk, ``hdfs://``, ``s3a://``): no JVM.
:class:`ModelCatalog` keeps each model's production version in memory as a
:class:`~ml.portable.PortableModel` and re-reads the model's ``aliases.json`` at most every
``refresh_s`` seconds, so a promotion (or a model trained under a new name) is served from the next
request after that, with no restart.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from ml import BINARY, PRODUCTION_ALIAS, REGRESSION, task_of
from ml.portable import PortableError, PortableModel
from ml.registry import ALIASES_FILE, METADATA_FILE, SCORER_FILE, RegistryError, _check_name

if TYPE_CHECKING:  # pragma: no cover
    from streamsight.settings import Settings

log = logging.getLogger("ml.online")


def storage_options(settings: Settings) -> dict[str, str]:
    """delta-rs's options for the lake: the s3a endpoint and keys of ``spark.conf``, if set (otherwise
    the AWS default chain: environment, instance profile)."""
    conf = settings.spark.conf
    options: dict[str, str] = {}
    endpoint = conf.get("spark.hadoop.fs.s3a.endpoint")
    if endpoint:
        secure = str(conf.get("spark.hadoop.fs.s3a.connection.ssl.enabled", "true")).lower() != "false"
        url = endpoint if "://" in endpoint else f"{'https' if secure else 'http'}://{endpoint}"
        options["AWS_ENDPOINT_URL"] = url
        if urlsplit(url).scheme == "http":
            options["AWS_ALLOW_HTTP"] = "true"
    for spark_key, option in (("spark.hadoop.fs.s3a.access.key", "AWS_ACCESS_KEY_ID"),
                              ("spark.hadoop.fs.s3a.secret.key", "AWS_SECRET_ACCESS_KEY"),
                              ("spark.hadoop.fs.s3a.endpoint.region", "AWS_REGION")):
        if conf.get(spark_key):
            options[option] = str(conf[spark_key])
    if str(conf.get("spark.hadoop.fs.s3a.path.style.access", "")).lower() == "true":
        options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
    return options


class RegistryFiles:
    """A registry's JSON files without Spark: read, and each model's ``backend.json`` set."""

    def __init__(self, root_uri: str, options: dict[str, str] | None = None) -> None:
        from pyarrow.fs import FileSystem, LocalFileSystem, PyFileSystem, SubTreeFileSystem

        root = root_uri.rstrip("/")
        self.root_uri = root_uri
        self._fs: FileSystem
        self._local = "://" not in root or root.startswith("file:")
        if self._local:  # a directory that may not exist yet
            self._fs = SubTreeFileSystem(root.removeprefix("file://").removeprefix("file:"), LocalFileSystem())
        else:
            from deltalake.fs import DeltaStorageHandler

            if root.startswith("s3a://"):
                root = "s3://" + root.removeprefix("s3a://")
            self._fs = PyFileSystem(DeltaStorageHandler(root, options or {}))

    def read_json(self, *parts: str | int) -> Any:
        """The parsed file ``<root>/<parts...>``, or None when there is none."""
        path = "/".join(str(p) for p in parts)
        try:
            with self._fs.open_input_file(path) as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None

    def read_bytes(self, *parts: str | int) -> bytes | None:
        """The file ``<root>/<parts...>``, or None when there is none."""
        try:
            with self._fs.open_input_file("/".join(str(p) for p in parts)) as f:
                return bytes(f.read())
        except FileNotFoundError:
            return None

    @classmethod
    def of(cls, settings: Settings) -> RegistryFiles:
        """The registry of the settings' lake, with its storage options."""
        from streamsight.lake import models_uri

        return cls(models_uri(settings.lake_uri), storage_options(settings))

    def write_json(self, doc: Any, *parts: str | int) -> None:
        """Create or replace ``<root>/<parts...>``: a local file by rename (readers see the old or the
        new content); elsewhere with one write (an object store's PUT is atomic)."""
        path = "/".join(str(p) for p in parts)
        data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")
        parent = path.rpartition("/")[0]
        if parent:
            self._fs.create_dir(parent, recursive=True)
        if self._local:
            staged = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with self._fs.open_output_stream(staged) as f:
                f.write(data)
            self._fs.move(staged, path)
        else:
            with self._fs.open_output_stream(path) as f:
                f.write(data)

    def backend(self, name: str) -> dict[str, Any]:
        """How the stream scores ``name`` (``backend.json``; default in the job: :mod:`ml.endpoint`)."""
        from ml.endpoint import BACKEND_FILE, MLLIB

        _check_name(name)
        doc = self.read_json(name, BACKEND_FILE)
        return doc if isinstance(doc, dict) else {"backend": MLLIB}

    def set_backend(self, name: str, doc: dict[str, Any]) -> None:
        from ml.endpoint import BACKEND_FILE

        _check_name(name)
        if doc.get("version") is not None:
            metadata = self.read_json(name, f"v{doc['version']}", METADATA_FILE)
            if metadata is None:
                raise RegistryError(f"model {name!r} has no version {doc['version']} in {self.root_uri}")
            if doc.get("payload") == "vector" and "sagemaker_builtin_xgboost" not in metadata:
                raise RegistryError(f"model {name!r} v{doc['version']} was not trained with XGBoost: SageMaker's "
                                    "built-in XGBoost container cannot serve it")
        self.write_json(doc, name, BACKEND_FILE)
        log.info("model %s: scored by %s", name, doc)

    def xgboost_archive(self, name: str, version: int) -> bytes:
        """A version's ``sagemaker-xgboost.tar.gz`` (what SageMaker's built-in XGBoost container loads);
        raises :class:`RegistryError` when the version was not trained with XGBoost."""
        from ml.train import XGBOOST_ARCHIVE

        archive = self.read_bytes(name, f"v{version}", XGBOOST_ARCHIVE)
        if archive is None:
            raise RegistryError(f"model {name!r} v{version} has no {XGBOOST_ARCHIVE}: train it with --algorithm xgboost")
        return archive

    def production(self, name: str) -> int | None:
        _check_name(name)
        aliases = self.read_json(name, ALIASES_FILE)
        version = aliases.get(PRODUCTION_ALIAS) if isinstance(aliases, dict) else None
        return None if version is None else int(version)

    def version_files(self, name: str, version: int | None = None) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """``(version, metadata.json, scorer.json)`` of ``version`` of ``name`` (default: its production
        one); raises :class:`RegistryError` naming what is missing."""
        chosen = self.production(name) if version is None else version
        if chosen is None:
            raise RegistryError(f"model {name!r} has no production version (name one with --version)")
        metadata = self.read_json(name, f"v{chosen}", METADATA_FILE)
        if metadata is None:
            raise RegistryError(f"model {name!r} v{chosen} has no {METADATA_FILE} in {self.root_uri}")
        doc = self.read_json(name, f"v{chosen}", SCORER_FILE)
        if doc is None:
            raise RegistryError(f"model {name!r} v{chosen} has no {SCORER_FILE} in {self.root_uri} (trained before "
                                "online scoring existed: train it again)")
        return chosen, metadata, doc

    def served(self, name: str, version: int | None = None) -> ServedModel:
        """That version, ready to score."""
        chosen, metadata, doc = self.version_files(name, version)
        return ServedModel.of(name, chosen, doc, metadata)


@dataclass
class ServedModel:
    """One model's production version, ready to score."""

    name: str
    version: int
    scorer: PortableModel
    threshold: float | None  # a binary model's decision threshold; None for the others
    metadata: dict[str, Any]

    @classmethod
    def of(cls, name: str, version: int, doc: dict[str, Any], metadata: dict[str, Any]) -> ServedModel:
        scorer = PortableModel(doc)
        if scorer.task != task_of(metadata):
            raise PortableError(f"{name} v{version}: scorer.json is {scorer.task}, metadata.json {task_of(metadata)}")
        threshold = float(metadata["threshold"]) if scorer.task == BINARY else None
        return cls(name, version, scorer, threshold, metadata)

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each record's ``label`` and ``probability`` (binary: P(positive) and 1 at or above the
        threshold; multiclass: the most probable class and its probability, and ``probabilities``
        by class); a regression model's: ``value``."""
        if self.scorer.task == REGRESSION:
            return [{"value": v} for v in self.scorer.values(records).tolist()]
        if self.threshold is not None:
            return [{"probability": p, "label": int(p >= self.threshold)}
                    for p in self.scorer.probabilities(records).tolist()]
        classes = self.scorer.classes or []
        out = []
        for row in self.scorer.class_probabilities(records).tolist():
            best = max(range(len(row)), key=row.__getitem__)  # the first most probable, as the stream picks
            out.append({"probability": row[best], "label": classes[best],
                        "probabilities": dict(zip(classes, row, strict=True))})
        return out


@dataclass
class _Entry:
    served: ServedModel | None
    problem: str | None  # why the production version cannot be served
    checked: float
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelUnavailable(Exception):
    """The model has a production version that cannot be served (no scorer, unreadable files)."""


class ModelCatalog:
    """Each model's production version, loaded on first use and followed as its alias moves."""

    def __init__(self, files: RegistryFiles, refresh_s: float = 2.0) -> None:
        self.files = files
        self.refresh_s = refresh_s
        self._entries: dict[str, _Entry] = {}
        self._guard = threading.Lock()

    def get(self, name: str) -> ServedModel | None:
        """The production version of ``name`` (None: no such model, or none in production); raises
        :class:`ModelUnavailable` when it exists but cannot be served, :class:`RegistryError` for a
        name the registry would never hold."""
        _check_name(name)
        entry = self._entries.get(name)
        now = time.monotonic()
        if entry is not None and now - entry.checked < self.refresh_s:
            return self._answer(entry)
        with self._guard:
            entry = self._entries.setdefault(name, _Entry(None, None, 0.0))
        with entry.lock:  # one reader per model; the others wait for its answer
            if time.monotonic() - entry.checked >= self.refresh_s:
                self._refresh(name, entry)
        return self._answer(entry)

    def cached(self, name: str) -> ServedModel | Literal[False] | None:
        """What :meth:`get` would answer without reading a file, or False when it would read one."""
        entry = self._entries.get(name)
        if entry is None or time.monotonic() - entry.checked >= self.refresh_s:
            return False
        return self._answer(entry)

    def loaded(self) -> dict[str, int]:
        """Model name -> version of every model served now."""
        return {name: e.served.version for name, e in list(self._entries.items()) if e.served is not None}

    @staticmethod
    def _answer(entry: _Entry) -> ServedModel | None:
        if entry.problem is not None:
            raise ModelUnavailable(entry.problem)
        return entry.served

    def _refresh(self, name: str, entry: _Entry) -> None:
        try:
            version = self.files.production(name)
            if version is None:
                entry.served, entry.problem = None, None
            elif entry.served is None or entry.served.version != version or entry.problem is not None:
                entry.served, entry.problem = self.files.served(name, version), None
                log.info("serving %s v%d", name, version)
        except (RegistryError, PortableError, OSError, ValueError, KeyError) as exc:
            if entry.served is not None and entry.problem is None:
                log.warning("cannot re-read model %s (%s); keeping v%d", name, exc, entry.served.version)
            else:
                entry.problem = str(exc)
                log.error("model %s cannot be served: %s", name, exc)
        entry.checked = time.monotonic()

