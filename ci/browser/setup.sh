#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (tests/test_checks.py opens the dataset report in it,
# headless, through playwright). Idempotent; the tests' `chromium` fixture calls it in CI. Needs root.
set -euo pipefail
if ! command -v chromium >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
command -v chromium
