#!/usr/bin/env bash
# Create ./.venv (Python 3.11) with torch from this machine's disk and layercast installed
# editable with its dev extras. Idempotent: a second run only re-checks the install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, pinned: 2.14.1 / 0.29.1 are served from this machine's disk for Python 3.11
python -c "import torch, torchvision" 2>/dev/null || python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q -e ".[dev]"
python -c "import layercast, torch; print('layercast', layercast.__version__, '| torch', torch.__version__, '| ready in .venv')"
