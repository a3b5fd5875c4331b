#!/usr/bin/env bash
# Create the stream contracts' Kafka topics on the compose cluster, idempotently.
#
#   create-topics.sh TOPIC:PARTITIONS [TOPIC:PARTITIONS ...]
#
# Runs in the apache/kafka image (kafka-init service). The topic list in docker/compose.yaml must
# match conf/contracts/*.yaml (raw topic with the contract's partitions, dead-letter topic with 1);
# tests/deploy/test_docker.py checks that it does.
set -euo pipefail

bootstrap="${KAFKA_BOOTSTRAP:-kafka:9092}"
replication="${KAFKA_TOPIC_REPLICATION:-1}"
topics_sh="${KAFKA_HOME:-/opt/kafka}/bin/kafka-topics.sh"

if [ "$#" -eq 0 ]; then
  echo "usage: $0 TOPIC:PARTITIONS [TOPIC:PARTITIONS ...]" >&2
  exit 64
fi

for spec in "$@"; do
  topic="${spec%:*}"
  partitions="${spec##*:}"
  case "$partitions" in
    ''|*[!0-9]*) echo "bad spec '$spec' (want TOPIC:PARTITIONS)" >&2; exit 64 ;;
  esac
  "$topics_sh" --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic "$topic" --partitions "$partitions" --replication-factor "$replication"
done

# Show what exists, so `docker compose logs kafka-init` answers "were the topics created?".
for spec in "$@"; do
  "$topics_sh" --bootstrap-server "$bootstrap" --describe --topic "${spec%:*}"
done
