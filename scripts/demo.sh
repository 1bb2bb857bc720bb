#!/usr/bin/env bash
# Set up (if needed), then run the demo search on the bundled mini CIFAR-10.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/morphclimb search "$@"
