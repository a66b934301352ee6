"""The learner's side of grading: check your work, and the helpers the notebooks' tests use.

From a notebook (save it first)::

    from scalesim_course.check import grade
    grade("01_serving_fundamentals.ipynb")

`grade` runs the instructor's grading (`scalesim_course.grading`) on the saved file, shows
which exercise it is grading, and prints how long it took.  The test cells use `silenced`,
`assert_raises`, `promise` and `assert_own_work`; the "In the simulator" cells use
`uses_exercise`.  Nothing here imports nbgrader: the notebooks import this module.

The own-work rule: a graded function may not run any code of the `scalesim_course` package,
neither by reaching into it by name (a module, a function, `metrics._meets_slo` as much as
`metrics.slo_attainment`) nor when called, except the package classes its docstring names as
inputs or outputs (pass them as `allowed`).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import dis
import functools
import io
import os
import sys
import types
import warnings
from pathlib import Path

from ._checks import check_callable

PACKAGE = __name__.split(".")[0]
_PACKAGE_DIR = str(Path(__file__).resolve().parent) + os.sep


class OwnWorkError(AssertionError):
    """A graded function hands its work to the package's own code."""


class BrokenPromise(AssertionError):
    """A hidden test failed; the message is the docstring promise it checks, nothing more."""


# ----------------------------------------------------------------------------- check your work
def grade(notebook, *, assignment: str | None = None, timeout: float | None = None,
          html_path=None, course_root_dir=None, progress: bool = True):
    """Grade the saved `notebook` against the hidden tests and show the report.

    Prints which exercise is being graded while it runs, and how long grading took.  The
    notebook's Validate button runs only the visible tests; this runs the hidden ones too.

    Args:
        notebook: path to your .ipynb (it is never changed).
        assignment: the assignment, if the file name doesn't say.
        timeout: seconds each cell may run (default: derived from the solution's own cell times).
        html_path: also write feedback HTML here.
        course_root_dir: the course folder with solutions/ (default: where the package is).
        progress: show a progress bar while grading.
    Returns:
        A GradeReport (prints as a table, renders as HTML in a notebook).
    """
    from . import grading

    path = Path(notebook).expanduser()
    if os.environ.get("NBGRADER_EXECUTION"):  # nbgrader is running this very notebook
        return grading.GradeReport(path, assignment or "", skipped="nbgrader is running this "
                                                                    "notebook")
    if path.is_file():
        saved = _dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%H:%M:%S")
        print(f"grading the saved file {path.name}, saved at {saved} (save again first if you "
              "changed it since)", flush=True)
    report = grading.grade_notebook(path, assignment=assignment, timeout=timeout,
                                    html_path=html_path, course_root_dir=course_root_dir,
                                    progress=progress)
    print(report.timing(), flush=True)
    return report


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


@contextlib.contextmanager
def promise(text: str):
    """Tests of one docstring promise: any failure inside says only `text`.

    Hidden tests run inside ``with promise("..."):`` so that a learner whose answer breaks one
    learns which promise of the docstring it broke, never the test's code or values.  An error
    the learner's function raises is named by its type only.  OwnWorkError passes unchanged.

    Args:
        text: the promise, e.g. "nan TPOT: a one-token answer meets the TPOT limit".
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"promise needs the text of the promise, got {text!r}")
    try:
        yield
    except OwnWorkError:
        raise
    except AssertionError:
        raise BrokenPromise(text) from None
    except Exception as err:  # noqa: BLE001 - the learner's function raised
        raise BrokenPromise(f"{text} (your function raised {type(err).__name__})") from None


@contextlib.contextmanager
def uses_exercise(*functions, exercise: str = "the exercise above"):
    """Run a cell that uses your answer; if it is not written yet, say so instead of failing.

    A cell run inside ``with uses_exercise(fn, exercise="Exercise 2"):`` stops quietly with a
    note when `fn` still raises NotImplementedError, so that "Run All" goes on to the end.

    Args:
        functions: your functions the cell uses (only for the note).
        exercise: which exercise to answer, e.g. "Exercise 2".
    """
    try:
        yield
    except NotImplementedError:
        names = ", ".join(getattr(f, "__name__", str(f)) for f in functions) or "your function"
        print(f"Skipped: this cell needs {names} from {exercise}, which is not written yet. "
              "Answer it, then run this cell again.")


# ----------------------------------------------------------------------------- own work
def assert_own_work(learner_fn, reference_fn=None, *, example: tuple | None = None,
                    allowed=()) -> None:
    """Fail with OwnWorkError when `learner_fn` hands its work to the package's code.

    The rule: a graded function may not reach into `scalesim_course` (a module or any
    function of it, private ones included) from its own code or any helper of the learner's it
    calls, and, with `example`, may not run any of the package's code when called, except the
    classes (and their methods) in `allowed`.  `reference_fn` is the package's version of the
    exercise (or a tuple of them); it names the error and is refused like the rest.

    Args:
        learner_fn: the learner's function.
        reference_fn: the package's function(s) doing the same work (optional, for the message).
        example: positional arguments for one traced call (optional).
        allowed: package classes the docstring names as inputs or outputs.
    """
    refs = () if reference_fn is None else (
        tuple(reference_fn) if isinstance(reference_fn, (tuple, list)) else (reference_fn,))
    check_callable("learner_fn", learner_fn)
    for ref in refs:
        check_callable("reference_fn", ref)
    allowed = tuple(allowed) if isinstance(allowed, (tuple, list, set)) else (allowed,)
    label = getattr(learner_fn, "__name__", "this function")
    reason = _borrows(learner_fn, refs, allowed, set())
    if reason is None and example is not None:
        ran = _runs_package_code(learner_fn, example, allowed)
        if ran:
            reason = f"it runs {ran} when called"
    if reason:
        raise OwnWorkError(f"{label} uses the package's code ({reason}): graded functions may "
                           f"not call into {PACKAGE}; write your own implementation")


def _wrapped(obj, depth: int = 0):
    """obj and what it wraps: partials, bound methods, __wrapped__, callable instances."""
    yield obj
    if depth > 20:
        return
    inner = (obj.func if isinstance(obj, functools.partial)
             else getattr(obj, "__func__", None) or getattr(obj, "__wrapped__", None))
    plain = (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)
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


def _module_of(value) -> str:
    if isinstance(value, types.ModuleType):
        return value.__name__
    name = getattr(value, "__module__", "")
    return name if isinstance(name, str) else ""


def _in_package(value) -> bool:
    """A module of the package, or a function, method or callable object defined in it."""
    return _module_of(value).split(".")[0] == PACKAGE


_CODE_TYPES = (types.ModuleType, types.FunctionType, types.MethodType,
               types.BuiltinFunctionType, functools.partial)


def _is_allowed(value, allowed) -> bool:
    """Allowed: what `allowed` names, and any class or data object (the package's types are
    data, inputs or outputs; their methods are caught when run under tracing)."""
    if any(value is a for a in allowed):
        return True
    return not isinstance(value, _CODE_TYPES)


def _describe(value) -> str:
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    module = _module_of(value)
    if isinstance(value, types.ModuleType):
        return f"module {module}"
    return f"{module}.{name}" if name else module


def _borrows(fn, refs, allowed, seen: set) -> str | None:
    """Why `fn` hands its work to the package, or None if it doesn't."""
    for obj in _wrapped(fn):
        if any(obj is ref for ref in refs):
            return f"it is {_describe(obj)}" if obj is fn else f"it wraps {_describe(obj)}"
        if obj is not fn and _in_package(obj) and not _is_allowed(obj, allowed):
            return f"it wraps {_describe(obj)}"
        code = getattr(obj, "__code__", None)
        if code is None or id(obj) in seen:
            if obj is fn and _in_package(obj) and not _is_allowed(obj, allowed):
                return f"it is {_describe(obj)}"
            continue
        seen.add(id(obj))
        copied = [ref for ref in refs if code is getattr(ref, "__code__", None)]
        if copied or code.co_filename.startswith(_PACKAGE_DIR) and not _is_allowed(obj, allowed):
            return f"it is a copy of {_describe(copied[0]) if copied else code.co_name}"
        loads, attrs, imports, strings = _code_names(code)
        scope = getattr(obj, "__globals__", {})
        cells = [c.cell_contents for c in obj.__closure__ or () if _filled(c)]
        values = [scope[n] for n in loads if n in scope] + cells
        imported = [m for m in imports if m.split(".")[0] == PACKAGE]
        if imported:
            names = sorted(a for a in attrs if not a.startswith("__"))
            return f"it imports {imported[0]}" + (f" ({', '.join(names)})" if names else "")
        strings.discard(obj.__doc__)
        named = sorted(s for s in strings if s.split(".")[0] == PACKAGE)
        if named:
            return f"it names {named[0]}"
        for value in values:
            for inner in _wrapped(value):
                if _in_package(inner) and not _is_allowed(inner, allowed):
                    if isinstance(inner, types.ModuleType):
                        used = sorted(a for a in attrs if hasattr(inner, a)
                                      and not _is_allowed(getattr(inner, a), allowed))
                        if not used:
                            continue
                        return "it calls " + ", ".join(f"{inner.__name__}.{a}" for a in used)
                    return f"it calls {_describe(inner)}"
        for value in values:  # helpers the learner wrote next to it
            if isinstance(value, types.FunctionType) and not _in_package(value) \
                    and value.__module__ == obj.__module__:
                reason = _borrows(value, refs, allowed, seen)
                if reason:
                    return f"through {value.__name__}: {reason}"
    return None


def _filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - raises for an empty cell
    except ValueError:
        return False
    return True


def _allowed_codes(allowed) -> set:
    """Code objects of the allowed classes' methods (and of allowed functions)."""
    codes = set()
    for item in allowed:
        members = vars(item).values() if isinstance(item, type) else [item]
        if isinstance(item, type):
            members = [m for klass in item.__mro__ for m in vars(klass).values()]
        for member in members:
            for inner in _wrapped(member):
                code = getattr(inner, "__code__", None)
                if code is not None:
                    codes.add(code)
            if isinstance(member, property):
                codes |= {f.__code__ for f in (member.fget, member.fset) if f is not None
                          and hasattr(f, "__code__")}
    return codes


def _runs_package_code(fn, example: tuple, allowed) -> str | None:
    """The package function fn(*example) runs, if any (exceptions from fn are ignored)."""
    ok = _allowed_codes(allowed)
    here = __file__
    hits: list[str] = []

    inside: list = []   # frames of allowed code now running: what they call is theirs

    def profile(frame, event, arg):
        if event == "return" and inside and frame is inside[-1]:
            inside.pop()
        if event != "call" or hits:
            return
        code = frame.f_code
        if code in ok:
            inside.append(frame)
        elif not inside and code.co_filename.startswith(_PACKAGE_DIR) \
                and code.co_filename != here:
            module = Path(code.co_filename).stem
            hits.append(f"{PACKAGE}.{module}.{code.co_name}")

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
    return hits[0] if hits else None
