"""`scalesim-course bench` runs both engines on the same model (scalesim_course.bench)."""
import gc
import subprocess
import sys

import pytest

from scalesim_course import bench, sim
from scalesim_course.cli import main
from scalesim_course.workload import poisson_workload

TINY_TRACE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.0000000,100,3
2023-11-16 18:15:56.0000000,50,1
"""


def test_bench_agrees_with_simpy_and_prints_the_ratio(capsys, tmp_path):
    r = bench.run_bench(n=3000, servers=2, rho=0.7, repeats=1)
    assert r["requests"] == 3000 and r["servers"] == 2
    # the ratio is the two rates' quotient (the engines agreed on every latency, or it raised)
    assert r["speedup_vs_simpy"] == pytest.approx(r["scalesim_req_per_s"] / r["simpy_req_per_s"])
    trace = tmp_path / "tiny.csv"
    trace.write_text(TINY_TRACE)
    assert main(["bench", "-n", "2000", "--repeats", "1", "--trace", str(trace)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # request 0: a prefill step and 2 decode steps; request 1 (10 s later): one prefill step
    assert lines[0].startswith("trace replay, Azure conv trace (tiny.csv): 2 requests, 4 engine")
    assert lines[1].startswith("trace_replay_req_per_s: ")
    assert lines[-1].startswith("speedup_vs_simpy: ") and float(lines[-1].split(": ")[1]) > 0


def test_trace_replay_counts_requests_and_steps(tmp_path):
    trace = tmp_path / "tiny.csv"
    trace.write_text(TINY_TRACE)
    t = bench.trace_replay(trace)
    assert (t["requests"], t["steps"], t["completed"]) == (2, 4, 2)
    assert t["steps_per_s"] == 2 * t["req_per_s"]
    synthetic = bench.trace_replay(tmp_path / "absent.csv")
    assert synthetic["source"] == "azure_like synthetic hour" and synthetic["completed"] > 15_000


def test_cli_imports_only_the_chosen_command():
    code = ("import sys; from scalesim_course.cli import build_parser; "
            "build_parser(['bench', '--help-not']).parse_known_args(['bench']); "
            "print('nbgrader' in sys.modules, 'scalesim_course.grading' in sys.modules, "
            "'scalesim_course.bench' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False", "True"]


def test_a_run_leaves_the_garbage_collector_as_it_found_it():
    wl = poisson_workload(0.5, 200, service_rate=1.0, seed=0)
    before = (gc.isenabled(), gc.get_freeze_count())
    sim.simulate(wl)
    sim.simulate(wl, replicas=2)
    assert (gc.isenabled(), gc.get_freeze_count()) == before


def test_a_caller_freeze_is_kept():
    wl = poisson_workload(0.5, 200, service_rate=1.0, seed=0)
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        sim.simulate(wl)
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()
