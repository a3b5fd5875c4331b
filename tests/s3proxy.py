"""s3proxy (org.gaul:s3proxy, pom.xml profile ``s3proxy``): an S3-compatible server on a local
folder, the tests' stand-in for Amazon S3. Requests are signed (AWS v2 or v4) with a test key."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from streamsight import jars

T_START = 60
ACCESS_KEY = "streamsight-test"
SECRET_KEY = "streamsight-test-secret"


class S3Proxy:
    """``s3proxy`` serving the buckets under ``data_dir`` on a free port of 127.0.0.1."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = T_START) -> S3Proxy:
        (self.data_dir / "buckets").mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = self.data_dir / "s3proxy.conf"
        conf.write_text("\n".join([
            f"s3proxy.endpoint=http://127.0.0.1:{self.port}",
            "s3proxy.authorization=aws-v2-or-v4",
            f"s3proxy.identity={ACCESS_KEY}",
            f"s3proxy.credential={SECRET_KEY}",
            "jclouds.provider=filesystem-nio2",
            f"jclouds.filesystem.basedir={self.data_dir / 'buckets'}",
        ]) + "\n", encoding="utf-8")
        (jar,) = jars.classpath("s3proxy")
        log = open(self.data_dir / "s3proxy.log", "wb")  # noqa: SIM115 (the process's, closed in stop)
        self.proc = subprocess.Popen([jars.java_executable("s3proxy"), "-Xmx256m", "-jar", str(jar),
                                      "--properties", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"s3proxy exited with {self.proc.returncode}:\n"
                                   + (self.data_dir / "s3proxy.log").read_text(errors="replace")[-3000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"s3proxy did not listen on 127.0.0.1:{self.port} within {timeout:g}s") from None
                time.sleep(0.1)  # polling the port, bounded by the deadline

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
