#!/usr/bin/env python3
"""Write a YAML Ansible inventory for Streamsight from ``terraform output -json``.

    terraform -chdir=terraform output -json > /tmp/tf.json
    scripts/inventory_from_terraform.py --env dev /tmp/tf.json -o inventories/dev/hosts.yml
    terraform -chdir=terraform output -json | scripts/inventory_from_terraform.py --env prod - \\
        -o inventories/prod/hosts.yml

Groups: ``kafka`` (``kafka-1`` ... with stable ``kafka_node_id`` 1..N in Terraform's order),
``kafka_controllers`` (empty: combined KRaft mode), ``spark_master`` (``spark-master``),
``spark_workers``, ``hdfs_namenode`` (``hdfs-namenode``), ``hdfs_datanodes`` (the Spark workers, for
data locality) and ``pipeline`` (where the Streamsight drivers, producers and timers run; the Spark
master unless ``--pipeline-host`` says otherwise). Every host gets ``streamsight_private_ip``; the
cluster-wide outputs (bucket, KMS key, SNS topic, ASG name, region) become ``streamsight_*`` variables
of ``all``, as do the Route 53 private zone name (``streamsight_private_zone_name``) and the
CloudWatch log groups (``streamsight_log_group_names``).

The Spark workers are an Auto Scaling group, so Terraform knows only its name. If Terraform also
outputs ``spark_worker_private_ips`` they are listed; otherwise ``--ec2-plugin FILE`` writes an
``amazon.aws.aws_ec2`` inventory source that fills ``spark_workers`` (and so ``hdfs_datanodes``) from
the instances of that group; put it next to hosts.yml, named ``*.aws_ec2.yml``.

Connection (``--connection``): ``ssm`` (default) reaches hosts through AWS Systems Manager
(``ansible_connection: community.aws.aws_ssm``; needs the community.aws and amazon.aws collections,
boto3, an S3 bucket for file transfers ``--ssm-bucket`` and the instance ids, taken from the
``*_instance_id(s)`` outputs); ``ssh`` uses the private IPs (``ansible_user`` from ``--ssh-user``).

Output names are matched against a few aliases (see ``OUTPUTS``), e.g. ``kafka_private_ips`` or
``kafka_ips``. A missing required output is an error naming the names tried. Needs only the Python
standard library (PyYAML, if installed, only makes the output prettier).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# inventory key -> output names accepted, first match wins
OUTPUTS: dict[str, tuple[str, ...]] = {
    "kafka_ips": ("kafka_private_ips", "kafka_ips", "kafka_broker_private_ips", "kafka"),
    "kafka_instance_ids": ("kafka_instance_ids",),
    "spark_master_ip": ("spark_master_private_ip", "spark_master_ip", "spark_master"),
    "spark_master_instance_id": ("spark_master_instance_id",),
    "spark_workers_asg": ("spark_workers_asg_name", "spark_worker_asg_name", "spark_workers_asg"),
    "spark_worker_ips": ("spark_worker_private_ips", "spark_workers_private_ips"),
    "spark_worker_instance_ids": ("spark_worker_instance_ids", "spark_workers_instance_ids"),
    "hdfs_namenode_ip": ("hdfs_namenode_private_ip", "hdfs_namenode_ip", "hdfs_namenode"),
    "hdfs_namenode_instance_id": ("hdfs_namenode_instance_id",),
    "lake_bucket": ("lake_bucket_name", "lake_bucket"),
    "kms_key_arn": ("kms_key_arn", "lake_kms_key_arn"),
    "sns_topic_arn": ("sns_topic_arn", "alerts_sns_topic_arn"),
    "aws_region": ("aws_region", "region"),
    "ssm_bucket": ("ssm_bucket_name", "ansible_ssm_bucket_name"),
    "private_zone_name": ("private_zone_name",),
    "log_group_names": ("log_group_names",),
}
# An output holding an object of the above (terraform/envs/*: `ansible_inventory`) is read as well;
# top-level outputs win.
NESTED = ("ansible_inventory",)
REQUIRED = ("kafka_ips", "spark_master_ip", "lake_bucket")
GROUPS = ("kafka", "kafka_controllers", "spark_master", "spark_workers", "hdfs_namenode", "hdfs_datanodes",
          "pipeline")


class InventoryError(Exception):
    """Bad or incomplete Terraform outputs."""


def read_outputs(text: str) -> dict[str, Any]:
    """``terraform output -json`` ({name: {value, type, sensitive}}) or a plain {name: value} object."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InventoryError(f"the Terraform outputs are not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InventoryError("the Terraform outputs must be a JSON object")
    outputs = {name: (item["value"] if isinstance(item, dict) and "value" in item else item)
               for name, item in doc.items()}
    for name in NESTED:
        if isinstance(outputs.get(name), dict):
            outputs = {**outputs[name], **{k: v for k, v in outputs.items() if k != name}}
    return outputs


def pick(outputs: dict[str, Any], key: str) -> Any:
    for name in OUTPUTS[key]:
        if outputs.get(name) not in (None, "", []):
            return outputs[name]
    return None


def as_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InventoryError(f"output {'/'.join(OUTPUTS[key])} must be a string or a list of strings, got {value!r}")


def build_inventory(outputs: dict[str, Any], *, env: str, connection: str = "ssm", ssh_user: str = "admin",
                    ssm_bucket: str | None = None, region: str | None = None,
                    pipeline_host: str = "spark-master") -> dict[str, Any]:
    values = {key: pick(outputs, key) for key in OUTPUTS}
    missing = [key for key in REQUIRED if not values[key]]
    if missing:
        raise InventoryError("missing Terraform outputs: " + "; ".join(
            f"{key} (tried {', '.join(OUTPUTS[key])})" for key in missing))
    region = region or values["aws_region"]
    ssm_bucket = ssm_bucket or values["ssm_bucket"]

    def host(ip: str, instance_id: str | None, **extra: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"streamsight_private_ip": ip}
        if connection == "ssm":
            if instance_id:
                entry["ansible_host"] = instance_id
            else:
                warn(f"no instance id for {ip}: the SSM connection needs one (add *_instance_id(s) outputs, "
                     "or use --connection ssh)")
                entry["ansible_host"] = ip
        else:
            entry["ansible_host"] = ip
        entry.update(extra)
        return entry

    groups: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
    kafka_ips = as_list(values["kafka_ips"], "kafka_ips")
    kafka_ids = as_list(values["kafka_instance_ids"], "kafka_instance_ids")
    groups["kafka"] = {f"kafka-{i}": host(ip, kafka_ids[i - 1] if len(kafka_ids) >= i else None, kafka_node_id=i)
                       for i, ip in enumerate(kafka_ips, start=1)}
    master_ip = as_list(values["spark_master_ip"], "spark_master_ip")[0]
    groups["spark_master"] = {"spark-master": host(master_ip, values["spark_master_instance_id"])}
    worker_ips = as_list(values["spark_worker_ips"], "spark_worker_ips")
    worker_ids = as_list(values["spark_worker_instance_ids"], "spark_worker_instance_ids")
    groups["spark_workers"] = {f"spark-worker-{i}": host(ip, worker_ids[i - 1] if len(worker_ids) >= i else None)
                               for i, ip in enumerate(worker_ips, start=1)}
    namenode_ip = values["hdfs_namenode_ip"]
    if namenode_ip:
        groups["hdfs_namenode"] = {"hdfs-namenode": host(as_list(namenode_ip, "hdfs_namenode_ip")[0],
                                                         values["hdfs_namenode_instance_id"])}

    known = {name for members in groups.values() for name in members}
    if pipeline_host not in known:
        raise InventoryError(f"--pipeline-host {pipeline_host!r} is not one of the hosts: {', '.join(sorted(known))}")

    all_vars: dict[str, Any] = {"streamsight_env": env, "streamsight_lake_bucket": values["lake_bucket"]}
    for key, var in (("kms_key_arn", "streamsight_kms_key_arn"), ("sns_topic_arn", "streamsight_sns_topic_arn"),
                     ("spark_workers_asg", "streamsight_spark_workers_asg_name"),
                     ("private_zone_name", "streamsight_private_zone_name"),
                     ("log_group_names", "streamsight_log_group_names")):
        if values[key]:
            all_vars[var] = values[key]
    if region:
        all_vars["streamsight_aws_region"] = region
    if connection == "ssm":
        all_vars["ansible_connection"] = "community.aws.aws_ssm"
        if region:
            all_vars["ansible_aws_ssm_region"] = region
        if ssm_bucket:
            all_vars["ansible_aws_ssm_bucket_name"] = ssm_bucket
        else:
            warn("no --ssm-bucket (or ssm_bucket_name output): the SSM connection needs an S3 bucket for file "
                 "transfers")
    else:
        all_vars["ansible_connection"] = "ssh"
        all_vars["ansible_user"] = ssh_user

    children: dict[str, Any] = {}
    for name in GROUPS:
        if name == "hdfs_datanodes":
            # Datanodes live on the Spark workers (data locality), only when there is a namenode.
            children[name] = {"children": {"spark_workers": {}}} if groups["hdfs_namenode"] else {}
        elif name == "pipeline":
            children[name] = {"hosts": {pipeline_host: {}}}
        else:
            children[name] = {"hosts": groups[name]} if groups[name] else {}
    return {"all": {"vars": all_vars, "children": children}}


def ec2_plugin_config(outputs: dict[str, Any], *, region: str | None, connection: str) -> dict[str, Any]:
    """An amazon.aws.aws_ec2 inventory source putting the worker ASG's instances in spark_workers."""
    asg = pick(outputs, "spark_workers_asg")
    region = region or pick(outputs, "aws_region")
    if not asg or not region:
        raise InventoryError("--ec2-plugin needs the spark_workers_asg_name and aws_region outputs (or --region)")
    return {
        "plugin": "amazon.aws.aws_ec2",
        "regions": [region],
        "filters": {"tag:aws:autoscaling:groupName": asg, "instance-state-name": "running"},
        "hostnames": ["instance-id" if connection == "ssm" else "private-ip-address"],
        "compose": {"streamsight_private_ip": "private_ip_address",
                    "ansible_host": "instance_id" if connection == "ssm" else "private_ip_address"},
        "groups": {"spark_workers": "true"},
    }


def warn(message: str) -> None:
    print(f"inventory_from_terraform: warning: {message}", file=sys.stderr)


def dump(doc: dict[str, Any], header: str) -> str:
    try:
        import yaml  # optional
    except ImportError:  # JSON is YAML too
        body = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    else:
        body = yaml.safe_dump(doc, default_flow_style=False, sort_keys=False)
    return header + "---\n" + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outputs", nargs="?", default="-",
                        help="file with `terraform output -json`, or - for standard input (default)")
    parser.add_argument("-o", "--output", default="-", help="inventory file to write (default: standard output)")
    parser.add_argument("--env", required=True, help="environment name, e.g. dev or prod (streamsight_env)")
    parser.add_argument("--connection", choices=("ssm", "ssh"), default="ssm")
    parser.add_argument("--ssh-user", default="admin", help="ansible_user with --connection ssh (default: admin)")
    parser.add_argument("--ssm-bucket", help="S3 bucket for SSM file transfers (else the ssm_bucket_name output)")
    parser.add_argument("--region", help="AWS region (else the aws_region output)")
    parser.add_argument("--pipeline-host", default="spark-master",
                        help="host running the Streamsight drivers, producers and timers (default: spark-master)")
    parser.add_argument("--ec2-plugin", metavar="FILE",
                        help="also write an amazon.aws.aws_ec2 source for the Spark worker ASG (*.aws_ec2.yml)")
    args = parser.parse_args(argv)

    try:
        text = sys.stdin.read() if args.outputs == "-" else Path(args.outputs).read_text(encoding="utf-8")
        outputs = read_outputs(text)
        inventory = build_inventory(outputs, env=args.env, connection=args.connection, ssh_user=args.ssh_user,
                                    ssm_bucket=args.ssm_bucket, region=args.region, pipeline_host=args.pipeline_host)
        header = ("# Generated by scripts/inventory_from_terraform.py from `terraform output -json`.\n"
                  "# Do not edit: regenerate after every `terraform apply`.\n")
        text_out = dump(inventory, header)
        if args.output == "-":
            sys.stdout.write(text_out)
        else:
            Path(args.output).write_text(text_out, encoding="utf-8")
        if args.ec2_plugin:
            Path(args.ec2_plugin).write_text(
                dump(ec2_plugin_config(outputs, region=args.region, connection=args.connection),
                     "# Generated by scripts/inventory_from_terraform.py: the Spark worker ASG.\n"),
                encoding="utf-8")
    except (InventoryError, OSError) as exc:
        print(f"inventory_from_terraform: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
