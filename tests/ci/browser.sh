#!/usr/bin/env bash
# Installs headless Chromium (Debian's `chromium`) for tests/test_browser.py where it is missing.
# Needs root (CI runs as root); a no-op when chromium is already on PATH.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "tests/ci/browser.sh: chromium is missing; install it as root (apt-get install chromium)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null
