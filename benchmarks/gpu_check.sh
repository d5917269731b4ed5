#!/usr/bin/env bash
# On a machine with a CUDA GPU, in under 5 minutes: the `gpu` tests (each run on the GPU against the same run on the
# CPU), then the training throughput of the MLP (T=25), of the conv SNN and of the recurrent net (T=28 and T=784) on
# the GPU against snnTorch and, where installed, SpikingJelly (torch, cupy and triton backends). The numbers go to
# docs/results/gpu/<GPU>_<time>.txt (a new file each time: nothing recorded before is overwritten). See docs/gpu.md.
#   bash benchmarks/gpu_check.sh            (inside the project's virtual environment)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    echo "gpu_check.sh: no CUDA device for torch here (or no torch: activate the project's environment)" >&2
    exit 1
fi
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
gpu=${gpu:-$(python -c "import torch; print(torch.cuda.get_device_name())")}
out="docs/results/gpu/$(echo "$gpu" | tr -cs 'A-Za-z0-9' '_' | sed 's/_$//')_$(date +%Y-%m-%d_%H-%M-%S).txt"
mkdir -p docs/results/gpu

tests=0
python -m pytest -q -m gpu 2>&1 | tee "$out.tests" || tests=$?   # the numbers are still worth having
{
    echo "# benchmarks/gpu_check.sh on $gpu, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
    python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
    python -c "import triton; print('triton', triton.__version__)" 2>/dev/null || echo "triton: not installed (tensor code)"
    echo "gpu tests: $(tail -1 "$out.tests")"
    echo
    echo "## MLP 784-1000-10, T=25, batch 128"
    python benchmarks/throughput.py --device cuda
    echo
    echo "## conv SNN (baseline=csnn), T=4, batch 128"
    python benchmarks/throughput.py --device cuda --net conv
    echo
    echo "## recurrent SNN (model=rsnn's net, 256 recurrent LIF), row by row, T=28, batch 128"
    python benchmarks/throughput.py --device cuda --net rsnn --T 28
    echo
    echo "## the same pixel by pixel (S-MNIST), T=784, batch 128 (fewer timed steps: ~3,000 launches a step)"
    python benchmarks/throughput.py --device cuda --net rsnn --steps 4 --rounds 3
} 2>&1 | tee "$out"
rm -f "$out.tests"
echo "written to $out"
exit "$tests"
