"""A local HDFS: Hadoop's own NameNode and DataNode, one process each on loopback, started from the
jars of ``pom.xml``'s ``hdfs`` profile, for ``streamsight hdfs``, the tests and the benchmarks.

Layout of its data folder (kept across restarts; :meth:`LocalHdfs.reset` wipes it)::

    meta.json            the NameNode's RPC port, chosen at the first start (the HTTP port is new each start)
    conf/                core-site.xml and hdfs-site.xml, written at every start
    keys/lake.jceks      the key provider (a Java keystore) holding the lake's encryption key
    name/                the NameNode's metadata (fsimage and edit log)
    data/                the DataNode's block files
    namenode.log, datanode.log   their logs; namenode.err, datanode.err their standard error

The lake (:data:`LAKE_PATH`) is set up at the first start:

* an HDFS **encryption zone** (transparent encryption with key ``lake`` from the JCEKS key
  provider, as Hadoop's own encryption tests do; no KMS server: Maven Central serves no Hadoop
  3.5 KMS). Blocks of every file under it are AES-CTR encrypted on the DataNode's disk; HDFS
  clients on this machine read the provider's path from the NameNode and decrypt.
* owned by the pipeline's user (by default the user running this), group ``streamsight``;
  ACLs (:func:`streamsight.lake.hdfs_acls`) give the analysts' group read access to silver,
  predictions and gold only, and everyone else nothing.

Users and groups are simple authentication (``HADOOP_USER_NAME``) with a static group mapping in
the NameNode's configuration: the pipeline's user in ``streamsight``, each analyst in
``analysts``, ``hdfs`` (the daemons' user, the HDFS super user) in ``supergroup``.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from streamsight import jars
from streamsight.errors import ConfigError, StreamsightError
from streamsight.lake import ANALYSTS_GROUP, PIPELINE_GROUP, hdfs_acls
from streamsight_cli.processes import stop_process

LAKE_PATH = "/lake"
KEY_NAME = "lake"
SUPER_USER = "hdfs"
DEFAULT_PORT = 8020
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
# What Hadoop's own launch scripts open on Java 17 (hadoop-functions.sh, hadoop_finalize_jpms_opts)
_JPMS = [f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in (
    "java.io", "java.lang", "java.lang.reflect", "java.math", "java.net", "java.text", "java.util",
    "java.util.concurrent", "java.util.zip", "sun.security.util", "sun.security.x509")]

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d %p %c{{1}}: %m%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.audit.name = org.apache.hadoop.hdfs.server.namenode.FSNamesystem.audit
logger.audit.level = warn
logger.state.name = org.apache.hadoop.hdfs.StateChange
logger.state.level = warn
logger.blockstate.name = BlockStateChange
logger.blockstate.level = warn
"""


class HdfsError(StreamsightError):
    """The local HDFS could not start or be set up."""


@dataclass(frozen=True)
class HdfsPorts:
    rpc: int
    http: int

    @classmethod
    def free(cls, rpc: int | None = None) -> HdfsPorts:
        socks = [socket.socket() for _ in range(2)]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            a, b = (s.getsockname()[1] for s in socks)
        finally:
            for s in socks:
                s.close()
        return cls(rpc if rpc else a, b)


def _in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _site_xml(props: dict[str, str]) -> str:
    body = "".join(f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n"
                   for k, v in props.items())
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


def webhdfs(web: str, method: str, path: str, op: str, *, user: str, **params: str) -> dict[str, Any]:
    """One WebHDFS call to the NameNode at ``web`` as HDFS ``user`` (simple authentication):
    metadata operations only, no data goes through here. HdfsError says what the NameNode said."""
    query = urllib.parse.urlencode({"op": op, "user.name": user, **params})
    request = urllib.request.Request(f"{web}/webhdfs/v1{urllib.parse.quote(path)}?{query}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise HdfsError(f"WebHDFS {op} {path} as {user}: {exc.code} {detail[:500]}") from None
    return json.loads(body) if body else {}


class LocalHdfs:
    """One NameNode and one DataNode on 127.0.0.1, data under ``data_dir``.

    ``port``: the NameNode's RPC port (``None``: the last start's, else 8020; 0: a free one).
    ``pipeline_user``: the HDFS user that owns the lake (default: this process's user).
    ``analysts``: users in the analysts' group. ``encrypt``: make the lake an encryption zone.
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, pipeline_user: str | None = None,
                 analysts: tuple[str, ...] = ("analyst",), encrypt: bool = True, heap_mb: int = 512) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.pipeline_user = pipeline_user or getpass.getuser()
        self.analysts = tuple(analysts)
        self.encrypt = encrypt
        self.heap_mb = heap_mb
        self.ports: HdfsPorts | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        if self.pipeline_user in (SUPER_USER, *self.analysts):
            raise ConfigError(f"the pipeline's HDFS user {self.pipeline_user!r} must not be {SUPER_USER!r} "
                              "or an analyst")

    # -- addresses -------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        """``hdfs://127.0.0.1:<port>``, the file system."""
        if self.ports is None:
            raise RuntimeError("HDFS is not started")
        return f"hdfs://127.0.0.1:{self.ports.rpc}"

    @property
    def lake_uri(self) -> str:
        return self.uri + LAKE_PATH

    @property
    def key_provider(self) -> str:
        return f"jceks://file{self.data_dir / 'keys' / 'lake.jceks'}"

    @property
    def conf_dir(self) -> Path:
        return self.data_dir / "conf"

    @property
    def block_dir(self) -> Path:
        """Where the DataNode keeps block files."""
        return self.data_dir / "data"

    def describe(self) -> dict[str, Any]:
        """What clients need (written to the address file by ``streamsight hdfs``)."""
        return {
            "hdfs": f"Apache Hadoop {self.version} HDFS (NameNode and DataNode)",
            "uri": self.uri, "lake": self.lake_uri, "web": self.web,
            "encryption_zone": LAKE_PATH if self.encrypt else None, "key_provider": self.key_provider,
            "pipeline_user": self.pipeline_user, "pipeline_group": PIPELINE_GROUP,
            "analysts": list(self.analysts), "analysts_group": ANALYSTS_GROUP, "super_user": SUPER_USER,
            "data_dir": str(self.data_dir),
        }

    @property
    def version(self) -> str:
        return jars.version("hdfs", "hadoop-client-minicluster") or "?"

    # -- configuration ---------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        path = self.data_dir / "meta.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def _choose_ports(self, meta: dict[str, Any]) -> HdfsPorts:
        if self.ports is not None:  # a restart of this object: the same address, as clients expect
            return self.ports
        if self.port == 0:
            return HdfsPorts.free()
        if self.port is not None:
            return HdfsPorts.free(self.port)
        return HdfsPorts.free(int(meta.get("rpc_port") or DEFAULT_PORT))

    def _groups(self) -> str:
        mapping = {SUPER_USER: "supergroup", self.pipeline_user: PIPELINE_GROUP,
                   **dict.fromkeys(self.analysts, ANALYSTS_GROUP)}
        return "".join(f"{user}={group};" for user, group in mapping.items())

    def _write_conf(self, ports: HdfsPorts) -> None:
        tmp = self.data_dir / "tmp"
        core = {
            "fs.defaultFS": f"hdfs://127.0.0.1:{ports.rpc}",
            "hadoop.tmp.dir": str(tmp),
            "hadoop.security.key.provider.path": self.key_provider,
            "hadoop.user.group.static.mapping.overrides": self._groups(),
            # only the mapping above: a user it does not name has no group (no lookup of OS users)
            "hadoop.security.group.mapping": "org.apache.hadoop.security.NullGroupsMapping",
        }
        hdfs = {
            "dfs.namenode.name.dir": (self.data_dir / "name").as_uri(),
            "dfs.datanode.data.dir": self.block_dir.as_uri(),
            "dfs.namenode.rpc-address": f"127.0.0.1:{ports.rpc}",
            "dfs.namenode.http-address": f"127.0.0.1:{ports.http}",
            "dfs.namenode.secondary.http-address": "127.0.0.1:0",
            "dfs.datanode.address": "127.0.0.1:0",
            "dfs.datanode.http.address": "127.0.0.1:0",
            "dfs.datanode.ipc.address": "127.0.0.1:0",
            "dfs.datanode.hostname": "127.0.0.1",
            "dfs.namenode.datanode.registration.ip-hostname-check": "false",
            "dfs.replication": "1",
            "dfs.permissions.enabled": "true",
            "dfs.namenode.acls.enabled": "true",
            "dfs.permissions.superusergroup": "supergroup",
            "dfs.namenode.safemode.extension": "0",
            "dfs.namenode.resource.du.reserved": str(64 * 1024 * 1024),
            "dfs.heartbeat.interval": "1",
            "dfs.namenode.heartbeat.recheck-interval": "10000",
            "dfs.reformat.disabled": "true",
        }
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "core-site.xml").write_text(_site_xml(core), encoding="utf-8")
        (self.conf_dir / "hdfs-site.xml").write_text(_site_xml(hdfs), encoding="utf-8")

    def _java(self, name: str, main: str, *args: str, user: str = SUPER_USER, **popen: Any) -> subprocess.Popen[bytes]:
        """A JVM running ``main`` of Hadoop's jars with this HDFS's configuration, as HDFS ``user``."""
        java = jars.java_executable("HDFS")
        (self.data_dir / f"log4j2-{name}.properties").write_text(
            _LOG4J2.format(log=self.data_dir / f"{name}.log"), encoding="utf-8")
        cp = os.pathsep.join([str(self.conf_dir), *(str(p) for p in jars.classpath("hdfs"))])
        cmd = [java, f"-Xmx{self.heap_mb}m", "-XX:+UseSerialGC", "-Djava.net.preferIPv4Stack=true",
               "-XX:+IgnoreUnrecognizedVMOptions", *_JPMS,
               f"-Dlog4j2.configurationFile={self.data_dir / f'log4j2-{name}.properties'}",
               "-cp", cp, main, *args]
        env = {**os.environ, "HADOOP_USER_NAME": user}
        env.pop("HADOOP_CONF_DIR", None)
        return subprocess.Popen(cmd, env=env, **popen)

    def _run(self, name: str, main: str, *args: str, timeout: float = 120.0) -> str:
        """Run a Hadoop tool to completion; its output (HdfsError if it fails)."""
        proc = self._java(name, main, *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = proc.communicate(timeout=timeout)
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise HdfsError(f"{main.rsplit('.', 1)[-1]} {' '.join(args)} failed ({proc.returncode}):\n{text[-2000:]}")
        return text

    # -- life cycle ------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> LocalHdfs:
        """Start the NameNode and DataNode (formatting HDFS and making the key at the first
        start) and wait until HDFS takes writes; set the lake up at the first start."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        meta = self._meta()
        ports = self._choose_ports(meta)
        busy = [p for p in (ports.rpc, ports.http) if _in_use(p)]
        if busy:
            raise ConfigError(f"--port: 127.0.0.1:{busy[0]} is already in use (another HDFS?); choose another "
                              "--port, or --port 0 for a free one")
        self.ports = ports
        self._write_conf(ports)
        if self.encrypt and not (self.data_dir / "keys" / "lake.jceks").exists():
            (self.data_dir / "keys").mkdir(parents=True, exist_ok=True)
            self._run("keyshell", "org.apache.hadoop.crypto.key.KeyShell", "create", KEY_NAME,
                      "-provider", self.key_provider, "-size", "128")
        if not (self.data_dir / "name" / "current" / "VERSION").exists():
            self._run("format", "org.apache.hadoop.hdfs.server.namenode.NameNode", "-format", "-nonInteractive")
        (self.data_dir / "meta.json").write_text(json.dumps({**meta, "rpc_port": ports.rpc}) + "\n", encoding="utf-8")
        for name, main in (("namenode", "org.apache.hadoop.hdfs.server.namenode.NameNode"),
                           ("datanode", "org.apache.hadoop.hdfs.server.datanode.DataNode")):
            with open(self.data_dir / f"{name}.err", "ab") as err:  # the child keeps its own descriptor
                self._procs[name] = self._java(name, main, stdout=subprocess.DEVNULL, stderr=err,
                                               start_new_session=True)
        try:
            self._wait_ready(timeout)
            if not meta.get("lake_ready"):
                self._set_up_lake()
                (self.data_dir / "meta.json").write_text(json.dumps({
                    **self._meta(), "lake_ready": True, "pipeline_user": self.pipeline_user,
                    "analysts": list(self.analysts), "encrypted": self.encrypt}) + "\n", encoding="utf-8")
        except BaseException:
            self.stop()
            raise
        return self

    def _jmx(self, bean: str) -> dict[str, Any]:
        url = f"{self.web}/jmx?qry=Hadoop:service=NameNode,name={bean}"
        with urllib.request.urlopen(url, timeout=2) as resp:
            beans = json.loads(resp.read())["beans"]
        return beans[0] if beans else {}

    def _wait_ready(self, timeout: float) -> None:
        """Until the NameNode is out of safe mode with a live DataNode."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise HdfsError(f"the {name} exited with {proc.returncode} at start-up:\n{self._tail(name)}")
            try:
                state, info = self._jmx("FSNamesystemState"), self._jmx("NameNodeInfo")
                if state.get("NumLiveDataNodes", 0) >= 1 and not info.get("Safemode"):
                    return
            except (OSError, ValueError):
                pass  # the NameNode's web server is not up yet
            time.sleep(0.25)  # polling the NameNode, bounded by the deadline
        raise HdfsError(f"HDFS did not become ready within {timeout:g}s:\n{self._tail('namenode')}\n{self._tail('datanode')}")

    @property
    def web(self) -> str:
        """The NameNode's web address (its UI, JMX and WebHDFS)."""
        if self.ports is None:
            raise RuntimeError("HDFS is not started")
        return f"http://127.0.0.1:{self.ports.http}"

    def webhdfs(self, method: str, path: str, op: str, *, user: str = SUPER_USER, **params: str) -> dict[str, Any]:
        """One WebHDFS call to this NameNode (:func:`webhdfs`), by default as the super user."""
        return webhdfs(self.web, method, path, op, user=user, **params)

    def _set_up_lake(self) -> None:
        """The lake's root: an encryption zone owned by the pipeline, and the tables' ACLs."""
        self.webhdfs("PUT", LAKE_PATH, "MKDIRS", permission="750")
        if self.encrypt:
            self._run("cryptoadmin", "org.apache.hadoop.hdfs.tools.CryptoAdmin", "-createZone", "-keyName", KEY_NAME,
                      "-path", LAKE_PATH)
        for path, perm, acl in hdfs_acls(LAKE_PATH):
            if path != LAKE_PATH:
                self.webhdfs("PUT", path, "MKDIRS", permission=perm)
            self.webhdfs("PUT", path, "SETOWNER", owner=self.pipeline_user, group=PIPELINE_GROUP)
            self.webhdfs("PUT", path, "SETPERMISSION", permission=perm)
            self.webhdfs("PUT", path, "MODIFYACLENTRIES", aclspec=",".join(acl))

    def plain_dir(self, path: str) -> str:
        """Make ``path`` (outside the lake's encryption zone) a directory owned by the pipeline's
        user, for readers that cannot decrypt; returns ``path``."""
        self.webhdfs("PUT", path, "MKDIRS", permission="750")
        self.webhdfs("PUT", path, "SETOWNER", owner=self.pipeline_user, group=PIPELINE_GROUP)
        return path

    def _tail(self, name: str, lines: int = 30) -> str:
        """The end of a daemon's standard error and of its log."""
        out = []
        for path in (self.data_dir / f"{name}.err", self.data_dir / f"{name}.log"):
            if path.exists():
                out += path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return "\n".join(out).strip()

    @property
    def pids(self) -> dict[str, int]:
        """The daemons' process ids, by name (``namenode``, ``datanode``)."""
        return {name: proc.pid for name, proc in self._procs.items()}

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs.values())

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to the DataNode, then the NameNode (as Hadoop's stop scripts do); SIGKILL after
        ``timeout``."""
        for name in ("datanode", "namenode"):
            proc = self._procs.pop(name, None)
            if proc is None:
                continue
            stop_process(proc, timeout)

    def reset(self) -> None:
        """Delete HDFS's metadata, blocks and key (HDFS must be stopped: this object's, and any other
        whose NameNode answers on the port the data folder records)."""
        port = self._meta().get("rpc_port")
        if self._procs or (port and _in_use(int(port))):
            raise ConfigError(f"--reset: HDFS still runs on 127.0.0.1:{port} with the data in {self.data_dir}; "
                              "stop it first")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalHdfs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
