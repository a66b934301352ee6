"""Self-grading with real nbgrader and real kernels on a tiny course, and the tests' helpers."""
from __future__ import annotations

import functools
import importlib
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pytest
from conftest import HIDDEN_SENTINEL, TINY

from scalesim_course import metrics
from scalesim_course.cli import main
from scalesim_course.grading import (
    ExerciseResult,
    GradeReport,
    GradingError,
    OwnWorkError,
    assert_own_work,
    assert_raises,
    grade,
    silenced,
)

LOOP = "def add(a, b):\n    while True:\n        pass"
MEAN = ("def mean(xs):\n    if not xs:\n        raise ValueError('empty')\n"
        "    return sum(xs) / len(xs)")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- grading runs
def test_solution_earns_full_marks_as_json(tiny_course, capsys):
    solution = tiny_course / "solutions" / TINY / f"{TINY}.ipynb"
    code, out, _ = run_cli(capsys, "grade", str(solution), "--json",
                           "--course-root", str(tiny_course))
    assert code == 0
    assert json.loads(out) == {"exercises": {"add_tests": [2.0, 2.0], "mean_tests": [3.0, 3.0]},
                               "total": [5.0, 5.0]}


def test_untouched_release_scores_zero_and_stays_untouched(tiny_course, submit):
    path = submit()
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    report = grade(path, course_root_dir=tiny_course)
    assert [(e.grade_id, e.earned, e.possible) for e in report.exercises] == [
        ("add_tests", 0, 2), ("mean_tests", 0, 3)]
    assert all(e.message.startswith("not answered yet") for e in report.exercises)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert report.notes == []


def test_failures_show_visible_messages_never_hidden_tests(tiny_course, submit, capsys, tmp_path):
    # add fails a visible test; mean passes the visible ones and fails a hidden one.
    path = submit(f"{TINY}-Copy1.ipynb", add="def add(a, b):\n    return a - b",
                  mean="def mean(xs):\n    return sum(xs) / len(xs)")
    html = tmp_path / "feedback.html"
    code, out, _ = run_cli(capsys, "grade", str(path), "--html", str(html),
                           "--course-root", str(tiny_course))
    assert code == 0
    assert re.search(r"add_tests +0 / 2  failed: AssertionError: add\(1, 2\) should be 3\n", out)
    assert re.search(r"mean_tests +0 / 3  failed: a hidden test failed \(AssertionError\)\n", out)
    assert re.search(r"total +0 / 5\n", out)
    page = html.read_text()
    assert "add(1, 2) should be 3" in page
    for secret in (HIDDEN_SENTINEL, "BEGIN HIDDEN TESTS", "assert add(-1, 1)"):
        assert secret not in out and secret not in page


def test_endless_loop_is_cut_and_the_rest_is_graded(tiny_course, submit):
    start = time.monotonic()
    report = grade(submit(add=LOOP, mean=MEAN), course_root_dir=tiny_course, timeout=2)
    assert time.monotonic() - start < 60
    add, mean = report.exercises
    assert (add.earned, mean.earned) == (0, 3)
    assert "time limit" in add.message


def test_self_grading_times_cells_from_the_solution_and_names_the_stuck_exercise(
        tiny_course, submit, monkeypatch, capsys):
    """Issue 8: an endless loop cost 254 s; the limit now comes from the solution's own times."""
    from scalesim_course import grading
    from scalesim_course.release import measure_cell_times

    times = measure_cell_times(TINY, tiny_course)            # grades the solution once
    cells = json.loads(times.read_text())["cells"]
    assert {"add_tests", "mean_tests"} <= set(cells) and all(v >= 0 for v in cells.values())
    limits, other = grading.cell_timeouts(tiny_course, TINY)
    assert limits["add_tests"] == max(grading.MIN_TIMEOUT, 10 * cells["add_tests"])
    monkeypatch.setattr(grading, "MIN_TIMEOUT", 3.0)   # keep the test short
    start = time.monotonic()
    report = grading.grade(submit(add=LOOP, mean=MEAN), course_root_dir=tiny_course)
    took = time.monotonic() - start
    assert took < 40, f"grading with an endless loop took {took:.0f} s"
    add, mean = report.exercises
    assert (add.earned, mean.earned) == (0, 3)
    assert any("time limit" in note for note in report.notes + [add.message])
    out = capsys.readouterr().out
    assert re.search(r"graded in \d+\.\d s \(\d+\.\d s running the notebook's cells\)", out)
    assert "saved at" in out


def test_exception_scores_zero_for_its_exercise_only(tiny_course, submit):
    report = grade(submit(add="1 / 0\ndef add(a, b):\n    return a + b",
                          mean="def mean(xs):\n    raise RuntimeError('boom')"),
                   course_root_dir=tiny_course)
    add, mean = report.exercises
    assert (add.earned, mean.earned) == (0, 0)
    assert add.message == "NameError: name 'add' is not defined"
    assert mean.message == "RuntimeError: boom"
    assert report.errors == ["your answer add: ZeroDivisionError: division by zero"]


def test_edited_test_cell_is_noted_and_the_original_tests_run(tiny_course, submit):
    edited = submit(add="def add(a, b):\n    return 0", add_tests="pass  # no tests, no fail")
    report = grade(edited, course_root_dir=tiny_course)
    assert report.exercises[0].earned == 0
    assert report.notes == ["add_tests: this cell is read-only and was edited; "
                            "the original was graded instead"]


def test_deleted_cells_are_reported_and_put_back(tiny_course, submit):
    report = grade(submit(add="def add(a, b):\n    return a + b", add_tests=None, mean=None),
                   course_root_dir=tiny_course)
    scores = [(e.grade_id, e.earned) for e in report.exercises]
    assert scores == [("add_tests", 2), ("mean_tests", 0)]
    assert report.notes == [
        "add_tests: this cell was deleted; it was put back as released",
        "mean: this cell was deleted; it was put back as released"]


def test_a_killed_kernel_is_a_one_line_error(tiny_course, submit, capsys):
    path = submit(add="import os\nos._exit(1)")
    code, out, err = run_cli(capsys, "grade", str(path), "--course-root", str(tiny_course))
    assert code == 2 and out == ""
    assert err == ("scalesim-course grade: nbgrader autograde failed: the kernel died while "
                   "running the notebook (did it call exit(), or run out of memory?)\n")
    assert "NBGRADER_EXECUTION" not in os.environ  # nbgrader leaves it set; later grades would skip


AS_NBGRADER = ("import os\n"
               "assert os.environ.get('NBGRADER_EXECUTION') == 'autograde', 'environment'\n"
               "assert os.getcwd().endswith(os.path.join('autograded', 'learner', '00_tiny')), "
               "os.getcwd()\n"
               "assert get_ipython().execution_count == 3, get_ipython().execution_count\n"
               "def add(a, b):\n    return a + b")


@pytest.fixture
def started(monkeypatch):
    """The kernel managers started during the test (AsyncKernelManager.start_kernel counted)."""
    from jupyter_client.manager import AsyncKernelManager

    managers = []
    start = AsyncKernelManager.start_kernel

    async def counted(self, **kwargs):
        managers.append(self)
        return await start(self, **kwargs)

    monkeypatch.setattr(AsyncKernelManager, "start_kernel", counted)
    return managers


def test_the_kernel_started_early_runs_the_notebook_as_nbgrader_would(tiny_course, submit,
                                                                       started):
    from scalesim_course import grading

    report = grade(submit(add=AS_NBGRADER), course_root_dir=tiny_course)
    # The answer cell checks its environment, folder and execution count: 3, as in the kernel
    # nbgrader starts itself (seen with the early start switched off): the move to the graded
    # copy's folder runs silently.
    assert [(e.grade_id, e.earned) for e in report.exercises] == [("add_tests", 2),
                                                                   ("mean_tests", 0)], report
    assert len(started) == 1, "one kernel per grading: the early one, not a second"
    assert not started[0].has_kernel and grading._EARLY == {}  # stopped, none left behind


def test_an_early_kernel_is_stopped_when_grading_fails(tiny_course, tmp_path, started):
    from scalesim_course import grading

    stray = tmp_path / "homework.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(stray))
    with pytest.raises(GradingError, match="can't tell which assignment"):
        grade(stray, course_root_dir=tiny_course)
    assert len(started) == 1 and not started[0].has_kernel and grading._EARLY == {}


def test_the_generated_assignment_is_kept_on_disk_until_its_source_changes(
        tiny_course, submit, tmp_path, monkeypatch):
    from nbgrader.converters import GenerateAssignment

    from scalesim_course import grading

    cache = tmp_path / "cache"
    monkeypatch.setenv("SCALESIM_COURSE_CACHE", str(cache))
    monkeypatch.setattr(grading, "_GENERATED", {})  # as in a new kernel
    runs = []
    start = GenerateAssignment.start

    def counted(self):
        runs.append(1)
        return start(self)

    monkeypatch.setattr(GenerateAssignment, "start", counted)
    path = submit(add="def add(a, b):\n    return a + b")
    scores = [(e.grade_id, e.earned) for e in grade(path, course_root_dir=tiny_course).exercises]
    assert runs == [1] and [p.name[:18] for p in cache.iterdir()] == ["generated-00_tiny-"]
    monkeypatch.setattr(grading, "_GENERATED", {})  # a new kernel: the disk copy serves
    assert [(e.grade_id, e.earned) for e in grade(path, course_root_dir=tiny_course)
            .exercises] == scores == [("add_tests", 2), ("mean_tests", 0)]
    assert runs == [1]
    solution = tiny_course / "solutions" / TINY / f"{TINY}.ipynb"
    nb = nbformat.read(str(solution), as_version=4)
    nb.cells[-1].source = nb.cells[-1].source.replace("assert_raises(ValueError, mean, [])",
                                                      "assert mean([4]) == 4")
    nbformat.write(nb, str(solution))
    monkeypatch.setattr(grading, "_GENERATED", {})
    grade(path, course_root_dir=tiny_course)
    assert runs == [1, 1] and len(list(cache.iterdir())) == 2  # new source: generated again


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    from scalesim_course.grading import cache_folder

    monkeypatch.setenv("SCALESIM_COURSE_CACHE", str(tmp_path))
    assert cache_folder() == tmp_path
    monkeypatch.setenv("SCALESIM_COURSE_CACHE", "")
    assert cache_folder() is None  # off
    monkeypatch.delenv("SCALESIM_COURSE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == tmp_path / "xdg" / "scalesim-course"


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("content, reason", [
    ("this is not json", "is not a valid Jupyter notebook"),
    ('{"cells": 3}', "is not a valid Jupyter notebook"),
])
def test_not_a_notebook_is_a_one_line_error(tiny_course, tmp_path, capsys, content, reason):
    bad = tmp_path / f"{TINY}.ipynb"
    bad.write_text(content)
    code, out, err = run_cli(capsys, "grade", str(bad), "--course-root", str(tiny_course))
    assert code == 2 and out == ""
    assert reason in err and len(err.strip().splitlines()) == 1


def test_missing_file_and_unknown_assignment_are_clear(tiny_course, tmp_path, submit):
    with pytest.raises(GradingError, match="no such file"):
        grade(tmp_path / "nope.ipynb", course_root_dir=tiny_course)
    stray = tmp_path / "homework.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(stray))
    with pytest.raises(GradingError, match="can't tell which assignment homework.ipynb is"):
        grade(stray, course_root_dir=tiny_course)
    with pytest.raises(GradingError, match="no assignment 'nope'.*have: 00_tiny"):
        grade(submit(), assignment="nope", course_root_dir=tiny_course)


def test_course_without_solutions_is_a_clear_error(tmp_path, submit):
    with pytest.raises(GradingError, match="no solutions/ folder in .*pip install -e"):
        grade(submit(), course_root_dir=tmp_path / "empty")


def test_bad_timeout_is_refused(tiny_course, capsys, submit):
    code, _, err = run_cli(capsys, "grade", str(submit()), "--timeout", "0")
    assert code == 2 and "timeout must be > 0 seconds, got 0" in err


def test_grading_inside_nbgrader_is_skipped(monkeypatch, submit):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    report = grade(submit())
    assert report.skipped and report.exercises == []
    assert "skipped" in repr(report) and "skipped" in report._repr_html_()


def test_report_prints_as_a_table_and_html():
    report = GradeReport(Path("x.ipynb"), "01_x", [
        ExerciseResult("a_tests", 2.0, 2.0), ExerciseResult("b_tests", 0.0, 3.0, "boom")],
        notes=["a note"])
    text = repr(report)
    assert re.search(r"a_tests +2 / 2  passed\n", text)
    assert re.search(r"b_tests +0 / 3  failed: boom", text)
    assert re.search(r"total +2 / 5\n", text) and "- a note" in text
    assert "<table>" in report._repr_html_() and "failed: boom" in report._repr_html_()
    assert report.to_json() == {"exercises": {"a_tests": [2.0, 2.0], "b_tests": [0.0, 3.0]},
                                "total": [2.0, 5.0]}


# ----------------------------------------------------------------------------- test helpers
def test_silenced_sends_warnings_and_stderr_to_stdout(capsys):
    with silenced():
        warnings.warn("careful", RuntimeWarning, stacklevel=1)
        print("to stderr", file=sys.stderr)
    out, err = capsys.readouterr()
    assert err == "" and "RuntimeWarning: careful" in out and "to stderr" in out


def test_assert_raises_explains_what_happened():
    assert isinstance(assert_raises(ValueError, int, "x"), ValueError)
    with pytest.raises(AssertionError, match=r"int\('1'\) should raise ValueError, but returned 1"):
        assert_raises(ValueError, int, "1")
    with pytest.raises(AssertionError, match="should raise ValueError, not TypeError"):
        assert_raises(ValueError, int, None)


# ----------------------------------------------------------------------------- assert_own_work
REF = metrics.latency_summary
_alias = metrics.latency_summary


def own_numpy(latencies):
    x = np.asarray(latencies, dtype=float)
    x = x[~np.isnan(x)]
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {"mean": x.mean(), "p50": p50, "p95": p95, "p99": p99}


def own_by_hand(latencies):
    xs = sorted(v for v in latencies if v == v)

    def pct(p):
        h = (len(xs) - 1) * p / 100
        lo = int(h)
        return xs[lo] + (h - lo) * (xs[min(lo + 1, len(xs) - 1)] - xs[lo])
    return {"mean": sum(xs) / len(xs), "p50": pct(50), "p95": pct(95), "p99": pct(99)}


def latency_summary(latencies, depth=0):  # recursive, and named like the reference
    return own_by_hand(latencies) if depth else latency_summary(latencies, depth + 1)


def via_module(latencies):
    return metrics.latency_summary(latencies)


def via_alias(latencies):
    return _alias(latencies)


def via_local_import(latencies):
    from scalesim_course.metrics import latency_summary as ls
    return ls(latencies)


def via_strings(latencies):
    module = importlib.import_module("scalesim_course.metrics")
    return getattr(module, "latency_summary")(latencies)  # noqa: B009 - names as strings


def via_helper(latencies):
    return via_module(latencies)


def via_hidden_name(latencies):
    module = sys.modules["".join(["scalesim", "_course", ".metrics"])]
    return getattr(module, "".join(["latency_", "sum", "mary"]))(latencies)


@functools.wraps(REF)
def via_wraps(latencies):
    return own_numpy(latencies)


class Forwarder:
    def __call__(self, latencies):
        return metrics.latency_summary(latencies)


@pytest.mark.parametrize("borrowed", [
    REF, via_wraps, functools.partial(REF), lambda xs: metrics.latency_summary(xs), via_module,
    via_alias, via_local_import, via_strings, via_helper, Forwarder(),
    type(REF)(REF.__code__, REF.__globals__),
], ids=lambda f: getattr(f, "__name__", type(f).__name__))
def test_assert_own_work_rejects_the_package_and_thin_wrappers(borrowed):
    with pytest.raises(OwnWorkError, match=r"uses the package's code \(.*scalesim_course\.metrics"):
        assert_own_work(borrowed, REF)


def test_assert_own_work_catches_disguised_calls_when_run():
    assert_own_work(via_hidden_name, REF)  # nothing to see in the code...
    before = sys.getprofile()
    with pytest.raises(OwnWorkError, match="runs scalesim_course.metrics.latency_summary when called"):
        assert_own_work(via_hidden_name, REF, example=([0.2, 0.1],))  # ...but it runs it
    assert sys.getprofile() is before


@pytest.mark.parametrize("own", [own_numpy, own_by_hand, latency_summary])
def test_assert_own_work_accepts_any_own_implementation(own):
    assert_own_work(own, REF, example=([0.3, 0.1, 0.2],))
    assert own([0.3, 0.1, 0.2])["p95"] == pytest.approx(REF([0.3, 0.1, 0.2])["p95"])


def test_assert_own_work_checks_every_reference_of_a_tuple():
    def own(ttft, tpot, ttft_slo, tpot_slo, duration):
        met = (np.asarray(ttft) <= ttft_slo) & (np.asarray(tpot) <= tpot_slo)
        return met.mean(), met.sum() / duration

    def half_own(ttft, tpot, ttft_slo, tpot_slo, duration):
        rate = metrics.goodput(ttft, tpot, ttft_slo=ttft_slo, tpot_slo=tpot_slo, duration=duration)
        return rate * duration / len(ttft), rate

    refs = (metrics.slo_attainment, metrics.goodput)
    assert_own_work(own, refs, example=([0.1], [0.01], 0.5, 0.05, 1.0))
    with pytest.raises(OwnWorkError, match="metrics.goodput"):
        assert_own_work(half_own, refs)


def test_assert_own_work_names_a_bad_argument():
    with pytest.raises(TypeError, match="learner_fn must be callable, got NoneType"):
        assert_own_work(None, REF)
    with pytest.raises(TypeError, match="reference_fn must be callable, got str"):
        assert_own_work(own_numpy, "latency_summary")
