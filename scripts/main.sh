#!/usr/bin/env bash
# Install everything (scripts/setup.sh), then run the main job: a small real LoRA fine-tune of the offline
# SmolLM2-135M on E2E examples, printing the loss before/after and the trainable-parameter table.
#   bash scripts/main.sh [extra `peftlab demo` options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PEFTLAB_DATA_DIR=${PEFTLAB_DATA_DIR:-$(cd .. && pwd)/shared/data}
exec .venv/bin/peftlab demo "$@"
