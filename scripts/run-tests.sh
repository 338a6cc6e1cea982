#!/usr/bin/env bash
# Set up with the test extras, then run every test (slow tiers included).
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(bash scripts/setup.sh test)
exec "$py" -m pytest -ra "$@"
