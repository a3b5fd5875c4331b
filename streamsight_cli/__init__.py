"""The ``streamsight`` command: one entry point, each subcommand delegating to its stage.

This module is the composition root: it imports the stages lazily, inside each command, so
``streamsight --help`` is fast and a stage's dependencies load only when used. Every option can
also be set by environment variable (shown in ``--help``); settings errors name the setting.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from streamsight.errors import StreamsightError

# The AI4I 2020 dataset beside the project (../shared/data, read-only): --source ai4i and the demo.
AI4I_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "ai4i2020" / "ai4i2020.csv"
IRIS_CSV = AI4I_CSV.parents[1] / "iris" / "iris.csv"  # --source iris

app = typer.Typer(
    name="streamsight",
    help="Streamsight: contract-driven streams from Kafka producers to a Spark lake, models and reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class Client(str, Enum):
    confluent = "confluent"
    kafka_python = "kafka-python"


@app.callback()
def _global(
    ctx: typer.Context,
    profile: Annotated[Optional[str], typer.Option(
        help="Settings profile: local, docker or aws.", envvar="STREAMSIGHT_PROFILE")] = None,
    lake: Annotated[Optional[str], typer.Option(
        help="Lake root (directory, hdfs:// or s3a://).", envvar="STREAMSIGHT_LAKE_DIR")] = None,
    contracts: Annotated[Optional[Path], typer.Option(
        help="Directory of stream contracts.", envvar="STREAMSIGHT_CONTRACTS_DIR")] = None,
    bootstrap_servers: Annotated[Optional[str], typer.Option(
        help="Kafka bootstrap servers.", envvar="STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS")] = None,
    log_level: Annotated[Optional[str], typer.Option(
        help="DEBUG, INFO, WARNING or ERROR.", envvar="STREAMSIGHT_LOG_LEVEL")] = None,
) -> None:
    if profile:  # settings loaded later in this process (ml.text.endpoint_client) read the same profile
        os.environ["STREAMSIGHT_PROFILE"] = profile
    overrides: dict[str, Any] = {"profile": profile, "lake_dir": lake, "contracts_dir": contracts, "log_level": log_level}
    if bootstrap_servers:
        overrides["kafka"] = {"bootstrap_servers": bootstrap_servers}
    ctx.obj = overrides


def _settings(ctx: typer.Context) -> Any:
    from streamsight.settings import load_settings

    overrides = dict(ctx.obj or {})
    kafka = overrides.pop("kafka", None)
    settings = load_settings(**overrides)
    if kafka:  # a CLI flag beats the environment for this nested field
        settings = settings.with_kafka(**kafka)
        from streamsight.settings import Settings

        settings = Settings.model_validate(settings.model_dump())  # re-validate the copy
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("py4j", "kafka", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return settings


def _contract(settings: Any, stream: str) -> Any:
    from streamsight.contracts import get_contract

    return get_contract(settings.contracts_dir, stream)


@app.command()
def broker(
    ctx: typer.Context,
    port: Annotated[Optional[int], typer.Option(
        help="Plaintext port (controller: +1, SASL_SSL: +2); 0 picks free ports. Default: the last start's, "
             "else 9092.", min=0, max=65533)] = None,
    reset: Annotated[bool, typer.Option(help="Delete the broker's data (topics, credentials, certificates) first.")] = False,
) -> None:
    """Run Apache Kafka (KRaft: one broker and controller) on loopback until SIGTERM or Ctrl-C.

    Data lives in <data_dir>/kafka and survives restarts. Creates every contract's topics and the
    ACLs of the pipeline's and producers' principals, prints the bootstrap address and writes the
    addresses to <run_dir>/broker.json, where the other commands find them.
    """
    from streamsight.contracts import load_contracts
    from streamsight.kafka import set_up_streams
    from streamsight_cli.local_kafka import LocalKafka

    settings = _settings(ctx)
    contracts = load_contracts(settings.contracts_dir)  # a bad contract fails before Kafka starts
    kafka = LocalKafka(settings.data_dir / "kafka", port=port)
    if reset:
        kafka.reset()

    topics: list[str] = []

    def ready() -> dict[str, Any]:
        topics.extend(set_up_streams(kafka.admin_settings(settings), contracts.values())["topics"])
        return kafka.describe()

    def announce() -> None:
        print(kafka.bootstrap_servers, flush=True)
        typer.echo(f"streamsight broker: Apache Kafka {kafka.version} (KRaft), data in {kafka.data_dir}\n"
                   f"  PLAINTEXT {kafka.bootstrap_servers}  loopback, no authentication\n"
                   f"  SASL_SSL  {kafka.sasl_ssl_bootstrap_servers}  SCRAM-SHA-512, CA {kafka.ca_file}, "
                   f"passwords in {kafka.data_dir / 'credentials.json'}\n"
                   f"  topics: {', '.join(topics) or 'none'}\n"
                   f"  addresses in {settings.broker_address_file}; stop with Ctrl-C or SIGTERM", err=True)

    _serve("Apache Kafka", kafka, ready, announce, settings.broker_address_file, kafka.log_file)


@app.command()
def hdfs(
    ctx: typer.Context,
    port: Annotated[Optional[int], typer.Option(
        help="The NameNode's RPC port; 0 picks a free one. Default: the last start's, else 8020.",
        min=0, max=65535)] = None,
    analyst: Annotated[Optional[list[str]], typer.Option(
        help="An HDFS user in the analysts' group (repeatable; default: analyst).")] = None,
    reset: Annotated[bool, typer.Option(help="Delete HDFS's data (the lake, its key) first.")] = False,
) -> None:
    """Run HDFS (Hadoop's NameNode and DataNode) on loopback until SIGTERM or Ctrl-C.

    Prints the lake's hdfs:// URI first: set it as STREAMSIGHT_LAKE_DIR (or --lake) and every command
    uses it. Data lives in <data_dir>/hdfs and survives restarts. At the first start the lake's root
    is made an encryption zone, owned by the user running this, with ACLs that let the analysts'
    group read silver, predictions and gold only; the address is written to <run_dir>/hdfs.json.
    """
    from streamsight_cli.local_hdfs import LocalHdfs

    settings = _settings(ctx)
    address_file = settings.run_dir / "hdfs.json"
    local = LocalHdfs(settings.data_dir / "hdfs", port=port, analysts=tuple(analyst or ("analyst",)))
    if reset:
        local.reset()

    def announce() -> None:
        d = local.describe()
        print(local.lake_uri, flush=True)
        typer.echo(f"streamsight hdfs: {d['hdfs']}, data in {local.data_dir}\n"
                   f"  lake {local.lake_uri}: encryption zone (key provider {local.key_provider}); owner "
                   f"{d['pipeline_user']}, readers: group {d['analysts_group']} ({', '.join(d['analysts'])}) "
                   f"of silver, predictions, gold\n"
                   f"  web UI {d['web']}; address in {address_file}; stop with Ctrl-C or SIGTERM\n"
                   f"  export STREAMSIGHT_LAKE_DIR={local.lake_uri}", err=True)

    _serve("HDFS", local, local.describe, announce, address_file, local.data_dir / "namenode.log")


def _serve(what: str, server: Any, ready: Callable[[], dict[str, Any]], announce: Callable[[], None],
           address_file: Path, log_file: Path) -> None:
    """Start ``server``, run ``ready`` (its address, written to ``address_file``), then ``announce``
    it, then wait for SIGTERM or SIGINT (or the server's exit, an error) and stop it."""
    import signal

    stop: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: stop.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    wrote = False
    try:
        server.start()
        address = ready()
        address_file.parent.mkdir(parents=True, exist_ok=True)
        partial = address_file.with_suffix(".partial")
        partial.write_text(json.dumps(address, indent=2) + "\n", encoding="utf-8")
        partial.replace(address_file)
        wrote = True
        announce()
        while not stop and server.running:
            time.sleep(0.5)  # waiting for a signal or for the server to exit
        if not server.running:
            raise StreamsightError(f"{what} exited unexpectedly; see {log_file}")
    finally:
        if wrote:  # not another instance's, when this one could not start
            address_file.unlink(missing_ok=True)
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command()
def topics(
    ctx: typer.Context,
    acls: Annotated[bool, typer.Option(help="Also create the ACLs of the pipeline's and producers' principals.")] = True,
) -> None:
    """Create every contract's topics (and ACLs) on the configured Kafka, through its Admin API."""
    from streamsight.contracts import load_contracts
    from streamsight.kafka import check_broker, set_up_streams

    settings = _settings(ctx)
    contracts = load_contracts(settings.contracts_dir)
    check_broker(settings)
    print(json.dumps(set_up_streams(settings, contracts.values(), acls=acls)))


@app.command()
def produce(
    ctx: typer.Context,
    stream: Annotated[str, typer.Option(help="Contract name.")],
    source: Annotated[str, typer.Option(help="ai4i, iris, synthetic, or file (with --path, or file:PATH).")],
    path: Annotated[Optional[Path], typer.Option(
        help="File or directory for --source file; the dataset's CSV for ai4i and iris.")] = None,
    rate: Annotated[Optional[float], typer.Option(help="Events per second (default: as fast as possible).")] = None,
    count: Annotated[Optional[int], typer.Option(help="Stop after this many events.")] = None,
    duration: Annotated[Optional[float], typer.Option(help="Stop after this many seconds.")] = None,
    client: Annotated[Optional[Client], typer.Option(help="Kafka client library.")] = None,
    faults: Annotated[Optional[str], typer.Option(
        help="Synthetic faults, e.g. malformed=0.01,schema=0.02,duplicates=0.02,late=0.01")] = None,
    machines: Annotated[int, typer.Option(help="Synthetic: number of machines (sensors, log streams).")] = 200,
    seed: Annotated[int, typer.Option(help="Synthetic: random seed.")] = 7,
    start: Annotated[Optional[datetime], typer.Option(
        formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"],
        help="Synthetic: event time of the first round (UTC unless an offset is given; default: now). "
             "Event time then advances --interval-ms per round of --machines events.")] = None,
    realtime: Annotated[bool, typer.Option(
        help="Synthetic: event time is the wall clock when each round is made, as a live source's is.")] = False,
    interval_ms: Annotated[int, typer.Option(min=1, help="Synthetic: event time between rounds.")] = 1000,
    skip: Annotated[int, typer.Option(help="ai4i: skip this many rows first.")] = 0,
    skip_validation: Annotated[bool, typer.Option(
        help="Send records unchecked and unflagged (tests the stream's own validation).")] = False,
    progress: Annotated[Optional[bool], typer.Option(help="Progress bar (default: when stderr is a terminal).")] = None,
) -> None:
    """Publish a source's records to a stream's raw topic; rejected ones carry their reason code in headers."""
    from ingestion import sources
    from ingestion.producer import produce as run_produce

    settings = _settings(ctx)
    contract = _contract(settings, stream)
    if source.startswith("file:"):
        source, path = "file", Path(source[5:])
    events: Iterator[Any]
    if source == "ai4i":
        events = sources.ai4i_source(path or AI4I_CSV, skip=skip)
    elif source == "iris":
        events = sources.iris_source(path or IRIS_CSV)
    elif source == "synthetic":
        if count is None and duration is None:
            raise StreamsightError("--source synthetic is endless: give --count or --duration")
        if start is not None and realtime:
            raise StreamsightError("--start and --realtime exclude each other: --realtime follows the wall clock")
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        events = sources.synthetic_source(contract, machines=machines, seed=seed, faults=sources.FaultSpec.parse(faults),
                                          start=start, realtime=realtime, interval_ms=interval_ms)
    elif source == "file":
        if path is None:
            raise StreamsightError("--source file needs --path PATH (or --source file:PATH)")
        events = sources.file_source(contract, path)
    else:
        raise StreamsightError(f"--source: unknown source {source!r} (ai4i, iris, synthetic, file)")
    summary = run_produce(settings, contract, events, rate=rate, count=count, duration=duration,
                          client=client.value if client else None, validate=not skip_validation, progress=progress)
    print(json.dumps({"produce": summary.as_dict()}))
    if not summary.ok:
        raise typer.Exit(1)


@app.command()
def stream(
    ctx: typer.Context,
    stream: Annotated[str, typer.Option(help="Contract name.")],
    until_idle: Annotated[bool, typer.Option(help="Stop once every query has caught up.")] = False,
) -> None:
    """Run a stream's Spark Structured Streaming job locally (see streaming_jobs/pipeline.py)."""
    from streaming_jobs.pipeline import run
    from streamsight.spark import build_session

    settings = _settings(ctx)
    _contract(settings, stream)  # fail on a bad contract before starting Spark
    spark = build_session(settings, f"streamsight-stream-{stream}")
    summary = run(spark, settings, stream, until_idle=until_idle)
    if summary is not None:
        print(json.dumps({"stream": stream, **summary}))


@app.command()
def online(
    ctx: typer.Context,
    stream: Annotated[str, typer.Option(help="Contract name.")],
) -> None:
    """Score a stream in Spark's Real-Time Mode into its predictions topic until SIGTERM
    (streaming_jobs/online.py). A local master gets a task slot per raw partition, plus one."""
    from streaming_jobs.online import local_master, preflight, run
    from streamsight.spark import build_session

    settings = _settings(ctx)
    checked = preflight(settings, stream)  # before Spark starts
    if local_master(settings.spark.master):
        # Real-Time Mode holds a task per partition for the whole batch; threads, not cores.
        settings = settings.model_copy(update={"spark": settings.spark.model_copy(
            update={"master": f"local[{checked.partitions + 1}]"})})
    run(build_session(settings, f"streamsight-online-{stream}"), settings, stream, checked)


@app.command()
def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model name (a contract's model.name; with --stream, a new name).")],
    stream: Annotated[Optional[str], typer.Option(
        help="Train on this stream's silver: a model its model.route_by field may name, under any name.")] = None,
    algorithm: Annotated[Optional[list[str]], typer.Option(
        help="logistic_regression (classification), linear_regression (regression), gbt or xgboost (XGBoost's "
             "Spark estimator; its version also holds the booster for SageMaker's built-in XGBoost container); "
             "repeat to compare several (default: logistic_regression and gbt; multiclass: logistic_regression "
             "and xgboost; regression: linear_regression and xgboost).")] = None,
    train_fraction: Annotated[float, typer.Option(
        help="The first part of the rows by event time that trains; the rest tests.", min=0.05, max=0.95)] = 0.8,
) -> None:
    """Train a new model version on silver history and promote it if it is at least as good."""
    from ml.cli import train_command

    train_command(_settings(ctx), model, stream=stream, algorithms=tuple(algorithm) if algorithm else None,
                  train_fraction=train_fraction)


@app.command()
def models(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option(help="Only this model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """List model versions with their metrics and aliases."""
    from ml.cli import models_command

    models_command(_settings(ctx), model, as_json)


@app.command()
def promote(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model name.")],
    version: Annotated[int, typer.Option(help="Version to make `production`.")],
) -> None:
    """Point the `production` alias at a version; running scorers pick it up at their next batch."""
    from ml.cli import promote_command

    promote_command(_settings(ctx), model, version)


class Backend(str, Enum):
    mllib = "mllib"
    sagemaker = "sagemaker"


class Container(str, Enum):
    streamsight = "streamsight"  # the Dockerfile's sagemaker stage: ml.serving, sent the model's inputs
    builtin_xgboost = "builtin-xgboost"  # SageMaker's built-in XGBoost container, sent the feature vector


@app.command()
def backend(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model name.")],
    use: Annotated[Optional[Backend], typer.Option(
        help="mllib: the job scores with its own copy; sagemaker: with --endpoint (without: print the choice).")] = None,
    endpoint: Annotated[Optional[str], typer.Option(help="The endpoint (default: the model's name, hyphenated).")] = None,
    version: Annotated[Optional[int], typer.Option(
        help="The version the endpoint serves (default: production now).", min=1)] = None,
    container: Annotated[Optional[Container], typer.Option(
        help="What the endpoint runs: streamsight (sent the inputs; the default) or builtin-xgboost "
        "(SageMaker's built-in XGBoost container, sent the feature vector).")] = None,
) -> None:
    """Choose how the stream scores a model: in the job (mllib) or with a SageMaker endpoint, which it
    uses while the endpoint serves the production version. Running jobs follow at their next batch."""
    from ml.endpoint import backend_doc
    from ml.online import RegistryFiles
    from ml.registry import RegistryError

    files = RegistryFiles.of(_settings(ctx))
    try:
        if use is not None:
            if use is Backend.sagemaker and version is None:
                version = files.production(model)
                if version is None:
                    raise StreamsightError(f"--model {model} has no production version: give --version")
            payload = "vector" if container is Container.builtin_xgboost else "inputs"
            files.set_backend(model, backend_doc(use.value, endpoint or model, version, payload))
        print(json.dumps(files.backend(model)))
    except RegistryError as exc:
        raise StreamsightError(f"--model {model}: {exc}") from None


class Target(str, Enum):
    local = "local"
    sagemaker = "sagemaker"


@app.command()
def deploy(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option(help="Model name (any name the registry holds).")] = None,
    model_dir: Annotated[Optional[Path], typer.Option(
        help="Instead of --model: a folder holding a version's scorer.json and metadata.json (a SageMaker "
        "model folder, /opt/ml/model in the container).")] = None,
    target: Annotated[Target, typer.Option(
        help="local: this machine's serving process, in the foreground; sagemaker: a SageMaker endpoint "
        "(settings sagemaker.*), waiting for InService.")] = Target.local,
    version: Annotated[Optional[int], typer.Option(help="The version to serve (default: production, when it starts).",
                                                   min=1)] = None,
    endpoint: Annotated[Optional[str], typer.Option(
        help="The endpoint name (default: the model's, with hyphens for underscores).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (SageMaker's 8080); 0 picks a free one.", min=0, max=65535)] = 8080,
    use: Annotated[bool, typer.Option(
        help="--target sagemaker: once in service, the stream scores this model with the endpoint "
        "(the registry's backend.json).")] = True,
    container: Annotated[Container, typer.Option(
        help="streamsight: this project's serving process (the Dockerfile's sagemaker stage), sent the model's "
        "inputs; builtin-xgboost: SageMaker's built-in XGBoost container (sagemaker.builtin_xgboost_image_uri) "
        "given the version's booster and sent its feature vector -- with --target local, a stand-in for it, "
        "since that image cannot run here.")] = Container.streamsight,
) -> None:
    """Serve one version of a model behind SageMaker's container contract (GET /ping, POST /invocations,
    CSV or JSON lines) and the runtime API's path (POST /endpoints/NAME/invocations, for boto3's
    sagemaker-runtime with endpoint_url) until SIGTERM, printing its URL first; or, with --target
    sagemaker, make it a SageMaker endpoint and print what was made as JSON."""
    from ml.portable import PortableError
    from ml.registry import RegistryError
    from ml.sagemaker import endpoint_name
    from ml.serving import builtin_xgboost_app, create_app, load_builtin_xgboost, load_folder, load_version
    from ml.serving import serve as run_serving

    if (model is None) == (model_dir is None):
        raise StreamsightError("give --model NAME or --model-dir PATH (one of them)")
    if target is Target.sagemaker:
        from ml.sagemaker import deploy as to_sagemaker

        if model is None:
            raise StreamsightError("--target sagemaker deploys a registry version: give --model NAME")
        try:
            settings = _settings(ctx)
            builtin = container is Container.builtin_xgboost
            made = to_sagemaker(settings, model, version, endpoint, builtin_xgboost=builtin)
            if use:
                from ml.endpoint import SAGEMAKER, backend_doc

                made["backend"] = backend_doc(SAGEMAKER, made["endpoint"], made["version"],
                                              "vector" if builtin else "inputs")
                from ml.online import RegistryFiles

                RegistryFiles.of(settings).set_backend(model, made["backend"])
            print(json.dumps(made, indent=2))
        except RegistryError as exc:
            raise StreamsightError(f"--model {model}: {exc}") from None
        return
    if container is Container.builtin_xgboost:
        if model is None:
            raise StreamsightError("--container builtin-xgboost serves a registry version's booster: give --model NAME")
        try:
            chosen, booster = load_builtin_xgboost(_settings(ctx), model, version)
        except RegistryError as exc:
            raise StreamsightError(f"--model {model}: {exc}") from None
        name = endpoint_name(endpoint or model)
        run_serving(builtin_xgboost_app(booster, name), f"{model} v{chosen} as endpoint {name} (a stand-in for "
                    "SageMaker's built-in XGBoost container)", host=host, port=port,
                    announce=lambda url: print(url, flush=True))
        return
    try:
        if model_dir is not None:  # a container: no settings file, logs to stderr (SageMaker's CloudWatch)
            if version is not None:
                raise StreamsightError("--version goes with --model; a model folder holds one version")
            logging.basicConfig(level=os.environ.get("STREAMSIGHT_LOG_LEVEL", "INFO"), stream=sys.stderr,
                                format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            served = load_folder(model_dir)
        else:
            assert model is not None
            served = load_version(_settings(ctx), model, version)
    except (RegistryError, PortableError) as exc:
        raise StreamsightError(f"{f'--model {model}' if model else f'--model-dir {model_dir}'}: {exc}") from None
    name = endpoint_name(endpoint or served.name)
    run_serving(create_app(served, name), f"{served.name} v{served.version} as endpoint {name}", host=host,
                port=port, announce=lambda url: print(url, flush=True))


@app.command("deploy-text")
def deploy_text(
    ctx: typer.Context,
    target: Annotated[Target, typer.Option(
        help="sagemaker: a SageMaker endpoint of the Hugging Face Embedding Container serving "
        "sagemaker.text_model_id, waiting for InService; local: a stand-in for that container on this "
        "machine (the local text model of ml.text, 256 numbers), in the foreground.")] = Target.local,
    endpoint: Annotated[Optional[str], typer.Option(
        help="The endpoint name (default: sagemaker.text_endpoint).")] = None,
    host: Annotated[str, typer.Option(help="--target local: address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="--target local: port; 0 picks a free one.", min=0, max=65535)] = 8080,
) -> None:
    """The text endpoint that embeds text features (model.text_encoding: embedded) while
    sagemaker.text_endpoint names it: a Hugging Face embedding model on SageMaker, or its stand-in
    here. Prints what was made as JSON, or the stand-in's URL (then serves until SIGTERM)."""
    from ml.sagemaker import endpoint_name

    settings = _settings(ctx)
    name = endpoint or settings.sagemaker.text_endpoint
    if not name:
        raise StreamsightError("give --endpoint NAME or set STREAMSIGHT_SAGEMAKER__TEXT_ENDPOINT (sagemaker.text_endpoint)")
    if target is Target.sagemaker:
        from ml.sagemaker import deploy_text as to_sagemaker

        print(json.dumps(to_sagemaker(settings, name), indent=2))
        return
    from ml.serving import serve as run_serving
    from ml.serving import text_embedding_app

    name = endpoint_name(name)
    run_serving(text_embedding_app(name), f"text endpoint {name} (a stand-in for the Hugging Face Embedding "
                "Container)", host=host, port=port, announce=lambda url: print(url, flush=True))


@app.command()
def sql(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="Spark SQL; every lake table is a view <stream>_<table>.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON rows instead of a table.")] = False,
    limit: Annotated[Optional[int], typer.Option(
        help="Most rows printed (default 1000) or written (default all); 0: all.", min=0)] = None,
    output: Annotated[Optional[Path], typer.Option(
        help="Write the rows to this file instead: CSV, JSON lines or Parquet by its extension "
             "(.csv, .jsonl, .parquet).")] = None,
) -> None:
    """Run Spark SQL against the lake's tables (registered in the catalog and as views)."""
    from analytics.cli import sql_command

    code = sql_command(_settings(ctx), query, as_json, limit=limit, output=output)
    if code:
        raise typer.Exit(code)


@app.command()
def report(
    ctx: typer.Context,
    stream: Annotated[Optional[str], typer.Option(help="Only this stream.")] = None,
) -> None:
    """Run the named SQL reports and write PNG charts and one self-contained HTML report."""
    from analytics.cli import report_command

    print(report_command(_settings(ctx), stream))


@app.command()
def dashboard(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Build the page once and exit.")] = False,
) -> None:
    """Build the live dashboard (the report's throughput, dead-letter, latency and riskiest-keys panels
    over the last dashboard.window) every dashboard.refresh_s seconds until SIGTERM or Ctrl-C;
    `streamsight serve` shows it at /dashboard (`serve --dashboard` runs this alongside). A stop
    mid-build loses nothing: the page is replaced whole or not at all."""
    import signal

    from analytics.cli import dashboard_command

    def stop_now(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    settings = _settings(ctx)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop_now)
    print(dashboard_command(settings, once=once))


@app.command()
def contracts(
    ctx: typer.Context,
    ddl: Annotated[bool, typer.Option(help="Print CREATE TABLE statements for every lake table.")] = False,
) -> None:
    """List the stream contracts (validating each), or print their tables' DDL."""
    from streamsight.contracts import load_contracts

    settings = _settings(ctx)
    for c in load_contracts(settings.contracts_dir).values():
        if ddl:
            for statement in c.ddl(settings.lake_uri).values():
                print(statement + ";\n")
        else:
            print(f"{c.name}: topics {c.raw_topic} / {c.dead_letter_topic}; key {c.key}; "
                  f"tables {', '.join(c.table_names().values())}; model {c.model.name if c.model else '-'}")


@app.command()
def config(ctx: typer.Context) -> None:
    """Print the effective settings (secrets redacted)."""
    print(json.dumps(_settings(ctx).redacted(), indent=2, default=str))


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on (default api.host).",
                                                envvar="STREAMSIGHT_API__HOST")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default api.port); 0 picks a free one.", min=0,
                                                max=65535, envvar="STREAMSIGHT_API__PORT")] = None,
    with_dashboard: Annotated[bool, typer.Option(
        "--dashboard", help="Also run `streamsight dashboard` (its own process, with a Spark session) while "
        "serving, so /dashboard stays current.")] = False,
) -> None:
    """Serve the HTTP API until SIGTERM or Ctrl-C; prints its base URL first (OpenAPI at /docs).

    POST /v1/streams/{stream}/events publishes records to a stream; POST /v1/models/{name}/predict
    scores records; GET /v1/predictions reads the predictions store; GET /dashboard shows the live
    page `streamsight dashboard` builds; /healthz, /readyz, /metrics.
    Requests need an API key (streamsight api-key create) unless api.auth is none.
    """
    from streamsight.contracts import load_contracts
    from streamsight.kafka import check_broker
    from streamsight.store import DynamoPredictions
    from streamsight_cli.api import serve as run_server

    settings = _settings(ctx)
    contracts = load_contracts(settings.contracts_dir)
    servers = check_broker(settings)  # an unreachable broker fails here, not at the first request
    if settings.predictions_store.kind == "dynamodb":
        DynamoPredictions.from_settings(settings).check()  # likewise the predictions store
    run_server(settings, contracts, servers, host=host or settings.api.host,
               port=settings.api.port if port is None else port, announce=lambda url: print(url, flush=True),
               dashboard=_dashboard_command(ctx) if with_dashboard else None)


def _dashboard_command(ctx: typer.Context) -> list[str]:
    """``streamsight dashboard`` with this command's global options."""
    flags = {"profile": "--profile", "lake_dir": "--lake", "contracts_dir": "--contracts", "log_level": "--log-level"}
    args = [arg for key, flag in flags.items() if (ctx.obj or {}).get(key) is not None
            for arg in (flag, str(ctx.obj[key]))]
    return [sys.executable, "-m", "streamsight_cli", *args, "dashboard"]


@app.command("predictions-store")
def predictions_store(ctx: typer.Context) -> None:
    """Create the DynamoDB table of predictions_store (and its index) if it is missing, e.g. on a
    local DynamoDB; in the aws profile Terraform creates it."""
    from streamsight.store import DynamoPredictions

    settings = _settings(ctx)
    store = DynamoPredictions.from_settings(settings)
    store.ensure_table()
    print(json.dumps({"table": store.table_name, "region": store.region, "endpoint_url": store.endpoint_url}))


key_app = typer.Typer(help="API keys of `streamsight serve` (only their SHA-256 is stored, in api.keys_file).",
                      no_args_is_help=True)
app.add_typer(key_app, name="api-key")


@key_app.command("create")
def api_key_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who holds the key (shown in logs).")],
    scope: Annotated[Optional[list[str]], typer.Option(
        help="events:write, predict, predictions:read or dashboard:read (repeatable; default events:write).")] = None,
    stream: Annotated[Optional[list[str]], typer.Option(help="A stream it may use (repeatable; default all).")] = None,
    rate_limit: Annotated[Optional[str], typer.Option(help="Its own rate limit, e.g. 100/second.")] = None,
) -> None:
    """Make an API key and print it (once: only its digest is kept). Restart `serve` to use it."""
    from streamsight_cli.api import create_key

    settings = _settings(ctx)
    key = create_key(settings, name, scope or ["events:write"], stream or ["*"], rate_limit)
    typer.echo(f"api key {name!r} added to {settings.api_keys_file}", err=True)
    print(key)


@key_app.command("list")
def api_key_list(ctx: typer.Context) -> None:
    """The keys' names, scopes, streams and limits (never the keys)."""
    from streamsight_cli.api import load_keys

    keys = load_keys(_settings(ctx))
    print(json.dumps([k.model_dump(mode="json", exclude={"sha256"}) for k in keys], indent=2))


@key_app.command("revoke")
def api_key_revoke(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Remove a key from api.keys_file (a key in the settings file is removed there). Restart `serve`."""
    from streamsight_cli.api import revoke_key

    settings = _settings(ctx)
    if not revoke_key(settings, name):
        raise StreamsightError(f"no API key named {name!r} in {settings.api_keys_file}")
    typer.echo(f"api key {name!r} revoked", err=True)


lake_app = typer.Typer(help="The lake's tables: the catalog, maintenance.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")


@lake_app.command("register")
def lake_register(ctx: typer.Context) -> None:
    """Register every existing lake table in the catalog (catalog.kind: the embedded metastore, or
    AWS Glue); prints the tables and, for hive, the spark-sql options that see them."""
    from analytics.metastore import glue_location, register_tables, spark_sql_args
    from streamsight.contracts import load_contracts
    from streamsight.spark import build_session

    settings = _settings(ctx)
    contracts = load_contracts(settings.contracts_dir)
    if settings.catalog.kind == "glue":
        glue_location(settings.lake_uri)  # Glue (Athena) needs the lake on S3: said before Spark starts
    spark = build_session(settings, "streamsight-lake-register", catalog=True)
    tables = register_tables(spark, settings, contracts)
    extra = {"spark_sql_args": spark_sql_args(settings)} if settings.catalog.kind == "hive" else {}
    print(json.dumps({"catalog": settings.catalog.kind, "tables": tables, **extra}, indent=2))


@lake_app.command("maintain")
def lake_maintain(
    ctx: typer.Context,
    stream: Annotated[Optional[str], typer.Option(help="Only this stream.")] = None,
    table: Annotated[Optional[list[str]], typer.Option(help="Only this table (repeatable): silver, gold_<agg> ...")] = None,
    streams_stopped: Annotated[bool, typer.Option(
        help="The lake's streams are stopped (required on S3, where Delta admits one writing process).")] = False,
) -> None:
    """Compact small files and delete what the retention (contract, else settings) no longer keeps."""
    from streaming_jobs.maintenance import check, maintain
    from streamsight.contracts import load_contracts
    from streamsight.spark import build_session

    settings = _settings(ctx)
    contracts = load_contracts(settings.contracts_dir)
    selected = [_contract(settings, stream)] if stream else list(contracts.values())
    check(settings, selected, table, streams_stopped=streams_stopped)  # before Spark starts
    spark = build_session(settings, "streamsight-lake-maintain")
    print(json.dumps(maintain(spark, settings, selected, table, streams_stopped=streams_stopped), indent=2))


bench_app = typer.Typer(help="Benchmarks of the pipeline on this machine (streamsight_cli/bench.py); each prints "
                             "one JSON object and writes it to --output.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
_PARTITIONS = typer.Option(help="Partitions of the benchmark's raw topic.", min=1)
_OUTPUT = typer.Option(help="Where to write the JSON figures (default: <reports_dir>/bench-<name>.json).")


@bench_app.command("capacity")
def bench_capacity(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Events in the raw topic before the job starts.", min=1000)] = 2_000_000,
    partitions: Annotated[int, _PARTITIONS] = 8,
    lake: Annotated[Optional[list[str]], typer.Option(
        help="local (a folder) or hdfs (a fresh local HDFS, the lake in its encryption zone); repeat to "
             "run each in turn, side by side: --lake local --lake hdfs --lake local --lake hdfs.")] = None,
    scoring: Annotated[Optional[list[str]], typer.Option(
        help="mllib (in the job) or endpoint (the model behind deploy --target local, called from the tasks "
             "as a SageMaker endpoint); repeat for runs side by side, within each --lake.")] = None,
    output: Annotated[Optional[Path], _OUTPUT] = None,
) -> None:
    """How fast the job drains a pre-filled raw topic (bronze, silver, dead letter, predictions, gold)."""
    from streamsight_cli.bench import run_capacity

    print(json.dumps(run_capacity(_settings(ctx), events=events, partitions=partitions, output=output,
                                  lakes=tuple(lake or ("local",)), scorings=tuple(scoring or ("mllib",)))))


@bench_app.command("sustained")
def bench_sustained(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option(help="Events per second the producer sends.", min=1)] = 20_000,
    seconds: Annotated[float, typer.Option(help="Measured seconds (after the warm-up).", min=1)] = 30,
    warmup_seconds: Annotated[float, typer.Option(help="Seconds at the rate before the measured ones.", min=0)] = 60,
    partitions: Annotated[int, _PARTITIONS] = 8,
    output: Annotated[Optional[Path], _OUTPUT] = None,
) -> None:
    """Latency and whether the job keeps up with a producer at a steady rate."""
    from streamsight_cli.bench import run_sustained

    print(json.dumps(run_sustained(_settings(ctx), rate=rate, seconds=seconds, warmup_seconds=warmup_seconds,
                                   partitions=partitions, output=output)))


@bench_app.command("producer")
def bench_producer(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Events to publish.", min=1000)] = 2_000_000,
    partitions: Annotated[int, _PARTITIONS] = 8,
    output: Annotated[Optional[Path], _OUTPUT] = None,
) -> None:
    """How fast one producer process publishes validated events (acks=all, idempotent)."""
    from streamsight_cli.bench import run_producer

    print(json.dumps(run_producer(_settings(ctx), events=events, partitions=partitions, output=output)))


@bench_app.command("api")
def bench_api(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="Measured seconds.", min=1)] = 20.0,
    warmup_seconds: Annotated[float, typer.Option(help="Unmeasured seconds first.", min=0)] = 5.0,
    batch: Annotated[int, typer.Option(help="Records per POST.", min=1)] = 100,
    connections: Annotated[int, typer.Option(help="Concurrent connections of the load generator.", min=1)] = 8,
    partitions: Annotated[int, _PARTITIONS] = 8,
    output: Annotated[Optional[Path], _OUTPUT] = None,
) -> None:
    """`streamsight serve` under POSTs of --batch records from a separate load-generator process."""
    from streamsight_cli.bench import run_api

    print(json.dumps(run_api(_settings(ctx), seconds=seconds, warmup_seconds=warmup_seconds, batch=batch,
                             connections=connections, partitions=partitions, output=output)))


@bench_app.command("online")
def bench_online(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option(help="Events per second of the producer.", min=1)] = 5000.0,
    seconds: Annotated[float, typer.Option(help="Measured seconds.", min=1)] = 120.0,
    warmup_seconds: Annotated[float, typer.Option(help="Unmeasured seconds first (the JIT).", min=0)] = 60.0,
    trigger: Annotated[Optional[list[str]], typer.Option(
        help="realtime or microbatch; repeat to run each in turn on the same Kafka and model (default realtime).")] = None,
    partitions: Annotated[int, _PARTITIONS] = 4,
    output: Annotated[Optional[Path], _OUTPUT] = None,
) -> None:
    """`streamsight online` under one producer at --rate: produce-to-predictions-topic latency."""
    from streamsight_cli.bench import run_online

    triggers = tuple(trigger or ["realtime"])
    unknown = [t for t in triggers if t not in ("realtime", "microbatch")]
    if unknown:
        raise StreamsightError(f"--trigger: unknown {unknown} (realtime, microbatch)")
    print(json.dumps(run_online(_settings(ctx), rate=rate, seconds=seconds, warmup_seconds=warmup_seconds,
                                partitions=partitions, triggers=triggers, output=output)))


@bench_app.command("predict")
def bench_predict(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option(help="Requests per second (one record each), due whatever the answers.",
                                        min=1)] = 500.0,
    seconds: Annotated[float, typer.Option(help="Measured seconds.", min=1)] = 20.0,
    warmup_seconds: Annotated[float, typer.Option(help="Unmeasured seconds first.", min=0)] = 5.0,
    connections: Annotated[int, typer.Option(help="Most requests in flight.", min=1)] = 16,
    output: Annotated[Optional[Path], _OUTPUT] = None,
) -> None:
    """Single-record `POST /v1/models/<model>/predict` latency at a fixed rate, from a separate process."""
    from streamsight_cli.bench import run_predict

    print(json.dumps(run_predict(_settings(ctx), rate=rate, seconds=seconds, warmup_seconds=warmup_seconds,
                                 connections=connections, output=output)))


@app.command()
def demo(ctx: typer.Context) -> None:
    """The whole flow on a fresh local Apache Kafka: produce, stream, train, score, report; prints SUMMARY."""
    from streamsight_cli.demo import run_demo

    summary = run_demo(_settings(ctx))
    if not summary.get("reconciled"):
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except StreamsightError as exc:
        print(f"streamsight: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        from streamsight.hadoop import access_denied

        denied = access_denied(exc)
        if denied is None:
            raise
        print(f"streamsight: error: the lake refused access: {denied}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
