"""Static checks of the Docker deployment: docker/compose.yaml, docker/Dockerfile, the CI workflow.

No Docker engine is needed: the files are parsed and cross-checked against the repository (paths,
contracts, settings profile `docker`, the real `streamsight` Typer app, the pinned PySpark). Where the
`docker compose` CLI is available, `docker compose config` validates the file as Compose does.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
CI_WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"

APP_DIR = "/opt/streamsight"              # WORKDIR of the image: the repo's files live here
ROLES = {"infra", "job", "init", "oneshot"}  # label org.streamsight.role of every service
LONG_RUNNING = {"infra", "job"}
ONE_SHOT = {"init", "oneshot"}
SPARK_CLASSES = {"org.apache.spark.deploy.master.Master", "org.apache.spark.deploy.worker.Worker"}
# spark-submit options that take no value (all others take exactly one).
SPARK_SUBMIT_FLAGS = {"--verbose", "-v", "--supervise", "--help", "-h", "--version", "--kill", "--status"}


# -- loading ------------------------------------------------------------------------------------------

@cache
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), "compose.yaml is not a mapping"
    return doc


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def role(service: dict[str, Any]) -> str | None:
    labels = service.get("labels") or {}
    if isinstance(labels, list):
        labels = dict(item.split("=", 1) for item in labels)
    return labels.get("org.streamsight.role")


def as_list(command: Any) -> list[str]:
    """A compose command/entrypoint (string or list) as an argv list."""
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(c) for c in command]


def built_from_our_dockerfile(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if not build:
        return False
    _, dockerfile = build_paths(build)
    return dockerfile.resolve() == DOCKERFILE.resolve()


def build_paths(build: Any) -> tuple[Path, Path]:
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    context_dir = (DOCKER / context).resolve()
    return context_dir, context_dir / dockerfile


@cache
def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


@cache
def docker_settings() -> Any:
    """The `docker` profile exactly as the containers load it (env overrides cleared)."""
    from streamsight.settings import load_settings

    saved = {k: v for k, v in os.environ.items() if k.startswith("STREAMSIGHT_")}
    try:
        for key in saved:
            del os.environ[key]
        return load_settings(profile="docker")
    finally:
        os.environ.update(saved)


@cache
def contracts() -> dict[str, Any]:
    from streamsight.contracts import load_contracts

    return load_contracts(ROOT / "conf" / "contracts")


@cache
def cli_group() -> Any:
    import typer

    from streamsight_cli import app

    return typer.main.get_command(app)


def pyspark_hadoop_version() -> str | None:
    """Hadoop version bundled with the installed pyspark (hadoop-client-api-X.jar), if any."""
    spec = find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        return None
    jars = Path(next(iter(spec.submodule_search_locations))) / "jars"
    for jar in jars.glob("hadoop-client-api-*.jar"):
        return jar.name[len("hadoop-client-api-"):-len(".jar")]
    return None


def repo_path(container_path: str) -> Path:
    """The repository file behind a path inside the image (everything is under APP_DIR)."""
    assert container_path.startswith(APP_DIR + "/"), f"{container_path} is not under {APP_DIR}"
    return ROOT / container_path[len(APP_DIR) + 1:]


def env_file_values(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def env_files(service: dict[str, Any]) -> list[Path]:
    files = service.get("env_file") or []
    if isinstance(files, (str, dict)):
        files = [files]
    return [DOCKER / (f["path"] if isinstance(f, dict) else f) for f in files]


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for path in env_files(service):
        env.update(env_file_values(path))
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    env.update({k: str(v) for k, v in environment.items()})
    return env


# -- compose: structure ----------------------------------------------------------------------------

def test_compose_parses_without_version_key():
    doc = compose()
    assert "version" not in doc, "the top-level `version:` key is obsolete in the Compose spec"
    assert services(), "no services"
    unknown = set(doc) - {"name", "services", "networks", "volumes", "configs", "secrets", "include"}
    assert all(key.startswith("x-") for key in unknown), f"unknown top-level keys: {sorted(unknown)}"


def test_every_service_has_a_role_label():
    for name, service in services().items():
        assert role(service) in ROLES, f"{name}: label org.streamsight.role must be one of {sorted(ROLES)}"


PINNED_TAG = re.compile(r"^[\w.\-/]+(:[\w.\-]+)$")


@pytest.mark.parametrize("name", sorted(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]))
def test_image_is_pinned_or_built_here(name):
    service = services()[name]
    image = service.get("image")
    if service.get("build"):
        context, dockerfile = build_paths(service["build"])
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        assert dockerfile.is_file(), f"{name}: Dockerfile {dockerfile} does not exist"
    else:
        assert image, f"{name}: neither image nor build"
    if image:
        assert "@sha256:" in image or PINNED_TAG.match(image), f"{name}: image {image!r} has no tag"
        tag = image.split("@", 1)[0].rsplit(":", 1)[-1]
        assert tag != "latest", f"{name}: image {image!r} uses `latest`"
        assert not re.fullmatch(r"\d+", tag) or service.get("build"), \
            f"{name}: {image!r} pins only a major version; use a full release tag"


def test_our_image_tag_is_the_project_version():
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    ours = {name: s.get("image") for name, s in services().items() if built_from_our_dockerfile(s)}
    assert ours, "no service builds docker/Dockerfile"
    for name, image in ours.items():
        assert image == f"streamsight:{version}", f"{name}: image {image!r}, expected streamsight:{version}"


def test_referenced_files_exist():
    for name, service in services().items():
        for path in env_files(service):
            assert path.is_file(), f"{name}: env_file {path} does not exist"
        for volume in service.get("volumes") or []:
            if isinstance(volume, dict):
                kind, source = volume.get("type"), volume.get("source")
                if kind == "bind":
                    assert (DOCKER / source).exists(), f"{name}: bind source {source} does not exist"
                continue
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/", "~")):
                assert (DOCKER / source).exists(), f"{name}: bind-mounted {source} does not exist"


def test_named_volumes_and_networks_are_declared_and_used():
    declared_volumes = set(compose().get("volumes") or {})
    declared_networks = set(compose().get("networks") or {})
    used_volumes, used_networks = set(), set()
    for name, service in services().items():
        for volume in service.get("volumes") or []:
            if isinstance(volume, dict):
                if volume.get("type") == "volume":
                    used_volumes.add(volume["source"])
                continue
            parts = volume.split(":")
            if len(parts) > 1 and not parts[0].startswith((".", "/", "~")):
                used_volumes.add(parts[0])
        networks = service.get("networks") or []
        used_networks.update(networks if isinstance(networks, list) else networks.keys())
        if "network_mode" not in service:
            assert networks, f"{name}: attach it to a declared network"
    assert used_volumes <= declared_volumes, f"undeclared volumes: {sorted(used_volumes - declared_volumes)}"
    assert used_networks <= declared_networks, f"undeclared networks: {sorted(used_networks - declared_networks)}"
    assert declared_volumes <= used_volumes, f"unused volumes: {sorted(declared_volumes - used_volumes)}"


def test_depends_on_targets_exist_with_sound_conditions():
    all_services = services()
    for name, service in all_services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {target: {"condition": "service_started"} for target in depends}
        for target, spec in depends.items():
            assert target in all_services, f"{name} depends on unknown service {target}"
            other = all_services[target]
            condition = (spec or {}).get("condition", "service_started")
            if condition == "service_healthy":
                assert other.get("healthcheck", {}).get("test"), \
                    f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert role(other) in ONE_SHOT, f"{name} waits for {target} to complete, but it is long-running"
            else:
                pytest.fail(f"{name} -> {target}: use service_healthy or service_completed_successfully, "
                            f"not {condition}")
            # A service that starts by default must not need one that only starts under a profile.
            if not service.get("profiles"):
                assert not other.get("profiles"), \
                    f"{name} (default profile) depends on {target}, which is only in profiles {other['profiles']}"


def test_long_running_services_have_health_checks_and_one_shots_do_not_restart():
    for name, service in services().items():
        if role(service) in LONG_RUNNING:
            check = service.get("healthcheck") or {}
            assert check.get("test") and not check.get("disable"), f"{name}: long-running without healthcheck"
            assert check.get("interval") and check.get("retries"), f"{name}: give interval and retries"
            assert service.get("restart") in {"unless-stopped", "always", "on-failure"}, \
                f"{name}: long-running services should restart"
        else:
            assert service.get("restart", "no") == "no", f"{name}: a one-shot must not restart"


# -- compose: consistency with the code and settings -------------------------------------------------

def test_docker_profile_endpoints_are_compose_services():
    settings = docker_settings()
    names = set(services())
    hostnames = names | {s.get("hostname") for s in services().values() if s.get("hostname")}

    for server in settings.kafka.bootstrap_servers.split(","):
        host, port = server.strip().rsplit(":", 1)
        assert host in hostnames, f"kafka bootstrap {server}: no service {host}"
        advertised = service_env(services()[host]).get("KAFKA_ADVERTISED_LISTENERS", "")
        assert f"//{host}:{port}" in advertised, f"kafka does not advertise {server}: {advertised}"

    master = re.fullmatch(r"spark://([\w.-]+):(\d+)", settings.spark.master)
    assert master, settings.spark.master
    assert master.group(1) in hostnames, f"spark master host {master.group(1)} is not a service"
    master_args = as_list(services()[master.group(1)].get("command"))
    assert master_args[master_args.index("--port") + 1] == master.group(2)

    endpoint = settings.spark.conf.get("spark.hadoop.fs.s3a.endpoint", "")
    s3_host = re.fullmatch(r"https?://([\w.-]+):(\d+)", endpoint)
    assert s3_host and s3_host.group(1) in hostnames, f"s3a endpoint {endpoint!r} is not a service"


def test_minio_init_creates_the_lake_bucket_with_matching_credentials():
    lake = docker_settings().lake_dir
    bucket = re.fullmatch(r"s3a://([^/]+)(/.*)?", lake)
    assert bucket, f"docker profile lake_dir {lake!r} is not s3a://"
    script = " ".join(as_list(services()["minio-init"].get("command")))
    assert re.search(rf"mc mb (--ignore-existing|-p) \S+/{re.escape(bucket.group(1))}\b", script), \
        f"minio-init does not create bucket {bucket.group(1)}"

    minio = service_env(services()["minio"])
    for name, service in services().items():
        if built_from_our_dockerfile(service):
            env = service_env(service)
            assert env.get("AWS_ACCESS_KEY_ID") == minio["MINIO_ROOT_USER"], f"{name}: S3 user != MinIO user"
            assert env.get("AWS_SECRET_ACCESS_KEY") == minio["MINIO_ROOT_PASSWORD"], f"{name}: S3 secret mismatch"
            assert env.get("STREAMSIGHT_PROFILE") == "docker", f"{name}: STREAMSIGHT_PROFILE must be docker"
            lake_env = env.get("STREAMSIGHT_LAKE_DIR")
            if lake_env:
                assert lake_env.endswith(f":-{lake}}}") or lake_env == lake, \
                    f"{name}: STREAMSIGHT_LAKE_DIR default {lake_env!r} differs from the profile's {lake!r}"


def test_kafka_init_creates_exactly_the_contract_topics():
    expected = {}
    for contract in contracts().values():
        expected[contract.raw_topic] = contract.topics.partitions
        expected[contract.dead_letter_topic] = 1
    specs = as_list(services()["kafka-init"].get("command"))
    created = {}
    for spec in specs:
        topic, _, partitions = spec.rpartition(":")
        assert topic and partitions.isdigit(), f"kafka-init: bad TOPIC:PARTITIONS {spec!r}"
        created[topic] = int(partitions)
    assert created == expected, f"kafka-init topics {created} != contract topics {expected}"


def _check_cli_args(service_name: str, argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse argv with the real `streamsight` Typer/Click app; returns (subcommand, its params)."""
    group = cli_group()
    try:
        ctx = group.make_context("streamsight", list(argv))
    except Exception as exc:
        pytest.fail(f"{service_name}: `streamsight {shlex.join(argv)}`: {exc}")
    # Click keeps the subcommand and its arguments apart from the group's own options.
    protected = getattr(ctx, "_protected_args", None)
    if protected is None:
        protected = ctx.protected_args
    rest = [*protected, *ctx.args]
    assert rest, f"{service_name}: no subcommand in {argv}"
    name, sub_args = rest[0], rest[1:]
    command = group.commands.get(name)
    assert command is not None, f"{service_name}: `{name}` is not a streamsight subcommand ({sorted(group.commands)})"
    try:
        sub_ctx = command.make_context(name, list(sub_args), parent=ctx)
    except Exception as exc:
        pytest.fail(f"{service_name}: `streamsight {shlex.join(argv)}`: {exc}")
    return name, sub_ctx.params


def test_streamsight_commands_match_the_cli():
    checked = 0
    for name, service in services().items():
        if not built_from_our_dockerfile(service) or service.get("entrypoint"):
            continue
        argv = as_list(service.get("command"))
        subcommand, params = _check_cli_args(name, argv)
        checked += 1
        if "stream" in params and params["stream"] is not None:
            assert params["stream"] in contracts(), f"{name}: no contract {params['stream']!r}"
        if subcommand == "train":
            models = {c.model.name for c in contracts().values() if c.model}
            assert params["model"] in models, f"{name}: no contract declares model {params['model']!r}"
        if subcommand == "produce":
            from ingestion.sources import FaultSpec

            assert params["source"] in {"synthetic", "ai4i"} or params["source"].startswith("file"), params
            if params["source"] == "synthetic":
                assert params["count"] or params["duration"], f"{name}: synthetic source needs --count/--duration"
            if params["faults"]:
                FaultSpec.parse(params["faults"])
    assert checked >= 2, "expected at least the producer and the report to run the streamsight CLI"


def _parse_spark_submit(argv: list[str]) -> tuple[dict[str, list[str]], str, list[str]]:
    options: dict[str, list[str]] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        flag = argv[i]
        if flag in SPARK_SUBMIT_FLAGS:
            options.setdefault(flag, []).append("")
            i += 1
        elif "=" in flag:
            key, value = flag.split("=", 1)
            options.setdefault(key, []).append(value)
            i += 1
        else:
            assert i + 1 < len(argv), f"spark-submit option {flag} has no value"
            options.setdefault(flag, []).append(argv[i + 1])
            i += 2
    assert i < len(argv), "spark-submit without an application"
    return options, argv[i], argv[i + 1:]


def _argparse_options(script: Path) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Options a script's argparse parser declares (from its source): {option: kwargs}, required."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    options: dict[str, dict[str, Any]] = {}
    required: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            kwargs = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
            for option in names:
                options[option] = kwargs
            if kwargs.get("required") and names:
                required.add(names[0])
    return options, required


def _check_packages(where: str, packages: str) -> None:
    coords = [p.strip() for p in packages.split(",") if p.strip()]
    for coord in coords:
        assert len(coord.split(":")) == 3, f"{where}: {coord!r} is not group:artifact:version"
    pyspark = lock_pins()["pyspark"]
    hadoop = pyspark_hadoop_version()
    for coord in coords:
        group, artifact, version = coord.split(":")
        if group == "org.apache.spark":
            assert artifact.endswith("_2.13"), f"{where}: Spark 4 is built for Scala 2.13: {coord}"
            assert version == pyspark, f"{where}: {coord} does not match pyspark=={pyspark} (requirements.lock)"
        if artifact == "hadoop-aws" and hadoop:
            assert version == hadoop, f"{where}: {coord} does not match the Hadoop {hadoop} bundled with pyspark"


def _check_delta(where: str, packages: str, options: dict[str, list[str]]) -> None:
    """The lake is Delta Lake: the package the session needs (pom.xml's) and its static settings."""
    from streamsight.jars import delta_package
    from streamsight.spark import DELTA_CONF

    assert delta_package() in packages.split(","), f"{where}: no Delta Lake package matching pom.xml"
    confs = dict(c.split("=", 1) for c in options.get("--conf", []))
    for key, value in DELTA_CONF.items():
        assert confs.get(key) == value, f"{where}: --conf {key}={value} missing"


def _check_driver_host(where: str, options: dict[str, list[str]]) -> None:
    """Executors must reach the driver: the image advertises the container IP (docker/spark/spark-env.sh).

    A fixed name would break `docker compose run` containers, which carry no service alias.
    """
    confs = dict(c.split("=", 1) for c in options.get("--conf", []))
    assert "spark.driver.host" not in confs, f"{where}: do not pin spark.driver.host ({confs['spark.driver.host']})"


def test_spark_submit_jobs_match_the_repo():
    settings = docker_settings()
    submits = {n: s for n, s in services().items() if as_list(s.get("entrypoint"))[:1] == ["spark-submit"]}
    assert submits, "no service runs spark-submit"
    for name, service in submits.items():
        assert built_from_our_dockerfile(service), f"{name}: spark-submit needs our image (the venv's Spark)"
        options, app, app_args = _parse_spark_submit(as_list(service.get("command")))
        assert options.get("--master") == [settings.spark.master], f"{name}: --master != docker profile's"
        packages = ",".join(options.get("--packages", []))
        assert "org.apache.spark:spark-sql-kafka-0-10_2.13:" in packages, f"{name}: no Kafka connector package"
        _check_packages(name, packages)
        _check_driver_host(name, options)
        _check_delta(name, packages, options)

        script = repo_path(app)
        assert script.is_file(), f"{name}: {app} -> {script} does not exist in the repo"
        declared, required = _argparse_options(script)
        given = [a for a in app_args if a.startswith("--")]
        for option in given:
            assert option.split("=", 1)[0] in declared, f"{name}: {script.name} has no option {option}"
        for option in required:
            assert option in given, f"{name}: {script.name} requires {option}"
        if "--stream" in app_args:
            assert app_args[app_args.index("--stream") + 1] in contracts(), f"{name}: unknown contract"


def test_pyspark_submit_args_of_cli_jobs():
    for name, service in services().items():
        args = service_env(service).get("PYSPARK_SUBMIT_ARGS")
        if not args:
            continue
        argv = shlex.split(args)
        assert argv[-1] == "pyspark-shell", f"{name}: PYSPARK_SUBMIT_ARGS must end with pyspark-shell"
        options, _, _ = _parse_spark_submit(argv)
        _check_packages(name, ",".join(options.get("--packages", [])))
        _check_driver_host(name, options)


def test_spark_daemons_run_real_classes():
    settings = docker_settings()
    daemons = {n: s for n, s in services().items() if as_list(s.get("entrypoint"))[:1] == ["spark-class"]}
    assert {as_list(s["command"])[0] for s in daemons.values()} == SPARK_CLASSES
    for name, service in daemons.items():
        assert built_from_our_dockerfile(service), f"{name}: spark-class comes from the venv's pyspark"
        argv = as_list(service["command"])
        if argv[0].endswith(".Worker"):
            assert argv[1] == settings.spark.master, f"{name}: worker joins {argv[1]}, not {settings.spark.master}"
    spec = find_spec("pyspark")
    if spec is not None and spec.submodule_search_locations:
        bin_dir = Path(next(iter(spec.submodule_search_locations))) / "bin"
        for tool in ("spark-class", "spark-submit"):
            assert (bin_dir / tool).is_file(), f"the pyspark wheel has no bin/{tool}"


# -- Dockerfile ------------------------------------------------------------------------------------

def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def dockerfile_stages() -> list[dict[str, Any]]:
    args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"image": image, "alias": alias, "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((keyword, rest))
    return stages


def test_dockerfile_is_multi_stage_with_pinned_bases():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "expected a builder and a runtime stage"
    aliases = {s["alias"] for s in stages if s["alias"]}
    for stage in stages:
        image = stage["image"]
        if image in aliases:
            continue
        assert "$" not in image, f"FROM {image}: unresolved build argument"
        tag = image.split("@", 1)[0].rsplit(":", 1)
        assert len(tag) == 2 and tag[1] and tag[1] != "latest", f"FROM {image}: pin a tag"
        if tag[0].endswith("python"):
            assert re.match(r"3\.11\.\d+-", tag[1]), f"FROM {image}: pin Python 3.11 to a patch release"
    for stage in stages:
        for keyword, rest in stage["instructions"]:
            source = re.search(r"--from=(\S+)", rest) if keyword == "COPY" else None
            if source:
                assert source.group(1) in aliases, f"COPY --from={source.group(1)}: no such stage"


def test_dockerfile_installs_the_lock_and_the_project_as_a_wheel():
    builder = dockerfile_stages()[0]
    text = "\n".join(f"{k} {r}" for k, r in builder["instructions"])
    assert re.search(r"^COPY .*requirements\.lock", text, re.MULTILINE), "requirements.lock is not copied"
    assert re.search(r"pip install .*-r requirements\.lock", text), "requirements.lock is not installed"
    assert re.search(r"pip wheel .*--no-deps", text) and re.search(r"pip install .*--no-deps .*\.whl", text), \
        "the project should be built as a wheel and installed without re-resolving dependencies"


def test_runtime_stage_user_entrypoint_healthcheck_java():
    runtime = dockerfile_stages()[-1]
    instructions = runtime["instructions"]
    stage_args = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            stage_args[name.strip()] = default.strip()
    users = [re.sub(r"\$\{?(\w+)\}?", lambda m: stage_args.get(m.group(1), m.group(0)), rest)
             for keyword, rest in instructions if keyword == "USER"]
    assert users, "the runtime stage has no USER"
    user = users[-1].split(":")[0]
    assert "$" not in user, f"USER {users[-1]}: unresolved build argument"
    assert user not in {"root", "0"}, f"runs as {users[-1]}"
    entrypoints = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert entrypoints and yaml.safe_load(entrypoints[-1]) == ["streamsight"], \
        f"ENTRYPOINT must be the exec form [\"streamsight\"], got {entrypoints}"
    assert any(k == "HEALTHCHECK" and "NONE" not in r.upper() for k, r in instructions), "no HEALTHCHECK"
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "openjdk-17-jre-headless" in runs, "the runtime needs a Java 17 headless JRE"
    assert any(k == "COPY" and "/opt/venv" in r and "--from=" in r for k, r in instructions), "venv not copied"
    copied = " ".join(rest for keyword, rest in instructions if keyword == "COPY")
    assert "conf/" in copied, "conf/ is not in the image"

    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "streamsight" in scripts, "pyproject has no `streamsight` console script"


def test_spark_env_is_installed_where_spark_reads_it():
    runtime = dockerfile_stages()[-1]["instructions"]
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    conf_dir = re.search(r"SPARK_CONF_DIR=(\S+)", env)
    assert conf_dir, "SPARK_CONF_DIR is not set in the runtime stage"
    copies = [rest.split() for keyword, rest in runtime if keyword == "COPY"]
    assert any(c[-1] == f"{conf_dir.group(1)}/spark-env.sh" and c[-2] == "docker/spark/spark-env.sh" for c in copies), \
        f"docker/spark/spark-env.sh is not copied to {conf_dir.group(1)}/spark-env.sh"
    script = (DOCKER / "spark" / "spark-env.sh").read_text(encoding="utf-8")
    assert "SPARK_LOCAL_HOSTNAME" in script
    if shutil.which("sh"):
        result = subprocess.run(["sh", "-n", str(DOCKER / "spark" / "spark-env.sh")], check=False, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_healthcheck_script_in_compose_exists_in_image():
    copied = [rest for keyword, rest in dockerfile_instructions() if keyword == "COPY"]
    assert any("docker/healthcheck.py" in c and "streamsight-healthcheck" in c for c in copied)
    for name, service in services().items():
        test = as_list((service.get("healthcheck") or {}).get("test"))
        if "streamsight-healthcheck" in test:
            assert built_from_our_dockerfile(service), f"{name}: streamsight-healthcheck only exists in our image"


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match plus `**` for any number of directories)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, `!` re-includes, excluding a directory excludes its files."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex((pattern[1:] if negate else pattern).strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_build_context_holds_every_copy_source_and_nothing_local():
    assert DOCKERIGNORE.is_file(), "docker/Dockerfile.dockerignore (BuildKit's per-Dockerfile ignore file) is missing"
    patterns = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.strip().startswith("#")]
    sources = []
    for keyword, rest in dockerfile_instructions():
        if keyword != "COPY" or "--from=" in rest:
            continue
        words = [w for w in rest.split() if not w.startswith("--")]
        sources.extend(words[:-1])
    assert sources
    for source in sources:
        path = source.rstrip("/")
        assert (ROOT / path).exists(), f"COPY {source}: not in the repository"
        assert not _ignored(path, patterns), f"COPY {source}: excluded from the build context"
    for local in (".venv", ".venv-infra", "var/lake", ".git", "terraform/envs/dev/.terraform",
                  "streamsight/__pycache__", "streamsight.egg-info", "tests"):
        assert _ignored(local, patterns), f"{local} would be sent to the Docker daemon"


# -- helper scripts ----------------------------------------------------------------------------------

def test_create_topics_script_is_valid_bash():
    script = DOCKER / "kafka" / "create-topics.sh"
    if not shutil.which("bash"):
        pytest.skip("no bash")
    result = subprocess.run(["bash", "-n", str(script)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    usage = subprocess.run(["bash", str(script)], check=False, capture_output=True, text=True)
    assert usage.returncode == 64 and "usage" in usage.stderr
    bad = subprocess.run(["bash", str(script), "topic-without-partitions"], check=False, capture_output=True, text=True)
    assert bad.returncode == 64, bad.stderr


def test_healthcheck_probe(tmp_path):
    import http.server
    import importlib.util
    import json as jsonlib
    import threading

    spec = importlib.util.spec_from_file_location("streamsight_healthcheck", DOCKER / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # http.server's API name
            body = jsonlib.dumps({"status": "ALIVE"}).encode()
            self.send_response(200 if self.path.startswith("/json") else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert module.main([f"{base}/json/", "--json-field", "status=ALIVE"]) == 0
        assert module.main([f"{base}/json/", "--json-field", "status=STANDBY"]) == 1
        assert module.main([f"{base}/other"]) == 1
    finally:
        server.shutdown()
    assert module.main(["http://127.0.0.1:9/"]) == 1  # nothing listens on the discard port


# -- the real Compose, when present ------------------------------------------------------------------

def _docker_compose_available() -> str | None:
    """None when `docker compose` can validate files, else the reason it cannot."""
    if not shutil.which("docker"):
        return "no docker CLI"
    try:
        probe = subprocess.run(["docker", "compose", "version"], check=False, capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker compose version failed: {exc}"
    if probe.returncode != 0:
        return "the docker CLI has no compose plugin (`docker compose version` fails)"
    return None


def test_docker_compose_config_validates():
    """`docker compose config` validates the file client-side; it does not need a running engine."""
    reason = _docker_compose_available()
    if reason:
        pytest.skip(reason)
    for profiles in ([], ["--profile", "hdfs", "--profile", "ml"]):
        result = subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), *profiles, "config", "--quiet"],
                                check=False, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 0, f"docker compose {' '.join(profiles)} config: {result.stderr}"


def test_compose_v1_schema_fallback(tmp_path):
    """Where only the legacy `docker-compose` 1.29 exists, validate against its Compose-spec schema.

    It predates the top-level `name:` key, so that key is dropped from a copy first; relative paths
    still resolve against docker/ (--project-directory).
    """
    if _docker_compose_available() is None:
        pytest.skip("`docker compose` v2 validates the file (test_docker_compose_config_validates)")
    legacy = shutil.which("docker-compose")
    if not legacy:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    doc.pop("name", None)
    copy = tmp_path / "compose.yaml"
    copy.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    result = subprocess.run([legacy, "-f", str(copy), "--project-directory", str(DOCKER),
                             "--profile", "hdfs", "--profile", "ml", "config", "-q"],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# -- CI workflow -----------------------------------------------------------------------------------

def test_ci_workflow_pins_actions_and_matches_the_lock():
    workflow = yaml.safe_load(CI_WORKFLOW.read_text(encoding="utf-8"))
    jobs = workflow["jobs"]
    uses = [step["uses"] for job in jobs.values() for step in job.get("steps", []) if "uses" in step]
    assert uses
    for action in uses:
        ref = action.rsplit("@", 1)[-1] if "@" in action else ""
        assert re.fullmatch(r"v\d+\.\d+\.\d+|[0-9a-f]{40}", ref), f"{action}: pin a full release or commit"
    text = CI_WORKFLOW.read_text(encoding="utf-8")
    pyspark = lock_pins()["pyspark"]
    for coord in re.findall(r"org\.apache\.spark:spark-sql-kafka-0-10_[\d.]+:[\w.]+", text):
        assert coord.endswith(f":{pyspark}"), f"ci.yml: {coord} does not match pyspark=={pyspark}"
    assert "make test" in text, "ci.yml should run the README's `make test`"
