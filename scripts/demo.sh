#!/usr/bin/env bash
# The main job: set up, then explain 256 MNIST test images with the shipped classifier and VAE.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/cflight predict -c configs/explain/latent_attack_mnist.yaml "$@"
