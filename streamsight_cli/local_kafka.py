"""A local Apache Kafka: one KRaft process (broker and controller) started from the jars of
``pom.xml``'s ``broker`` profile, for ``streamsight broker``, the demo, the benchmarks and the tests.

Layout of its data folder (kept across restarts; :meth:`LocalKafka.reset` wipes it)::

    meta.json          cluster id and ports, chosen at the first start
    credentials.json   SCRAM-SHA-512 passwords of the principals (mode 0600)
    tls/ca.pem         the certificate authority clients trust (``ssl.ca.location``)
    tls/broker.pem     the broker's key and certificate chain (PEM keystore, mode 0600)
    server.properties  written at every start
    log/               Kafka's log directories (topic data and the KRaft metadata log)
    server.log         the broker's own log; server.err its standard error

Listeners, all on 127.0.0.1:

* ``PLAINTEXT`` (default port 9092): no authentication; its principal, ``User:ANONYMOUS``, is a
  super user. For local development only: it never leaves loopback.
* ``SASL_SSL`` (port + 2): TLS with the generated CA, SCRAM-SHA-512 logins, ACLs enforced by
  Kafka's ``StandardAuthorizer`` (:func:`streamsight.kafka.grant_stream_acls`).
* ``CONTROLLER`` (port + 1): the KRaft quorum of this one node.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streamsight import jars
from streamsight.contracts import Contract
from streamsight.errors import BrokerUnavailableError, ConfigError
from streamsight.settings import Settings
from streamsight_cli.processes import stop_process

# principal -> what it is for (the ACLs are in streamsight.kafka.grant_stream_acls)
PRINCIPALS = {
    "admin": "super user: topics, ACLs, credentials",
    "streamsight-pipeline": "streaming jobs: read raw topics, write dead-letter and predictions topics "
                            "(and read the predictions topics of streams with model.scoring: online)",
    "streamsight-producer": "producers: write raw topics only",
}
SUPER_USERS = ("ANONYMOUS", "admin")
DEFAULT_PORT = 9092
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = kafka: %p %m%n
appender.err.filter.threshold.type = ThresholdFilter
appender.err.filter.threshold.level = error
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
rootLogger.appenderRef.err.ref = err
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
"""


@dataclass(frozen=True)
class Ports:
    plaintext: int
    controller: int
    sasl_ssl: int

    @classmethod
    def from_base(cls, base: int) -> Ports:
        return cls(base, base + 1, base + 2)

    @classmethod
    def free(cls) -> Ports:
        """Three ports the kernel reports free now."""
        socks = [socket.socket() for _ in range(3)]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            p, c, s_ = (s.getsockname()[1] for s in socks)
        finally:
            for s in socks:
                s.close()
        return cls(p, c, s_)


def _in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def make_tls(directory: Path) -> None:
    """A CA (``ca.pem``) and a broker certificate for 127.0.0.1 / localhost signed by it, with
    its PKCS#8 key (``broker.pem``, the form Kafka's PEM keystore reads)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC) - timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Streamsight local CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    keystore = directory / "broker.pem"
    keystore.touch(mode=0o600)
    keystore.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
                         + cert.public_bytes(pem) + ca.public_bytes(pem))


def new_cluster_id() -> str:
    """A KRaft cluster id (a UUID, URL-safe base64) that does not start with '-': the storage tool
    would read such an id as an option (one id in 64 did)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class LocalKafka:
    """One Apache Kafka process on loopback with its data in ``data_dir``.

    ``port``: the plaintext port (controller = port + 1, SASL_SSL = port + 2); ``0`` picks free
    ports; ``None`` reuses the ports of the last start, else :data:`DEFAULT_PORT`.
    """

    data_dir: Path
    port: int | None = None
    heap_mb: int = 512
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    ports: Ports | None = field(default=None, init=False)

    # -- files -----------------------------------------------------------------------------
    @property
    def ca_file(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def bootstrap_servers(self) -> str:
        assert self.ports is not None, "not started"
        return f"127.0.0.1:{self.ports.plaintext}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        assert self.ports is not None, "not started"
        return f"127.0.0.1:{self.ports.sasl_ssl}"

    @property
    def version(self) -> str:
        return jars.version("broker", "kafka-server") or "unknown"

    def credentials(self) -> dict[str, str]:
        """Principal name -> SCRAM password (created at the first start)."""
        path = self.data_dir / "credentials.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(json.dumps({p: secrets.token_urlsafe(18) for p in PRINCIPALS}, indent=2) + "\n",
                            encoding="utf-8")
        creds: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        return creds

    def admin_settings(self, settings: Settings) -> Settings:
        """``settings`` pointing at the plaintext listener (a super user: topics, ACLs)."""
        return settings.with_kafka(bootstrap_servers=self.bootstrap_servers, security_protocol="PLAINTEXT")

    def describe(self) -> dict[str, Any]:
        """What clients need to connect (written to the address file by ``streamsight broker``)."""
        return {
            "broker": f"Apache Kafka {self.version}",
            "bootstrap_servers": self.bootstrap_servers,
            "sasl_ssl_bootstrap_servers": self.sasl_ssl_bootstrap_servers,
            "ssl_ca_location": str(self.ca_file),
            "sasl_mechanism": "SCRAM-SHA-512",
            "credentials_file": str(self.data_dir / "credentials.json"),
            "data_dir": str(self.data_dir),
        }

    def _meta(self) -> dict[str, Any]:
        path = self.data_dir / "meta.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def _choose_ports(self, meta: dict[str, Any]) -> Ports:
        if self.ports is not None:  # a restart of this object: the same ports, as clients expect
            return self.ports
        if self.port == 0:
            return Ports.free()
        if self.port is not None:
            return Ports.from_base(self.port)
        if "ports" in meta:
            return Ports(**meta["ports"])
        return Ports.from_base(DEFAULT_PORT)

    def _server_properties(self, ports: Ports) -> str:
        log_dir = self.data_dir / "log"
        tls = self.data_dir / "tls"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{ports.controller}",
            "controller.listener.names": "CONTROLLER",
            "listeners": (f"PLAINTEXT://127.0.0.1:{ports.plaintext},CONTROLLER://127.0.0.1:{ports.controller},"
                          f"SASL_SSL://127.0.0.1:{ports.sasl_ssl}"),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{ports.plaintext},SASL_SSL://127.0.0.1:{ports.sasl_ssl}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(log_dir),
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # One broker that is its own controller: after a SIGKILL its restart waits out the old
            # registration's session (9 s by default) before it serves; 2 s is plenty on loopback.
            "broker.session.timeout.ms": "2000",
            "broker.heartbeat.interval.ms": "500",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": ";".join(f"User:{u}" for u in SUPER_USERS),
            "allow.everyone.if.no.acl.found": "false",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
            "listener.name.sasl_ssl.ssl.keystore.location": str(tls / "broker.pem"),
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _java(self, main: str, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
        java = jars.java_executable("Apache Kafka")
        cp = os.pathsep.join(str(p) for p in jars.classpath("broker"))
        cmd = [java, f"-Xms{self.heap_mb // 2}m", f"-Xmx{self.heap_mb}m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
               "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
               "-cp", cp, main, *args]
        return subprocess.Popen(cmd, **popen)

    # -- life cycle ------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> LocalKafka:
        """Start the broker (formatting its storage and making TLS material at the first start)
        and wait until it serves metadata and every principal can log in."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        meta = self._meta()
        ports = self._choose_ports(meta)
        busy = [p for p in (ports.plaintext, ports.controller, ports.sasl_ssl) if _in_use(p)]
        if busy:
            raise ConfigError(f"--port: 127.0.0.1:{busy[0]} is already in use (another Kafka?); choose another "
                              f"--port, or --port 0 for free ones")
        self.ports = ports
        if not (self.data_dir / "tls" / "broker.pem").exists():
            make_tls(self.data_dir / "tls")
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_file), encoding="utf-8")
        config = self.data_dir / "server.properties"
        config.write_text(self._server_properties(ports), encoding="utf-8")
        cluster_id = meta.get("cluster_id") or new_cluster_id()
        if not (self.data_dir / "log" / "meta.properties").exists():
            fmt = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            out, _ = fmt.communicate(timeout=timeout)
            if fmt.returncode != 0:
                raise BrokerUnavailableError(f"formatting Kafka's storage in {self.data_dir} failed:\n{out.decode()[-2000:]}")
        (self.data_dir / "meta.json").write_text(json.dumps({"cluster_id": cluster_id, "ports": ports.__dict__}) + "\n",
                                                encoding="utf-8")
        with open(self.data_dir / "server.err", "ab") as err:  # the child keeps its own descriptor
            self._proc = self._java("kafka.Kafka", str(config), stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)
        self._wait_ready(timeout)
        self._ensure_credentials(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "socket.connection.setup.timeout.ms": 2000,
                             "log_level": 2})  # not "connection refused" every 50 ms while it starts
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerUnavailableError(f"Apache Kafka exited with {self._proc.returncode} at start-up:\n"
                                             + self._tail())
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except Exception:
                pass
        self.kill()
        raise BrokerUnavailableError(f"Apache Kafka did not serve metadata within {timeout:g}s:\n{self._tail()}")

    def _ensure_credentials(self, timeout: float) -> None:
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        upserts: list[Any] = [UserScramCredentialUpsertion(user, info, password.encode())
                              for user, password in self.credentials().items()]
        for future in admin.alter_user_scram_credentials(upserts, request_timeout=timeout).values():
            future.result(timeout=timeout)

    def _tail(self, lines: int = 30) -> str:
        err = b""
        if (self.data_dir / "server.err").exists():
            err = (self.data_dir / "server.err").read_bytes()
        log = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:] if self.log_file.exists() else []
        return (err.decode(errors="replace")[-2000:] + "\n" + "\n".join(log)).strip()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (Kafka's controlled shutdown), then SIGKILL after ``timeout``."""
        if self._proc is None:
            return
        stop_process(self._proc, timeout)
        self._close()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._close()

    def _close(self) -> None:
        self._proc = None

    def reset(self) -> None:
        """Delete every topic, credential and certificate (the broker must be stopped)."""
        if self.running:
            raise RuntimeError("stop the broker before resetting its data")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running_kafka(settings: Settings, contracts: Iterable[Contract], data_dir: Path) -> Iterator[tuple[LocalKafka, Settings]]:
    """A fresh local Kafka on free ports in ``data_dir`` (wiped first) with the contracts' topics and
    ACLs, and ``settings`` pointing at its plaintext listener; stopped at the end of the block."""
    from streamsight.kafka import set_up_streams

    kafka = LocalKafka(data_dir, port=0)
    kafka.reset()
    kafka.start()
    try:
        local = kafka.admin_settings(settings)
        set_up_streams(local, contracts)
        yield kafka, local
    finally:
        kafka.stop()
