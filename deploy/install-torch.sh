#!/usr/bin/env bash
# Install the CPU build of torch into a venv: deploy/install-torch.sh VENV
# PyPI's torch for Linux pulls gigabytes of CUDA libraries that a VPS cannot use, so torch comes
# from PyTorch's CPU index (EAR_TORCH_INDEX_URL), unless a wheel of it is already available
# locally (pip's find-links, as on our CI machines).
set -euo pipefail
venv=${1:?usage: install-torch.sh VENV}
version=${EAR_TORCH_VERSION:-2.13.0}
index=${EAR_TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
pip=("$venv/bin/pip" install -q --disable-pip-version-check)
if "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$version')" 2>/dev/null; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if "$venv/bin/pip" download -q --no-index --no-deps -d "$tmp" "torch==$version" 2>/dev/null; then
  "${pip[@]}" "torch==$version"  # a local CPU wheel (pip's find-links) wins; its dependencies from PyPI
  exit 0
fi
"${pip[@]}" --index-url "$index" "torch==$version"
