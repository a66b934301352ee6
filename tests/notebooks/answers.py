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
            return Outcome(False, last)
        if err.getvalue():
            return Outcome(False, "wrote to stderr: " + err.getvalue().strip()[:200])
        return Outcome(True)

    def reference(self, exercise: str) -> str:
        """The instructor's solution source of `exercise`."""
        return self.solutions[exercise]


def stub() -> str:
    """What an untouched learner cell holds (nbgrader's code stub)."""
    return "raise NotImplementedError()"


def assert_fair(nb: ExerciseNotebook, exercise: str, wrong: dict[str, str],
                right: dict[str, str]) -> None:
    """Every wrong answer loses the exercise's points; every right one (and the reference) earns
    them. Raises AssertionError listing every answer scored the wrong way."""
    problems = []
    ref = nb.score(exercise, nb.reference(exercise))
    if not ref.passed:
        problems.append(f"the reference solution fails: {ref.error}")
    for label, source in wrong.items():
        if nb.score(exercise, source).passed:
            problems.append(f"wrong answer {label!r} earns full marks")
    for label, source in right.items():
        out = nb.score(exercise, source)
        if not out.passed:
            problems.append(f"right answer {label!r} loses points: {out.error}")
    assert not problems, f"{nb.assignment}/{exercise}:\n" + "\n".join(problems)


if __name__ == "__main__":  # python tests/notebooks/answers.py 02_batching form_dynamic_batches
    book = ExerciseNotebook(sys.argv[1])
    print(book.score(sys.argv[2], book.reference(sys.argv[2])))
