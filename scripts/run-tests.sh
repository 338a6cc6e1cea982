#!/usr/bin/env bash
# Set up (system packages, then the venv with the test extras) and run every test, the
# slow tiers (Spark, browser, notebooks) included, after ruff has checked every Python file.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
py=$(bash scripts/setup.sh test)
# bytecode for the checkout, as pip writes it for an installed package (an editable
# install leaves it to the first import, which PYTHONDONTWRITEBYTECODE=1 forbids): each
# process a run starts (a template, a worker) then reads it instead of compiling
"$py" -m compileall -q maggy_magic >/dev/null
# the Connect-client-only environment of tests/test_connect.py, set up with the rest
bash scripts/setup-client.sh >/dev/null
# the venvs of tests/test_extras.py (the wheel with one extra each), cached the same way
"$py" tests/extra_envs.py
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
# lint first: every Python file of the checkout, settings in pyproject.toml
"$(dirname "$py")/ruff" check .
exec "$py" -m pytest -ra "$@"
