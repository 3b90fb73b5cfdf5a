#!/usr/bin/env bash
# The GPU machine's check, as one script: the GPU-marked tests, then the throughput
# figures (resnet18 + projection head against a standalone loop, on the local engine and
# on Ray with num_gpus=0.25, with and without bf16; batched simple-CNN clients at 16, 64
# and 256 per round; batched ResNet-18-GN cohorts; determinism; peak GPU memory), then
# the per-party evaluation on the device.
#   bash benchmarks/gpu_check.sh [--quick]
set -u
cd "$(dirname "$0")/.."
python -c "import torch; print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
python -m pytest -q -m gpu tests
python benchmarks/gpu_throughput.py --ray "$@"
# the per-party evaluation of the personalised-FL runs: one vmap pass on the GPU
if [ "${1:-}" = "--quick" ]; then q=--quick; else q=; fi
dev=$(python -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
python benchmarks/party_eval.py $q --device "$dev"
