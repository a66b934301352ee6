"""A class of six learners through nbgrader's real exchange, with the instructor guide's commands.

The commands are read from the `class-flow` blocks of docs/instructor-guide.md and run in order
(in this process, as `nbgrader` would run them, which saves seconds of start-up per command):
an exchange folder made as the guide says, release, six learners fetching and submitting,
the due date, collect, autograde, feedback released and fetched, grades exported to CSV.

The six learners: `full` (every exercise right), `partial` (the first only), `untouched`,
`loop` (an endless loop in the first exercise), `tamper` (deletes the first test cell, edits the
second into `pass` and leaves its exercise unanswered), `late` (submits untouched, then after the
due date everything right, with a first function that prints the running test cell, hidden
tests included, to try to get them into its feedback).

Two shortcuts, both said where they happen: all learners are this one Unix user, so each names
itself with --student; `loop` is autograded first with a short timeout, so the guide's
`autograde` skips it instead of waiting out the course's timeout twice.
"""
from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pytest
from conftest import REPO

from scalesim_course._nbgrader import course_config, marked_regions, nbgrader_meta

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:.*not in session:Warning"),
              pytest.mark.filterwarnings("ignore::nbformat.warnings.MissingIDFieldWarning")]

GUIDE = REPO / "docs" / "instructor-guide.md"
ASSIGNMENT = "01_serving_fundamentals"  # the guide's commands name it
EXCHANGE = "/srv/nbgrader/exchange"
SYSTEM_CONFIG = "/etc/jupyter/nbgrader_config.py"
LOOP_TIMEOUT_S = 12  # the looping learner's autograde, to keep the test short
LEARNERS = ("full", "partial", "untouched", "loop", "tamper", "late")


# ----------------------------------------------------------------------------- the guide
def guide_blocks() -> dict[str, str]:
    """name -> body of each fenced block after a `<!-- class-flow: name -->` line of the guide."""
    text = GUIDE.read_text()
    return {m.group(1): m.group(2) for m in re.finditer(
        r"<!-- class-flow: ([\w-]+) -->\s*```\w*\n(.*?)```", text, re.S)}


def commands(block: str) -> list[str]:
    """The command lines of a bash block, comments dropped."""
    lines = []
    for line in block.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


# ----------------------------------------------------------------------------- running nbgrader
def nbgrader(line: str, cwd: Path, env: dict, extra: tuple = ()) -> tuple[int, str]:
    """Run one `nbgrader ...` command line in this process; return (exit code, its log)."""
    from jupyter_core.application import NoStart
    from nbgrader.apps import NbGraderApp

    argv = shlex.split(line)
    assert argv[0] == "nbgrader", line
    saved_env, saved_cwd, saved_path = os.environ.copy(), os.getcwd(), list(sys.path)
    os.environ.update(env)
    os.chdir(cwd)
    log, out = io.StringIO(), io.StringIO()
    app = NbGraderApp.instance()
    try:
        with contextlib.redirect_stdout(out):
            app.initialize(argv[1:] + list(extra))
            app.init_logging(logging.StreamHandler, [log], color=False, subapps=True)
            app.start()
        code = 0
    except NoStart:
        code = 0
    except SystemExit as err:
        code = err.code or 0
    finally:
        app.reset()
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path
    return code, log.getvalue() + out.getvalue()


def run_line(line: str, cwd: Path, env: dict, extra: tuple = ()) -> str:
    """Run one command line of the guide (paths already substituted); fail naming it."""
    if line.startswith("nbgrader "):
        code, output = nbgrader(line, cwd, env, extra)
    else:
        done = subprocess.run(["bash", "-c", re.sub(r"^sudo ", "", line)], cwd=cwd,
                              capture_output=True, text=True, timeout=60)
        code, output = done.returncode, done.stdout + done.stderr
    assert code == 0, f"the guide's `{line}` failed ({code}):\n{output[-3000:]}"
    return output


# ----------------------------------------------------------------------------- the learners
def solution_sources() -> dict[str, str]:
    """grade_id -> the instructor's answer for each exercise cell, markers dropped."""
    nb = nbformat.read(str(REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"), 4)
    return {nbgrader_meta(c)["grade_id"]: "\n".join(
        line for line in c.source.split("\n") if "BEGIN SOLUTION" not in line
        and "END SOLUTION" not in line) for c in nb.cells if nbgrader_meta(c).get("solution")}


def exercises() -> list[tuple[str, str, float]]:
    """(solution grade_id, test grade_id, points) per exercise, in notebook order."""
    nb = nbformat.read(str(REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"), 4)
    found, last = [], None
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if meta.get("solution"):
            last = meta["grade_id"]
        elif meta.get("grade") and cell.cell_type == "code":
            found.append((last, meta["grade_id"], float(meta["points"])))
    return found


def edit(path: Path, who: str) -> None:
    """Turn a fetched notebook into `who`'s submission."""
    nb = nbformat.read(str(path), 4)
    right, ex = solution_sources(), exercises()
    (first, first_test, _), (second, second_test, _) = ex[0], ex[1]
    answers = {
        "full": set(right), "late": set(right),
        "partial": {first}, "untouched": set(), "loop": set(right) - {first},
        "tamper": set(right) - {second},
    }[who]
    keep = []
    for cell in nb.cells:
        gid = nbgrader_meta(cell).get("grade_id")
        if gid in answers:
            cell.source = right[gid]
        if who == "loop" and gid == first:
            cell.source = cell.source.replace("raise NotImplementedError()",
                                              "while True:\n        pass")
        if who == "late" and gid == first:
            name = re.search(r"^def (\w+)\(", cell.source, re.M).group(1)
            cell.source += (f"\n\n\n_mine = {name}\n\n\ndef {name}(*args, **kwargs):\n"
                            "    print(get_ipython().user_ns['In'][-1])\n"
                            "    return _mine(*args, **kwargs)\n")
        if who == "tamper" and gid == first_test:
            continue  # deleted
        if who == "tamper" and gid == second_test:
            cell.source = "pass"
        keep.append(cell)
    nb.cells = keep
    nbformat.write(nb, str(path))


def expected_scores() -> dict[str, float]:
    ex = exercises()
    total = sum(p for _, _, p in ex)
    return {"full": total, "partial": ex[0][2], "untouched": 0.0, "loop": total - ex[0][2],
            "tamper": total - ex[1][2], "late": total}


def hidden_lines() -> list[str]:
    """Lines of the hidden tests worth looking for in feedback (not also in visible code)."""
    nb = nbformat.read(str(REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"), 4)
    visible, hidden = set(), set()
    for cell in nb.cells:
        lines = cell.source.split("\n")
        regions = marked_regions(cell.source, "hidden")
        for number, line in enumerate(lines, start=1):
            inside = any(a <= number <= b for a, b in regions)
            (hidden if inside else visible).add(line.strip())
    return sorted(line for line in hidden - visible
                  if len(line) >= 12 and "HIDDEN TESTS" not in line)


# ----------------------------------------------------------------------------- the class
@dataclass
class Class:
    root: Path
    exchange: Path
    homes: dict[str, Path]
    logs: dict[str, str] = field(default_factory=dict)
    autograde_seconds: float = 0.0
    loop_seconds: float = 0.0
    feedback: dict[str, str] = field(default_factory=dict)
    csv_rows: list[dict] = field(default_factory=list)
    due: datetime | None = None


def run_class(tmp: Path) -> Class:
    """Run the whole class in `tmp`; the checks below look at what it left."""
    blocks = guide_blocks()
    exchange, config = tmp / "srv" / "exchange", tmp / "etc" / "jupyter" / "nbgrader_config.py"

    def sub(line: str) -> str:
        return line.replace(EXCHANGE, str(exchange)).replace(SYSTEM_CONFIG, str(config))

    course = tmp / "course"  # the instructor's clone
    course.mkdir()
    shutil.copy(REPO / "nbgrader_config.py", course)
    shutil.copytree(REPO / "solutions", course / "solutions",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    homes = {who: tmp / "home" / who for who in LEARNERS}
    for home in homes.values():
        home.mkdir(parents=True)
    env = {"JUPYTER_CONFIG_PATH": str(config.parent), "JUPYTER_CONFIG_DIR": str(tmp / "jupyter"),
           "JUPYTER_DATA_DIR": str(tmp / "jupyter-data"), "SCALESIM_COURSE_ROOT": str(REPO),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}

    def learner(who: str) -> dict:  # each learner has a home, and nbgrader's cache in it
        return {**env, "HOME": str(homes[who]),
                "JUPYTER_DATA_DIR": str(homes[who] / ".local" / "share" / "jupyter")}
    run = Class(course, exchange, homes)

    exchange.parent.mkdir(parents=True)
    for line in commands(blocks["exchange"]):
        run_line(sub(line), tmp, env)
    config.parent.mkdir(parents=True)
    config.write_text(sub(blocks["exchange-config"]))
    for line in commands(blocks["release"]):
        run_line(line, course, env)

    fetch, submit = commands(blocks["learner-submit"])
    for who in LEARNERS:  # on a hub each learner is a Unix user; here they name themselves
        me = (f"--CourseDirectory.student_id={who}",)
        run_line(fetch, homes[who], learner(who), me)
        if who != "late":
            edit(homes[who] / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", who)
        run_line(submit, homes[who], learner(who), me)

    # The deadline falls now; `late` then resubmits, everything right.
    time.sleep(1.0)
    run.due = datetime.now(timezone.utc).replace(microsecond=0)
    (due_line,) = commands(blocks["due-date"])
    due_line = re.sub(r'--duedate="[^"]*"',
                      f'--duedate="{run.due:%Y-%m-%d %H:%M:%S} UTC"', due_line)
    run_line(due_line, course, env)
    time.sleep(1.5)
    edit(homes["late"] / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", "late")
    run_line(submit, homes["late"], learner("late"), ("--CourseDirectory.student_id=late",))

    for line in commands(blocks["grade"]):
        if line.startswith("nbgrader autograde"):
            started = time.monotonic()   # shortcut: the endless loop with a short timeout
            run.logs["autograde loop"] = run_line(
                line, course, env, ("--student=loop", f"--Execute.timeout={LOOP_TIMEOUT_S}"))
            run.loop_seconds = time.monotonic() - started
            started = time.monotonic()
            run.logs["autograde"] = run_line(line, course, env)
            run.autograde_seconds = time.monotonic() - started
        else:
            run.logs[line.split()[1]] = run_line(line, course, env)

    (feedback_line,) = commands(blocks["learner-feedback"])
    for who in LEARNERS:
        run_line(feedback_line, homes[who], learner(who), (f"--CourseDirectory.student_id={who}",))
        pages = sorted((homes[who] / ASSIGNMENT / "feedback").glob(f"*/{ASSIGNMENT}.html"))
        assert len(pages) == 1, f"{who} fetched {len(pages)} feedback pages"
        run.feedback[who] = pages[-1].read_text()
    with open(course / "grades.csv", newline="") as f:
        run.csv_rows = list(csv.DictReader(f))
    return run


def _gradebook(klass: Class):
    from nbgrader.api import Gradebook

    return Gradebook(f"sqlite:///{klass.root / 'gradebook.db'}")


# ----------------------------------------------------------------------------- the checks
def test_the_guide_has_every_step_in_order():
    blocks = guide_blocks()
    assert {"exchange", "exchange-config", "release", "due-date", "learner-submit", "grade",
            "learner-feedback"} <= set(blocks)
    assert commands(blocks["exchange"]) == [f"sudo mkdir -p {EXCHANGE}",
                                            f"sudo chmod 1777 {EXCHANGE}"]
    steps = [line.split()[1] for name in ("release", "due-date", "learner-submit", "grade",
                                          "learner-feedback") for line in commands(blocks[name])]
    assert steps == ["generate_assignment", "release_assignment", "db", "fetch_assignment",
                     "submit", "collect", "autograde", "generate_feedback", "release_feedback",
                     "export", "fetch_feedback"]
    text = GUIDE.read_text()
    assert "learners' images too" in text and "grades.csv" in text
    assert "grades.csv" in (REPO / ".gitignore").read_text().split()


def check_exchange_is_shared_with_the_sticky_bit(klass):
    mode = klass.exchange.stat().st_mode
    assert stat.S_IMODE(mode) == 0o1777, oct(mode)


def check_every_learner_gets_the_right_score(klass):
    expected = expected_scores()
    got = {row["student_id"]: float(row["score"]) for row in klass.csv_rows
           if row["assignment"] == ASSIGNMENT}
    assert got == expected, "grades.csv"
    with _gradebook(klass) as gb:
        for who, points in expected.items():
            sub = gb.find_submission(ASSIGNMENT, who)
            assert sub.score == pytest.approx(points), who


def check_a_looping_submission_stops_nobody(klass):
    log = klass.logs["autograde"]
    assert "loop" in klass.logs["autograde loop"]
    graded = {p.parent.parent.name for p in
              klass.root.glob(f"autograded/*/{ASSIGNMENT}/{ASSIGNMENT}.ipynb")}
    assert graded == set(LEARNERS), log[-2000:]
    assert "the cell ran past the time limit" in html.unescape(klass.feedback["loop"]) or \
        "CellTimeoutError" in klass.feedback["loop"] or "Timeout" in klass.feedback["loop"]


def check_nothing_is_left_for_manual_grading(klass):
    with _gradebook(klass) as gb:
        flagged = [who for who in LEARNERS if gb.find_submission(ASSIGNMENT, who).needs_manual_grade]
    assert flagged == []


def check_a_deleted_test_cell_scores_as_self_grading_does(klass):
    from scalesim_course.grading import grade

    submitted = klass.root / "submitted" / "tamper" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    mine = grade(submitted, assignment=ASSIGNMENT, course_root_dir=REPO)
    with _gradebook(klass) as gb:
        hub = gb.find_submission(ASSIGNMENT, "tamper").score
    assert mine.total[0] == pytest.approx(hub) == pytest.approx(expected_scores()["tamper"])


def check_the_latest_submission_is_graded_and_marked_late(klass):
    with _gradebook(klass) as gb:
        late = gb.find_submission(ASSIGNMENT, "late")
        assert late.score == pytest.approx(expected_scores()["late"])
        assert late.total_seconds_late > 0
        on_time = [who for who in LEARNERS if who != "late"
                   and gb.find_submission(ASSIGNMENT, who).total_seconds_late > 0]
    assert on_time == []
    row = next(r for r in klass.csv_rows if r["student_id"] == "late")
    assert row["timestamp"] > row["duedate"]


def check_feedback_never_shows_hidden_tests(klass):
    hidden = hidden_lines()
    assert hidden, "no hidden tests to look for"
    for who in LEARNERS:
        if who == "late":
            continue  # prints its test cell: next test
        page = html.unescape(klass.feedback[who])
        assert page, f"{who} fetched no feedback"
        shown = [line for line in hidden if line in page]
        assert shown == [], f"{who}'s feedback shows hidden tests"


def check_feedback_hides_hidden_tests_a_learner_prints(klass):
    page = html.unescape(klass.feedback["late"])
    assert page
    assert [line for line in hidden_lines() if line in page] == []


def check_checksum_warnings_only_for_a_real_edit(klass):
    warnings = re.findall(r"Attribute 'checksum' for cell (\S+) has changed",
                          klass.logs["autograde"])
    second_test = exercises()[1][1]
    assert warnings == [second_test], "only tamper's edited test cell should warn"


def check_the_timeout_fits_the_course_and_autograde_time_is_printed(klass):
    timeout = course_config(REPO).Execute.timeout
    nb = nbformat.read(str(klass.root / "autograded" / "full" / ASSIGNMENT /
                           f"{ASSIGNMENT}.ipynb"), 4)
    longest, first, last = 0.0, None, None
    for cell in nb.cells:
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
            longest = max(longest, (end - start).total_seconds())
            first, last = first or start, end
    graded = len(LEARNERS) - 1  # `loop` was graded on its own
    print(f"\n{ASSIGNMENT}: autograde {klass.autograde_seconds / graded:.1f} s per submission "
          f"({graded} in {klass.autograde_seconds:.1f} s; cells of a full submission "
          f"{(last - first).total_seconds() if first else float('nan'):.1f} s, longest cell "
          f"{longest:.1f} s); the endless loop {klass.loop_seconds:.1f} s with a "
          f"{LOOP_TIMEOUT_S} s timeout; a class of 200 ~ "
          f"{200 * klass.autograde_seconds / graded / 60:.0f} min")
    assert first is not None, "no execution timing in the autograded notebook"
    measured = {f"{ASSIGNMENT} (this run)": longest}
    for path in sorted(REPO.glob("solutions/*/cell_times.json")):  # `release --time` writes them
        cells = json.loads(path.read_text()).get("cells", {})
        if cells:
            measured[path.parent.name] = max(float(v) for v in cells.values())
            print(f"{path.parent.name}: its cells take {sum(map(float, cells.values())):.1f} s "
                  f"(cell_times.json); autograde adds a kernel start and nbgrader's own work")
    slow = {name: s for name, s in measured.items() if s * 4 > timeout}
    assert slow == {}, (f"Execute.timeout = {timeout} s is under 4x the longest cell of "
                        f"{slow}: raise it in nbgrader_config.py and the instructor guide")


CHECKS = [check_exchange_is_shared_with_the_sticky_bit, check_every_learner_gets_the_right_score,
          check_a_looping_submission_stops_nobody, check_nothing_is_left_for_manual_grading,
          check_a_deleted_test_cell_scores_as_self_grading_does,
          check_the_latest_submission_is_graded_and_marked_late,
          check_feedback_never_shows_hidden_tests, check_checksum_warnings_only_for_a_real_edit,
          check_the_timeout_fits_the_course_and_autograde_time_is_printed,
          check_feedback_hides_hidden_tests_a_learner_prints]


def test_a_class_of_six_through_the_exchange(tmp_path_factory):
    """One test, so that pytest-xdist never runs the class twice (once per worker)."""
    klass = run_class(tmp_path_factory.mktemp("class"))
    failures = []
    for check in CHECKS:
        try:
            check(klass)
        except AssertionError as err:
            failures.append(f"{check.__name__}: {err}")
    assert not failures, "\n\n".join(failures)
