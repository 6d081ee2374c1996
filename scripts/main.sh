#!/usr/bin/env bash
# Install everything (scripts/setup.sh), then run the main job on the offline SmolLM2-135M:
# a short real LoRA fine-tune on E2E (loss before/after, trainable-parameter table), greedy decoding of a handful
# of test MRs scored with the five official E2E metrics, then a report (markdown table + plots).
#   bash scripts/main.sh [extra `peftlab train` options or key=value overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PEFTLAB_DATA_DIR=${PEFTLAB_DATA_DIR:-$(cd .. && pwd)/shared/data}
RUN=${PEFTLAB_MAIN_RUN:-runs/main}
.venv/bin/peftlab train e2e --model smollm2-135m --method lora --max-steps 40 --eval-limit 16 \
  --output-dir "$RUN/lora" --overwrite run.bf16=auto optim.lr=2e-3 optim.warmup_steps=4 run.eval_every=20 "$@"
.venv/bin/peftlab report "$RUN/lora" --out "$RUN/report"
echo "[main] predictions: $RUN/lora/predictions.txt; report: $RUN/report"
