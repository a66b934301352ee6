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
from scalesim_course.cli import main
from scalesim_course.grading import grade

ASSIGNMENTS = assignments(REPO)


def test_there_are_assignments():
    assert "01_serving_fundamentals" in ASSIGNMENTS


def test_canonical_names():
    for name in ASSIGNMENTS:
        assert re.fullmatch(r"0[1-7]_[a-z_]+", name), f"{name}: expected NN_words_like_this"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_solution_runs_clean_and_earns_full_marks(name):
    report = grade(source_notebook(name, REPO), course_root_dir=REPO)
    assert report.errors == [], f"cells raised while running {name} headless"
    assert report.notes == []
    assert report.exercises, f"{name} has no graded test cell"
    failed = [f"{e.grade_id}: {e.message}" for e in report.exercises if not e.passed]
    assert failed == [], f"the solution of {name} loses points"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_untouched_release_earns_zero_on_every_test(name, capsys):
    released = release_notebook(name, REPO)
    assert released.is_file(), f"no {released.relative_to(REPO)}: run `scalesim-course release`"
    assert main(["grade", str(released), "--json",
                 "--course-root", str(REPO)]) == 0
    scores = json.loads(capsys.readouterr().out)["exercises"]
    tests = [nbgrader_meta(c)["grade_id"] for c in _cells(name) if _is_test(c)]
    assert sorted(scores) == sorted(tests)
    assert {gid: earned for gid, (earned, _) in scores.items()} == {gid: 0 for gid in tests}


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


# ----------------------------------------------------------------------------- 01: fair tests
ALTERNATIVES_01 = {
    # pure Python, no numpy: a correct solution written differently
    "latency_summary": '''
def latency_summary(latencies):
    xs = sorted(float(v) for v in latencies if v == v)
    if not xs:
        raise ValueError("nothing to summarize")
    def at(p):
        h = (len(xs) - 1) * p / 100
        i = int(h)
        j = min(i + 1, len(xs) - 1)
        return xs[i] + (h - i) * (xs[j] - xs[i])
    return {"mean": sum(xs) / len(xs), "p50": at(50), "p95": at(95), "p99": at(99)}
''',
    "slo_report": '''
def slo_report(ttft, tpot, ttft_slo, tpot_slo, duration):
    if len(ttft) != len(tpot) or len(ttft) == 0 or duration <= 0:
        raise ValueError("bad input")
    good = 0
    for first, gap in zip(ttft, tpot):
        if first <= ttft_slo and not gap > tpot_slo:
            good += 1
    return good / len(ttft), good / duration
''',
    # borrowing the package's implementation earns nothing
    "histogram_quantile": '''
import scalesim_course.metrics as m

def histogram_quantile(q, bucket_upper_bounds, cumulative_counts):
    pairs = sorted(zip(bucket_upper_bounds, cumulative_counts))
    return m.histogram_quantile(q, [b for b, _ in pairs], [c for _, c in pairs])
''',
}


@pytest.mark.skipif("01_serving_fundamentals" not in ASSIGNMENTS, reason="no notebook 01")
def test_01_hidden_tests_accept_other_correct_code_and_refuse_borrowed_code(tmp_path):
    nb = nbformat.read(str(release_notebook("01_serving_fundamentals", REPO)), as_version=4)
    for cell in nb.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id in ALTERNATIVES_01:
            cell.source = ALTERNATIVES_01[grade_id].strip()
    path = tmp_path / "01_serving_fundamentals.ipynb"
    nbformat.write(nb, str(path))
    report = grade(path, course_root_dir=REPO)
    scores = {e.grade_id: (e.earned, e.possible, e.message) for e in report.exercises}
    assert scores["latency_summary_tests"][0] == scores["latency_summary_tests"][1]
    assert scores["slo_report_tests"][0] == scores["slo_report_tests"][1]
    earned, _, message = scores["histogram_quantile_tests"]
    assert earned == 0 and message.startswith("OwnWorkError: histogram_quantile uses the package's")


WRONG_01 = {
    # plausible mistakes the hidden tests must catch: each would pass a careless eye
    "latency_summary": '''
def latency_summary(latencies):
    xs = np.asarray(latencies, dtype=float)          # forgets to drop nan (unfinished)
    if xs.size == 0:
        raise ValueError("empty")
    p50, p95, p99 = np.percentile(xs, [50, 95, 99])
    return {"mean": float(xs.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99)}
''',
    "slo_report": '''
def slo_report(ttft, tpot, ttft_slo, tpot_slo, duration):
    ttft, tpot = np.asarray(ttft, dtype=float), np.asarray(tpot, dtype=float)
    if ttft.size == 0 or ttft.shape != tpot.shape or duration <= 0:
        raise ValueError("bad input")
    ok = (ttft <= ttft_slo) & (tpot <= tpot_slo)     # a one-token answer (nan TPOT) misses
    return float(ok.mean()), float(ok.sum() / duration)
''',
    "histogram_quantile": '''
def histogram_quantile(q, bucket_upper_bounds, cumulative_counts):
    if not 0 <= q <= 1:
        raise ValueError("q")
    le, counts = list(bucket_upper_bounds), list(cumulative_counts)
    rank = q * counts[-1]
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(le) - 1:
        return le[-1]                                 # +Inf, not the second-highest bound
    start, below = (le[b - 1], counts[b - 1]) if b else (0.0, 0.0)
    return start + (le[b] - start) * (rank - below) / (counts[b] - below)
''',
}


@pytest.mark.skipif("01_serving_fundamentals" not in ASSIGNMENTS, reason="no notebook 01")
def test_01_hidden_tests_refuse_plausible_wrong_answers(tmp_path):
    nb = nbformat.read(str(release_notebook("01_serving_fundamentals", REPO)), as_version=4)
    for cell in nb.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id in WRONG_01:
            cell.source = WRONG_01[grade_id].strip()
    path = tmp_path / "01_serving_fundamentals.ipynb"
    nbformat.write(nb, str(path))
    report = grade(path, course_root_dir=REPO)
    earned = {e.grade_id: e.earned for e in report.exercises}
    assert earned == {"latency_summary_tests": 0, "slo_report_tests": 0,
                      "histogram_quantile_tests": 0}
