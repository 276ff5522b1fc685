#!/usr/bin/env bash
# Installs what tests/serve/test_browser.py needs: Debian's Chromium and the Playwright Python
# package in .venv. Idempotent: does nothing when both are present. Playwright's own browser
# download is never used (the test launches /usr/bin/chromium through executable_path).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
fi

if ! "$PY" -c "import playwright" 2>/dev/null; then
  "$PY" -m pip install --quiet playwright
fi

/usr/bin/chromium --version
"$PY" -c "import importlib.metadata as m; print('playwright', m.version('playwright'))"
