#!/usr/bin/env bash
# Run the whole quality suite in the order that makes a partial suite most informative: the E2E lr grid and its check
# at the full budget (lr-check-e2e; e2e-mini's seed-0 runs are its lr-step=0 runs), then every protocol at seed 0, then seed 1, then seed 2, then the Solo ablation. Resumable: stop it any time (the run in
# progress resumes from its last checkpoint), start it again, and it only runs what is missing. Never run two
# trainings at once on a 2-core machine. A run whose result line was made with another recipe than the suite now
# gives it (stale: an lr the grid no longer chooses) is run again; its old line stays in the file as history.
#   bash benchmarks/quality/run_all.sh            (from the repo root, after scripts/setup.sh)
# To train from a frozen checkout while developing in another (results and run folders kept in the main one):
#   git worktree add ../suite-wt HEAD && cd ../suite-wt && PEFTLAB_PYTHON=../main/.venv/bin/python \
#     PEFTLAB_BENCH_ROOT=../main bash benchmarks/quality/run_all.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
export PEFTLAB_DATA_DIR=${PEFTLAB_DATA_DIR:-$(cd .. && pwd)/shared/data}
PYTHON=${PEFTLAB_PYTHON:-.venv/bin/python}
ROOT=${PEFTLAB_BENCH_ROOT:-.}
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's code, also in every training process
bench() {
  "$PYTHON" -m peftlab.cli bench quality run --results "$ROOT/benchmarks/results/quality.jsonl" \
    --runs-dir "$ROOT/runs/quality" --rerun-stale "$@" || echo "[run_all] step failed: $*"
}
# The E2E protocols train in bf16 (as their first runs did); the GLUE ones in fp32. On a CPU without native bf16
# (AVX2 only: bf16 products are emulated, several times slower than fp32; peftlab.hardware) every GLUE run, all seeds,
# goes first, so a session on such a machine spends its hours on the runs that machine does well; the bf16 runs that
# follow are then skipped by the runner there (a bf16 step took 83 s against 2.1 s in fp32 on an AVX2 EPYC).
if [ "$("$PYTHON" -c 'from peftlab.hardware import bf16_matmul_native; print(int(bf16_matmul_native()))')" = 0 ]; then
  echo "[run_all] this machine emulates bf16: the fp32 GLUE protocols first, all seeds"
  bench --protocol lr-grid-glue
  bench --protocol lr-check-glue
  for seed in 0 1 2; do
    bench --protocol glue-mini --seed "$seed"
    bench --protocol prefix-length --seed "$seed"
  done
fi
bench --protocol lr-grid-e2e
# the check for LoRA and the seed methods first, then the GLUE evidence (two of the three claims need it), then the
# check for the remaining baselines
bench --protocol lr-check-e2e --arm lora --arm 'solo*' --arm kernel-mix --arm gated-prefix --arm prefix
bench --protocol lr-grid-glue
bench --protocol lr-check-glue
bench --protocol glue-mini --seed 0
bench --protocol prefix-length --seed 0
bench --protocol lr-check-e2e
bench --protocol e2e-mini --seed 0
for seed in 1 2; do
  bench --protocol e2e-mini --seed "$seed"
  bench --protocol glue-mini --seed "$seed"
  bench --protocol prefix-length --seed "$seed"
done
bench --protocol e2e-solo
bench --protocol e2e-packing
