#!/usr/bin/env bash
# Run the whole quality suite in the order that makes a partial suite most informative: the lr grids, then every
# protocol at seed 0, then seed 1, then seed 2, then the Solo ablation. Resumable: stop it any time (the run in
# progress resumes from its last checkpoint), start it again, and it only runs what is missing. Never run two
# trainings at once on a 2-core machine.
#   bash benchmarks/quality/run_all.sh            (from the repo root, after scripts/setup.sh)
set -uo pipefail
cd "$(dirname "$0")/../.."
export PEFTLAB_DATA_DIR=${PEFTLAB_DATA_DIR:-$(cd .. && pwd)/shared/data}
bench() { .venv/bin/peftlab bench quality run "$@" || echo "[run_all] step failed: $*"; }
bench --protocol lr-grid-e2e
bench --protocol e2e-mini --seed 0
bench --protocol lr-grid-glue
bench --protocol glue-mini --seed 0
bench --protocol prefix-length --seed 0
for seed in 1 2; do
  bench --protocol e2e-mini --seed "$seed"
  bench --protocol glue-mini --seed "$seed"
  bench --protocol prefix-length --seed "$seed"
done
bench --protocol e2e-solo
.venv/bin/peftlab bench quality docs
