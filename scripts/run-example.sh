#!/usr/bin/env bash
# The main job: set up, then run the hyperparameter-search notebook unattended on the local
# backend (extra arguments go to `maggy-magic run`, e.g. -p n_trials 12).
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(bash scripts/setup.sh notebooks)
exec "$(dirname "$py")/maggy-magic" run notebooks/02_hpo.ipynb notebooks/02_hpo.output.ipynb "$@"
