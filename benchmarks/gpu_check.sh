#!/usr/bin/env bash
# The GPU machine's check, as one script: the GPU-marked tests, then the throughput
# figures (resnet18 + projection head against a standalone loop, on the local engine and
# on Ray with num_gpus=0.25; batched clients at 16, 64 and 256 per round).
#   bash benchmarks/gpu_check.sh [--quick]
set -u
cd "$(dirname "$0")/.."
python -c "import torch; print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
python -m pytest -q -m gpu tests
python benchmarks/gpu_throughput.py --ray "$@"
