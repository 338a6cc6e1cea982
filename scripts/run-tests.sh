#!/usr/bin/env bash
# Set up (system packages, then the venv with the test extras) and run every test, the
# slow tiers (Spark, browser, notebooks) included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
py=$(bash scripts/setup.sh test)
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
exec "$py" -m pytest -ra "$@"
