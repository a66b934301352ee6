"""Shared nbgrader plumbing for `release` and `grading`: the course layout, config, quiet runs.

The course layout (nbgrader's words in brackets):
    solutions/<assignment>/<assignment>.ipynb   the instructor's version [source]
    notebooks/<assignment>/<assignment>.ipynb   the learner's version [release]
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

COURSE_ROOT_ENV = "SCALESIM_COURSE_ROOT"
SOURCE_DIR, RELEASE_DIR = "solutions", "notebooks"
MARKERS = {"solution": ("BEGIN SOLUTION", "END SOLUTION"),
           "hidden": ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")}


class CourseError(Exception):
    """The course folder, an assignment or nbgrader's run can't be used; the message says why."""


# ----------------------------------------------------------------------------- layout
def course_root(root=None) -> Path:
    """The course folder: `root`, else $SCALESIM_COURSE_ROOT, else the repo this package is in.

    Raises:
        CourseError: if that folder has no solutions/ (e.g. a non-editable install).
    """
    if root:
        chosen, how = root, "the course root given"
    elif os.environ.get(COURSE_ROOT_ENV):
        chosen, how = os.environ[COURSE_ROOT_ENV], f"${COURSE_ROOT_ENV}"
    else:
        chosen, how = Path(__file__).resolve().parent.parent, "where scalesim_course is installed"
    path = Path(chosen).expanduser().resolve()
    if not (path / SOURCE_DIR).is_dir():
        raise CourseError(
            f"no {SOURCE_DIR}/ folder in {path} ({how}): install the package editable from the "
            f"course repository (pip install -e .) or set {COURSE_ROOT_ENV} to the repository")
    return path


def assignments(root=None) -> list[str]:
    """Names of the assignments: folders solutions/<name>/ holding <name>.ipynb, sorted."""
    src = course_root(root) / SOURCE_DIR
    return sorted(p.name for p in src.iterdir() if (p / f"{p.name}.ipynb").is_file())


def source_notebook(assignment: str, root=None) -> Path:
    """solutions/<assignment>/<assignment>.ipynb."""
    return course_root(root) / SOURCE_DIR / assignment / f"{assignment}.ipynb"


def release_notebook(assignment: str, root=None) -> Path:
    """notebooks/<assignment>/<assignment>.ipynb."""
    return course_root(root) / RELEASE_DIR / assignment / f"{assignment}.ipynb"


# ----------------------------------------------------------------------------- config and runs
def course_config(root=None):
    """The traitlets Config of nbgrader_config.py in the course folder (empty if there is none)."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    path = course_root(root) / "nbgrader_config.py"
    if not path.is_file():
        return Config()
    return PyFileConfigLoader(path.name, path=str(path.parent)).load_config()


def quiet_logger(name: str) -> tuple[logging.Logger, list[logging.LogRecord]]:
    """A logger that keeps its warnings and errors in a list instead of printing them."""
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    log = logging.getLogger(f"scalesim_course.nbgrader.{name}")
    log.handlers[:] = [_Keep(level=logging.WARNING)]
    log.setLevel(logging.WARNING)
    log.propagate = False
    return log, records


_KNOWN_FAILURES = {  # nbgrader's error -> what it means for the notebook
    "Kernel died": "the kernel died while running the notebook (did it call exit(), or run out "
                   "of memory?)",
    "could not interrupt it": "the kernel stopped responding and could not be interrupted",
}
_BOILERPLATE = ("Traceback", "There was an error processing", "Removing failed", "Please see")


def failure_reason(records: list[logging.LogRecord], fallback: str) -> str:
    """One line on why an nbgrader run failed, from its error log."""
    errors = [r.getMessage().strip() for r in records if r.levelno >= logging.ERROR]
    for error in errors:
        for key, meaning in _KNOWN_FAILURES.items():
            if key in error:
                return meaning
    useful = [e.splitlines()[0] for e in errors if e and not e.startswith(_BOILERPLATE)]
    return useful[0] if useful else fallback


@contextlib.contextmanager
def nbgrader_environment():
    """Run nbgrader quietly, this Python's bin/ first on PATH (the gradebook runs `alembic`)."""
    # nbgrader leaves NBGRADER_EXECUTION set when autograde fails: restore it too.
    saved = {key: os.environ.get(key) for key in ("PATH", "NBGRADER_EXECUTION")}
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), saved["PATH"] or ""])
    cwd = os.getcwd()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sqlalchemy and traitlets chatter
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.chdir(cwd)


def run_converter(converter_class, config, name: str, **attributes) -> list[str]:
    """Run one nbgrader converter (GenerateAssignment, Autograde, ...); return its warnings.

    Raises:
        CourseError: if nbgrader fails, with its error messages.
    """
    from nbgrader.converters.base import NbGraderException
    from nbgrader.coursedir import CourseDirectory

    log, records = quiet_logger(name)
    converter = converter_class(coursedir=CourseDirectory(config=config, log=log),
                                config=config, log=log)
    for key, value in attributes.items():
        setattr(converter, key, value)
    with nbgrader_environment():
        try:
            converter.start()
        except NbGraderException as err:
            reason = failure_reason(records, str(err).splitlines()[0] if str(err) else "")
            raise CourseError(f"nbgrader {name} failed: {reason}") from None
    return [r.getMessage() for r in records]


_TEMPLATE_DB: list[Path] = []


def fresh_gradebook(path: Path) -> str:
    """Put an empty gradebook at `path` and return its db_url.

    A new gradebook costs seconds (nbgrader runs `alembic` in a subprocess), so the first is
    built once per process and copied.
    """
    import nbgrader.api
    from nbgrader.api import Gradebook

    if not _TEMPLATE_DB:
        folder = Path(tempfile.mkdtemp(prefix="scalesim-gradebook-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        saved = nbgrader.api.get_alembic_version
        head = _alembic_head()
        if head:  # nbgrader asks `alembic heads` in a subprocess (seconds): read it in process
            nbgrader.api.get_alembic_version = lambda: head
        try:
            with nbgrader_environment():
                Gradebook(f"sqlite:///{folder / 'gradebook.db'}").close()
        finally:
            nbgrader.api.get_alembic_version = saved
        _TEMPLATE_DB.append(folder / "gradebook.db")
    shutil.copyfile(_TEMPLATE_DB[0], path)
    return f"sqlite:///{path}"


def _alembic_head() -> str | None:
    """The head revision of nbgrader's gradebook migrations, read without a subprocess."""
    try:
        from alembic.script import ScriptDirectory
        from nbgrader.dbutil import ALEMBIC_DIR

        return ScriptDirectory(ALEMBIC_DIR).get_current_head()
    except Exception:  # noqa: BLE001 - fall back to nbgrader's own way
        return None


# ----------------------------------------------------------------------------- cell text
def nbgrader_meta(cell) -> dict:
    """The cell's nbgrader metadata ({} if it has none)."""
    return dict(cell.get("metadata", {}).get("nbgrader", {}))


def is_test_cell(cell) -> bool:
    """An autograded test cell: a code cell with points that is not a solution."""
    meta = nbgrader_meta(cell)
    return cell.get("cell_type") == "code" and meta.get("grade") and not meta.get("solution")


def marked_regions(source: str, kind: str) -> list[tuple[int, int]]:
    """1-based (first, last) lines of the "solution" or "hidden" regions, markers included."""
    begin, end = MARKERS[kind]
    regions, start = [], None
    for number, line in enumerate(source.split("\n"), start=1):
        if begin in line and start is None:
            start = number
        elif end in line and start is not None:
            regions.append((start, number))
            start = None
    if start is not None:
        regions.append((start, source.count("\n") + 1))
    return regions


def remove_regions(source: str, kind: str) -> str:
    """The source without its `kind` regions (markers included)."""
    lines = source.split("\n")
    drop = {n for a, b in marked_regions(source, kind) for n in range(a, b + 1)}
    return "\n".join(line for n, line in enumerate(lines, start=1) if n not in drop)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CELL_LINE = re.compile(r"(?:Cell In ?\[[^\]]*\]|<ipython-input-[^>]*>), line (\d+)")


def error_line(output) -> int | None:
    """The line of the cell where an error output's traceback enters it (None if unknown)."""
    for entry in output.get("traceback", []):
        match = _CELL_LINE.search(_ANSI.sub("", entry))
        if match:
            return int(match.group(1))
    return None


class ScrubHiddenTests(Preprocessor):
    """Feedback without hidden tests: drop them from test cells, their printed output too, and
    trim tracebacks to one line.

    A traceback quotes the lines around the failing one, so every error in a test cell is cut
    to ``ename: evalue`` when it failed in the visible tests, and to the broken promise (or a
    plain notice) when it failed in the hidden ones.  Whatever a test cell printed (warnings
    shown by `silenced`, the learner's own prints of hidden inputs) is dropped: it may carry
    hidden-test values.
    """

    enabled = Bool(True, help="Whether to scrub (always, unless switched off)").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if not is_test_cell(cell):
            return cell, resources
        hidden = marked_regions(cell.source, "hidden")
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                line = describe_error(output, hidden)
                output["ename"], output["evalue"] = "", line
                output["traceback"] = [line]
                kept.append(output)
        cell["outputs"] = kept
        cell.source = remove_regions(cell.source, "hidden")
        return cell, resources


def describe_error(output, hidden: list[tuple[int, int]]) -> str:
    """One line on an error output of a test cell that never quotes a hidden test."""
    ename, evalue = output.get("ename", "Error"), str(output.get("evalue", ""))
    if ename == "OwnWorkError":
        return f"{ename}: {evalue}"
    if ename in ("CellTimeoutError", "KeyboardInterrupt"):
        return "stopped: the cell ran past the time limit (an endless loop?)"
    if ename == "NotImplementedError":
        return "not answered yet (the function still raises NotImplementedError)"
    line = error_line(output)
    if line is None or any(a <= line <= b for a, b in hidden):
        if ename == "BrokenPromise" and evalue.strip():  # the promise a `promise` block names
            return f"hidden test: {evalue.strip().splitlines()[0][:200]}"
        return f"a hidden test failed ({ename})"
    return f"{ename}: {evalue}" if evalue.strip() else ename
