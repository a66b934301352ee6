"""Every assignment in solutions/: it runs, its solution earns full marks, its release earns 0,
and it follows docs/notebook-conventions.md."""
from __future__ import annotations

import json
import re

import nbformat
import pytest
from conftest import REPO

from scalesim_course._nbgrader import (
    assignments,
    marked_regions,
    nbgrader_meta,
    release_notebook,
    source_notebook,
)
from scalesim_course.grading import grade, grade_notebook

ASSIGNMENTS = assignments(REPO)


def test_there_are_assignments():
    assert "01_serving_fundamentals" in ASSIGNMENTS


def test_canonical_names():
    for name in ASSIGNMENTS:
        assert re.fullmatch(r"0[1-7]_[a-z_]+", name), f"{name}: expected NN_words_like_this"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_solution_runs_clean_and_earns_full_marks(name, record_property):
    report = grade(source_notebook(name, REPO), course_root_dir=REPO)
    # printed at the end of the run (tests/conftest.py): what autograde costs per submission
    record_property("autograde", (name, report.seconds, sum(report.cell_seconds.values())))
    assert report.errors == [], f"cells raised while running {name} headless"
    assert report.notes == []
    assert report.exercises, f"{name} has no graded test cell"
    failed = [f"{e.grade_id}: {e.message}" for e in report.exercises if not e.passed]
    assert failed == [], f"the solution of {name} loses points"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_untouched_release_earns_zero_on_every_test_and_runs_to_the_end(name):
    released = release_notebook(name, REPO)
    assert released.is_file(), f"no {released.relative_to(REPO)}: run `scalesim-course release`"
    report = grade_notebook(released, course_root_dir=REPO)
    scores = report.to_json()["exercises"]
    tests = [nbgrader_meta(c)["grade_id"] for c in _cells(name) if _is_test(c)]
    assert sorted(scores) == sorted(tests)
    assert {gid: earned for gid, (earned, _) in scores.items()} == {gid: 0 for gid in tests}
    # Run All reaches the end: no cell but the unanswered exercises' tests fails (no NameError
    # later on); cells that need an answer say so instead
    assert report.errors == [], f"{name}: cells outside the tests fail when exercises are unanswered"
    assert all(e.title.startswith("Exercise ") for e in report.exercises), \
        "the report names exercises by their heading"


# ----------------------------------------------------------------------------- conventions
def _cells(name):
    return nbformat.read(str(source_notebook(name, REPO)), as_version=4).cells


def _is_test(cell) -> bool:
    return bool(nbgrader_meta(cell).get("grade")) and cell.cell_type == "code"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_header_states_objectives_and_time(name):
    header = _cells(name)[0]
    assert header.cell_type == "markdown" and header.source.startswith("# ")
    assert "**Learning objectives.**" in header.source and "**Time.**" in header.source


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_one_locked_setup_cell_with_a_seed_comes_first(name):
    code = [c for c in _cells(name) if c.cell_type == "code"]
    assert nbgrader_meta(code[0]).get("grade_id") == "setup" and nbgrader_meta(code[0])["locked"]
    assert "SEED = " in code[0].source
    later_imports = [c.id for c in code[1:] if not _is_test(c)
                     and re.search(r"^(import|from) \S+", c.source, re.M) and c.id != "grade"]
    assert later_imports == [], "imports belong in the setup cell"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_every_exercise_has_explanation_docstring_tests_and_points(name):
    cells = _cells(name)
    for index, cell in enumerate(cells):
        if not _is_test(cell):
            continue
        meta, grade_id = nbgrader_meta(cell), nbgrader_meta(cell)["grade_id"]
        solution, explanation = cells[index - 1], cells[index - 2]
        assert meta["locked"] and meta["points"] > 0, grade_id
        assert nbgrader_meta(solution).get("solution"), f"{grade_id}: a solution cell comes first"
        assert explanation.cell_type == "markdown", grade_id
        assert explanation.source.startswith("## "), grade_id
        # a function, or a class (notebook 07's cache), with a docstring
        assert re.search(r'(def \w+\(.*\)|class \w+(\(.*\))?):\n    """', solution.source), \
            f"{grade_id}: docstring"
        assert "Args:" in solution.source and "Returns:" in solution.source, grade_id
        assert cell.source.startswith("# Tests of") and "with silenced():" in cell.source, grade_id
        hidden = marked_regions(cell.source, "hidden")
        assert len(hidden) == 1, f"{grade_id}: one hidden-test region"
        visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
        assert visible.count("assert") >= 2, f"{grade_id}: visible tests that teach"
        assert "assert_own_work(" in cell.source, f"{grade_id}: hidden tests check own work"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_metadata_names_the_assignment(name):
    nb = nbformat.read(str(source_notebook(name, REPO)), as_version=4)
    assert nb.metadata["scalesim"]["assignment"] == name
    assert nb.metadata["kernelspec"]["name"] == "python3"


# ----------------------------------------------------------------------------- run all, timing
# Right and wrong answers per exercise: tests/notebooks/test_NN_<name>.py (answers.py).

@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_graded_test_cells_let_run_all_go_on(name):
    """A failing test cell (an unanswered exercise) must not stop JupyterLab's Run All."""
    untagged = [nbgrader_meta(c)["grade_id"] for c in _cells(name)
                if _is_test(c) and "raises-exception" not in c.metadata.get("tags", [])]
    assert untagged == [], f"{name}: tag these test cells 'raises-exception'"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_cell_times_are_stored_for_self_grading(name):
    path = REPO / "solutions" / name / "cell_times.json"
    assert path.is_file(), f"run `scalesim-course release --time {name}`"
    times = json.loads(path.read_text())["cells"]
    graded = [nbgrader_meta(c)["grade_id"] for c in _cells(name) if nbgrader_meta(c).get("grade_id")]
    assert set(graded) <= set(times), f"{name}: cell_times.json misses {set(graded) - set(times)}"
    assert all(0 <= t < 120 for t in times.values())
