#!/usr/bin/env bash
# The main job: set up, then run a small real hyperparameter search on the local backend.
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(bash scripts/setup.sh)
exec "$py" examples/quickstart.py "$@"
