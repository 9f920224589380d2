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
if [ -n "${VIRTUAL_ENV:-}" ]; then
    # CI runs this inside the test venv: the fresh venv takes its dependencies (torch and the rest) from there
    # through a .pth line, and only the wheel itself is installed, which saves minutes of copying torch. A .pth
    # line adds a plain folder, so the test venv's editable finder never loads: robustbench_local comes from the wheel.
    deps="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    own="$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$deps" > "$own/test_venv_dependencies.pth"
    "$tmp/venv/bin/pip" install -q --no-deps "$tmp"/dist/robustbench_local-*.whl
else
    "$tmp/venv/bin/pip" install -q "$tmp"/dist/robustbench_local-*.whl
fi
mkdir "$tmp/run" && cd "$tmp/run"
"$tmp/venv/bin/python" -c "import robustbench_local as r, sys; sys.exit(0 if r.__file__.startswith('$tmp') else
    f'check-wheel: robustbench_local was imported from {r.__file__}, not from the wheel')"
export RBL_CACHE_DIR="$tmp/cache"   # trains the digits CNN (seconds) rather than touching the user's cache
"$tmp/venv/bin/rbl" dataset.n_test=50 attack=fgsm workers=1 progress=false task.print_leaderboard=false
"$tmp/venv/bin/rbl" task=leaderboard task.html=leaderboard.html task.dataset=digits
grep -q "standard_cnn" leaderboard.html
echo "check-wheel: $(ls "$tmp/dist" | tr '\n' ' ')installed in a fresh venv; rbl ran from $PWD"
