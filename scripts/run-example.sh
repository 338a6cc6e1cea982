#!/usr/bin/env bash
# The main job: set up, then run the hyperparameter-search notebook unattended on the local
# backend (extra arguments go to `maggy-magic run`, e.g. -p n_trials 12). The notebooks are
# run from a copy under build/example, so the run's outputs (the executed notebook, the
# run directories) never land among the sources or the test suite's inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(bash scripts/setup.sh notebooks)
# bytecode for the checkout, as pip writes it for an installed package (an editable
# install leaves it to the first import, which PYTHONDONTWRITEBYTECODE=1 forbids): each
# process a run starts (a template, a worker) then reads it instead of compiling
"$py" -m compileall -q maggy_magic >/dev/null
work=build/example
rm -rf "$work"
mkdir -p "$work"
cp notebooks/*.ipynb notebooks/*.py "$work"/
exec "$(dirname "$py")/maggy-magic" run "$work/02_hpo.ipynb" "$work/02_hpo.output.ipynb" "$@"
