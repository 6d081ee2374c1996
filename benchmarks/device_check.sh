#!/usr/bin/env bash
# Issue 13's GPU checks as one prepared run for the device tool (only sessions whose task draws a GPU have one).
#   1. here, once:  bash benchmarks/device_check.sh --prepare
#      copies the GPT-2 tokenizer and the E2E training set from ../shared/data into .device-data/ (git-ignored, ~8 MB):
#      ../shared does not travel to the device machine, and bench_methods.py batches real E2E examples
#   2. device run:  command "bash benchmarks/device_check.sh", carry [".device-data"], timeout_s 540
# There, python3 is the machine image's (torch, transformers, peft, accelerate and pytest are installed; their
# versions, which differ from constraints.txt, are written to gpu.txt), and peftlab runs from src/ (nothing is
# installed). Each step has its own time limit, so a hang in one still leaves the others' files. Written to $OUT:
#   gpu.txt                    the device and the package versions
#   contract.txt               tests/test_method_contract.py on CUDA (tiny random GPT-2, Llama and BERT; TF32 off)
#   bench_methods_cuda.json    every method's bf16 step and forward on a GPT-2-medium-shaped random model, with HF
#                              peft's LoRA, prefix and IA3 as peers (benchmarks/bench_methods.py --device cuda)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  src=${PEFTLAB_DATA_DIR:-../shared/data}
  mkdir -p .device-data/e2e
  cp -r "$src/gpt2-tokenizer" .device-data/
  cp "$src"/e2e/trainset.csv* "$src/e2e/SOURCE.md" .device-data/e2e/
  du -sh .device-data
  exit 0
fi
OUT=${OUT:-runs/device_check}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$(pwd)/src:$(pwd)/tests${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export PEFTLAB_DATA_DIR=${PEFTLAB_DEVICE_DATA:-$(pwd)/.device-data}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PYTHON" -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
} | tee "$OUT/gpu.txt"
echo "== method contract on ${PEFTLAB_TEST_DEVICE:=cuda}"
PEFTLAB_TEST_DEVICE=$PEFTLAB_TEST_DEVICE timeout 240 "$PYTHON" -m pytest -q -p no:cacheprovider \
  tests/test_method_contract.py 2>&1 | tee "$OUT/contract.txt" | tail -25
echo "== bench_methods on ${BENCH_DEVICE:=cuda}"
timeout 240 "$PYTHON" benchmarks/bench_methods.py --device "$BENCH_DEVICE" --dtype bfloat16 \
  --models gpt2-medium-random --steps 5 --warmup 2 --data-dir "$PEFTLAB_DATA_DIR" \
  --out "$OUT/bench_methods_cuda.json" 2>&1 | tail -40
ls -la "$OUT"
