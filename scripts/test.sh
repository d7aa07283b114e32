#!/usr/bin/env bash
# The test suite: set up, then run pytest offline (no W&B account, no downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=offline HF_HUB_OFFLINE=1 WANDB_SILENT=true
exec .venv/bin/python -m pytest -q "$@"
