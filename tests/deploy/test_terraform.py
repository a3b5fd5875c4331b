"""terraform/: formatting, validation, a real apply + destroy against moto, and checkov.

Every terraform command runs in a copy of terraform/ under pytest's tmp_path, so no ``.terraform``
directory, state file or test override ever appears in the repository. The apply talks only to a
moto server this module starts on a free loopback port; the endpoints, fake credentials and the
switches for what moto cannot do live in a test-only ``moto_override.tf`` written into the copy.

What moto cannot do (so the override turns it off; the real configuration keeps it on):
  * ``enable_detailed_monitoring = false``: moto does not implement ec2:MonitorInstances, which the
    provider calls for ``monitoring = true`` (it retries the 500 until its 10-minute timeout).
Everything else (VPC flow logs, the dashboard, KMS-encrypted log groups and topic, the Auto Scaling
group, Route 53 records, the S3 lifecycle rules) is created and destroyed for real.

Wall time: the moto round trip (~2 min alone, most of it the provider's fixed waits, e.g. 55 s for S3
lifecycle rules to "settle") and checkov (~35 s) start in the background, at nice 19, when the
session starts, so the Spark tests and fmt/validate run meanwhile; their tests then wait for the
results. Beside the Spark tests the round trip gets only idle CPU, so it has one deadline for all its
steps that includes ``BACKGROUND_ALLOWANCE`` (tests/conftest.py): it catches hangs, not slowness.

The terraform binary is the only thing that may be absent (the module is then skipped); moto and
checkov come from .venv-infra and their absence is a failure that says to run `make setup-infra`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import BACKGROUND_ALLOWANCE, background_command
from tests.moto_server import INFRA_BIN, start_moto, stop

ROOT = Path(__file__).resolve().parents[2]
TF_DIR = ROOT / "terraform"
PLUGIN_DIR = Path("/opt/tf-plugins")
TERRAFORM = shutil.which("terraform")
ENVS = ("dev", "prod")

SETUP_HINT = (
    "Run `make setup-infra` "
    "(python3 -m venv .venv-infra && .venv-infra/bin/pip install -r requirements-infra.txt)."
)

pytestmark = pytest.mark.skipif(
    TERRAFORM is None, reason="the terraform binary is not on PATH (install Terraform >= 1.6 to test terraform/)"
)

# Deadlines (seconds): generous for a loaded 2-core machine, but every subprocess is bounded.
T_FAST = 60
T_INIT = 180
T_APPLY = 420
T_DESTROY = 300
T_CHECKOV = 300
T_MOTO_START = 60
# The round trip runs at nice 19 beside the Spark tests (about 130 s alone: apply 76, destroy 47), so
# it has one deadline for all its steps, with the background allowance, instead of one per step.
T_ROUNDTRIP = BACKGROUND_ALLOWANCE + T_MOTO_START + T_INIT + T_APPLY + T_DESTROY + 4 * T_FAST

# envs/dev outputs that the Ansible inventory reads.
INVENTORY_OUTPUTS = {
    "region",
    "kafka_private_ips",
    "kafka_instance_ids",
    "spark_master_instance_id",
    "hdfs_namenode_instance_id",
    "spark_master_private_ip",
    "spark_workers_asg_name",
    "hdfs_namenode_private_ip",
    "lake_bucket_name",
    "lake_uri",
    "kms_key_arn",
    "sns_topic_arn",
    "vpc_cidr_block",
    "ansible_inventory",
}

# Every AWS service the configuration calls, all pointed at moto by the override.
MOTO_SERVICES = ("autoscaling", "cloudwatch", "dynamodb", "ec2", "ecr", "glue", "iam", "kms", "logs", "route53", "s3", "sns",
                 "sts")

# Matches AMIs that moto ships under Canonical's owner id, so the real data "aws_ami" lookup runs.
MOTO_AMI_NAME_FILTER = "ubuntu/images/hvm-ssd/ubuntu-*-amd64-server-*"

APPLY_TEST = "test_apply_and_destroy_dev_against_moto"
CHECKOV_TEST = "test_checkov_has_no_failed_checks"


################################################################################
# helpers
################################################################################


class CommandFailed(RuntimeError):
    pass


def tf_env() -> dict[str, str]:
    """Environment for terraform: no telemetry, no prompts, and never any real AWS credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_VAR_"))}
    env.update(
        CHECKPOINT_DISABLE="1",
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def sh(args: list[str], cwd: Path, timeout: float) -> str:
    """Run a command to completion within timeout; raise CommandFailed with its output otherwise."""
    try:
        proc = subprocess.run(args, cwd=cwd, env=tf_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        tail = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise CommandFailed(f"`{' '.join(args[:3])}` in {cwd} exceeded {timeout}s\n{tail[-4000:]}") from None
    if proc.returncode != 0:
        raise CommandFailed(
            f"`{' '.join(args[:3])}` in {cwd} failed (exit {proc.returncode})\n"
            f"--- stdout ---\n{proc.stdout[-5000:]}\n--- stderr ---\n{proc.stderr[-5000:]}"
        )
    return proc.stdout


def run(args: list[str], cwd: Path, timeout: float) -> str:
    try:
        return sh(args, cwd, timeout)
    except CommandFailed as exc:
        pytest.fail(str(exc), pytrace=False)


def infra_tool(name: str) -> Path:
    path = INFRA_BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} not found. {SETUP_HINT}", pytrace=False)
    return path


def copy_tree(dest: Path) -> Path:
    """terraform/ without local init/state debris; modules stay reachable as ../../modules."""
    shutil.copytree(
        TF_DIR,
        dest,
        ignore=shutil.ignore_patterns(".terraform", "*.tfstate", "*.tfstate.*", "*_override.tf", "override.tf"),
    )
    return dest


def init_cmd() -> list[str]:
    cmd = [TERRAFORM, "init", "-backend=false", "-input=false", "-no-color"]
    if PLUGIN_DIR.is_dir():
        cmd.append(f"-plugin-dir={PLUGIN_DIR}")
    return cmd


def moto_override(endpoint: str) -> str:
    endpoints = "\n".join(f'    {svc:<11} = "{endpoint}"' for svc in MOTO_SERVICES)
    return f"""# TEST ONLY: written by tests/deploy/test_terraform.py into a temporary copy, never into the repo.
provider "aws" {{
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  s3_use_path_style           = true

  endpoints {{
{endpoints}
  }}
}}

# moto does not implement ec2:MonitorInstances.
variable "enable_detailed_monitoring" {{
  default = false
}}

# An AMI name moto ships, so the real data "aws_ami" lookup is exercised.
variable "ami_name_filter" {{
  default = "{MOTO_AMI_NAME_FILTER}"
}}
"""


################################################################################
# background work: the moto round trip and checkov
################################################################################


@dataclass
class RoundTrip:
    """Result of apply -> outputs -> destroy of envs/dev against moto (filled by a thread)."""

    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    applied: bool = False
    outputs: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    left_after_destroy: list[str] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def moto_round_trip(workdir: Path, result: RoundTrip) -> None:
    deadline = time.monotonic() + T_ROUNDTRIP

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    def timed(name: str, args: list[str], cwd: Path) -> str:
        t0 = time.monotonic()
        try:
            return sh(background_command(args), cwd, left())
        finally:
            result.timings[name] = round(time.monotonic() - t0, 1)

    moto = None
    try:
        dev = copy_tree(workdir / "terraform") / "envs" / "dev"
        moto, endpoint = start_moto(workdir / "moto.log", low_priority=True, timeout=left())
        (dev / "moto_override.tf").write_text(moto_override(endpoint))
        timed("init", init_cmd(), dev)
        try:
            timed("apply", [TERRAFORM, "apply", "-auto-approve", "-input=false", "-no-color", "-parallelism=20"],
                  dev)
            result.applied = True
            result.outputs = {k: v["value"] for k, v in json.loads(
                timed("output", [TERRAFORM, "output", "-json"], dev)).items()}
            result.state = json.loads((dev / "terraform.tfstate").read_text())
        finally:
            if (dev / "terraform.tfstate").exists():
                # The state was just written by apply: skip the (slow) refresh, delete what it records.
                timed("destroy", [TERRAFORM, "destroy", "-auto-approve", "-input=false", "-no-color",
                                  "-parallelism=20", "-refresh=false"], dev)
                result.left_after_destroy = timed("state list", [TERRAFORM, "state", "list"], dev).split()
    except BaseException as exc:
        first = exc.__context__ if isinstance(exc.__context__, CommandFailed) else None
        result.error = f"{type(exc).__name__}: {exc}" + (f"\n(after: {first})" if first else "")
    finally:
        if moto is not None:
            stop(moto)
        result.done.set()


@dataclass
class Background:
    round_trip: RoundTrip | None = None
    thread: threading.Thread | None = None
    checkov: subprocess.Popen | None = None
    checkov_log: Path | None = None


# Started once: at the start of the session when tests/conftest.py calls start_background (so the
# round trip overlaps the Spark tests, which run first), otherwise by this module's first test.
_started: list[Background] = []


def start_background(selected: set[str], tmp_path_factory: pytest.TempPathFactory) -> Background:
    """Start the slow, independent work (moto round trip, checkov) the selected tests need (idempotent)."""
    if _started:
        return _started[0]
    bg = Background()
    if APPLY_TEST in selected and (INFRA_BIN / "moto_server").is_file():
        bg.round_trip = RoundTrip()
        bg.thread = threading.Thread(
            target=moto_round_trip, args=(tmp_path_factory.mktemp("moto"), bg.round_trip), daemon=True
        )
        bg.thread.start()
    if CHECKOV_TEST in selected and (INFRA_BIN / "checkov").is_file():
        bg.checkov_log = tmp_path_factory.mktemp("checkov") / "checkov.log"
        with open(bg.checkov_log, "w") as fh:
            bg.checkov = subprocess.Popen(
                background_command([str(INFRA_BIN / "checkov"), "-d", "terraform", "--framework", "terraform",
                                    "--quiet", "--compact", "--skip-download"]),  # --skip-download: offline
                cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "LOG_LEVEL": "ERROR"},
            )
    _started.append(bg)
    return bg


@pytest.fixture(scope="module", autouse=True)
def background(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    selected = {
        getattr(item, "originalname", item.name)
        for item in request.session.items
        if getattr(item, "module", None) is request.module
    }
    bg = start_background(selected, tmp_path_factory)
    yield bg
    if bg.checkov is not None:
        stop(bg.checkov)
    if bg.thread is not None:
        bg.thread.join(timeout=T_ROUNDTRIP)


################################################################################
# static checks, fmt, validate
################################################################################


def test_fmt() -> None:
    run([TERRAFORM, "fmt", "-check", "-recursive", "-diff", "-no-color", str(TF_DIR)], cwd=ROOT, timeout=T_FAST)


def test_every_module_has_the_standard_files_and_typed_described_variables() -> None:
    modules = sorted(p for p in (TF_DIR / "modules").iterdir() if p.is_dir())
    assert {m.name for m in modules} >= {"network", "security", "compute", "lake", "iam", "monitoring"}
    for module in modules:
        for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
            assert (module / name).is_file(), f"{module.name}/{name} missing"
        blocks = (module / "variables.tf").read_text().split('variable "')[1:]
        assert blocks, f"{module.name}/variables.tf declares no variable"
        for block in blocks:
            var = block.split('"', 1)[0]
            assert "\n  type " in block, f"{module.name}: variable {var} has no type"
            assert "\n  description " in block, f"{module.name}: variable {var} has no description"
    for env in ENVS:
        lock = TF_DIR / "envs" / env / ".terraform.lock.hcl"
        assert lock.is_file(), f"envs/{env}/.terraform.lock.hcl is not committed"
        assert 'version     = "5.100.0"' in lock.read_text(), "the lock must select hashicorp/aws 5.100.0"


def test_world_cidr_only_in_the_documented_egress_rule() -> None:
    for tf in TF_DIR.rglob("*.tf"):
        text = tf.read_text()
        if tf.parent.name == "security" and tf.name == "main.tf":
            assert text.count('"0.0.0.0/0"') == 1
            rule = text.split('resource "aws_security_group_rule" "egress_internet"', 1)[1]
            assert '"0.0.0.0/0"' in rule and 'type              = "egress"' in rule
        elif tf.parent.name != "network":  # network: the public route table's default route
            assert '"0.0.0.0/0"' not in text, f"{tf}: 0.0.0.0/0 outside the documented egress rule"


@pytest.fixture(scope="module")
def validated_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of terraform/ with envs/dev and envs/prod initialised concurrently."""
    tree = copy_tree(tmp_path_factory.mktemp("tf-validate") / "terraform")
    procs = {
        name: subprocess.Popen(init_cmd(), cwd=tree / "envs" / name, env=tf_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        for name in ENVS
    }
    deadline = time.monotonic() + T_INIT
    failures = []
    try:
        for name, proc in procs.items():
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if proc.returncode != 0:
                failures.append(f"terraform init envs/{name}:\n{out[-4000:]}")
    except subprocess.TimeoutExpired:
        failures.append(f"terraform init exceeded {T_INIT}s")
    finally:
        for proc in procs.values():
            stop(proc)
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)
    return tree


@pytest.mark.parametrize("env_name", ENVS)
def test_validate(validated_copy: Path, env_name: str) -> None:
    out = run([TERRAFORM, "validate", "-no-color"], cwd=validated_copy / "envs" / env_name, timeout=T_INIT)
    assert "Success" in out


################################################################################
# apply + destroy against moto
################################################################################


def resources(state: dict, rtype: str) -> list[tuple[str, dict]]:
    """(address, attributes) of every managed resource instance of a type in a v4 state file."""
    found = []
    for res in state.get("resources", []):
        if res["mode"] == "managed" and res["type"] == rtype:
            for inst in res["instances"]:
                key = inst.get("index_key")
                address = f"{res.get('module', '')}.{rtype}.{res['name']}" + (f"[{key!r}]" if key is not None else "")
                found.append((address.lstrip("."), inst["attributes"]))
    return found


def test_apply_and_destroy_dev_against_moto(background: Background) -> None:
    infra_tool("moto_server")
    result = background.round_trip
    assert result is not None
    if not result.done.wait(timeout=T_ROUNDTRIP):
        pytest.fail(f"the moto round trip did not finish within {T_ROUNDTRIP}s", pytrace=False)
    print(f"moto round trip timings (s): {result.timings}")
    assert result.error is None, result.error
    assert result.applied

    # Outputs that feed the Ansible inventory.
    outputs = result.outputs
    missing = INVENTORY_OUTPUTS - outputs.keys()
    assert not missing, f"outputs missing: {sorted(missing)}"
    vpc = ipaddress.ip_network(outputs["vpc_cidr_block"])
    kafka = outputs["kafka_private_ips"]
    assert len(kafka) == 3 and len(set(kafka)) == 3, kafka
    for ip in [*kafka, outputs["spark_master_private_ip"], outputs["hdfs_namenode_private_ip"]]:
        assert ipaddress.ip_address(ip) in vpc, f"{ip} is outside {vpc}"
    bucket = outputs["lake_bucket_name"]
    assert bucket.startswith("streamsight-dev-lake-"), bucket
    assert outputs["lake_uri"] == f"s3a://{bucket}/lake"
    assert outputs["spark_workers_asg_name"] == "streamsight-dev-spark-workers"
    assert outputs["kms_key_arn"].startswith("arn:aws:kms:")
    assert outputs["sns_topic_arn"].startswith("arn:aws:sns:") and outputs["sns_topic_arn"].endswith("-alarms")
    assert outputs["ansible_inventory"]["kafka"] == kafka
    assert len(outputs["kafka_instance_ids"]) == 3
    assert all(outputs[k].startswith("i-") for k in ("spark_master_instance_id", "hdfs_namenode_instance_id"))

    # What the provider read back from moto: the hardening is in the deployed resources.
    state = result.state
    instances = resources(state, "aws_instance")
    assert len(instances) == 5, [a for a, _ in instances]  # 3 brokers, spark master, namenode
    for address, attrs in instances:
        assert attrs["metadata_options"][0]["http_tokens"] == "required", address
        assert not attrs["public_ip"], f"{address} has a public IP"
        assert attrs["iam_instance_profile"], f"{address} has no instance profile"
        assert attrs["ebs_optimized"], address
        volumes = attrs["root_block_device"] + attrs["ebs_block_device"]
        assert all(v["encrypted"] and v["kms_key_id"] == outputs["kms_key_arn"] for v in volumes), address
    (template,) = [a for _, a in resources(state, "aws_launch_template")]
    assert template["metadata_options"][0]["http_tokens"] == "required"
    assert all(bd["ebs"][0]["encrypted"] == "true" for bd in template["block_device_mappings"])
    for address, rule in resources(state, "aws_security_group_rule"):
        if rule["type"] != "ingress":
            continue
        assert not rule["from_port"] <= 22 <= rule["to_port"], f"SSH is open: {address}"
        for cidr in rule["cidr_blocks"] or []:
            assert ipaddress.ip_network(cidr).subnet_of(vpc), f"{address}: ingress from {cidr}, outside the VPC"
    (key,) = [a for _, a in resources(state, "aws_kms_key")]
    assert key["enable_key_rotation"] is True
    policies = {addr: a["policy"] for addr, a in resources(state, "aws_s3_bucket_policy")}
    assert len(policies) == 2 and all("aws:SecureTransport" in p for p in policies.values()), policies
    assert all(a["block_public_policy"] for _, a in resources(state, "aws_s3_bucket_public_access_block"))
    assert len(resources(state, "aws_flow_log")) == 1
    assert len(resources(state, "aws_cloudwatch_dashboard")) == 1
    (topic,) = [a for _, a in resources(state, "aws_sns_topic")]
    assert topic["kms_master_key_id"] == outputs["kms_key_arn"]
    # The Glue database `streamsight lake register` fills, and Spark's role allowed to register
    # tables in it only.
    (database,) = [a for _, a in resources(state, "aws_glue_catalog_database")]
    assert database["name"] == outputs["glue_database_name"] == "streamsight"
    assert database["location_uri"] == f"s3://{bucket}/lake"
    assert resources(state, "aws_glue_data_catalog_encryption_settings") == []  # an account-wide setting: opt-in
    spark_policy = next(json.loads(a["policy"]) for _, a in resources(state, "aws_iam_role_policy")
                        if a["name"] == "lake-kms-sagemaker")
    (glue,) = [st for st in spark_policy["Statement"] if st.get("Sid") == "RegisterLakeTablesInGlue"]
    assert all(r.endswith(("catalog", "database/streamsight", "table/streamsight/*")) for r in glue["Resource"])
    # The online predictions table: on demand, point-in-time recovery, the lake's key; the jobs may
    # put to it and query it (and its index), nothing else.
    (table,) = [a for _, a in resources(state, "aws_dynamodb_table")]
    assert table["name"] == outputs["predictions_table_name"] == "streamsight-dev-predictions"
    assert table["billing_mode"] == "PAY_PER_REQUEST" and (table["hash_key"], table["range_key"]) == ("pk", "sk")
    assert table["point_in_time_recovery"][0]["enabled"] is True
    assert table["server_side_encryption"][0] == {"enabled": True, "kms_key_arn": outputs["kms_key_arn"]}
    assert [i["name"] for i in table["global_secondary_index"]] == ["by_stream"]
    (dynamo,) = [st for st in spark_policy["Statement"] if st.get("Sid") == "PutAndReadOnlinePredictions"]
    assert sorted(dynamo["Resource"]) == sorted([table["arn"], f"{table['arn']}/index/by_stream"])
    assert not any(a in dynamo["Action"] for a in ("dynamodb:*", "dynamodb:DeleteTable", "dynamodb:Scan"))

    # What `streamsight deploy --target sagemaker` needs: the inference image's repository (immutable
    # tags, scanned, the lake's key) and the role SageMaker runs endpoints with, which may read the
    # model artifacts' prefix only.
    (repository,) = [a for _, a in resources(state, "aws_ecr_repository")]
    assert outputs["sagemaker_image_repository_url"] == repository["repository_url"]
    assert repository["image_tag_mutability"] == "IMMUTABLE" and repository["image_scanning_configuration"][0]["scan_on_push"]
    assert repository["encryption_configuration"][0] == {"encryption_type": "KMS", "kms_key": outputs["kms_key_arn"]}
    (role,) = [a for _, a in resources(state, "aws_iam_role") if a["name"] == "streamsight-dev-sagemaker-execution"]
    assert outputs["sagemaker_execution_role_arn"] == role["arn"]
    assert json.loads(role["assume_role_policy"])["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    execution = next(json.loads(a["policy"]) for _, a in resources(state, "aws_iam_role_policy") if a["name"] == "inference")
    (artifacts,) = [st for st in execution["Statement"] if st.get("Sid") == "ReadModelArtifacts"]
    assert outputs["sagemaker_artifacts_uri"] == f"s3://{bucket}/sagemaker-models"
    assert artifacts["Resource"].endswith(f":{bucket}/sagemaker-models/*") and artifacts["Action"] == "s3:GetObject"

    assert result.left_after_destroy == [], f"destroy left resources in the state: {result.left_after_destroy}"


################################################################################
# checkov
################################################################################


def test_checkov_has_no_failed_checks(background: Background) -> None:
    infra_tool("checkov")
    proc = background.checkov
    assert proc is not None and background.checkov_log is not None
    try:
        proc.wait(timeout=T_CHECKOV)
    except subprocess.TimeoutExpired:
        stop(proc)
        pytest.fail(f"checkov exceeded {T_CHECKOV}s", pytrace=False)
    out = background.checkov_log.read_text()
    assert proc.returncode == 0 and "Failed checks: 0" in out, f"checkov failed (exit {proc.returncode}):\n{out[-8000:]}"
    # Every skip is an inline `#checkov:skip=CKV_...:reason` next to its resource, with a real reason.
    for tf in TF_DIR.rglob("*.tf"):
        for line in tf.read_text().splitlines():
            if "checkov:skip=" in line:
                check_id, _, reason = line.split("checkov:skip=", 1)[1].partition(":")
                assert check_id.startswith("CKV") and len(reason.strip()) >= 20, f"{tf}: skip without a reason: {line}"
