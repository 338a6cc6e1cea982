#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs maggy-magic into it,
# with what pyproject.toml declares for EXTRAS and nothing else.
#   scripts/setup.sh [EXTRAS]      e.g. scripts/setup.sh test
# The environment is cached outside the checkout, keyed on the dependency list, so a fresh
# clone reuses it; `.venv` in the checkout points at it. Prints nothing on stdout but the
# path of the environment's python.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
deps=$("$python" - <<'PY'
import json, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(json.dumps([project["dependencies"], project["optional-dependencies"]], sort_keys=True))
PY
)
key=$( { echo "$deps"; echo "$extras"; "$python" --version; cat "$0"; } | sha256sum | cut -c1-16)
cache="${MAGGY_VENV_CACHE:-$HOME/.cache/maggy-magic}"
venv="$cache/venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
    echo "setting up $venv (extras: ${extras:-none})" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip "setuptools>=77" wheel >&2
    spec="."
    [ -n "$extras" ] && spec=".[$extras]"
    "$venv/bin/python" -m pip install -q "$spec" >&2
    touch "$venv/.complete"
fi
# the checkout itself, without touching the cached dependencies
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >&2 2>/dev/null \
    || "$venv/bin/python" -m pip install -q --no-deps -e . >&2
ln -sfn "$venv" .venv
echo "$venv/bin/python"
