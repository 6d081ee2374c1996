#!/usr/bin/env bash
# Run the whole quality suite in the order that makes a partial suite most informative (below). Each lr grid is
# checked at the full budget (lr-check-*: glue-mini's and e2e-mini's seed-0 runs are their lr-step=0 runs).
# Resumable: stop it any time (the run in progress resumes from its last checkpoint), start it again, and it only
# runs what is missing. Never run two trainings at once on a 2-core machine. A run whose result line was made with
# another recipe than the suite now gives it (stale: an lr the grid no longer chooses) is run again; its old line
# stays in the file as history.
#   bash benchmarks/quality/run_all.sh            (from the repo root, after scripts/setup.sh)
# A half-done run resumes from runs/quality (git-ignored), so only on the machine that started it: where the time left
# is shorter than an E2E run (~1 h on 2 cores), run short GLUE runs instead, e.g.
#   .venv/bin/python -m peftlab.cli bench quality run --protocol glue-mini --seed 1 --max-runs N
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
# (AVX2 only) bf16 runs compute their products with fp32 kernels (peftlab.train.bf16_gemm; 2.6 s for a LoRA step on
# SmolLM2 against 83 s in torch's emulated kernels), eagerly (TorchDynamo does not trace under that mode), so every
# protocol runs on any machine. The order puts first what the verdicts still need: after the GLUE lrs, a second and
# third seed of the E2E arms of claims (a) and (b) (LoRA, Solo at 0.40x, Kernel-mix matched), interleaved with the
# GLUE seeds and the prefix-length study (claims b, c), the arms a claim names before the others of a seed, then
# everything else.
claims_e2e=(--arm lora --arm solo-r4 --arm kernel-mix)
# The e2e-mini runs finished on this machine decoded again with the LoRA paper's E2E beam search (10 beams, length
# penalty 0.9, no 4-gram repeated within an output): does a verdict depend on greedy decoding? Resumable; a check,
# not a verdict (benchmarks/quality/decoding_check.py).
check_decoding() {
  "$PYTHON" benchmarks/quality/decoding_check.py --runs-dir "$ROOT/runs/quality" \
    --results "$ROOT/benchmarks/results/decoding_check.jsonl" "$@" \
    --setting beam10=decode.num_beams=10,decode.length_penalty=0.9,decode.no_repeat_ngram_size=4 \
    || echo "[run_all] decoding check failed: $*"
}
bench --protocol lr-grid-e2e
bench --protocol lr-check-e2e --arm lora --arm 'solo*' --arm kernel-mix --arm gated-prefix --arm prefix
bench --protocol lr-grid-glue
bench --protocol lr-check-glue
bench --protocol glue-mini --seed 0
bench --protocol e2e-mini --seed 1 "${claims_e2e[@]}"
bench --protocol prefix-length --seed 0
bench --protocol glue-mini --seed 1 --arm lora --arm kernel-mix   # claim (b): both at 2 seeds on every task
bench --protocol prefix-length --seed 1                              # claim (c): 2 seeds at every length
check_decoding --arms lora solo-r4 kernel-mix                       # claims (a), (b) under the papers' beam search
bench --protocol e2e-mini --seed 2 "${claims_e2e[@]}"               # claims (a), (b): 3 seeds
check_decoding --arms lora solo-r4 kernel-mix
bench --protocol glue-mini --seed 2 --arm lora --arm kernel-mix   # claim (b): 3 seeds on every task (~0.5 h)
bench --protocol prefix-length --seed 2                              # claim (c): 3 seeds at every length (~0.7 h)
bench --protocol glue-mini --seed 1                                  # the other arms (~2.9 h)
bench --protocol glue-mini --seed 2
bench --protocol lr-check-e2e
for seed in 0 1 2; do
  bench --protocol e2e-mini --seed "$seed"
done
bench --protocol e2e-solo
bench --protocol e2e-packing
