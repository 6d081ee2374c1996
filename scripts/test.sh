#!/usr/bin/env bash
# Install everything (scripts/setup.sh) and run the test suite. Extra arguments go to pytest.
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PEFTLAB_DATA_DIR=${PEFTLAB_DATA_DIR:-$(cd .. && pwd)/shared/data}
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
