#!/usr/bin/env bash
# The browser test (tests/test_browse_chromium.py) drives Debian's headless Chromium through
# Debian's chromedriver: install both where missing (as root, as CI runs). Nothing else fetches
# a browser; in CI the test fails rather than skips without them.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
chromium --version
