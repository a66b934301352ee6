#!/usr/bin/env bash
# The course's two entry points.  Both create ./.venv (once), install everything into it and are
# safe to run again.
#   ./course.sh lab [ARGS]   set up and open the course in JupyterLab (ARGS go to jupyter lab),
#                            without nbgrader's instructor tools
#   ./course.sh grade PATH   set up and grade a notebook against the hidden tests (as the
#                            notebook's last cell does); same as `scalesim-course grade PATH`
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

# Learners keep nbgrader's Validate button; its instructor tools (formgrader, Create Assignment,
# the Nbgrader menu) and exchange tools are switched off for this run only, as binder/postBuild
# does for Binder: a config folder read first through JUPYTER_CONFIG_PATH, and command-line
# flags, so nothing in the venv changes and an instructor's `jupyter lab` still has them all.
NBGRADER_LAB_PLUGINS=(formgrader create-assignment course-list assignment-list menu)
NBGRADER_SERVER_EXTENSIONS=(formgrader course_list assignment_list)
learner_config() {
    local dir="$PWD/$VENV/scalesim-learner-config" plugin ext disabled="" sep=""
    mkdir -p "$dir/labconfig"
    for plugin in "${NBGRADER_LAB_PLUGINS[@]}"; do
        disabled+="$sep\"@jupyter/nbgrader:$plugin\": true"; sep=", "
    done
    printf '{"disabledExtensions": {%s}, "lockedExtensions": {%s}}\n' "$disabled" "$disabled" \
        > "$dir/labconfig/page_config.json"
    export JUPYTER_CONFIG_PATH="$dir${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}"
    LEARNER_SERVER_FLAGS=()
    for ext in "${NBGRADER_SERVER_EXTENSIONS[@]}"; do
        LEARNER_SERVER_FLAGS+=("--ServerApp.jpserver_extensions=nbgrader.server_extensions.$ext=False")
    done
}

case "${1:-}" in
    lab)
        shift
        setup
        root_flag=()
        [ "$(id -u)" = 0 ] && root_flag=(--allow-root)   # containers often run as root
        learner_config
        exec jupyter lab --ServerApp.root_dir="$PWD/notebooks" "${root_flag[@]}" \
            "${LEARNER_SERVER_FLAGS[@]}" "$@"
        ;;
    grade)
        shift
        setup
        exec scalesim-course grade "$@"
        ;;
    test)
        shift
        setup
        exec python -m pytest -n 2 "$@"
        ;;
    *)
        echo "usage: ./course.sh lab | ./course.sh grade NOTEBOOK | ./course.sh test [pytest args]" >&2
        exit 2
        ;;
esac
