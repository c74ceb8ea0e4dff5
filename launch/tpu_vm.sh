#!/usr/bin/env bash
# Cloud TPU VM jobs: create | setup | run | status | delete | babysit (see launch/tpu_vm.py --help and docs/tpu.md).
#   bash launch/tpu_vm.sh --name=tsp --zone=us-central2-b --accelerator=v4-32 [--dry-run] create --spot
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/tpu_vm.py" "$@"
