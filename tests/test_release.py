"""`scalesim-course release`: notebooks/ is nbgrader's release of solutions/, stable, leak-free.
Also the Binder files that serve notebooks/ to learners."""
from __future__ import annotations

import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import REPO, TINY

from scalesim_course._nbgrader import CourseError, assignments, source_notebook
from scalesim_course.cli import main
from scalesim_course.release import check_release, generate, release_all, secret_lines


def test_repo_notebooks_match_a_fresh_release():
    assert check_release(REPO) == [], "run `scalesim-course release` and commit notebooks/"


@pytest.mark.parametrize("name", assignments(REPO))
def test_generation_is_byte_stable(name, tmp_path):
    first, second = generate(name, tmp_path / "a", REPO), generate(name, tmp_path / "b", REPO)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files and all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


def test_release_check_cli(tiny_course, capsys):
    assert main(["release", "--check", "--course-root", str(tiny_course)]) == 0
    assert "notebooks/ matches solutions/ (1 assignments)" in capsys.readouterr().out
    released = tiny_course / "notebooks" / TINY / f"{TINY}.ipynb"
    released.write_text(released.read_text().replace("add(1, 2) should be 3", "add(1, 2) is 3"))
    assert main(["release", "--check", "--course-root", str(tiny_course)]) == 1
    assert f"notebooks/{TINY}/{TINY}.ipynb: differs from" in capsys.readouterr().out
    assert main(["release", "--course-root", str(tiny_course)]) == 0
    assert check_release(tiny_course) == []


def test_check_finds_leaked_solutions_and_hidden_tests(tiny_course):
    released = tiny_course / "notebooks" / TINY / f"{TINY}.ipynb"
    nb = nbformat.read(str(released), as_version=4)
    nb.cells[2].source += "\n    return a + b"                       # solution code
    nb.cells[5].source += "\n    assert_raises(ValueError, mean, [])"  # a hidden test
    nb.cells[3].source += "\n### BEGIN HIDDEN TESTS"                  # a marker
    nbformat.write(nb, str(released))
    problems = check_release(tiny_course)
    label = f"notebooks/{TINY}/{TINY}.ipynb"
    assert f"{label} cell 2: shows solution or hidden-test code: 'return a + b'" in problems
    assert f"{label} cell 5: shows solution or hidden-test code: " \
           "'assert_raises(ValueError, mean, [])'" in problems
    assert f"{label} cell 3: still has the nbgrader marker '### BEGIN HIDDEN TESTS'" in problems


def test_check_finds_missing_stale_and_unstripped(tiny_course):
    shutil.rmtree(tiny_course / "notebooks" / TINY)
    (tiny_course / "notebooks" / "09_old").mkdir()
    solution = source_notebook(TINY, tiny_course)
    nb = nbformat.read(str(solution), as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi\n")]
    nbformat.write(nb, str(solution))
    assert sorted(check_release(tiny_course)) == sorted([
        "notebooks/09_old/: no solutions/09_old/09_old.ipynb to release it from",
        f"solutions/{TINY}/{TINY}.ipynb: has outputs; `scalesim-course release` clears them",
        f"notebooks/{TINY}/{TINY}.ipynb: missing; run `scalesim-course release`"])
    release_all(tiny_course)
    shutil.rmtree(tiny_course / "notebooks" / "09_old")
    assert check_release(tiny_course) == []


def test_secret_lines_skip_what_the_learner_sees_anyway():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "total = sum(values)\n### BEGIN SOLUTION\ntotal = sum(values)\nreturn total / len(values)"
        "\nx\n### END SOLUTION")]
    assert secret_lines(nb) == {"return total / len(values)"}


def test_unknown_assignment_and_course_are_clear_errors(tiny_course, tmp_path):
    with pytest.raises(CourseError, match="no assignment 'nope'.*have: 00_tiny"):
        generate("nope", tmp_path, tiny_course)
    assert main(["release", "--check", "--course-root", str(tmp_path)]) == 2


# ----------------------------------------------------------------------------- Binder
BINDER = REPO / "binder"


def test_binder_pins_a_cpu_torch_exactly_like_course_sh():
    lines = [line.strip() for line in (BINDER / "requirements.txt").read_text().splitlines()]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    pins = [line for line in lines if line.startswith("torch")]
    course_sh = re.search(r'TORCH_VERSION="([^"]+)"', (REPO / "course.sh").read_text()).group(1)
    assert pins == [f"torch=={course_sh}+cpu"]
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.(1[0-9])", runtime)


def test_binder_installs_the_package_and_switches_off_instructor_tools():
    script = (BINDER / "postBuild").read_text()
    assert script.startswith("#!/bin/bash") and "set -euo pipefail" in script
    assert (BINDER / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"
    assert re.search(r"^python -m pip install .*-e \.$", script, re.M)
    plugins = set(re.findall(r"@jupyter/nbgrader:[a-z-]+", script))
    off = ("formgrader", "create-assignment", "course-list", "assignment-list", "menu")
    assert plugins == {f"@jupyter/nbgrader:{p}" for p in off}
    assert "labextension disable --level=sys_prefix $NBGRADER_PLUGINS" in script
    assert "labextension lock --level=sys_prefix $NBGRADER_PLUGINS" in script
    servers = set(re.findall(r"server extension disable --sys-prefix (\S+)", script))
    assert servers == {f"nbgrader.server_extensions.{e}"
                       for e in ("formgrader", "course_list", "assignment_list")}
    # the names are those the installed nbgrader has (pip puts its Jupyter files in sys.prefix)
    jupyter = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / "nbgrader.json"
    shipped = json.loads(jupyter.read_text())["ServerApp"]["jpserver_extensions"]
    assert servers < set(shipped) and "nbgrader.server_extensions.validate_assignment" in shipped
    for name in servers:
        assert hasattr(importlib.import_module(name), "_load_jupyter_server_extension")
    lab = Path(sys.prefix, "share", "jupyter", "labextensions", "@jupyter", "nbgrader", "static")
    code = "".join(p.read_text(errors="ignore") for p in lab.glob("*.js"))
    assert all(f'"{p}"' in code for p in plugins)
