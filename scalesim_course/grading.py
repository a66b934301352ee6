"""Grade your own notebook against the hidden tests with nbgrader, no JupyterHub needed.

From a terminal::

    scalesim-course grade notebooks/01_serving_fundamentals/01_serving_fundamentals.ipynb

or from a notebook (save it first)::

    from scalesim_course.grading import grade
    grade("01_serving_fundamentals.ipynb")

The notebook is copied into a temporary nbgrader course, whose source is this course's
solutions/, and autograded there; the file itself is never changed.  This module also holds
the helpers the notebooks' tests use: `silenced`, `assert_raises` and `assert_own_work`.
"""
from __future__ import annotations

import argparse
import contextlib
import dis
import functools
import html
import io
import json
import os
import shutil
import sys
import tempfile
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ._checks import check_callable

# nbgrader and nbconvert load only when grading: notebooks import this module for its helpers.
STUDENT = "learner"  # the one student of the temporary course


class GradingError(Exception):
    """The notebook could not be graded; the message says why in one line."""


class OwnWorkError(AssertionError):
    """A graded function hands its work to the package's own implementation."""


# ----------------------------------------------------------------------------- the report
@dataclass(frozen=True)
class ExerciseResult:
    """The score of one graded test cell."""

    grade_id: str
    earned: float
    possible: float
    message: str = ""  # why it failed; never quotes a hidden test

    @property
    def passed(self) -> bool:
        """All its points earned."""
        return self.earned >= self.possible


@dataclass
class GradeReport:
    """What `grade` found: one row per graded test cell, plus notes on the notebook."""

    notebook: Path
    assignment: str
    exercises: list[ExerciseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # cells put back, edits undone
    errors: list[str] = field(default_factory=list)  # cells outside the tests that raised
    skipped: str = ""

    @property
    def total(self) -> tuple[float, float]:
        """(points earned, points possible)."""
        return (sum(e.earned for e in self.exercises), sum(e.possible for e in self.exercises))

    def to_json(self) -> dict:
        """{"exercises": {grade_id: [earned, possible]}, "total": [earned, possible]}."""
        return {"exercises": {e.grade_id: [e.earned, e.possible] for e in self.exercises},
                "total": list(self.total)}

    def table(self) -> str:
        """The report as plain text."""
        if self.skipped:
            return f"grading skipped: {self.skipped}"
        width = max([len("exercise"), len("total")] + [len(e.grade_id) for e in self.exercises])
        rows = [f"{self.notebook.name} (assignment {self.assignment})", "",
                f"{'exercise':<{width}}  {'points':>9}  result"]
        for e in self.exercises:
            result = "passed" if e.passed else f"failed: {e.message}" if e.message else "failed"
            rows.append(f"{e.grade_id:<{width}}  {_points(e.earned, e.possible):>9}  {result}")
        rows.append(f"{'total':<{width}}  {_points(*self.total):>9}")
        for title, items in (("notes", self.notes), ("cells that raised", self.errors)):
            if items:
                rows += ["", f"{title}:"] + [f"- {item}" for item in items]
        return "\n".join(rows)

    __str__ = table

    def __repr__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        if self.skipped:
            return f"<p><b>grading skipped:</b> {html.escape(self.skipped)}</p>"
        rows = "".join(
            f"<tr style='color:{'#007a3d' if e.passed else '#b00020'}'>"
            f"<td><code>{html.escape(e.grade_id)}</code></td>"
            f"<td>{_points(e.earned, e.possible)}</td>"
            f"<td>{'passed' if e.passed else 'failed: ' + html.escape(e.message)}</td></tr>"
            for e in self.exercises)
        extra = ""
        for title, items in (("notes", self.notes), ("cells that raised", self.errors)):
            if items:
                lines = "".join(f"<li>{html.escape(item)}</li>" for item in items)
                extra += f"<p><b>{title}:</b></p><ul>{lines}</ul>"
        return (f"<p><b>{html.escape(self.notebook.name)}</b> (assignment "
                f"{html.escape(self.assignment)})</p><table><tr><th>exercise</th><th>points</th>"
                f"<th>result</th></tr>{rows}<tr><th>total</th><th>{_points(*self.total)}</th>"
                f"<th></th></tr></table>{extra}")


def _points(earned: float, possible: float) -> str:
    return f"{earned:g} / {possible:g}"


# ----------------------------------------------------------------------------- grading
def grade(notebook, *, assignment: str | None = None, timeout: int | None = None,
          html_path=None, course_root_dir=None) -> GradeReport:
    """Autograde a copy of `notebook` against the hidden tests of its assignment.

    Args:
        notebook: path to the learner's .ipynb (left untouched).
        assignment: assignment name; default from the notebook's metadata, name or folder.
        timeout: seconds each cell may run (default: nbgrader_config.py's Execute.timeout).
        html_path: also write feedback HTML here (hidden tests scrubbed).
        course_root_dir: the course folder with solutions/ (default: where the package is).
    Returns:
        A GradeReport; it prints as a table and renders as HTML in a notebook.
    Raises:
        GradingError: the file is not a notebook, the assignment is unknown, or nbgrader failed.
    """
    from ._nbgrader import CourseError, course_root

    path = Path(notebook).expanduser()
    if timeout is not None and not timeout > 0:
        raise GradingError(f"timeout must be > 0 seconds, got {timeout!r}")
    if os.environ.get("NBGRADER_EXECUTION"):  # nbgrader is running this very notebook
        return GradeReport(path, assignment or "", skipped="nbgrader is running this notebook")
    nb = read_notebook(path)
    try:
        root = course_root(course_root_dir)
        name = infer_assignment(path, nb, root, assignment)
        with tempfile.TemporaryDirectory(prefix="scalesim-grade-") as tmp:
            return _grade_in(Path(tmp), path, nb, root, name, timeout, html_path)
    except CourseError as err:
        raise GradingError(str(err)) from None


def read_notebook(path: Path):
    """The notebook at `path`, validated; GradingError if it is missing or not a notebook."""
    import nbformat

    if not path.is_file():
        raise GradingError(f"{path}: no such file")
    try:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # noqa: BLE001 - nbformat raises many kinds for a bad file
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise GradingError(f"{path} is not a valid Jupyter notebook ({reason})") from None
    return nb


def infer_assignment(path: Path, nb, root: Path, assignment: str | None = None) -> str:
    """The assignment a notebook belongs to: given, else its metadata, file name or folder."""
    from ._nbgrader import SOURCE_DIR, assignments

    names = assignments(root)
    if assignment is not None:
        if assignment not in names:
            raise GradingError(f"no assignment {assignment!r} in {root / SOURCE_DIR} "
                               f"(have: {', '.join(names) or 'none'})")
        return assignment
    tagged = nb.metadata.get("scalesim", {}).get("assignment")
    prefixed = [n for n in names if path.stem.startswith(n)]  # 01_x-Copy1.ipynb
    for candidate in (tagged, path.stem, max(prefixed, key=len, default=None), path.parent.name):
        if candidate in names:
            return candidate
    raise GradingError(f"can't tell which assignment {path.name} is; pass --assignment "
                       f"(one of: {', '.join(names) or 'none'})")


def _grade_in(tmp: Path, path: Path, nb, root: Path, name: str, timeout, html_path) -> GradeReport:
    """Generate the assignment into a temporary course, autograde the notebook, read the scores."""
    import nbformat
    from nbgrader.converters import Autograde, GenerateAssignment

    from ._nbgrader import SOURCE_DIR, run_converter

    shutil.copytree(root / SOURCE_DIR / name, tmp / "source" / name,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    config = _temp_config(root, tmp, name, timeout)
    run_converter(GenerateAssignment, config, "generate_assignment", force=True)
    released = nbformat.read(str(tmp / "release" / name / f"{name}.ipynb"), as_version=4)
    source = nbformat.read(str(tmp / "source" / name / f"{name}.ipynb"), as_version=4)
    submission, notes = prepare_submission(nb, released, source)
    target = tmp / "submitted" / STUDENT / name / f"{name}.ipynb"
    target.parent.mkdir(parents=True)
    nbformat.write(submission, str(target))
    config.CourseDirectory.student_id = STUDENT
    run_converter(Autograde, config, "autograde", force=True, create_student=True)
    graded = nbformat.read(str(tmp / "autograded" / STUDENT / name / f"{name}.ipynb"), as_version=4)
    report = GradeReport(path, name, _results(graded, _scores(config, name)), notes,
                         _cell_errors(graded))
    if html_path is not None:
        _write_feedback(config, tmp, name, Path(html_path))
    return report


def _temp_config(root: Path, tmp: Path, name: str, timeout):
    """The course's nbgrader config, pointed at a temporary course folder."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import GetGrades

    from ._nbgrader import ScrubHiddenTests, course_config, fresh_gradebook

    config = course_config(root)
    course = config.CourseDirectory
    course.root = str(tmp)
    course.source_directory, course.release_directory = "source", "release"
    course.submitted_directory, course.autograded_directory = "submitted", "autograded"
    course.feedback_directory = "feedback"
    course.assignment_id = name
    course.db_url = fresh_gradebook(tmp / "gradebook.db")
    if timeout is not None:
        config.Execute.timeout = int(timeout)
    config.Execute.extra_arguments = ["--IPKernelApp.log_level=ERROR"]
    config.GenerateFeedback.preprocessors = [GetGrades, ScrubHiddenTests, CSSHTMLHeaderPreprocessor]
    return config


def prepare_submission(nb, released, source=None):
    """A copy of the learner's notebook with deleted nbgrader cells put back; plus notes.

    Edited read-only cells are kept (nbgrader's autograde restores them) and noted; a cell as
    in `released` or in `source` (the instructor's version) counts as unedited.
    """
    from nbgrader.utils import compute_checksum

    from ._nbgrader import nbgrader_meta

    originals: dict[str, set] = {}
    for cell in (source.cells if source is not None else []) + released.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id and nbgrader_meta(cell).get("locked"):
            originals.setdefault(grade_id, set()).add(compute_checksum(cell))
    nb = _copy(nb)
    have = {nbgrader_meta(c).get("grade_id"): c for c in nb.cells}
    notes, previous = [], None
    for cell in released.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if not grade_id:
            continue
        if grade_id not in have:
            at = next(i for i, c in enumerate(nb.cells) if c is have[previous]) + 1 \
                if previous else 0
            nb.cells.insert(at, _copy(cell))
            have[grade_id] = nb.cells[at]
            notes.append(f"{grade_id}: this cell was deleted; it was put back as released")
        elif grade_id in originals and _checksum(have[grade_id], compute_checksum) \
                not in originals[grade_id]:
            notes.append(f"{grade_id}: this cell is read-only and was edited; "
                         "the original was graded instead")
        previous = grade_id
    return nb, notes


def _checksum(cell, compute) -> str | None:
    try:
        return compute(cell)
    except (KeyError, ValueError, TypeError):
        return None


def _copy(node):
    import nbformat

    return nbformat.from_dict(json.loads(json.dumps(node)))


def _scores(config, name: str) -> dict[str, tuple[float, float]]:
    """grade_id -> (earned, possible) of the submission, from nbgrader's gradebook."""
    from nbgrader.api import Gradebook

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqlalchemy's autoflush notices
        with Gradebook(config.CourseDirectory.db_url) as gb:
            sub = gb.find_submission_notebook(name, name, STUDENT)
            return {g.name: (float(g.score or 0.0), float(g.max_score)) for g in sub.grades}


def _results(graded, scores) -> list[ExerciseResult]:
    """One ExerciseResult per test cell, in notebook order."""
    from ._nbgrader import is_test_cell, nbgrader_meta

    results = []
    for cell in graded.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if is_test_cell(cell) and grade_id in scores:
            earned, possible = scores.pop(grade_id)
            message = "" if earned >= possible else _failure(cell)
            results.append(ExerciseResult(grade_id, earned, possible, message))
    results += [ExerciseResult(g, e, p, "graded by hand") for g, (e, p) in scores.items()]
    return results


def _failure(cell) -> str:
    """Why a test cell lost points, without quoting its hidden tests."""
    from ._nbgrader import describe_error, marked_regions

    hidden = marked_regions(cell.source, "hidden")
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return describe_error(output, hidden)
    if any(o.get("name") == "stderr" for o in cell.get("outputs", [])):
        return "wrote to stderr (a warning or log), which nbgrader scores 0"
    return "partial credit"


def _cell_errors(graded) -> list[str]:
    """One line per cell outside the tests that raised an error."""
    from ._nbgrader import describe_error, is_test_cell, nbgrader_meta

    errors = []
    for number, cell in enumerate(graded.cells, start=1):
        if cell.cell_type != "code" or is_test_cell(cell):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                label = nbgrader_meta(cell).get("grade_id") or "no id"
                detail = f"{output.get('ename')}: {output.get('evalue', '')}"
                if output.get("ename") in ("CellTimeoutError", "KeyboardInterrupt"):
                    detail = describe_error(output, [])
                errors.append(f"cell {number} ({label}): {detail[:160]}")
                break
    return errors


def _write_feedback(config, tmp: Path, name: str, out: Path) -> None:
    """nbgrader's feedback HTML of the graded copy, hidden tests scrubbed, written to `out`."""
    from nbgrader.converters import GenerateFeedback

    from ._nbgrader import run_converter

    run_converter(GenerateFeedback, config, "generate_feedback", force=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp / "feedback" / STUDENT / name / f"{name}.html", out)


# ----------------------------------------------------------------------------- test helpers
@contextlib.contextmanager
def silenced():
    """Show warnings and stderr on stdout, where nbgrader does not count them as failures.

    nbgrader scores a test cell 0 when anything reaches stderr, even a harmless warning.
    Warnings print as one line, without the source line that raised them.
    """
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{category.__name__}: {message}", file=sys.stdout)

    with warnings.catch_warnings(), contextlib.redirect_stderr(sys.stdout):
        warnings.showwarning = show
        yield


def assert_raises(expected, fn, *args, **kwargs):
    """Fail unless fn(*args, **kwargs) raises `expected`; return the exception it raised."""
    shown = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
    call = f"{getattr(fn, '__name__', 'the function')}({shown})"
    try:
        result = fn(*args, **kwargs)
    except expected as err:
        return err
    except Exception as err:  # noqa: BLE001 - the wrong exception is the message
        raise AssertionError(f"{call} should raise {expected.__name__}, "
                             f"not {type(err).__name__}: {err}") from None
    raise AssertionError(f"{call} should raise {expected.__name__}, but returned {result!r}")


def assert_own_work(learner_fn, reference_fn, *, example: tuple | None = None) -> None:
    """Fail with OwnWorkError when `learner_fn` is, wraps or calls the package's `reference_fn`.

    Looks at the function and every helper of the learner's it calls: identity, wrappers
    (``__wrapped__``, ``functools.partial``, bound methods), names it loads and the package's
    modules it reaches into.  With `example`, also runs ``learner_fn(*example)`` once and fails if
    the reference's code runs.  Any own implementation, however written, passes.

    Args:
        learner_fn: the learner's function.
        reference_fn: the package's function, or a tuple of them.
        example: positional arguments for one traced call (optional).
    """
    refs = tuple(reference_fn) if isinstance(reference_fn, (tuple, list)) else (reference_fn,)
    check_callable("learner_fn", learner_fn)
    for ref in refs:
        check_callable("reference_fn", ref)
    label = getattr(learner_fn, "__name__", "this function")
    for ref in refs:
        reason = _borrows(learner_fn, ref, set())
        if reason is None and example is not None and _runs(learner_fn, example, ref):
            reason = "runs it when called"
        if reason:
            raise OwnWorkError(f"{label} uses the package's {ref.__module__}.{ref.__name__} "
                               f"({reason}): write your own implementation")


def _wrapped(obj, depth: int = 0):
    """obj and what it wraps: partials, bound methods, __wrapped__, callable instances."""
    yield obj
    if depth > 20:
        return
    inner = (obj.func if isinstance(obj, functools.partial)
             else getattr(obj, "__func__", None) or getattr(obj, "__wrapped__", None))
    plain = (type, types.FunctionType, types.BuiltinFunctionType)
    if inner is None and callable(obj) and not isinstance(obj, plain):
        inner = type(obj).__call__  # a callable instance: look at its method
    if inner is not None and inner is not obj:
        yield from _wrapped(inner, depth + 1)


_LOAD_NAME_OPS = {"LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLASSDEREF",
                  "LOAD_FROM_DICT_OR_GLOBALS", "LOAD_FROM_DICT_OR_DEREF"}
_LOAD_ATTR_OPS = {"LOAD_ATTR", "LOAD_METHOD", "LOAD_SUPER_ATTR", "IMPORT_FROM"}


def _code_names(code) -> tuple[set, set, set, set]:
    """(loaded names, attribute names, imported modules, string constants), nested code too."""
    loads, attrs, imports, strings = set(), set(), set(), set()
    for instr in dis.get_instructions(code):
        if not isinstance(instr.argval, str):
            continue
        if instr.opname in _LOAD_NAME_OPS:
            loads.add(instr.argval)
        elif instr.opname in _LOAD_ATTR_OPS:
            attrs.add(instr.argval)
        elif instr.opname == "IMPORT_NAME":
            imports.add(instr.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            for mine, theirs in zip((loads, attrs, imports, strings), _code_names(const)):
                mine |= theirs
        elif isinstance(const, str):
            strings.add(const)
    return loads, attrs, imports, strings


def _borrows(fn, ref, seen: set) -> str | None:
    """Why `fn` hands its work to `ref`, or None if it doesn't."""
    package = (getattr(ref, "__module__", None) or "").split(".")[0]
    for obj in _wrapped(fn):
        if obj is ref:
            return "it is that function" if obj is fn else "it wraps it"
        code = getattr(obj, "__code__", None)
        if code is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if code is getattr(ref, "__code__", None):
            return "it is a copy of it"
        loads, attrs, imports, strings = _code_names(code)
        strings.discard(obj.__doc__)
        scope = getattr(obj, "__globals__", {})
        cells = [c.cell_contents for c in obj.__closure__ or () if _filled(c)]
        values = [scope[n] for n in loads if n in scope] + cells
        if any(v is ref for value in values for v in _wrapped(value)):
            return "it calls it"
        reaches = (any(_in_package(v, package) for v in values)
                   or any(m.split(".")[0] == package for m in imports)
                   or any(package in s for s in strings))
        if reaches and (ref.__name__ in attrs or ref.__name__ in strings):
            return "it calls it"
        for value in values:  # helpers the learner wrote next to it
            if isinstance(value, types.FunctionType) and value.__module__ == obj.__module__ \
                    and not _in_package(value, package):
                reason = _borrows(value, ref, seen)
                if reason:
                    return f"through {value.__name__}"
    return None


def _filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - raises for an empty cell
    except ValueError:
        return False
    return True


def _in_package(value, package: str) -> bool:
    """A module, or a function, of `package`."""
    if isinstance(value, types.ModuleType):
        name = value.__name__
    else:
        name = getattr(value, "__module__", "")
    return bool(package) and isinstance(name, str) and name.split(".")[0] == package


def _runs(fn, example: tuple, ref) -> bool:
    """Whether calling fn(*example) runs ref's code (exceptions from fn are ignored)."""
    code = getattr(ref, "__code__", None)
    if code is None:
        return False
    hits = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is code:
            hits.append(True)

    sink = io.StringIO()
    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(*example)
    except Exception:  # noqa: BLE001 - correctness is the other tests' business
        pass
    finally:
        sys.setprofile(previous)
    return bool(hits)


# ----------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scalesim-course grade`."""
    parser.add_argument("notebook", help="your notebook, e.g. 01_serving_fundamentals.ipynb")
    parser.add_argument("--json", action="store_true",
                        help='print {"exercises": {id: [earned, possible]}, "total": [...]}')
    parser.add_argument("--html", metavar="OUT", help="also write feedback HTML to OUT")
    parser.add_argument("--timeout", type=int, metavar="SECONDS",
                        help="seconds each cell may run (default: the course's, 120)")
    parser.add_argument("--assignment", help="the assignment, if the file name doesn't say")
    parser.add_argument("--course-root", help="the course folder with solutions/")


def run(args) -> int:
    """Grade and print the report; 0 whenever grading ran, 2 when it could not."""
    try:
        report = grade(args.notebook, assignment=args.assignment, timeout=args.timeout,
                       html_path=args.html, course_root_dir=args.course_root)
    except GradingError as err:
        print(f"scalesim-course grade: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json()) if args.json else report.table())
    return 0
