#!/usr/bin/env bash
# The suite as a package, away from the checkout: build the sdist and from it the wheel, install the wheel into a
# fresh virtual environment, and run `rbl` from an empty folder elsewhere (a short evaluation, then the
# leaderboard page). The config tree conf/ and the page template must come from the wheel. .ci/run calls this.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q build
"$tmp/venv/bin/python" -m build -q --outdir "$tmp/dist" "$repo" >/dev/null   # sdist, then the wheel from it
"$tmp/venv/bin/pip" install -q "$tmp"/dist/robustbench_local-*.whl
mkdir "$tmp/run" && cd "$tmp/run"
export RBL_CACHE_DIR="$tmp/cache"   # trains the digits CNN (seconds) rather than touching the user's cache
"$tmp/venv/bin/rbl" dataset.n_test=50 attack=fgsm workers=1 progress=false task.print_leaderboard=false
"$tmp/venv/bin/rbl" task=leaderboard task.html=leaderboard.html task.dataset=digits
grep -q "standard_cnn" leaderboard.html
echo "check-wheel: $(ls "$tmp/dist" | tr '\n' ' ')installed in a fresh venv; rbl ran from $PWD"
