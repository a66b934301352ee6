"""`scalesim-course bench` runs both engines on the same model (scalesim_course.bench)."""
from scalesim_course import bench
from scalesim_course.cli import main


def test_bench_agrees_with_simpy_and_prints_the_ratio(capsys):
    r = bench.run_bench(n=3000, servers=2, rho=0.7, repeats=1)
    assert r["speedup_vs_simpy"] > 0 and r["requests"] == 3000
    assert main(["bench", "-n", "2000", "--repeats", "1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("speedup_vs_simpy: ") and float(last.split(": ")[1]) > 0
