#!/usr/bin/env bash
# Creates (or reuses) a second virtual environment that holds only the Spark Connect
# client: maggy-magic with its `connect-client` extra (pyspark-client, no Spark, no JVM),
# as a laptop that talks to a hosted Connect endpoint has it. The tests run the checkout's
# code in it (PYTHONPATH); the environment is cached outside the checkout, keyed on the
# dependency list. Prints nothing on stdout but the path of the environment's python.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
deps=$("$python" - <<'PY'
import json, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(json.dumps([project["dependencies"], project["optional-dependencies"]["connect-client"]]))
PY
)
key=$( { echo "$deps"; "$python" --version; cat "$0"; } | sha256sum | cut -c1-16)
cache="${MAGGY_VENV_CACHE:-$HOME/.cache/maggy-magic}"
venv="$cache/client-venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
    echo "setting up $venv (the Connect client only)" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip "setuptools>=77" wheel >&2
    "$venv/bin/python" -m pip install -q ".[connect-client]" >&2
    touch "$venv/.complete"
fi
echo "$venv/bin/python"
