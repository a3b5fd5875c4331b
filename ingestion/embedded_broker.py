"""In-memory development broker built on librdkafka's mock cluster.

This is **not** Apache Kafka.  It drives the ``rd_kafka_mock_*`` API that
ships inside the librdkafka shared library bundled with the confluent-kafka
wheel, through :mod:`ctypes`.  The mock cluster speaks the real Kafka wire
protocol over real loopback TCP listeners, so ordinary clients
(confluent-kafka, and kafka-python with ``api_version=(2, 1, 0)`` pinned) can
produce, fetch, list offsets, join consumer groups and commit offsets.

Known limits (use it for local runs and tests only):

* the CreateTopics admin API is not implemented -- create topics with
  :meth:`EmbeddedBroker.create_topic` (or the ``topics`` constructor argument);
* everything lives in memory and is gone when the broker stops;
* each partition keeps only a bounded amount of data (a few MB) and evicts
  older records, moving the low watermark forward;
* the listening ports are ephemeral (chosen by the OS) and cannot be chosen
  (``rd_kafka_mock_broker_set_host_port`` only changes the *advertised* address);
* topics are auto-created on first use with 4 partitions -- create them
  explicitly if the partition count matters;
* classic consumer-group protocol: once the last member has left a group, the
  next member to join waits ``session.timeout.ms - 1 s`` of the departed member
  (44 s with the 45 s default) before getting an assignment.  Use a short
  ``session.timeout.ms`` in tests, or ``group.protocol=consumer`` (KIP-848),
  which has no such wait.  ``group.initial.rebalance.delay.ms`` defaults to 0
  here (see :class:`EmbeddedBroker`).

Run it as a process with::

    python -m ingestion.embedded_broker --topic events:3 --address-file var/broker.addr
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import glob
import importlib.util
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["EmbeddedBroker", "serve", "main", "find_librdkafka"]

# librdkafka constants (rdkafka.h)
_RD_KAFKA_PRODUCER = 0
_RD_KAFKA_CONF_OK = 0
_ERR_NO_ERROR = 0
_ERR_TOPIC_ALREADY_EXISTS = 36

_ERRSTR_SIZE = 512

_c_void_p = ctypes.c_void_p
_c_char_p = ctypes.c_char_p
_c_int = ctypes.c_int
_c_int32 = ctypes.c_int32
_c_size_t = ctypes.c_size_t

# name -> (restype, argtypes).  Pointers are c_void_p so nothing is truncated
# to a C int on 64-bit platforms.
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "rd_kafka_conf_new": (_c_void_p, []),
    "rd_kafka_conf_destroy": (None, [_c_void_p]),
    "rd_kafka_conf_set": (_c_int, [_c_void_p, _c_char_p, _c_char_p, _c_char_p, _c_size_t]),
    "rd_kafka_new": (_c_void_p, [_c_int, _c_void_p, _c_char_p, _c_size_t]),
    "rd_kafka_destroy": (None, [_c_void_p]),
    "rd_kafka_err2str": (_c_char_p, [_c_int]),
    "rd_kafka_mock_cluster_new": (_c_void_p, [_c_void_p, _c_int]),
    "rd_kafka_mock_cluster_destroy": (None, [_c_void_p]),
    "rd_kafka_mock_cluster_bootstraps": (_c_char_p, [_c_void_p]),
    "rd_kafka_mock_topic_create": (_c_int, [_c_void_p, _c_char_p, _c_int, _c_int]),
    "rd_kafka_mock_broker_set_down": (_c_int, [_c_void_p, _c_int32]),
    "rd_kafka_mock_broker_set_up": (_c_int, [_c_void_p, _c_int32]),
    "rd_kafka_mock_broker_set_rtt": (_c_int, [_c_void_p, _c_int32, _c_int]),
}
# Present only in newer librdkafka builds; used when available.
_OPTIONAL_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "rd_kafka_mock_group_initial_rebalance_delay_ms": (None, [_c_void_p, _c_int32]),
}

_lib_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def find_librdkafka() -> str:
    """Return the path of the librdkafka shared library bundled with confluent-kafka.

    ``STREAMSIGHT_LIBRDKAFKA`` overrides the lookup; a system ``librdkafka``
    found by :func:`ctypes.util.find_library` is the last resort.
    """
    override = os.environ.get("STREAMSIGHT_LIBRDKAFKA")
    if override:
        if not Path(override).is_file():
            raise RuntimeError(f"STREAMSIGHT_LIBRDKAFKA={override!r} is not a file")
        return override

    spec = importlib.util.find_spec("confluent_kafka")
    candidates: list[str] = []
    if spec is not None and spec.submodule_search_locations:
        pkg_dir = Path(next(iter(spec.submodule_search_locations)))
        site_dir = pkg_dir.parent
        patterns = [
            site_dir / "confluent_kafka.libs" / "librdkafka*.so*",  # manylinux (auditwheel)
            pkg_dir / ".dylibs" / "librdkafka*.dylib",  # macOS (delocate)
            site_dir / "confluent_kafka.libs" / "librdkafka*.dll",  # Windows (delvewheel)
            pkg_dir / "librdkafka*",
        ]
        for pattern in patterns:
            candidates.extend(sorted(glob.glob(str(pattern))))
    if candidates:
        return candidates[0]

    system = ctypes.util.find_library("rdkafka")
    if system:
        return system
    where = "not installed" if spec is None else f"no librdkafka next to {spec.origin}"
    raise RuntimeError(
        f"cannot locate the librdkafka shared library (confluent_kafka: {where}); "
        "install confluent-kafka from a binary wheel or set STREAMSIGHT_LIBRDKAFKA"
    )


def _load_library() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        path = find_librdkafka()
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise RuntimeError(f"cannot load librdkafka from {path}: {exc}") from exc
        missing = []
        for name, (restype, argtypes) in (_SIGNATURES | _OPTIONAL_SIGNATURES).items():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                if name in _SIGNATURES:
                    missing.append(name)
                continue
            fn.restype = restype
            fn.argtypes = argtypes
        if missing:
            raise RuntimeError(
                f"librdkafka at {path} lacks the mock-cluster symbol(s) {', '.join(missing)}; "
                "a librdkafka build with the mock cluster (>= 1.4) is required"
            )
        _lib = lib
        return lib


def _err_text(lib: ctypes.CDLL, err: int) -> str:
    raw = lib.rd_kafka_err2str(err)
    return raw.decode("utf-8", "replace") if raw else f"error {err}"


class EmbeddedBroker:
    """In-memory development broker (librdkafka mock cluster). NOT Apache Kafka: for local runs and tests only."""

    def __init__(
        self,
        *,
        num_brokers: int = 1,
        topics: Mapping[str, int] | None = None,
        group_initial_rebalance_delay_ms: int = 0,
    ) -> None:
        """``group_initial_rebalance_delay_ms`` mirrors the Kafka broker setting of that
        name (Kafka's default is 3000); 0 lets a consumer group's first member get its
        assignment immediately, which keeps local runs and tests snappy."""
        if num_brokers < 1:
            raise ValueError("num_brokers must be >= 1")
        if group_initial_rebalance_delay_ms < 0:
            raise ValueError("group_initial_rebalance_delay_ms must be >= 0")
        self._num_brokers = num_brokers
        self._rebalance_delay_ms = int(group_initial_rebalance_delay_ms)
        self._initial_topics: dict[str, int] = dict(topics or {})
        for name, partitions in self._initial_topics.items():
            self._check_topic(name, partitions)
        self._lock = threading.RLock()
        self._rk: int | None = None
        self._mcluster: int | None = None
        self._bootstrap: str | None = None

    # -- lifecycle -----------------------------------------------------
    def start(self) -> str:
        """Start the cluster (if not running) and return its bootstrap servers."""
        with self._lock:
            if self._bootstrap is not None:
                return self._bootstrap
            lib = _load_library()
            errstr = ctypes.create_string_buffer(_ERRSTR_SIZE)
            conf = lib.rd_kafka_conf_new()
            if not conf:
                raise RuntimeError("rd_kafka_conf_new() failed")
            try:
                # The handle only does book keeping for the mock cluster; keep it quiet
                # (it would otherwise warn that no bootstrap.servers is configured).
                for key, value in (("log_level", "0"), ("client.id", "streamsight-embedded-broker")):
                    res = lib.rd_kafka_conf_set(conf, key.encode(), value.encode(), errstr, _ERRSTR_SIZE)
                    if res != _RD_KAFKA_CONF_OK:
                        raise RuntimeError(f"rd_kafka_conf_set({key}) failed: {errstr.value.decode(errors='replace')}")
            except BaseException:
                lib.rd_kafka_conf_destroy(conf)
                raise
            rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errstr, _ERRSTR_SIZE)
            if not rk:
                lib.rd_kafka_conf_destroy(conf)  # ownership passes to rd_kafka_new only on success
                raise RuntimeError(f"rd_kafka_new() failed: {errstr.value.decode(errors='replace')}")
            mcluster = lib.rd_kafka_mock_cluster_new(rk, self._num_brokers)
            if not mcluster:
                lib.rd_kafka_destroy(rk)
                raise RuntimeError("rd_kafka_mock_cluster_new() failed (could not bind a loopback listener?)")
            raw = lib.rd_kafka_mock_cluster_bootstraps(mcluster)
            if not raw:
                lib.rd_kafka_mock_cluster_destroy(mcluster)
                lib.rd_kafka_destroy(rk)
                raise RuntimeError("rd_kafka_mock_cluster_bootstraps() returned NULL")
            self._rk, self._mcluster = rk, mcluster
            self._bootstrap = raw.decode()
            set_delay = getattr(lib, "rd_kafka_mock_group_initial_rebalance_delay_ms", None)
            if set_delay is not None:
                set_delay(mcluster, self._rebalance_delay_ms)
            try:
                for name, partitions in self._initial_topics.items():
                    self.create_topic(name, partitions)
            except BaseException:
                self.stop()
                raise
            return self._bootstrap

    def stop(self) -> None:
        """Destroy the cluster (dropping all data) and the rd_kafka_t handle. Idempotent."""
        with self._lock:
            mcluster, rk = self._mcluster, self._rk
            self._mcluster = self._rk = None
            self._bootstrap = None
            if mcluster is None and rk is None:
                return
            lib = _load_library()
            if mcluster:
                lib.rd_kafka_mock_cluster_destroy(mcluster)
            if rk:
                lib.rd_kafka_destroy(rk)

    @property
    def running(self) -> bool:
        return self._bootstrap is not None

    @property
    def bootstrap_servers(self) -> str:
        if self._bootstrap is None:
            raise RuntimeError("EmbeddedBroker is not running; call start() first")
        return self._bootstrap

    @property
    def num_brokers(self) -> int:
        return self._num_brokers

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:  # best effort: never leak listeners/threads
        try:
            self.stop()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = self._bootstrap or "stopped"
        return f"EmbeddedBroker(num_brokers={self._num_brokers}, {state})"

    # -- topics --------------------------------------------------------
    @staticmethod
    def _check_topic(name: str, partitions: int) -> None:
        if not name or not isinstance(name, str):
            raise ValueError(f"invalid topic name {name!r}")
        if int(partitions) < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1, got {partitions}")

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create ``name`` with ``partitions`` partitions; an existing topic is left as is.

        The replication factor is ``min(3, num_brokers)``.  Partition counts of
        an existing topic are not changed.
        """
        self._check_topic(name, partitions)
        with self._lock:
            mcluster = self._require_cluster()
            lib = _load_library()
            replication = min(3, self._num_brokers)
            err = lib.rd_kafka_mock_topic_create(mcluster, name.encode(), int(partitions), replication)
            if err not in (_ERR_NO_ERROR, _ERR_TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"creating topic {name!r} failed: {_err_text(lib, err)}")

    # -- fault injection -----------------------------------------------
    def broker_down(self, broker_id: int = 1) -> None:
        """Disconnect clients from ``broker_id`` (-1: all) and refuse new connections."""
        self._broker_call("rd_kafka_mock_broker_set_down", broker_id)

    def broker_up(self, broker_id: int = 1) -> None:
        """Let ``broker_id`` (-1: all) accept connections again."""
        self._broker_call("rd_kafka_mock_broker_set_up", broker_id)

    def set_rtt(self, broker_id: int, rtt_ms: int) -> None:
        """Delay every response of ``broker_id`` (-1: all) by ``rtt_ms`` milliseconds."""
        if rtt_ms < 0:
            raise ValueError("rtt_ms must be >= 0")
        self._broker_call("rd_kafka_mock_broker_set_rtt", broker_id, int(rtt_ms))

    def _broker_call(self, fname: str, broker_id: int, *extra: int) -> None:
        if broker_id != -1 and not 1 <= broker_id <= self._num_brokers:
            raise ValueError(f"broker_id must be -1 or within 1..{self._num_brokers}, got {broker_id}")
        with self._lock:
            mcluster = self._require_cluster()
            lib = _load_library()
            err = getattr(lib, fname)(mcluster, int(broker_id), *extra)
            if err != _ERR_NO_ERROR:
                raise RuntimeError(f"{fname}(broker {broker_id}) failed: {_err_text(lib, err)}")

    def _require_cluster(self) -> int:
        if self._mcluster is None:
            raise RuntimeError("EmbeddedBroker is not running; call start() first")
        return self._mcluster


# ---------------------------------------------------------------------------
# process entry point
# ---------------------------------------------------------------------------


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def serve(
    *,
    topics: Mapping[str, int],
    address_file: Path | None,
    num_brokers: int = 1,
    ready: Callable[[str], None] | None = None,
    stop_event: threading.Event | None = None,
) -> None:
    """Run an :class:`EmbeddedBroker` until SIGTERM or SIGINT.

    Writes the bootstrap address to ``address_file`` (atomically) and prints
    ``bootstrap.servers=<addr>`` on stdout, then calls ``ready(addr)``.  On
    shutdown the broker is stopped and the address file removed.

    Signal handlers can only be installed from the main thread; when called
    from another thread, pass ``stop_event`` and set it to stop.
    ``stop_event`` also works from the main thread in addition to the signals.
    """
    stop = stop_event if stop_event is not None else threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    if not in_main and stop_event is None:
        raise RuntimeError("serve() outside the main thread needs a stop_event (signals go to the main thread)")

    previous: dict[int, object] = {}

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    address_path = Path(address_file) if address_file is not None else None
    broker = EmbeddedBroker(num_brokers=num_brokers, topics=topics)
    try:
        if in_main:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, _on_signal)
        addr = broker.start()
        if address_path is not None:
            _write_atomically(address_path, addr + "\n")
        print(f"bootstrap.servers={addr}", flush=True)
        if ready is not None:
            ready(addr)
        # Wake up regularly so the main thread runs Python-level signal handlers.
        while not stop.wait(0.2):
            pass
    finally:
        try:
            broker.stop()
        finally:
            if address_path is not None:
                try:
                    address_path.unlink()
                except FileNotFoundError:
                    pass
            for sig, handler in previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]


def _parse_topic(spec: str) -> tuple[str, int]:
    name, sep, parts = spec.rpartition(":")
    if not sep:
        name, parts = spec, "1"
    try:
        count = int(parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --topic {spec!r}: expected NAME[:PARTITIONS]") from None
    if not name or count < 1:
        raise argparse.ArgumentTypeError(f"bad --topic {spec!r}: expected NAME[:PARTITIONS] with PARTITIONS >= 1")
    return name, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ingestion.embedded_broker",
        description="In-memory development Kafka-protocol broker (librdkafka mock cluster; NOT Apache Kafka).",
    )
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        type=_parse_topic,
        metavar="NAME:PARTITIONS",
        help="topic to create at start (repeatable)",
    )
    parser.add_argument("--address-file", type=Path, default=None, help="write the bootstrap address here")
    parser.add_argument("--brokers", type=int, default=1, help="number of mock brokers (default 1)")
    args = parser.parse_args(argv)
    try:
        serve(topics=dict(args.topic), address_file=args.address_file, num_brokers=args.brokers)
    except RuntimeError as exc:
        print(f"embedded broker: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
