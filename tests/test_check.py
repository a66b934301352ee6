"""The learner's side of grading: own-work rule, promises, cells that need an answer."""
from __future__ import annotations

import numpy as np
import pytest

from scalesim_course import metrics
from scalesim_course._nbgrader import ScrubHiddenTests, describe_error
from scalesim_course.check import (
    BrokenPromise,
    OwnWorkError,
    assert_own_work,
    promise,
    uses_exercise,
)


# ----------------------------------------------------------------------------- own work
def slo_via_private_helper(ttft, tpot, ttft_slo, tpot_slo, duration):
    met = metrics._meets_slo(ttft, tpot, ttft_slo, tpot_slo)
    return float(met.mean()), float(met.sum() / duration)


def summary_via_percentile(latencies):
    x = metrics._finite(latencies)
    return {"mean": float(x.mean()), **{f"p{q}": metrics.percentile(x, q) for q in (50, 95, 99)}}


def own_slo(ttft, tpot, ttft_slo, tpot_slo, duration):
    ttft, tpot = np.asarray(ttft, float), np.asarray(tpot, float)
    met = (ttft <= ttft_slo) & ((tpot <= tpot_slo) | np.isnan(tpot))
    return float(met.mean()), float(met.sum() / duration)


def test_private_helpers_of_the_package_are_refused_too():
    """Issue 8: metrics._meets_slo passed slo_report, percentile + _finite latency_summary."""
    with pytest.raises(OwnWorkError, match=r"scalesim_course\.metrics\._meets_slo"):
        assert_own_work(slo_via_private_helper, (metrics.slo_attainment, metrics.goodput))
    with pytest.raises(OwnWorkError, match=r"scalesim_course\.metrics\._finite"):
        assert_own_work(summary_via_percentile, metrics.latency_summary)


def test_without_a_reference_the_rule_still_holds():
    with pytest.raises(OwnWorkError, match="_meets_slo"):
        assert_own_work(slo_via_private_helper)
    assert_own_work(own_slo, example=([0.1], [0.01], 0.5, 0.05, 1.0))


def test_package_code_run_when_called_is_caught():
    hidden = {}

    def sneaky(latencies):
        return hidden["f"](latencies)   # nothing of the package in the code itself

    hidden["f"] = lambda xs: metrics.latency_summary(xs)
    assert_own_work(sneaky)
    with pytest.raises(OwnWorkError, match="when called"):
        assert_own_work(sneaky, example=([0.1, 0.2],))


def test_package_classes_are_data_and_allowed_ones_may_run_their_code():
    from scalesim_course.costmodel import DeterministicService as Deterministic
    from scalesim_course.sim import BatchDecision

    def decide(n):
        return BatchDecision(take=n)

    assert_own_work(decide, example=(1,))   # a plain record: nothing of the package runs

    def configure(n):
        return Deterministic(n)               # its __init__ checks the argument

    with pytest.raises(OwnWorkError, match="when called"):
        assert_own_work(configure, example=(4.0,))
    assert_own_work(configure, allowed=(Deterministic,), example=(4.0,))


# ----------------------------------------------------------------------------- promises
def test_a_broken_promise_names_the_promise_only():
    with pytest.raises(BrokenPromise) as info, promise("nan TPOT: a one-token answer meets it"):
        assert 0.5 == 1.0, "values 0.5 and 1.0"
    assert str(info.value) == "nan TPOT: a one-token answer meets it"
    with pytest.raises(BrokenPromise) as info, promise("empty input raises ValueError"):
        {}["missing"]
    assert str(info.value) == "empty input raises ValueError (your function raised KeyError)"
    with pytest.raises(OwnWorkError), promise("anything"):
        raise OwnWorkError("borrowed")
    with promise("kept"):
        pass
    with pytest.raises(ValueError, match="the text of the promise"):
        with promise(""):
            pass


def test_describe_error_shows_a_hidden_promise_but_no_other_hidden_detail():
    hidden = [(3, 9)]
    tb = ["\x1b[0;31mCell In[4], line 5\x1b[0m"]
    promise_out = {"ename": "BrokenPromise", "evalue": "ties: a rank on a count ends there",
                   "traceback": tb}
    plain = {"ename": "AssertionError", "evalue": "f([1, 2]) should be 3", "traceback": tb}
    visible = {"ename": "AssertionError", "evalue": "p50 should be 0.2125",
               "traceback": ["Cell In[4], line 2"]}
    assert describe_error(promise_out, hidden) == "hidden test: ties: a rank on a count ends there"
    assert describe_error(plain, hidden) == "a hidden test failed (AssertionError)"
    assert describe_error(visible, hidden) == "AssertionError: p50 should be 0.2125"
    assert describe_error({"ename": "AssertionError", "evalue": "",
                           "traceback": ["Cell In[4], line 2"]}, hidden) == "AssertionError"


def test_feedback_drops_what_a_test_cell_printed():
    import nbformat

    cell = nbformat.v4.new_code_cell(
        "with silenced():\n    assert f(1) == 1\n    ### BEGIN HIDDEN TESTS\n"
        "    assert f(123456) == 7\n    ### END HIDDEN TESTS")
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "f_tests", "locked": True,
                                 "points": 1, "solution": False}
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="f got 123456\n"),
                    nbformat.v4.new_output("error", ename="AssertionError", evalue="",
                                           traceback=["Cell In[3], line 4"])]
    out, _ = ScrubHiddenTests().preprocess_cell(cell, {}, 0)
    assert "123456" not in str(out)
    assert [o["output_type"] for o in out.outputs] == ["error"]


# ----------------------------------------------------------------------------- run all
def test_a_cell_using_an_unanswered_exercise_says_so_and_does_not_fail(capsys):
    def latency_summary(xs):
        raise NotImplementedError()

    with uses_exercise(latency_summary, exercise="Exercise 1"):
        latency_summary([1.0])
        raise AssertionError("not reached")
    out = capsys.readouterr().out
    assert out.startswith("Skipped: this cell needs latency_summary from Exercise 1")
    with pytest.raises(ZeroDivisionError), uses_exercise(latency_summary):
        1 / 0
