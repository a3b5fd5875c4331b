"""The Hadoop FileSystem API (local files, HDFS, S3A) from Python, through a Spark session's JVM:
the one wrapper the lake writer, the model registry and the SQL views use."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from streamsight.errors import StreamsightError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


# schemes whose rename is a copy: a file is written in place there, not renamed over
OBJECT_STORES = {"s3", "s3a", "s3n", "gs", "oss", "wasb", "wasbs", "abfs", "abfss", "cos", "obs"}


class HadoopError(StreamsightError):
    """A file-system operation failed."""


class PathExistsError(HadoopError):
    """A file that must not exist yet already does (a lost race for a commit)."""


_DENIALS = (
    re.compile(r"AccessControlException: (Permission denied: [^\n]*)"),  # HDFS permissions and ACLs
    re.compile(r"AccessDeniedException: ([^\n]*)"),  # S3A: 403 from the object store
)


def access_denied(exc: BaseException) -> str | None:
    """The file system's one-line refusal inside ``exc`` (a Spark or py4j error whose cause is an
    HDFS ``AccessControlException`` or an S3A ``AccessDeniedException``), else None."""
    texts = [str(exc)]
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            texts.append(str(java.toString()))
            cause = java.getCause()
            while cause is not None:
                texts.append(str(cause.toString()))
                cause = cause.getCause()
        except Exception:
            pass
    for text in texts:
        for pattern in _DENIALS:
            found = pattern.search(text)
            if found:
                return found.group(1).strip()
    return None


def java_class_name(exc: BaseException) -> str:
    """The Java class of the exception py4j wrapped (``""`` for a Python one)."""
    java_exc = getattr(exc, "java_exception", None)
    if java_exc is None:
        return ""
    try:
        return str(java_exc.getClass().getName())
    except Exception:
        return ""


class HadoopFS:
    """A Hadoop FileSystem (local, HDFS, S3A, ...) through the session's JVM, rooted at ``path``."""

    def __init__(self, spark: SparkSession, path: str, *, raw_local: bool = False) -> None:
        jvm = getattr(spark, "_jvm", None)
        jsession = getattr(spark, "_jsparkSession", None)
        if jvm is None or jsession is None:
            raise HadoopError("a classic (JVM-backed) SparkSession is needed; Spark Connect sessions have "
                              "no access to the Hadoop FileSystem API")
        self.spark = spark
        self.jvm = jvm
        try:  # the session's Hadoop conf includes spark.hadoop.* set on the session
            self.conf = jsession.sessionState().newHadoopConf()
        except Exception:
            self.conf = spark._jsc.hadoopConfiguration()
        self._Path = jvm.org.apache.hadoop.fs.Path
        raw = self._Path(path)
        self.fs = raw.getFileSystem(self.conf)
        if raw_local and (self.fs.getScheme() or "").lower() == "file":
            # the checksummed local file system writes .crc files beside, renamed apart from the
            # data: a reader between the two renames sees a checksum error; the raw one has none
            self.fs = self.fs.getRawFileSystem()
        self.root = self.fs.makeQualified(raw)
        self._fc: Any = None
        self._fc_checked = False

    def _gateway(self) -> Any:
        gateway = self.spark.sparkContext._gateway
        if gateway is None:
            raise HadoopError("the SparkContext has no JVM gateway")
        return gateway

    # -- paths ----------------------------------------------------------------------------
    def path(self, uri: str) -> Any:
        """A Hadoop ``Path`` of ``uri``."""
        return self._Path(uri)

    def child(self, parent: Any, *names: str) -> Any:
        p = parent
        for name in names:
            p = self._Path(p, name)
        return p

    @staticmethod
    def uri(p: Any) -> str:
        return str(p.toUri().toString())

    def path_from_uri(self, uri_string: str) -> Any:
        return self._Path(self.jvm.java.net.URI(uri_string))

    # -- metadata operations --------------------------------------------------------------
    def exists(self, p: Any) -> bool:
        return bool(self.fs.exists(p))

    def list_status(self, directory: Any) -> list[Any]:
        """Children of ``directory`` (empty if it does not exist)."""
        try:
            return list(self.fs.listStatus(directory))
        except Exception as exc:
            if "FileNotFoundException" in java_class_name(exc):
                return []
            raise

    def list_files(self, directory: Any) -> Iterator[Any]:
        """Every file below ``directory``, recursively (nothing if it does not exist)."""
        try:
            it = self.fs.listFiles(directory, True)
            while it.hasNext():
                yield it.next()
        except Exception as exc:
            if "FileNotFoundException" in java_class_name(exc):
                return
            raise

    def file_status(self, p: Any) -> Any | None:
        try:
            return self.fs.getFileStatus(p)
        except Exception as exc:
            if "FileNotFoundException" in java_class_name(exc):
                return None
            raise

    def mkdirs(self, p: Any) -> None:
        if not self.fs.mkdirs(p) and not self.exists(p):
            raise HadoopError(f"could not create directory {self.uri(p)}")

    def delete(self, p: Any, recursive: bool = False) -> None:
        self.fs.delete(p, recursive)

    def rename(self, src: Any, dst: Any) -> None:
        if not self.fs.rename(src, dst):
            raise HadoopError(f"rename {self.uri(src)} -> {self.uri(dst)} failed")

    # -- file contents --------------------------------------------------------------------
    def read_text_or_none(self, p: Any) -> str | None:
        """The file's text, or None if it does not exist."""
        try:
            return self.read_text(p)
        except Exception as exc:
            if "FileNotFoundException" in java_class_name(exc) or not self.exists(p):
                return None
            raise

    def read_text(self, p: Any) -> str:
        stream = self.fs.open(p)
        try:
            return bytes(stream.readAllBytes()).decode("utf-8")
        finally:
            stream.close()

    def write_bytes(self, p: Any, data: bytes, *, overwrite: bool) -> None:
        out = self.fs.create(p, overwrite)
        try:
            if data:
                out.write(bytearray(data))
        finally:
            out.close()

    def _file_context(self) -> Any:
        if not self._fc_checked:
            self._fc_checked = True
            try:
                self._fc = self.jvm.org.apache.hadoop.fs.FileContext.getFileContext(
                    self.root.toUri(), self.conf
                )
            except Exception:
                self._fc = None
        return self._fc

    def _temporary_beside(self, target: Any, data: bytes) -> Any:
        """``data`` in a new hidden file next to ``target``; its path."""
        tmp = self._Path(target.getParent(), f".{target.getName()}.{uuid.uuid4()}.tmp")
        self.write_bytes(tmp, data, overwrite=False)
        return tmp

    def _atomic_rename(self, src: Any, dst: Any, option: str) -> bool:
        """FileContext rename with ``Options.Rename.<option>`` (``NONE``: fail if ``dst`` exists;
        ``OVERWRITE``), atomic on HDFS; False, doing nothing, where the scheme has no FileContext."""
        fc = self._file_context()
        if fc is None:
            return False
        rename_opt = self.jvm.org.apache.hadoop.fs.Options.Rename
        opts = self._gateway().new_array(rename_opt, 1)
        opts[0] = getattr(rename_opt, option)
        fc.rename(src, dst, opts)
        return True

    def write_atomic(self, target: Any, data: bytes) -> None:
        """Write ``target`` all-or-nothing; :class:`PathExistsError` if it exists already.

        Like Spark's CheckpointFileManager: write a hidden temporary file next to it, then rename
        without overwriting (FileContext rename with ``Options.Rename.NONE``, which is atomic on
        HDFS; file systems without a FileContext binding check existence first, then rename).
        """
        tmp = self._temporary_beside(target, data)
        try:
            if not self._atomic_rename(tmp, target, "NONE"):
                if self.exists(target):
                    raise PathExistsError(f"{self.uri(target)} already exists")
                self.rename(tmp, target)
        except Exception as exc:
            self._delete_quietly(tmp)
            if isinstance(exc, PathExistsError):
                raise
            if "FileAlreadyExistsException" in java_class_name(exc):
                raise PathExistsError(f"{self.uri(target)} already exists") from exc
            raise

    def _delete_quietly(self, p: Any) -> None:
        try:
            self.fs.delete(p, False)
        except Exception:
            log.warning("could not delete temporary file %s", self.uri(p))

    def replace(self, target: Any, data: bytes) -> None:
        """Create or replace ``target`` atomically where the file system can (a temporary file
        renamed over it; object stores, whose renames are copies, are written in place)."""
        if (self.root.toUri().getScheme() or "") in OBJECT_STORES:
            self.write_bytes(target, data, overwrite=True)
            return
        tmp = self._temporary_beside(target, data)
        try:
            if not self._atomic_rename(tmp, target, "OVERWRITE"):
                self.delete(target)
                self.rename(tmp, target)
        finally:
            if self.exists(tmp):
                self._delete_quietly(tmp)
