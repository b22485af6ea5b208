#!/usr/bin/env bash
# Set up a machine for the demo and the tests: the Debian packages of deploy/apt-packages.txt
# (apt-get, as root or through sudo; skipped when all are installed), then ./.venv (Python 3.11)
# with torch from this machine's disk and layercast installed editable with its dev extras.
# Idempotent: a second run only checks (dpkg-query, and a stamp of pyproject.toml in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

# --- system packages -----------------------------------------------------------------------------
mapfile -t APT_PACKAGES < <(grep -v '^\s*#' deploy/apt-packages.txt | grep -v '^\s*$')
apt_missing() {
  local pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
  done
}
if command -v dpkg-query >/dev/null 2>&1; then
  mapfile -t MISSING < <(apt_missing)
  if [ "${#MISSING[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    fi
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
      echo "bootstrap: installing Debian packages: ${MISSING[*]}"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
    else
      echo "bootstrap: cannot install ${MISSING[*]} (apt-get needs root or sudo); the tests that use them fail until they are installed" >&2
    fi
  fi
else
  cat >&2 <<'MSG'
bootstrap: not a Debian system; install these with your system's packages (see deploy/apt-packages.txt for what uses each):
  redis-server            scale-out tests
  chromium (+ driver)     the operator page in a real browser
  prometheus, promtool    scrape and alert-rule tests
  ffmpeg                  video and RTSP test clips
  GStreamer RTSP server   (Python gi bindings, gst-rtsp-server, plugins good/bad) the RTSP test camera
MSG
fi

# --- Python environment --------------------------------------------------------------------------
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
# The Python installs run again only when pyproject.toml changed since the last successful run.
STAMP=".venv/.bootstrapped-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  python -m pip install -q --upgrade pip
  # torch first, pinned: 2.14.1 / 0.29.1 are served from this machine's disk for Python 3.11
  python -c "import torch, torchvision" 2>/dev/null || python -m pip install -q torch==2.14.1 torchvision==0.29.1
  python -m pip install -q -e ".[dev]"
  rm -f .venv/.bootstrapped-*
  touch "$STAMP"
fi
python -c "import layercast, torch; print('layercast', layercast.__version__, '| torch', torch.__version__, '| ready in .venv')"
