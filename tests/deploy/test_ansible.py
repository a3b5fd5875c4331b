"""ansible/: lint, syntax, the Terraform inventory script, and a real run of site.yml on this machine.

The Ansible tools come from ``.venv-infra`` (``make setup-infra``) and run as subprocesses. The real
run uses the roles' install root (``streamsight_install_root``): hosts are this machine over
``connection: local``, each writing under its own temporary directory, so the real system is never
touched. The inventory is generated from a sample ``terraform output -json`` by
``ansible/scripts/inventory_from_terraform.py`` and uses the dev ``group_vars`` with vault-encrypted
secrets, exactly as an operator would. To keep the module quick on a small shared machine, one extra
inventory file makes ``kafka-1`` an all-in-one node (also Spark master and worker, HDFS namenode and
datanode, pipeline host) and only ``kafka-1`` runs: every role and template runs once per run, while
the other hosts stay in the inventory (quorum voters, super users, bootstrap servers, the Spark master
and namenode addresses name them). The lake encryption zone is switched on to cover that path too. A
second run must change nothing. ansible-lint runs in the background meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamsight.jars import delta_package, pom_property
from streamsight.spark import DELTA_CONF
from tests.conftest import BACKGROUND_ALLOWANCE, background_command

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "ansible"
INFRA_BIN = ROOT / ".venv-infra" / "bin"
INVENTORY_SCRIPT = ANSIBLE_DIR / "scripts" / "inventory_from_terraform.py"
SETUP_HINT = (
    "The Ansible tools are missing from .venv-infra. Run `make setup-infra` "
    "(python3 -m venv .venv-infra && .venv-infra/bin/pip install -r requirements-infra.txt)."
)
TOOLS = ("ansible-playbook", "ansible-lint", "ansible-vault", "ansible-inventory")

SECRETS = {
    "vault_kafka_admin_password": "Adm1n-Secret-for-tests-7Qz",
    "vault_kafka_streamsight_password": "App-Secret-for-tests-4Kp",
    "vault_spark_authenticate_secret": "Spark-Secret-for-tests-0123456789abcdef",
}
TLS_KEY_MARKER = "TEST-PRIVATE-KEY-MATERIAL"
TERRAFORM_OUTPUTS = {
    "kafka_private_ips": {"sensitive": False, "type": ["list", "string"],
                          "value": ["10.20.1.11", "10.20.2.11", "10.20.3.11"]},
    "kafka_instance_ids": {"sensitive": False, "type": ["list", "string"],
                           "value": ["i-0000000000000001", "i-0000000000000002", "i-0000000000000003"]},
    "spark_master_private_ip": {"sensitive": False, "type": "string", "value": "10.20.1.20"},
    "spark_master_instance_id": {"sensitive": False, "type": "string", "value": "i-0000000000000010"},
    "spark_workers_asg_name": {"sensitive": False, "type": "string", "value": "streamsight-test-spark-workers"},
    "spark_worker_private_ips": {"sensitive": False, "type": ["list", "string"], "value": ["10.20.1.31"]},
    "hdfs_namenode_private_ip": {"sensitive": False, "type": "string", "value": "10.20.1.40"},
    "lake_bucket_name": {"sensitive": False, "type": "string", "value": "streamsight-test-lake"},
    "kms_key_arn": {"sensitive": False, "type": "string",
                    "value": "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"},
    "sns_topic_arn": {"sensitive": False, "type": "string", "value": "arn:aws:sns:eu-west-1:123456789012:alerts"},
    "region": {"sensitive": False, "type": "string", "value": "eu-west-1"},
    "log_group_names": {"sensitive": False, "type": ["object", {}], "value": {
        source: f"/streamsight/streamsight-dev/instances/{source}"
        for source in ("kafka", "spark", "streaming-jobs", "hdfs", "cloudwatch-agent")}},
    # terraform/envs/*: everything again in one object, plus the private DNS zone.
    "ansible_inventory": {"sensitive": False, "type": ["object", {}], "value": {
        "region": "eu-west-1", "kafka": ["10.20.1.11", "10.20.2.11", "10.20.3.11"], "spark_master": "10.20.1.20",
        "hdfs_namenode": "10.20.1.40", "private_zone_name": "internal", "lake_bucket_name": "streamsight-test-lake"}},
}
KAFKA_HOSTS = ("kafka-1", "kafka-2", "kafka-3")
NODE = "kafka-1"  # the all-in-one node that runs
ALL_IN_ONE = {"all": {"children": {group: {"hosts": {NODE: {}}}
                                   for group in ("spark_master", "spark_workers", "hdfs_namenode", "pipeline")}}}
EXTRA_VARS = {"hdfs_encryption_zone_enabled": True, "hdfs_kms_keystore_password": "Kms-Secret-for-tests-9Xy"}
# Real paths a run of the roles on this machine would write without an install root.
REAL_PATHS = ("/etc/kafka", "/etc/streamsight", "/opt/streamsight", "/etc/spark", "/etc/hadoop",
              "/etc/security/limits.d/90-streamsight.conf", "/etc/systemd/system/kafka.service",
              "/etc/systemd/system/streamsight-stream@.service", "/var/lib/streamsight")
RECAP = re.compile(r"^(?P<host>\S+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                   r"\s+failed=(?P<failed>\d+)", re.MULTILINE)


# -- helpers -----------------------------------------------------------------------------------------
def tool(name: str) -> str:
    path = INFRA_BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} not found. {SETUP_HINT}", pytrace=False)
    return str(path)


def tool_env(env: dict[str, str] | None = None) -> dict[str, str]:
    full_env = {
        **os.environ,
        "PATH": f"{INFRA_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PY_COLORS": "0",
        "NO_COLOR": "1",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        **(env or {}),
    }
    for name in ("ANSIBLE_INVENTORY", "ANSIBLE_VAULT_PASSWORD_FILE", "ANSIBLE_ROLES_PATH"):
        if env is None or name not in env:
            full_env.pop(name, None)
    return full_env


def run(args: list[str], *, cwd: Path = ANSIBLE_DIR, timeout: float = 600, env: dict[str, str] | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = tool_env(env)
    return subprocess.run(args, cwd=cwd, env=full_env, text=True, capture_output=True, timeout=timeout,
                          input=stdin, check=False)


def output_of(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-20000:]}\n--- stderr ---\n{proc.stderr[-8000:]}"


def recap(stdout: str) -> dict[str, dict[str, int]]:
    return {m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
            for m in RECAP.finditer(stdout)}


def changed_tasks(stdout: str) -> list[str]:
    """'TASK [...] -> host' for every task that reported a change."""
    out, task = [], "?"
    for line in stdout.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed: ["):
            out.append(f"{task} -> {line.split('[', 1)[1].split(']', 1)[0]}")
    return out


def properties(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def spark_conf(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.strip().partition(" ")
            out[key] = value.strip()
    return out


def hadoop_xml(path: Path) -> dict[str, str]:
    return {p.findtext("name"): p.findtext("value") for p in ET.parse(path).getroot().iter("property")}


def env_file(path: Path) -> dict[str, str]:
    """systemd EnvironmentFile lines KEY="value" (with \\-escapes)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert value.startswith('"') and value.endswith('"'), line
            out[key] = re.sub(r"\\(.)", r"\1", value[1:-1])
    return out


def unit(path: Path) -> dict[str, list[str]]:
    """A systemd unit as {Key: [values]} over all sections."""
    out: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))[2:].zfill(4)


def write_terraform_outputs(path: Path) -> Path:
    path.write_text(json.dumps(TERRAFORM_OUTPUTS, indent=2), encoding="utf-8")
    return path


def inventory_script(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(INVENTORY_SCRIPT), *args], text=True, capture_output=True,
                          input=stdin, timeout=60, check=False)


# -- fixtures ----------------------------------------------------------------------------------------
# A playbook run at nice 19 beside the Spark tests: a hang guard (conftest.BACKGROUND_ALLOWANCE), in seconds.
T_PLAYBOOK = 600 + BACKGROUND_ALLOWANCE

@pytest.fixture(scope="module")
def tools() -> None:
    for name in TOOLS:
        tool(name)


class LintJob:
    """ansible-lint runs in the background while the playbook runs, to save wall-clock time."""

    def __init__(self) -> None:
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by close()
        self.err = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by close()
        args = background_command([tool("ansible-lint"), "--profile", "production", "--offline", "--nocolor"])
        self.proc = subprocess.Popen(args, cwd=ANSIBLE_DIR, env=tool_env(), stdout=self.log, stderr=self.err,
                                     text=True)

    def result(self, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        returncode = self.proc.wait(timeout=timeout)
        self.log.seek(0)
        self.err.seek(0)
        return subprocess.CompletedProcess(self.proc.args, returncode, self.log.read(), self.err.read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.err.close()


# The slow work (ansible-lint, the playbook runs) starts once, in the background: at the start of the
# session when tests/conftest.py calls start_background (so it overlaps the Spark tests, which run
# first), otherwise when the first test of this module asks for it.
_started: dict[str, Any] = {}


def _tools_present() -> bool:
    return all((INFRA_BIN / name).is_file() for name in TOOLS)


def _tests_using(fixture: str) -> set[str]:
    import inspect

    return {name for name, fn in globals().items()
            if name.startswith("test_") and callable(fn) and fixture in inspect.signature(fn).parameters}


def start_background(selected: set[str], tmp_path_factory: pytest.TempPathFactory) -> None:
    """Start ansible-lint and the playbook runs if a selected test needs them (idempotent)."""
    if not _tools_present():
        return  # the tests fail with the set-up hint
    if "lint" not in _started and "test_ansible_lint_production_profile" in selected:
        _started["lint"] = LintJob()
    if "deployment" not in _started and selected & _tests_using("deployment"):
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ansible-deployment")
        _started["deployment"] = pool.submit(_deploy, tmp_path_factory.mktemp("ansible-run"))
        pool.shutdown(wait=False)


@pytest.fixture(scope="module")
def lint_job(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LintJob]:
    start_background({"test_ansible_lint_production_profile"}, tmp_path_factory)
    job = _started.pop("lint")
    yield job
    job.close()


@dataclass
class Deployment:
    base: Path
    roots: Path
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    check: subprocess.CompletedProcess[str]  # --check of the pipeline play into a fresh install root
    real_paths_before: dict[str, bool]

    @property
    def root(self) -> Path:
        return self.roots / NODE


def _artifacts(dist: Path) -> None:
    """A real code archive of the project and a tiny stand-in for the packed environment."""
    dist.mkdir()
    with zipfile.ZipFile(dist / "streamsight.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for package in ("streamsight", "streamsight_cli", "ingestion", "streaming_jobs", "ml", "analytics"):
            for file in sorted((ROOT / package).rglob("*.py")):
                zf.write(file, file.relative_to(ROOT).as_posix())
        for file in sorted((ROOT / "conf").rglob("*")):
            if file.is_file():
                zf.write(file, file.relative_to(ROOT).as_posix())
    env = dist / "env"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").write_text("#!/bin/sh\nexec python3 \"$@\"\n", encoding="utf-8")
    (env / "bin" / "python").chmod(0o755)
    (env / "pyvenv.cfg").write_text("home = /usr/bin\n", encoding="utf-8")
    with tarfile.open(dist / "streamsight-env.tar.gz", "w:gz") as tf:
        for file in sorted(env.rglob("*")):
            tf.add(file, file.relative_to(env).as_posix(), recursive=False)
    shutil.rmtree(env)


@pytest.fixture(scope="module")
def deployment(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    start_background(_tests_using("deployment"), tmp_path_factory)
    return _started["deployment"].result(timeout=1800)


def _deploy(base: Path) -> Deployment:
    """Three runs of site.yml on this machine (into per-host install roots under ``base``): a first
    run, a second one (idempotence) and, beside it, --check on a fresh host."""
    roots = base / "roots"
    roots.mkdir()
    inventory = base / "inventory"
    inventory.mkdir()
    vault_pass = base / "vault-pass"
    vault_pass.write_text("test-vault-password\n", encoding="utf-8")
    # Facts gathered by the first run are reused by the second (gathering = smart).
    vault_env = {"ANSIBLE_VAULT_PASSWORD_FILE": str(vault_pass), "ANSIBLE_CACHE_PLUGIN": "jsonfile",
                 "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(base / "facts")}

    # 1. The inventory, from Terraform outputs, and the dev group_vars with an encrypted vault.
    proc = inventory_script("--env", "dev", "--connection", "ssh",
                            str(write_terraform_outputs(base / "tf.json")), "-o", str(inventory / "hosts.yml"))
    assert proc.returncode == 0, proc.stderr
    shutil.copytree(ANSIBLE_DIR / "inventories" / "dev" / "group_vars", inventory / "group_vars")
    vault = inventory / "group_vars" / "all" / "vault.yml"
    vault.write_text(yaml.safe_dump(SECRETS), encoding="utf-8")

    # 2. TLS material; the private keys vault-encrypted as the README asks.
    tls = base / "tls"
    tls.mkdir()
    (tls / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nTEST-CA\n-----END CERTIFICATE-----\n")
    keys = []
    for host in KAFKA_HOSTS:
        (tls / f"{host}.crt").write_text(f"-----BEGIN CERTIFICATE-----\nTEST-CERT-{host}\n-----END CERTIFICATE-----\n")
        key = tls / f"{host}.key"
        key.write_text(f"-----BEGIN PRIVATE KEY-----\n{TLS_KEY_MARKER}-{host}\n-----END PRIVATE KEY-----\n")
        keys.append(str(key))
    proc = run([tool("ansible-vault"), "encrypt", str(vault), *keys], env=vault_env, timeout=120)
    assert proc.returncode == 0, output_of(proc)

    # 3. Build artifacts and the local-run overrides (connection, install root per host).
    _artifacts(base / "dist")
    (inventory / "group_vars" / "all" / "zz_local_test.yml").write_text(yaml.safe_dump({
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "ansible_become": False,
        "streamsight_install_root": f"{roots}/{{{{ inventory_hostname }}}}",
        "streamsight_tls_src_dir": str(tls),
        "pipeline_artifacts_dir": str(base / "dist"),
    }), encoding="utf-8")

    before = {p: os.path.lexists(p) for p in REAL_PATHS}
    (inventory / "zz_all_in_one.yml").write_text(yaml.safe_dump(ALL_IN_ONE), encoding="utf-8")
    (base / "extra-vars.yml").write_text(yaml.safe_dump(EXTRA_VARS), encoding="utf-8")
    command = [tool("ansible-playbook"), "-i", str(inventory), "--limit", NODE, "-e", f"@{base / 'extra-vars.yml'}",
               "site.yml"]
    command = background_command(command)
    first = run(command, env=vault_env, timeout=T_PLAYBOOK)
    # Check mode on a fresh host, beside the second run. Only the pipeline play (the one whose later steps
    # depend on earlier ones: archives copied, then unpacked), to keep the module quick; the whole
    # site.yml passes too (`--check` without --tags).
    check_root = base / "check-root"
    with tempfile.TemporaryFile(mode="w+") as out:
        check_job = subprocess.Popen(
            [*command, "--check", "--tags", "java,pipeline", "-e", f"streamsight_install_root={check_root}/{NODE}"],
            cwd=ANSIBLE_DIR,
            env=tool_env({**vault_env, "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(base / "facts-check")}),
            stdout=out, stderr=subprocess.STDOUT, text=True)
        second = run(command, env=vault_env, timeout=T_PLAYBOOK) if first.returncode == 0 else first
        check_rc = check_job.wait(timeout=T_PLAYBOOK)
        out.seek(0)
        check = subprocess.CompletedProcess(check_job.args, check_rc, out.read(), "")
    assert not check_root.exists(), "--check wrote files"
    return Deployment(base, roots, first, second, check, before)


# -- static checks -----------------------------------------------------------------------------------
def test_infra_tools_installed() -> None:
    for name in TOOLS:
        tool(name)


def test_site_syntax_check_with_example_inventory(tools: None) -> None:
    proc = run([tool("ansible-playbook"), "-i", "inventories/hosts.example.yml", "--syntax-check", "site.yml"],
               timeout=300)
    assert proc.returncode == 0, output_of(proc)


def _tasks(node: object) -> Iterator[dict]:
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        if any(k in node for k in ("block", "rescue", "always")):
            for k in ("block", "rescue", "always"):
                yield from _tasks(node.get(k, []))
        else:
            yield node


SECRET_TEMPLATES = {"server.properties.j2", "admin.properties.j2", "spark-defaults.conf.j2", "streamsight.env.j2"}


def test_tasks_handling_secrets_set_no_log() -> None:
    offenders, seen = [], 0
    for path in sorted((ANSIBLE_DIR / "roles").glob("*/tasks/*.yml")):
        for task in _tasks(yaml.safe_load(path.read_text(encoding="utf-8")) or []):
            module = next((k for k in task if k.startswith("ansible.builtin.")), None)
            if module in (None, "ansible.builtin.assert", "ansible.builtin.set_fact", "ansible.builtin.import_tasks",
                          "ansible.builtin.include_tasks"):
                continue
            args = json.dumps(task[module])
            src = Path(str(task[module].get("src", ""))).name if isinstance(task[module], dict) else ""
            secret = re.search(r"password|secret|tls_key", args, re.IGNORECASE) or src in SECRET_TEMPLATES
            if secret:
                seen += 1
                if task.get("no_log") is not True:
                    offenders.append(f"{path.relative_to(ANSIBLE_DIR)}: {task.get('name')}")
    assert seen >= 6
    assert not offenders, offenders


def test_kafka_storage_is_formatted_once() -> None:
    tasks = yaml.safe_load((ANSIBLE_DIR / "roles/kafka/tasks/storage.yml").read_text(encoding="utf-8"))
    (task,) = tasks
    argv = task["ansible.builtin.command"]["argv"]
    assert any(a.endswith("/bin/kafka-storage.sh") for a in argv) and "format" in argv
    assert "--add-scram" in argv
    assert task["ansible.builtin.command"]["creates"].endswith("/meta.properties")
    assert task["no_log"] is True


def test_vault_example_names_every_secret_without_real_values() -> None:
    doc = yaml.safe_load((ANSIBLE_DIR / "vault.example.yml").read_text(encoding="utf-8"))
    assert set(SECRETS) <= set(doc)
    assert all(str(v).startswith("CHANGE-ME") for v in doc.values())
    for env in ("dev", "prod"):
        group_vars = (ANSIBLE_DIR / "inventories" / env / "group_vars" / "all" / "main.yml").read_text(encoding="utf-8")
        for name in SECRETS:
            assert name in group_vars, (env, name)


# -- inventory script --------------------------------------------------------------------------------
def test_inventory_script_groups_and_hosts(tmp_path: Path) -> None:
    tf = write_terraform_outputs(tmp_path / "tf.json")
    proc = inventory_script("--env", "dev", "--connection", "ssh", "--ssh-user", "debian", str(tf))
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(proc.stdout)
    all_vars, groups = doc["all"]["vars"], doc["all"]["children"]
    assert set(groups) == {"kafka", "kafka_controllers", "spark_master", "spark_workers", "hdfs_namenode",
                           "hdfs_datanodes", "pipeline"}
    kafka = groups["kafka"]["hosts"]
    assert list(kafka) == ["kafka-1", "kafka-2", "kafka-3"]
    assert [h["kafka_node_id"] for h in kafka.values()] == [1, 2, 3]
    assert kafka["kafka-2"] == {"streamsight_private_ip": "10.20.2.11", "ansible_host": "10.20.2.11",
                                "kafka_node_id": 2}
    assert groups["spark_master"]["hosts"]["spark-master"]["ansible_host"] == "10.20.1.20"
    assert list(groups["spark_workers"]["hosts"]) == ["spark-worker-1"]
    assert groups["hdfs_namenode"]["hosts"]["hdfs-namenode"]["streamsight_private_ip"] == "10.20.1.40"
    assert groups["hdfs_datanodes"] == {"children": {"spark_workers": {}}}
    assert groups["pipeline"] == {"hosts": {"spark-master": {}}}
    assert all_vars["streamsight_lake_bucket"] == "streamsight-test-lake"
    assert all_vars["streamsight_kms_key_arn"].startswith("arn:aws:kms:")
    assert all_vars["streamsight_sns_topic_arn"].startswith("arn:aws:sns:")
    assert all_vars["streamsight_spark_workers_asg_name"] == "streamsight-test-spark-workers"
    assert all_vars["ansible_connection"] == "ssh" and all_vars["ansible_user"] == "debian"
    assert all_vars["streamsight_private_zone_name"] == "internal"
    assert all_vars["streamsight_log_group_names"]["kafka"] == "/streamsight/streamsight-dev/instances/kafka"
    # The same from standard input.
    assert inventory_script("--env", "dev", "--connection", "ssh", "--ssh-user", "debian", "-",
                            stdin=tf.read_text()).stdout == proc.stdout


def test_inventory_script_ssm_connection_uses_instance_ids(tmp_path: Path) -> None:
    tf = write_terraform_outputs(tmp_path / "tf.json")
    proc = inventory_script("--env", "prod", "--ssm-bucket", "ssm-transfer", str(tf))
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(proc.stdout)
    all_vars, groups = doc["all"]["vars"], doc["all"]["children"]
    assert all_vars["ansible_connection"] == "community.aws.aws_ssm"
    assert all_vars["ansible_aws_ssm_bucket_name"] == "ssm-transfer"
    assert all_vars["ansible_aws_ssm_region"] == "eu-west-1"
    assert groups["kafka"]["hosts"]["kafka-1"]["ansible_host"] == "i-0000000000000001"
    assert groups["spark_master"]["hosts"]["spark-master"]["ansible_host"] == "i-0000000000000010"
    # No instance id for the worker and the namenode: they keep their IP, with a warning.
    assert "no instance id for 10.20.1.31" in proc.stderr


def test_inventory_script_plain_outputs_without_hdfs_and_ec2_plugin(tmp_path: Path) -> None:
    plain = {"kafka_ips": ["10.0.0.1", "10.0.0.2", "10.0.0.3"], "spark_master_ip": "10.0.0.9",
             "lake_bucket": "b", "spark_workers_asg_name": "asg-1", "region": "us-east-1"}
    (tmp_path / "tf.json").write_text(json.dumps(plain))
    plugin = tmp_path / "workers.aws_ec2.yml"
    proc = inventory_script("--env", "dev", "--connection", "ssh", str(tmp_path / "tf.json"),
                            "-o", str(tmp_path / "hosts.yml"), "--ec2-plugin", str(plugin))
    assert proc.returncode == 0, proc.stderr
    groups = yaml.safe_load((tmp_path / "hosts.yml").read_text())["all"]["children"]
    assert groups["hdfs_namenode"] == {} and groups["hdfs_datanodes"] == {} and groups["spark_workers"] == {}
    ec2 = yaml.safe_load(plugin.read_text())
    assert ec2["plugin"] == "amazon.aws.aws_ec2"
    assert ec2["filters"]["tag:aws:autoscaling:groupName"] == "asg-1"
    assert ec2["groups"] == {"spark_workers": "true"}


def test_inventory_script_reads_the_ansible_inventory_object(tmp_path: Path) -> None:
    only_nested = {"ansible_inventory": TERRAFORM_OUTPUTS["ansible_inventory"]}
    proc = inventory_script("--env", "dev", "--connection", "ssh", "-", stdin=json.dumps(only_nested))
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(proc.stdout)["all"]
    assert list(doc["children"]["kafka"]["hosts"]) == list(KAFKA_HOSTS)
    assert doc["children"]["hdfs_namenode"]["hosts"]["hdfs-namenode"]["ansible_host"] == "10.20.1.40"
    assert doc["vars"]["streamsight_aws_region"] == "eu-west-1"


def test_inventory_script_reports_missing_outputs(tmp_path: Path) -> None:
    (tmp_path / "tf.json").write_text(json.dumps({"kafka_private_ips": {"value": ["10.0.0.1"]}}))
    proc = inventory_script("--env", "dev", str(tmp_path / "tf.json"))
    assert proc.returncode == 1
    assert "spark_master_private_ip" in proc.stderr and "lake_bucket_name" in proc.stderr
    bad_host = inventory_script("--env", "dev", "--connection", "ssh", "--pipeline-host", "nope", "-",
                                stdin=json.dumps(TERRAFORM_OUTPUTS))
    assert bad_host.returncode == 1 and "--pipeline-host" in bad_host.stderr


def test_generated_inventory_loads_in_ansible(tools: None, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yml"
    proc = inventory_script("--env", "dev", "--connection", "ssh", str(write_terraform_outputs(tmp_path / "tf.json")),
                            "-o", str(hosts))
    assert proc.returncode == 0, proc.stderr
    proc = run([tool("ansible-inventory"), "-i", str(hosts), "--list"], timeout=120)
    assert proc.returncode == 0, output_of(proc)
    inv = json.loads(proc.stdout)
    assert sorted(inv["kafka"]["hosts"]) == list(KAFKA_HOSTS)
    assert "spark_workers" in inv["hdfs_datanodes"]["children"]
    assert inv["pipeline"]["hosts"] == ["spark-master"]
    assert inv["_meta"]["hostvars"]["kafka-3"]["kafka_node_id"] == 3


# -- the real run ------------------------------------------------------------------------------------
def test_site_runs_locally_and_is_idempotent(deployment: Deployment) -> None:
    first, second = deployment.first, deployment.second
    assert first.returncode == 0, output_of(first)
    stats = recap(first.stdout)
    assert set(stats) == {NODE}, output_of(first)
    assert stats[NODE]["failed"] == 0 and stats[NODE]["unreachable"] == 0, output_of(first)
    assert stats[NODE]["changed"] > 20
    plays = re.findall(r"^PLAY \[(.*)\] \*+$", first.stdout, re.MULTILINE)
    site = yaml.safe_load((ANSIBLE_DIR / "site.yml").read_text(encoding="utf-8"))
    assert plays == [play["name"] for play in site]  # every play of site.yml ran on the node
    assert "skipping: no hosts matched" not in first.stdout
    assert second.returncode == 0, output_of(second)
    stats = recap(second.stdout)
    assert stats[NODE]["failed"] == 0
    assert stats[NODE]["changed"] == 0, changed_tasks(second.stdout)


def test_site_check_mode_on_a_fresh_host_changes_nothing(deployment: Deployment) -> None:
    proc = deployment.check
    assert proc.returncode == 0, output_of(proc)
    stats = recap(proc.stdout)[NODE]
    assert stats["failed"] == 0 and stats["changed"] >= 5  # it reports what it would do ...
    assert not (deployment.base / "check-root").exists()  # ... and does none of it


def test_run_touched_nothing_outside_the_install_root(deployment: Deployment) -> None:
    assert {p: os.path.lexists(p) for p in REAL_PATHS} == deployment.real_paths_before
    assert sorted(p.name for p in deployment.roots.iterdir()) == [NODE]
    enabled = [p for p in deployment.roots.rglob("*.wants") if p.is_dir()]
    assert not enabled, "units must only be written under an install root, never enabled"


def test_secrets_never_appear_in_ansible_output(deployment: Deployment) -> None:
    text = "".join(p.stdout + p.stderr for p in (deployment.first, deployment.second, deployment.check))
    assert "PLAY RECAP" in text
    for value in (*SECRETS.values(), EXTRA_VARS["hdfs_kms_keystore_password"], TLS_KEY_MARKER):
        assert value not in text


def test_common_limits_chrony_hosts_and_ca(deployment: Deployment) -> None:
    root = deployment.root
    assert "kafka - nofile 128000" in (root / "etc/security/limits.d/90-streamsight.conf").read_text()
    assert "server 169.254.169.123 prefer iburst" in (root / "etc/chrony/chrony.conf").read_text()
    hosts = (root / "etc/hosts").read_text()
    for line in ("10.20.1.11 kafka-1.internal kafka-1", "10.20.3.11 kafka-3.internal kafka-3",
                 "10.20.1.20 spark-master.internal spark-master", "10.20.1.40 hdfs-namenode.internal hdfs-namenode"):
        assert line in hosts
    assert (root / "etc/streamsight/kafka-ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert "vm.swappiness = 1" in (root / "etc/sysctl.d/90-streamsight.conf").read_text()
    mount = unit(root / "etc/systemd/system/data.mount")  # Kafka nodes have Terraform's data volume
    assert mount["What"] == ["/dev/disk/by-label/streamsight-data"] and mount["Where"] == ["/data"]
    assert "nofail" in mount["Options"][0]
    assert (root / "etc/profile.d/java.sh").read_text().strip().endswith("/usr/lib/jvm/java-17-openjdk-amd64") or \
        "JAVA_HOME=" in (root / "etc/profile.d/java.sh").read_text()


def test_kafka_server_properties(deployment: Deployment) -> None:
    root = deployment.root
    path = root / "etc/kafka/server.properties"
    assert mode(path) == "0640"
    p = properties(path)
    assert p["process.roles"] == "broker,controller"
    assert p["node.id"] == "1"
    assert p["controller.quorum.voters"] == "1@kafka-1.internal:9093,2@kafka-2.internal:9093,3@kafka-3.internal:9093"
    assert p["listeners"] == "CLIENT://0.0.0.0:9096,CONTROLLER://0.0.0.0:9093"  # the ports Terraform opens
    assert p["advertised.listeners"] == "CLIENT://kafka-1.internal:9096"
    assert p["listener.security.protocol.map"] == "CLIENT:SASL_SSL,CONTROLLER:SSL"
    assert p["inter.broker.listener.name"] == "CLIENT"
    assert p["controller.listener.names"] == "CONTROLLER"
    assert p["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert p["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    jaas = p["listener.name.client.scram-sha-512.sasl.jaas.config"]
    assert jaas.startswith("org.apache.kafka.common.security.scram.ScramLoginModule required")
    assert f'username="admin" password="{SECRETS["vault_kafka_admin_password"]}";' in jaas
    assert p["listener.name.controller.ssl.client.auth"] == "required"
    assert p["ssl.keystore.type"] == "PEM" and p["ssl.keystore.location"] == "/etc/kafka/tls/server.pem"
    assert p["ssl.truststore.type"] == "PEM" and p["ssl.truststore.location"] == "/etc/kafka/tls/ca.pem"
    assert p["ssl.endpoint.identification.algorithm"] == "https"
    assert p["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert p["allow.everyone.if.no.acl.found"] == "false"
    assert p["super.users"].split(";") == [
        "User:admin", "User:kafka-1.internal", "User:kafka-2.internal", "User:kafka-3.internal"]
    assert p["default.replication.factor"] == "3"
    assert p["min.insync.replicas"] == "2"
    assert p["offsets.topic.replication.factor"] == "3"
    assert p["unclean.leader.election.enable"] == "false"
    assert p["auto.create.topics.enable"] == "false"
    assert p["log.dirs"] == "/data/kafka"  # on the data volume
    keystore = root / "etc/kafka/tls/server.pem"
    assert mode(keystore) == "0640"
    assert f"{TLS_KEY_MARKER}-kafka-1" in keystore.read_text()  # decrypted from the vault
    assert "TEST-CERT-kafka-1" in keystore.read_text()
    admin = properties(root / "etc/kafka/admin.properties")
    assert admin["security.protocol"] == "SASL_SSL" and admin["sasl.mechanism"] == "SCRAM-SHA-512"
    assert mode(root / "etc/kafka/admin.properties") == "0600"


def test_kafka_unit_topics_and_acls(deployment: Deployment) -> None:
    root = deployment.root
    u = unit(root / "etc/systemd/system/kafka.service")
    assert u["ExecStart"] == ["/opt/kafka/current/bin/kafka-server-start.sh /etc/kafka/server.properties"]
    assert u["User"] == ["kafka"] and u["ConditionPathExists"] == ["/data/kafka/meta.properties"]
    assert u["RequiresMountsFor"] == ["/data/kafka"]
    contracts = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "conf/contracts").glob("*.yaml"))]
    topics = {t["name"]: t for t in json.loads((root / "etc/kafka/streamsight-topics.json").read_text())}
    acls = json.loads((root / "etc/kafka/streamsight-acls.json").read_text())
    assert contracts
    for contract in contracts:
        for name in (contract["topics"]["raw"], contract["topics"]["dead_letter"]):
            assert topics[name]["partitions"] == contract["topics"]["partitions"]
            assert topics[name]["replication_factor"] == 3
            assert str(topics[name]["config"]["min.insync.replicas"]) == "2"
            (acl,) = [a for a in acls if a["name"] == name]
            assert acl["principal"] == "User:streamsight" and acl["pattern"] == "literal"
            assert set(acl["operations"]) == {"Read", "Write", "Describe"}
    assert {(a["resource_type"], a["name"]) for a in acls if a["pattern"] == "prefixed"} == {
        ("group", "spark-kafka-source-"), ("group", "streamsight")}


def test_spark_defaults_and_units(deployment: Deployment) -> None:
    root = deployment.root
    path = root / "etc/spark/spark-defaults.conf"
    assert mode(path) == "0640"
    c = spark_conf(path)
    assert c["spark.master"] == "spark://spark-master.internal:7077"
    assert c["spark.authenticate"] == "true"
    assert c["spark.authenticate.secret"] == SECRETS["vault_spark_authenticate_secret"]
    assert c["spark.network.crypto.enabled"] == "true"
    assert c["spark.network.crypto.cipher"] == "AES/GCM/NoPadding"
    assert c["spark.network.crypto.saslFallback"] == "false"
    assert c["spark.io.encryption.enabled"] == "true"
    assert c["spark.acls.enable"] == "true"
    assert c["spark.admin.acls"] == "spark,streamsight"
    assert c["spark.ui.killEnabled"] == "false"
    assert c["spark.eventLog.enabled"] == "true"
    assert c["spark.eventLog.dir"] == "s3a://streamsight-test-lake/spark-events"
    assert c["spark.hadoop.fs.s3a.encryption.algorithm"] == "SSE-KMS"
    assert c["spark.hadoop.fs.s3a.encryption.key"] == TERRAFORM_OUTPUTS["kms_key_arn"]["value"]
    # The inventory has a namenode with an encryption zone: HDFS clients are set up for both.
    assert c["spark.hadoop.hadoop.rpc.protection"] == "privacy"
    assert c["spark.hadoop.dfs.encrypt.data.transfer"] == "true"
    assert c["spark.hadoop.hadoop.security.key.provider.path"] == "kms://http@hdfs-namenode.internal:9600/kms"
    units = root / "etc/systemd/system"
    assert "org.apache.spark.deploy.master.Master --host kafka-1.internal --port 7077" in \
        unit(units / "spark-master.service")["ExecStart"][0]
    assert (units / "spark-history.service").exists()
    worker = unit(units / "spark-worker.service")
    assert worker["ExecStart"][0].endswith("spark://spark-master.internal:7077")
    assert "--host 10.20.1.11 --port 7078" in worker["ExecStart"][0]  # its private IP, the port Terraform opens
    assert worker["RequiresMountsFor"] == ["/data/spark/work /data/spark/tmp"]
    assert c["spark.local.dir"] == "/data/spark/tmp"
    ports = (c["spark.driver.port"], c["spark.blockManager.port"], c["spark.port.maxRetries"])
    assert ports == ("40000", "40050", "49")
    assert worker["User"] == ["spark"]


def test_hdfs_site_files_units_and_encryption_zone(deployment: Deployment) -> None:
    root = deployment.root
    core = hadoop_xml(root / "etc/hadoop/conf/core-site.xml")
    assert core["fs.defaultFS"] == "hdfs://hdfs-namenode.internal:8020"
    assert core["hadoop.rpc.protection"] == "privacy"
    assert core["hadoop.security.authorization"] == "true"
    assert core["hadoop.security.key.provider.path"] == "kms://http@hdfs-namenode.internal:9600/kms"
    hdfs = hadoop_xml(root / "etc/hadoop/conf/hdfs-site.xml")
    assert hdfs["dfs.encrypt.data.transfer"] == "true"
    assert hdfs["dfs.data.transfer.protection"] == "privacy"
    assert hdfs["dfs.block.access.token.enable"] == "true"
    assert hdfs["dfs.encrypt.data.transfer.cipher.suites"] == "AES/CTR/NoPadding"
    assert hdfs["dfs.namenode.rpc-address"] == "hdfs-namenode.internal:8020"
    assert hdfs["dfs.namenode.name.dir"] == "file:///data/hdfs/name"
    assert hdfs["dfs.datanode.data.dir"] == "file:///data/hdfs/data"
    units = root / "etc/systemd/system"
    assert unit(units / "hdfs-namenode.service")["ExecStart"] == ["/opt/hadoop/current/bin/hdfs namenode"]
    assert unit(units / "hdfs-datanode.service")["ExecStart"] == ["/opt/hadoop/current/bin/hdfs datanode"]
    assert unit(units / "hadoop-kms.service")["ExecStart"] == ["/opt/hadoop/current/bin/hadoop kms"]
    kms = hadoop_xml(root / "etc/hadoop/conf/kms-site.xml")
    assert kms["hadoop.kms.key.provider.uri"].startswith("jceks://file@")
    password = root / "etc/hadoop/conf/kms.keystore.password"
    assert mode(password) == "0640" and password.read_text().strip() == EXTRA_VARS["hdfs_kms_keystore_password"]
    format_task = yaml.safe_load((ANSIBLE_DIR / "roles/hdfs/tasks/format.yml").read_text())[0]
    assert format_task["ansible.builtin.command"]["creates"].endswith("/current/VERSION")


def test_pipeline_env_file(deployment: Deployment) -> None:
    root = deployment.root
    path = root / "etc/streamsight/streamsight.env"
    assert mode(path) == "0600"
    env = env_file(path)
    assert env["STREAMSIGHT_PROFILE"] == "aws"
    assert env["STREAMSIGHT_LAKE_DIR"] == "s3a://streamsight-test-lake/lake"
    assert env["STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS"] == (
        "kafka-1.internal:9096,kafka-2.internal:9096,kafka-3.internal:9096")
    assert env["STREAMSIGHT_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["STREAMSIGHT_KAFKA__SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["STREAMSIGHT_KAFKA__SASL_USERNAME"] == "streamsight"
    assert env["STREAMSIGHT_KAFKA__SASL_PASSWORD"] == SECRETS["vault_kafka_streamsight_password"]
    assert env["STREAMSIGHT_KAFKA__SSL_CA_LOCATION"] == "/etc/streamsight/kafka-ca.pem"
    assert env["STREAMSIGHT_SPARK__MASTER"] == "spark://spark-master.internal:7077"
    # Metrics for the alarms terraform creates (dimension Environment = the inventory's environment).
    assert env["STREAMSIGHT_METRICS__SINK"] == "cloudwatch"
    assert env["STREAMSIGHT_METRICS__ENVIRONMENT"] == "dev"
    # Online predictions in the table terraform names streamsight-<environment>-predictions.
    assert env["STREAMSIGHT_PREDICTIONS_STORE__KIND"] == "dynamodb"
    assert env["STREAMSIGHT_PREDICTIONS_STORE__TABLE"] == "streamsight-dev-predictions"
    # The project's own settings loader accepts every variable (config file from the install root).
    settings_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSIGHT_")}
    settings_env.update(env, STREAMSIGHT_CONFIG=str(root / env["STREAMSIGHT_CONFIG"].lstrip("/")))
    proc = subprocess.run([sys.executable, "-m", "streamsight_cli", "config"], cwd=ROOT, env=settings_env,
                          text=True, capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    settings = json.loads(proc.stdout)
    assert settings["lake_dir"] == "s3a://streamsight-test-lake/lake"
    assert settings["kafka"]["sasl_password"] == "**********"
    assert settings["kafka"]["bootstrap_servers"] == env["STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS"]
    assert settings["aws"]["region"] == "eu-west-1"
    assert settings["metrics"] == {"sink": "cloudwatch", "namespace": "Streamsight", "environment": "dev"}
    assert settings["predictions_store"] == {"kind": "dynamodb", "table": "streamsight-dev-predictions"}


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_s3a_jars_match_the_hadoop_client_spark_ships(env: str) -> None:
    """hadoop-aws must be exactly Spark's Hadoop client version, with the SDK bundle Hadoop was built with."""
    import pyspark

    clients = sorted((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    assert clients, "pyspark ships no hadoop-client-api jar?"
    hadoop = clients[0].name[len("hadoop-client-api-"):-len(".jar")]
    sdk_for = {"3.4.1": "2.24.6", "3.4.2": "2.29.52", "3.5.0": "2.35.4"}  # hadoop-project's aws-java-sdk-v2.version
    assert hadoop in sdk_for, f"Spark now ships Hadoop {hadoop}: look up its AWS SDK v2 version and update group_vars"
    group_vars = yaml.safe_load((ANSIBLE_DIR / "inventories" / env / "group_vars" / "all" / "main.yml").read_text())
    assert group_vars["streamsight_hadoop_version"] == hadoop
    assert group_vars["streamsight_aws_sdk_v2_version"] == sdk_for[hadoop]
    urls = [j["url"] for j in group_vars["spark_extra_jars"]]
    assert any("/hadoop-aws/{{ streamsight_hadoop_version }}/" in u for u in urls)
    assert any("/awssdk/bundle/{{ streamsight_aws_sdk_v2_version }}/" in u for u in urls)


def test_pipeline_install_and_units(deployment: Deployment) -> None:
    root = deployment.root
    assert (root / "opt/streamsight/app/streaming_jobs/pipeline.py").is_file()
    assert (root / "opt/streamsight/app").is_symlink()
    assert os.readlink(root / "opt/streamsight/app").startswith("releases/app-")
    assert (root / "opt/streamsight/env/bin/python").is_file()
    assert (root / "opt/streamsight/lib/streamsight.zip").is_file()
    assert (root / "opt/streamsight/app/conf/contracts/machine_telemetry.yaml").is_file()
    units = root / "etc/systemd/system"
    stream = unit(units / "streamsight-stream@.service")
    (exec_start,) = stream["ExecStart"]
    assert exec_start.startswith("/opt/spark/current/bin/spark-submit --master spark://spark-master.internal:7077 ")
    assert f"--packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0,{delta_package()} " in exec_start
    for key, value in DELTA_CONF.items():
        assert f"--conf {key}={value} " in exec_start
    assert "--py-files /opt/streamsight/lib/streamsight.zip" in exec_start
    assert "--jars" not in exec_start  # --packages brings the connector; the project has no jar of its own
    assert "--archives /opt/streamsight/lib/streamsight-env.tar.gz#environment" in exec_start
    assert "--conf spark.pyspark.python=./environment/bin/python" in exec_start
    assert exec_start.endswith("/opt/streamsight/app/streaming_jobs/pipeline.py --stream %i")
    assert stream["EnvironmentFile"] == ["/etc/streamsight/streamsight.env"]
    assert stream["User"] == ["streamsight"]
    assert stream["OnFailure"] == ["streamsight-notify@%n.service"]
    producer = unit(units / "streamsight-producer@.service")
    assert producer["ExecStart"] == [
        "/opt/streamsight/env/bin/python -m streamsight_cli produce --stream %i $PRODUCER_ARGS"]
    assert producer["EnvironmentFile"] == ["/etc/streamsight/streamsight.env", "-/etc/streamsight/producer-%i.env"]
    producer_env = env_file(root / "etc/streamsight/producer-machine_telemetry.env")
    assert producer_env["PRODUCER_ARGS"].startswith("--source synthetic")
    report = unit(units / "streamsight-report.service")
    assert report["Type"] == ["oneshot"]
    assert report["ExecStart"] == ["/opt/streamsight/env/bin/python -m streamsight_cli report"]
    assert report["ExecStartPre"] == ["/opt/streamsight/env/bin/python -m streamsight_cli lake register"]
    timer = unit(units / "streamsight-report.timer")
    assert timer["OnCalendar"] == ["hourly"] and timer["Unit"] == ["streamsight-report.service"]
    assert timer["WantedBy"] == ["timers.target"]
    train = unit(units / "streamsight-train@.service")
    assert train["ExecStart"][0].endswith("/opt/streamsight/app/ml/train.py --model %i")
    assert unit(units / "streamsight-train@.timer")["Unit"] == ["streamsight-train@%i.service"]
    notify = unit(units / "streamsight-notify@.service")
    assert TERRAFORM_OUTPUTS["sns_topic_arn"]["value"] in notify["ExecStart"][0]


def test_monitoring_cloudwatch_agent_config(deployment: Deployment) -> None:
    path = deployment.root / "opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.json"
    config = json.loads(path.read_text())
    assert config["metrics"]["namespace"] == "CWAgent"
    assert {"cpu", "mem", "disk"} <= set(config["metrics"]["metrics_collected"])
    # Terraform's alarms read disk_used_percent with exactly these dimensions.
    assert config["metrics"]["aggregation_dimensions"] == [["InstanceId", "path"], ["AutoScalingGroupName", "path"]]
    assert config["metrics"]["metrics_collected"]["disk"]["resources"] == ["/", "/data"]
    collect = config["logs"]["logs_collected"]["files"]["collect_list"]
    files = {f["file_path"]: f["log_group_name"] for f in collect}
    groups = TERRAFORM_OUTPUTS["log_group_names"]["value"]
    # Only the log groups Terraform created (the instances may not create any); the node is in every
    # inventory group, so it ships the logs of every kind.
    assert set(files.values()) == set(groups.values())
    assert files["/var/log/kafka/server.log"] == groups["kafka"]
    assert files["/var/log/streamsight/*.log"] == groups["streaming-jobs"]
    assert files["/var/log/hadoop/*namenode*.log"] == groups["hdfs"]
    assert files["/data/spark/work/*/*/stderr"] == groups["spark"]
    assert all(f["log_stream_name"].startswith("{instance_id}/") for f in collect)


def test_java_role_in_check_mode_against_this_machine(tools: None, tmp_path: Path) -> None:
    """The java role for real (no install root), in check mode: it may look, never change."""
    playbook = tmp_path / "java.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Check Java on this machine", "hosts": "localhost", "connection": "local", "gather_facts": True,
        "gather_subset": ["min"],
        "roles": [{"role": "java", "vars": {"java_profile_script": False}}],
    }]))
    proc = run([tool("ansible-playbook"), "-i", "localhost,", "--check", str(playbook),
                "-e", f"ansible_python_interpreter={INFRA_BIN / 'python'}"],
               env={"ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles")}, timeout=300)
    assert proc.returncode == 0, output_of(proc)
    assert recap(proc.stdout)["localhost"]["failed"] == 0


def test_ansible_lint_production_profile(lint_job: LintJob) -> None:
    """ansible-lint --profile production over ansible/ (started in the background, see lint_job)."""
    config = yaml.safe_load((ANSIBLE_DIR / ".ansible-lint").read_text(encoding="utf-8"))
    assert config["profile"] == "production"
    assert not config.get("skip_list") and not config.get("warn_list"), "no rule may be skipped without a reason"
    proc = lint_job.result()
    assert proc.returncode == 0, output_of(proc)
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr, output_of(proc)


def test_hdfs_role_sets_the_lakes_acls_as_the_code_does(tools: None, tmp_path: Path) -> None:
    """The hdfs role's lake ACLs, as Ansible renders them, are the code's (streamsight.lake.hdfs_acls,
    which the integration tests run the pipeline into), plus traverse on the lake's parent."""
    from streamsight.lake import ANALYSTS_GROUP, hdfs_acls

    defaults = yaml.safe_load((ANSIBLE_DIR / "roles/hdfs/defaults/main.yml").read_text())
    proc = run([tool("ansible"), "localhost", "-i", "localhost,", "-c", "local", "-m", "ansible.builtin.debug",
                "-a", "var=hdfs_lake_acls", "-e", f"@{ANSIBLE_DIR / 'roles/hdfs/defaults/main.yml'}"])
    assert proc.returncode == 0, output_of(proc)
    rendered = yaml.safe_load(proc.stdout.split("=>", 1)[1])["hdfs_lake_acls"]  # JSON or YAML, per ansible.cfg
    lake = defaults["hdfs_encryption_zone_path"]
    expected = [{"path": "/streamsight", "mode": "0750", "acl": [f"group:{ANALYSTS_GROUP}:--x"]},
                *[{"path": path, "mode": "0" + mode, "acl": acl} for path, mode, acl in hdfs_acls(lake)]]
    assert rendered == expected
    assert defaults["hdfs_encryption_zone_enabled"] is True
    assert defaults["hdfs_hadoop_version"].split()[0] == pom_property("hadoop.version")  # PySpark's Hadoop client
