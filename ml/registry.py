"""A model registry kept in the lake, next to the data it was trained on.

Layout under ``streamsight.lake.models_uri(lake_uri)``::

    <model_name>/
        aliases.json            {"production": 2}
        backend.json            how the stream scores it: {"backend": "mllib"} (also when absent) or
                                {"backend": "sagemaker", "endpoint": NAME, "version": N} (ml.endpoint)
        v1/
            _CLAIM              created first, with create(overwrite=false): reserves the number
            model/              MLlib PipelineModel.save
            scorer.json         the same pipeline for scoring without Spark (ml.portable), when given
            sagemaker-xgboost.tar.gz  an XGBoost model's booster as SageMaker's built-in container loads it
            metadata.json       written last: a version exists once this file does
        v2/ ...

Everything goes through the Hadoop FileSystem API of the Spark session's JVM, so the same code
works on a local directory, ``hdfs://`` and ``s3a://``.

Guarantees:

* ``register`` never overwrites: a version number is reserved by creating ``v<N>/_CLAIM`` with
  ``overwrite=false`` (create-if-absent: atomic on HDFS, an existence check then create on local
  disks and object stores, so two trainings racing on S3 are not fully excluded), the model is saved with
  MLlib's non-overwriting ``save`` and ``metadata.json`` is published by rename. A crash part-way
  leaves a ``v<N>`` without ``metadata.json``, which readers ignore and the next ``register`` skips.
* JSON files are replaced atomically, so a reader (e.g. the streaming scorer re-reading
  ``aliases.json`` at every micro-batch) sees the old or the new content, never a partial file.
  On filesystems with rename (local, HDFS) they are written to a temporary file and renamed over
  the target (HDFS: ``rename(..., OVERWRITE)``); on object stores (s3a, gs, ...), whose "rename" is
  a copy, the object is written directly -- a single PUT is already atomic there.
* Alias updates are last-writer-wins; two concurrent promotions of the same model are not
  serialised against each other.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"
METADATA_FILE = "metadata.json"
SCORER_FILE = "scorer.json"
MODEL_DIR = "model"
CLAIM_FILE = "_CLAIM"
_VERSION_DIR = re.compile(r"^v([1-9][0-9]*)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# Schemes whose rename is a copy (not atomic) but whose single-object PUT is atomic.


class RegistryError(Exception):
    """A registry operation failed (unknown model/version, bad name, I/O failure)."""


class ModelRegistry:
    """Versioned MLlib models and their aliases under ``root_uri`` (a directory or URI)."""

    def __init__(self, spark: SparkSession, root_uri: str) -> None:
        from streamsight.hadoop import HadoopFS

        self.spark = spark
        self.root_uri = root_uri.rstrip("/")
        self._hfs = HadoopFS(spark, self.root_uri, raw_local=True)

    # -- public API ---------------------------------------------------------------------------
    def register(self, name: str, model: PipelineModel, metadata: dict[str, Any],
                 scorer: dict[str, Any] | None = None, files: dict[str, bytes] | None = None) -> int:
        """Store ``model`` (and its :mod:`ml.portable` document ``scorer``, and ``files`` by name) as
        the next version of ``name``; return the version number.

        ``metadata`` must be JSON-serialisable; ``version`` and ``model_name`` are set in the stored
        copy (and in ``metadata`` itself). An existing version is never overwritten.
        """
        _check_name(name)
        version = self._claim_next_version(name)
        vdir = self._version_uri(name, version)
        model.write().save(f"{vdir}/{MODEL_DIR}")
        if scorer is not None:
            self._write_json(f"{vdir}/{SCORER_FILE}", scorer)
        for file, data in (files or {}).items():
            self._hfs.write_bytes(self._path(f"{vdir}/{file}"), data, overwrite=False)
        metadata["version"] = version
        metadata["model_name"] = name
        self._write_json(f"{vdir}/{METADATA_FILE}", metadata)
        log.info("registered model %s version %d at %s", name, version, vdir)
        return version

    def models(self) -> list[str]:
        """Names of the models that have at least one directory in the registry."""
        return sorted(st.getPath().getName() for st in self._hfs.list_status(self._path(self.root_uri))
                      if st.isDirectory() and _NAME.match(st.getPath().getName()))

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Metadata of every complete version, oldest first, with ``version`` and ``aliases``."""
        _check_name(name)
        aliases = self.aliases(name)
        out = []
        for version in self._version_numbers(name):
            meta = self._read_json(f"{self._version_uri(name, version)}/{METADATA_FILE}")
            if meta is None:
                continue  # being written, or a crashed register
            meta["version"] = version
            meta["aliases"] = sorted(a for a, v in aliases.items() if v == version)
            out.append(meta)
        return out

    def metadata(self, name: str, version: int) -> dict[str, Any]:
        """Metadata of one version; raises :class:`RegistryError` if it does not exist."""
        _check_name(name)
        meta = self._read_json(f"{self._version_uri(name, int(version))}/{METADATA_FILE}")
        if meta is None:
            raise RegistryError(f"model {name!r} has no version {version} in {self.root_uri}")
        meta["version"] = int(version)
        return meta

    def aliases(self, name: str) -> dict[str, int]:
        """All aliases of ``name`` (``{}`` when none or the model is unknown)."""
        _check_name(name)
        doc = self._read_json(f"{self._model_uri(name)}/{ALIASES_FILE}")
        if not isinstance(doc, dict):
            return {}
        return {str(k): int(v) for k, v in doc.items() if v is not None}

    def get_alias(self, name: str, alias: str) -> int | None:
        """The version ``alias`` points to, or ``None`` (unknown model or alias)."""
        return self.aliases(name).get(alias)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` at an existing ``version`` (atomic replacement of ``aliases.json``)."""
        _check_name(name)
        if not _ALIAS.match(alias):
            raise RegistryError(f"alias {alias!r} must be lower-case letters, digits, '_' or '-'")
        version = int(version)
        if self._read_json(f"{self._version_uri(name, version)}/{METADATA_FILE}") is None:
            known = [v["version"] for v in self.versions(name)]
            raise RegistryError(f"model {name!r} has no version {version} (known: {known or 'none'})")
        doc = self.aliases(name)
        previous = doc.get(alias)
        doc[alias] = version
        self._write_json(f"{self._model_uri(name)}/{ALIASES_FILE}", dict(sorted(doc.items())))
        log.info("model %s: alias %s -> v%d (was %s)", name, alias, version,
                 f"v{previous}" if previous is not None else "unset")

    def read_file(self, name: str, file: str, version: int | None = None) -> Any:
        """A model's JSON file (``backend.json``), or a version's (``scorer.json``): parsed, or None."""
        _check_name(name)
        folder = self._model_uri(name) if version is None else self._version_uri(name, int(version))
        return self._read_json(f"{folder}/{file}")

    def load(self, name: str, version: int) -> PipelineModel:
        """Load one version's :class:`~pyspark.ml.PipelineModel`."""
        from pyspark.ml import PipelineModel

        _check_name(name)
        uri = f"{self._version_uri(name, int(version))}/{MODEL_DIR}"
        if not self._hfs.exists(self._path(uri)):
            raise RegistryError(f"model {name!r} has no version {version} in {self.root_uri}")
        return PipelineModel.load(uri)

    # -- locations ------------------------------------------------------------------------------
    def model_uri(self, name: str, version: int) -> str:
        return f"{self._version_uri(name, version)}/{MODEL_DIR}"

    def _model_uri(self, name: str) -> str:
        return f"{self.root_uri}/{name}"

    def _version_uri(self, name: str, version: int) -> str:
        return f"{self.root_uri}/{name}/v{int(version)}"

    def _path(self, uri: str) -> Any:
        return self._hfs.path(uri)

    # -- versions -------------------------------------------------------------------------------
    def _version_numbers(self, name: str) -> list[int]:
        """Every ``v<N>`` directory, complete or not, ascending."""
        numbers = []
        for st in self._hfs.list_status(self._path(self._model_uri(name))):
            m = _VERSION_DIR.match(st.getPath().getName())
            if m and st.isDirectory():
                numbers.append(int(m.group(1)))
        return sorted(numbers)

    def _claim_next_version(self, name: str) -> int:
        existing = self._version_numbers(name)
        version = (existing[-1] if existing else 0) + 1
        for _ in range(100):
            claim = self._path(f"{self._version_uri(name, version)}/{CLAIM_FILE}")
            try:  # overwrite=False: fails if already claimed
                self._hfs.write_bytes(claim, json.dumps({"claimed_by": uuid.uuid4().hex}).encode(), overwrite=False)
            except Exception as exc:  # py4j wraps FileAlreadyExistsException
                if "FileAlreadyExists" in str(exc) or self._hfs.exists(claim):
                    version += 1
                    continue
                raise RegistryError(f"cannot create {claim.toString()}: {exc}") from exc
            if self._hfs.exists(self._path(f"{self._version_uri(name, version)}/{MODEL_DIR}")):
                version += 1  # a directory left without a claim file: never write into it
                continue
            return version
        raise RegistryError(f"could not reserve a new version of {name!r} after 100 attempts")

    # -- JSON files -----------------------------------------------------------------------------
    def _read_json(self, uri: str) -> Any:
        """Parsed content of a JSON file, or ``None`` if it does not exist."""
        try:
            text = self._hfs.read_text_or_none(self._path(uri))
        except Exception as exc:
            raise RegistryError(f"cannot read {uri}: {exc}") from exc
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise RegistryError(f"{uri} is not valid JSON: {exc}") from exc

    def _write_json(self, uri: str, doc: Any) -> None:
        """Atomically create or replace a JSON file."""
        data = (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
        self._hfs.replace(self._path(uri), data)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise RegistryError(f"model name {name!r} must be letters, digits, '_', '-' or '.'")
