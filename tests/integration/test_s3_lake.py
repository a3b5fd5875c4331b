"""The lake on S3 as the ``aws`` profile has it (s3a://, hadoop-aws with its AWS SDK bundle, tables
registered in AWS Glue), against stand-ins: s3proxy for S3 (tests/s3proxy.py) and moto's server
for Glue's API (tests/moto_server.py)."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.helpers import cli, cli_env, isolated_contract
from tests.moto_server import start_moto, stop
from tests.s3proxy import ACCESS_KEY, SECRET_KEY, S3Proxy

pytestmark = pytest.mark.integration
BUCKET = "streamsight-lake"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    proxy = S3Proxy(tmp_path_factory.mktemp("s3proxy")).start()
    try:
        proxy.client().create_bucket(Bucket=BUCKET)
        yield proxy
    finally:
        proxy.stop()


def test_the_stream_writes_the_lake_on_s3_and_registers_it_in_glue(s3, tmp_path, kafka_broker):
    from deltalake import DeltaTable

    from ingestion import sources
    from ingestion.producer import produce
    from streamsight.contracts import load_contracts
    from streamsight.settings import load_settings
    from tests.conftest import AI4I_CSV

    contracts_dir = isolated_contract(tmp_path, kafka_broker)
    contract = load_contracts(contracts_dir)["machine_telemetry"]
    prefix = f"lake-{uuid.uuid4().hex[:8]}"
    lake = f"s3a://{BUCKET}/{prefix}"
    moto, glue = start_moto(tmp_path / "moto.log")
    try:
        import boto3

        boto3.client("glue", endpoint_url=glue, region_name="us-east-1", aws_access_key_id="x",
                     aws_secret_access_key="x").create_database(DatabaseInput={"Name": "streamsight"})
        env = {**cli_env(tmp_path, kafka_broker, contracts_dir), "STREAMSIGHT_LAKE_DIR": lake,
               "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
               "STREAMSIGHT_SPARK__CONF": json.dumps({
                   "spark.hadoop.fs.s3a.endpoint": s3.endpoint, "spark.hadoop.fs.s3a.path.style.access": "true",
                   "spark.hadoop.fs.s3a.endpoint.region": "us-east-1"}),
               "STREAMSIGHT_CATALOG__KIND": "glue", "STREAMSIGHT_AWS__ENDPOINT_URL": glue}
        settings = load_settings(kafka={"bootstrap_servers": kafka_broker.bootstrap_servers})
        sent = produce(settings, contract, sources.ai4i_source(AI4I_CSV, limit=400), progress=False)
        assert sent.ok
        streamed = json.loads(cli(env, "stream", "--stream", "machine_telemetry", "--until-idle", timeout=600).stdout)
        assert streamed["input_rows"]["silver"] == 400

        # The objects are in the bucket, and a reader that is not Spark reads the table from S3.
        keys = {o["Key"] for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
                for o in page.get("Contents", [])}
        assert f"{prefix}/silver/machine_telemetry/_delta_log/00000000000000000000.json" in keys
        silver = DeltaTable(f"s3://{BUCKET}/{prefix}/silver/machine_telemetry", storage_options={
            "AWS_ENDPOINT_URL": s3.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"})
        ids = silver.to_pyarrow_table(columns=["event_id"]).column("event_id").to_pylist()
        assert sorted(ids) == sorted(f"ai4i-{i}" for i in range(1, 401))

        # Registered in Glue as Athena reads Delta tables: table_type DELTA at the s3:// location.
        registered = json.loads(cli(env, "lake", "register").stdout)
        assert registered["catalog"] == "glue"
        table = boto3.client("glue", endpoint_url=glue, region_name="us-east-1", aws_access_key_id="x",
                             aws_secret_access_key="x").get_table(DatabaseName="streamsight",
                                                                  Name="machine_telemetry_silver")["Table"]
        assert table["Parameters"]["table_type"] == "DELTA" and table["TableType"] == "EXTERNAL_TABLE"
        assert table["StorageDescriptor"]["Location"] == f"s3://{BUCKET}/{prefix}/silver/machine_telemetry"
        assert [k["Name"] for k in table["PartitionKeys"]] == contract.partition_by
    finally:
        stop(moto)
