#!/usr/bin/env bash
# The course's two entry points.  Both create ./.venv (once), install everything into it and are
# safe to run again.
#   ./course.sh lab [ARGS]   set up and open the course in JupyterLab (ARGS go to jupyter lab)
#   ./course.sh test [ARGS]  set up and run the whole test suite (ARGS go to pytest)
set -euo pipefail
cd "$(dirname "$0")"

VENV="${SCALESIM_VENV:-.venv}"
TORCH_VERSION="2.13.0"
PYTHON="${PYTHON:-python3}"

die() { echo "course.sh: $*" >&2; exit 1; }

install_torch() {
    # A CPU build: first a local +cpu wheel where pip can see one, then PyTorch's CPU index, then
    # the plain release (a CPU build on macOS and Windows).
    "$VENV/bin/python" -m pip install -q "torch==${TORCH_VERSION}+cpu" 2>/dev/null && return
    "$VENV/bin/python" -m pip install -q "torch==${TORCH_VERSION}" \
        --index-url https://download.pytorch.org/whl/cpu 2>/dev/null && return
    "$VENV/bin/python" -m pip install -q "torch==${TORCH_VERSION}"
}

setup() {
    command -v "$PYTHON" >/dev/null || die "needs Python 3.10+ as '$PYTHON' (set PYTHON=...)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "needs Python 3.10 or newer; '$PYTHON' is $("$PYTHON" --version 2>&1)"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -c 'import torch' 2>/dev/null || install_torch
    # Reinstall the package only when its definition changed, so a second run is quick.
    local stamp="$VENV/.scalesim-installed" want
    want=$(cat pyproject.toml | cksum)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        "$VENV/bin/python" -m pip install -q -e ".[test]"
        echo "$want" > "$stamp"
    fi
    export PATH="$PWD/$VENV/bin:$PATH"   # nbgrader runs `alembic` from here
}

case "${1:-}" in
    lab)
        shift
        setup
        root_flag=()
        [ "$(id -u)" = 0 ] && root_flag=(--allow-root)   # containers often run as root
        exec jupyter lab --ServerApp.root_dir="$PWD/notebooks" "${root_flag[@]}" "$@"
        ;;
    test)
        shift
        setup
        exec python -m pytest -n 2 "$@"
        ;;
    *)
        echo "usage: ./course.sh lab | ./course.sh test [pytest args]" >&2
        exit 2
        ;;
esac
