"""Score learners' answers against one exercise's own test cell, in this process.

A full nbgrader grade costs seconds per notebook, so grading many plausible answers that way
costs minutes. Instead, `ExerciseNotebook` reads a solution notebook once and, for each answer,
runs the setup cell, the answer in place of the solution cell, and that exercise's locked test
cell (visible and hidden tests), exactly as nbgrader would score it: the cell earns its points
only if it raises nothing and writes nothing to stderr. One full nbgrader grade per notebook
(tests/test_notebooks.py) proves the wiring; this proves the tests tell right from wrong.

Convention this relies on (docs/notebook-conventions.md): a test cell needs only the setup cell
and the solution cell just above it (answers of earlier exercises are run first, from the
reference solution, in case a later exercise builds on an earlier one).
"""
from __future__ import annotations

import contextlib
import io
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Outcome:
    """How one answer fared on its exercise's test cell."""

    passed: bool
    error: str = ""   # the exception (type: message) or "wrote to stderr: ..."
    hidden: bool = False  # the failure happened in the hidden tests


class ExerciseNotebook:
    """The exercises of one solution notebook, ready to score answers.

    Args:
        assignment: e.g. "02_batching" (solutions/<assignment>/<assignment>.ipynb).
    """

    def __init__(self, assignment: str, root: Path = REPO):
        path = root / "solutions" / assignment / f"{assignment}.ipynb"
        nb = nbformat.read(str(path), as_version=4)
        self.assignment = assignment
        self.setup = ""
        self.solutions: dict[str, str] = {}   # solution grade_id -> reference source
        self.tests: dict[str, str] = {}       # solution grade_id -> its test cell's source
        self.order: list[str] = []
        last_solution = None
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            gid = meta.get("grade_id")
            if cell.cell_type != "code" or not gid:
                continue
            if gid == "setup":
                self.setup = cell.source
            elif meta.get("solution"):
                self.solutions[gid] = cell.source
                self.order.append(gid)
                last_solution = gid
            elif meta.get("grade") and last_solution is not None:
                self.tests[last_solution] = cell.source
        if not self.setup or not self.tests:
            raise ValueError(f"{path}: no setup cell or no exercise test cells")

    def score(self, exercise: str, answer: str) -> Outcome:
        """Run the setup, earlier reference solutions, `answer`, then the exercise's test cell.

        Args:
            exercise: the solution cell's grade_id (the function's name).
            answer: Python source standing in for the learner's solution cell.
        """
        if exercise not in self.tests:
            raise KeyError(f"{self.assignment} has no exercise {exercise!r}; "
                           f"have {sorted(self.tests)}")
        ns: dict = {"__name__": "__main__"}
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), warnings.catch_warnings():
                warnings.simplefilter("default")
                exec(compile(self.setup, f"<{self.assignment}:setup>", "exec"), ns)
                for gid in self.order[: self.order.index(exercise)]:
                    exec(compile(self.solutions[gid], f"<reference {gid}>", "exec"), ns)
                exec(compile(answer, f"<answer {exercise}>", "exec"), ns)
                exec(compile(self.tests[exercise], f"<tests of {exercise}>", "exec"), ns)
        except BaseException as e:  # noqa: BLE001 - any failure loses the cell's points
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            last = traceback.format_exception_only(type(e), e)[-1].strip()
            name = type(e).__name__
            last = name + last[last.index(":"):] if ":" in last else name  # no module prefix
            return Outcome(False, last, self._in_hidden(exercise, e))
        if err.getvalue():
            return Outcome(False, "wrote to stderr: " + err.getvalue().strip()[:200])
        return Outcome(True)

    def _in_hidden(self, exercise: str, error: BaseException) -> bool:
        """Whether `error` was raised from a line of the test cell's hidden tests."""
        source = self.tests[exercise]
        lines = source.split("\n")
        begin = next((n for n, line in enumerate(lines, 1) if "BEGIN HIDDEN TESTS" in line), None)
        if begin is None:
            return False
        end = next((n for n, line in enumerate(lines, 1) if "END HIDDEN TESTS" in line),
                   len(lines))
        at = [f.lineno for f in traceback.extract_tb(error.__traceback__)
              if f.filename == f"<tests of {exercise}>"]
        return bool(at) and begin <= at[-1] <= end

    def reference(self, exercise: str) -> str:
        """The instructor's solution source of `exercise`."""
        return self.solutions[exercise]


def stub() -> str:
    """What an untouched learner cell holds (nbgrader's code stub)."""
    return "raise NotImplementedError()"


def explains(outcome: Outcome) -> bool:
    """Whether a failed answer's error teaches: in the hidden tests, the docstring promise
    broken (`promise`) or the own-work rule; in the visible tests, anything but a bare
    AssertionError (a visible test's message, or the learner's own error on a visible input)."""
    if outcome.hidden:
        return outcome.error.startswith(("BrokenPromise: ", "OwnWorkError: "))
    return outcome.error.strip() not in ("", "AssertionError")


def assert_fair(nb: ExerciseNotebook, exercise: str, wrong: dict[str, str],
                right: dict[str, str], *, explained: bool = False) -> None:
    """Every wrong answer loses the exercise's points; every right one (and the reference) earns
    them. Raises AssertionError listing every answer scored the wrong way.

    Args:
        explained: also require every wrong answer's failure to say why (`explains`): a
            visible test's message or a hidden test's docstring promise.
    """
    problems = []
    ref = nb.score(exercise, nb.reference(exercise))
    if not ref.passed:
        problems.append(f"the reference solution fails: {ref.error}")
    for label, source in wrong.items():
        out = nb.score(exercise, source)
        if out.passed:
            problems.append(f"wrong answer {label!r} earns full marks")
        elif explained and not explains(out):
            problems.append(f"wrong answer {label!r} fails without saying why: {out.error!r}")
    for label, source in right.items():
        out = nb.score(exercise, source)
        if not out.passed:
            problems.append(f"right answer {label!r} loses points: {out.error}")
    assert not problems, f"{nb.assignment}/{exercise}:\n" + "\n".join(problems)


if __name__ == "__main__":  # python tests/notebooks/answers.py 02_batching form_dynamic_batches
    book = ExerciseNotebook(sys.argv[1])
    print(book.score(sys.argv[2], book.reference(sys.argv[2])))


def assert_caught_visibly(nb: ExerciseNotebook, exercise: str, wrong: dict[str, str],
                          labels) -> None:
    """The common mistakes `labels` (keys of `wrong`) fail in the visible tests already, where
    the learner reads what was expected before grading."""
    problems = []
    for label in labels:
        out = nb.score(exercise, wrong[label])
        if out.passed or out.hidden:
            problems.append(f"{label!r} is not caught by the visible tests ({out.error or 'passes'})")
    assert not problems, f"{nb.assignment}/{exercise}:\n" + "\n".join(problems)
