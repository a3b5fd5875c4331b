#!/usr/bin/env bash
# Build the two artifacts the pipeline role deploys, from the project root, into dist/:
#
#   dist/streamsight.zip         the project's packages (streamsight, ingestion, streaming_jobs, ml,
#                                analytics, streamsight_cli/) and conf/ (settings profiles, contracts,
#                                reference data): spark-submit --py-files, and unpacked on the pipeline
#                                host for the entry-point scripts (streaming_jobs/pipeline.py, ml/train.py)
#                                and the settings (STREAMSIGHT_CONFIG=/opt/streamsight/app/conf/...).
#   dist/streamsight-env.tar.gz  a relocatable Python environment with Streamsight and its pinned
#                                dependencies (requirements.lock), packed with venv-pack: the driver runs
#                                its bin/python; executors get it with --archives ...#environment and
#                                spark.pyspark.python=./environment/bin/python.
#
# venv-pack keeps the environment's link to the base interpreter, so build on the same OS image and
# Python as the cluster hosts (e.g. in a container of that image), or use conda-pack instead, which
# bundles Python itself (any tarball with bin/python at its top works).
#   ansible/scripts/build_artifacts.sh [PYTHON]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python=${1:-python3}
dist="$root/dist"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
mkdir -p "$dist"

"$python" -m venv "$build/env"
"$build/env/bin/pip" install --quiet --disable-pip-version-check -r "$root/requirements.lock" venv-pack
"$build/env/bin/pip" install --quiet --disable-pip-version-check --no-deps "$root"

(cd "$root" && rm -f "$dist/streamsight.zip" && \
  zip -qr "$dist/streamsight.zip" streamsight ingestion streaming_jobs ml analytics streamsight_cli conf \
    -x '*/__pycache__/*' '*.pyc')
rm -f "$dist/streamsight-env.tar.gz"
"$build/env/bin/venv-pack" --quiet -p "$build/env" -o "$dist/streamsight-env.tar.gz"
ls -l "$dist"
