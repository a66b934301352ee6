"""Grade your own notebook against the hidden tests with nbgrader, no JupyterHub needed.

From a terminal::

    scalesim-course grade notebooks/01_serving_fundamentals/01_serving_fundamentals.ipynb

or from a notebook (save it first)::

    from scalesim_course.grading import grade
    grade("01_serving_fundamentals.ipynb")

The notebook is copied into a temporary nbgrader course, whose source is this course's
solutions/, and autograded there; the file itself is never changed.  This is the instructor's
side (nbgrader runs, the report, the command line); the learner's side (the check-your-work
call and the helpers the notebooks' tests use) is `scalesim_course.check`, whose names are
re-exported here so that `from scalesim_course.grading import grade, silenced` keeps working.
"""
from __future__ import annotations

import argparse
import atexit
import html
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .check import (  # noqa: F401 - the learner's side, re-exported for old imports
    BrokenPromise,
    OwnWorkError,
    assert_own_work,
    assert_raises,
    grade,
    promise,
    silenced,
    uses_exercise,
)

# nbgrader and nbconvert load only when grading: notebooks import this module for its helpers.
STUDENT = "learner"  # the one student of the temporary course


class GradingError(Exception):
    """The notebook could not be graded; the message says why in one line."""


# ----------------------------------------------------------------------------- the report
@dataclass(frozen=True)
class ExerciseResult:
    """The score of one graded test cell."""

    grade_id: str
    earned: float
    possible: float
    message: str = ""  # why it failed; never quotes a hidden test
    title: str = ""    # "Exercise 2 · SLO attainment and goodput" (from the notebook's heading)

    @property
    def label(self) -> str:
        """How the report names it: its exercise heading, else its grade_id."""
        return self.title or self.grade_id

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
    seconds: float = 0.0  # how long grading took
    steps: dict = field(default_factory=dict)  # seconds per step of grading, for profiling
    cell_seconds: dict = field(default_factory=dict)  # cell_key -> seconds it ran

    def timing(self) -> str:
        """"graded in 9.6 s (7.9 s running the notebook's cells)": the rest is nbgrader's own."""
        ran = sum(self.cell_seconds.values())
        return f"graded in {self.seconds:.1f} s ({ran:.1f} s running the notebook's cells)"

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
        width = max([len("exercise"), len("total")] + [len(e.label) for e in self.exercises])
        rows = [f"{self.notebook.name} (assignment {self.assignment})", VALIDATE_NOTE, "",
                f"{'exercise':<{width}}  {'points':>9}  result"]
        for e in self.exercises:
            result = "passed" if e.passed else f"failed: {e.message}" if e.message else "failed"
            rows.append(f"{e.label:<{width}}  {_points(e.earned, e.possible):>9}  {result}")
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
            f"<td>{html.escape(e.label)}</td>"
            f"<td>{_points(e.earned, e.possible)}</td>"
            f"<td>{'passed' if e.passed else 'failed: ' + html.escape(e.message)}</td></tr>"
            for e in self.exercises)
        extra = ""
        for title, items in (("notes", self.notes), ("cells that raised", self.errors)):
            if items:
                lines = "".join(f"<li>{html.escape(item)}</li>" for item in items)
                extra += f"<p><b>{title}:</b></p><ul>{lines}</ul>"
        return (f"<p><b>{html.escape(self.notebook.name)}</b> (assignment "
                f"{html.escape(self.assignment)})</p>{VALIDATE_NOTE_HTML}<table><tr><th>exercise</th><th>points</th>"
                f"<th>result</th></tr>{rows}<tr><th>total</th><th>{_points(*self.total)}</th>"
                f"<th></th></tr></table>{extra}")


VALIDATE_NOTE = ("Hidden tests included. (The Validate button runs only the visible tests: "
                 "its \"Success!\" is not this score.)")
VALIDATE_NOTE_HTML = f"<p><i>{html.escape(VALIDATE_NOTE)}</i></p>"


def _points(earned: float, possible: float) -> str:
    return f"{earned:g} / {possible:g}"


# ----------------------------------------------------------------------------- grading
def grade_notebook(notebook, *, assignment: str | None = None, timeout: float | None = None,
                   html_path=None, course_root_dir=None, progress: bool = False) -> GradeReport:
    """Autograde a copy of `notebook` against the hidden tests of its assignment.

    Args:
        notebook: path to the learner's .ipynb (left untouched).
        assignment: assignment name; default from the notebook's metadata, name or folder.
        timeout: seconds each cell may run; default: ten times the solution's own time for
            that cell (at least MIN_TIMEOUT s, from solutions/<assignment>/cell_times.json),
            else nbgrader_config.py's Execute.timeout.
        html_path: also write feedback HTML here (hidden tests scrubbed).
        course_root_dir: the course folder with solutions/ (default: where the package is).
        progress: show a progress bar (tqdm) naming the part of the notebook being run.
    Returns:
        A GradeReport; it prints as a table and renders as HTML in a notebook.
    Raises:
        GradingError: the file is not a notebook, the assignment is unknown, or nbgrader failed.
    """
    start = time.perf_counter()
    path = Path(notebook).expanduser()
    if timeout is not None and not timeout > 0:
        raise GradingError(f"timeout must be > 0 seconds, got {timeout!r}")
    if os.environ.get("NBGRADER_EXECUTION"):  # nbgrader is running this very notebook
        return GradeReport(path, assignment or "", skipped="nbgrader is running this notebook")
    skip_slow_optional_imports()
    nb = read_notebook(path)
    with tempfile.TemporaryDirectory(prefix="scalesim-grade-") as tmp, \
            tempfile.TemporaryDirectory(prefix="scalesim-gradebook-", dir=_memory_dir()) as db:
        _start_kernel_early(Path(tmp), nb)  # it boots while nbgrader loads (below)
        try:
            from ._nbgrader import CourseError, course_root

            try:
                root = course_root(course_root_dir)
                name = infer_assignment(path, nb, root, assignment)
                report = _grade_in(Path(tmp), path, nb, root, name, timeout, html_path,
                                   progress, Path(db) / "gradebook.db")
            except CourseError as err:
                raise GradingError(str(err)) from None
        finally:
            _stop_kernel(_EARLY.pop(str(Path(tmp)), None))
    report.seconds = time.perf_counter() - start
    return report


def skip_slow_optional_imports() -> None:
    """Keep jsonschema from importing rfc3987_syntax, unless something already did.

    jsonschema imports it, when installed, to check "iri" string formats, which no notebook
    schema uses; it builds a parser at import, which costs seconds (4 s measured here) on
    every grading run.  Blocking the optional import makes jsonschema skip that format.
    """
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)
    if "nbgrader" not in sys.modules:
        _import_nbgrader_without_server_extensions()


_SERVER_EXTENSIONS = ("assignment_list", "course_list", "validate_assignment", "formgrader")


def _import_nbgrader_without_server_extensions() -> None:
    """Import nbgrader without its Jupyter server extensions (they import jupyter_server:
    seconds, and grading never serves anything).  Their stand-ins leave sys.modules right
    after, so a later `import nbgrader.server_extensions.formgrader` still gets the real one."""
    import types

    names = ["nbgrader.server_extensions"] + [f"nbgrader.server_extensions.{n}"
                                              for n in _SERVER_EXTENSIONS]
    if any(n in sys.modules for n in names):
        return
    for n in names:
        stub = types.ModuleType(n)
        stub.__path__ = []
        stub.load_jupyter_server_extension = lambda app: None
        sys.modules[n] = stub
    try:
        import nbgrader  # noqa: F401
    except Exception:  # noqa: BLE001 - the real import below will say what is wrong
        pass
    finally:
        for n in names:
            if getattr(sys.modules.get(n), "__file__", None) is None:
                sys.modules.pop(n, None)


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


# ----------------------------------------------------------------------------- the kernel
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]  # as nbgrader_config.py's Execute
_EARLY: dict[str, object] = {}  # temporary course folder -> the kernel started for it


def _start_kernel_early(tmp: Path, nb) -> None:
    """Start the kernel that will run the notebook now, so that it boots (a second here) while
    nbgrader loads and the assignment is prepared; `early_kernel_execute` hands it to nbgrader.

    It gets what nbgrader would give it: the notebook's kernel, NBGRADER_EXECUTION=autograde,
    this Python's bin/ first on PATH, the same arguments; it moves to the graded copy's folder
    once that exists.  If it cannot start, nbgrader starts its own as usual.
    """
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    env = dict(os.environ, NBGRADER_EXECUTION="autograde")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    km = AsyncKernelManager(kernel_name=nb.metadata.get("kernelspec", {}).get("name") or "python3")
    try:
        run_sync(km.start_kernel)(extra_arguments=KERNEL_ARGUMENTS + [
            "--HistoryManager.hist_file=:memory:"], cwd=str(tmp), env=env)
    except Exception:  # noqa: BLE001 - no kernelspec of that name, say: nbgrader will report it
        return
    _EARLY[str(tmp)] = km


def _stop_kernel(km) -> None:
    """Stop a kernel started by `_start_kernel_early`, if it is still running."""
    from jupyter_core.utils import run_sync

    if km is not None and km.has_kernel:
        try:
            run_sync(km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


_EXECUTE: list[type] = []


def early_kernel_execute() -> type:
    """nbgrader's Execute preprocessor, running the notebook in the kernel started early for
    its temporary course (else in a new one, as nbgrader does)."""
    if _EXECUTE:
        return _EXECUTE[0]
    from jupyter_core.utils import run_sync
    from nbgrader.preprocessors import Execute

    class EarlyKernelExecute(Execute):
        _chdir = None

        def preprocess(self, nb, resources=None, km=None):
            where = str((resources or {}).get("metadata", {}).get("path") or "")
            key = next((k for k in _EARLY if where.startswith(k + os.sep)), None)
            km = _EARLY.pop(key) if key else None
            if km is not None and km.kernel_name != nb.metadata.get("kernelspec", {}).get(
                    "name", km.kernel_name):
                _stop_kernel(km)  # the released notebook runs another kernel than the copy
                km = None
            if km is None:
                return super().preprocess(nb, resources)
            self._chdir = where
            try:
                return super().preprocess(nb, resources, km=km)
            finally:
                self._chdir = None
                if getattr(self, "kc", None) is not None:
                    self.kc.stop_channels()
                    self.kc = None
                _stop_kernel(km)

        async def async_start_new_kernel_client(self):
            kc = await super().async_start_new_kernel_client()
            if self._chdir:  # silent: no execution count, no output, no name left behind
                await self.async_wait_for_reply(kc.execute(
                    f"__import__('os').chdir({self._chdir!r})", silent=True,
                    store_history=False))
            return kc

        start_new_kernel_client = run_sync(async_start_new_kernel_client)

    _EXECUTE.append(EarlyKernelExecute)
    return EarlyKernelExecute


def _grade_in(tmp: Path, path: Path, nb, root: Path, name: str, timeout, html_path,
              progress: bool = False, db: Path | None = None) -> GradeReport:
    """Generate the assignment into a temporary course, autograde the notebook, read the scores."""
    import nbformat
    from nbgrader.converters import Autograde

    from ._nbgrader import SOURCE_DIR, run_converter

    clock, steps = time.perf_counter(), {}

    def lap(step):
        nonlocal clock
        now = time.perf_counter()
        steps[step] = now - clock
        clock = now

    shutil.copytree(root / SOURCE_DIR / name, tmp / "source" / name,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    db = db or tmp / "gradebook.db"
    config = _temp_config(root, tmp, name, timeout, db)
    lap("set-up")
    _generate(config, root, tmp, name, db)
    lap("generate_assignment")
    released = nbformat.read(str(tmp / "release" / name / f"{name}.ipynb"), as_version=4)
    source = nbformat.read(str(tmp / "source" / name / f"{name}.ipynb"), as_version=4)
    submission, notes = prepare_submission(nb, released, source)
    target = tmp / "submitted" / STUDENT / name / f"{name}.ipynb"
    target.parent.mkdir(parents=True)
    nbformat.write(submission, str(target))
    config.CourseDirectory.student_id = STUDENT
    if timeout is None:
        _per_cell_timeouts(config, root, name)
    bar = _progress(config, submission) if progress else None
    lap("prepare")
    try:
        run_converter(Autograde, config, "autograde", force=True, create_student=True)
    finally:
        if bar is not None:
            bar.close()
    lap("autograde")
    graded = nbformat.read(str(tmp / "autograded" / STUDENT / name / f"{name}.ipynb"), as_version=4)
    titles = exercise_titles(graded)
    report = GradeReport(path, name, _results(graded, _scores(config, name), titles), notes,
                         _cell_errors(graded))
    report.notes += _timeouts_noted(graded, titles)
    report.cell_seconds = cell_seconds(graded)
    if html_path is not None:
        _write_feedback(config, tmp, name, Path(html_path))
    lap("report")
    report.steps = steps
    return report


_GENERATED: dict[str, Path] = {}  # source key -> generated copy (release/, gradebook.db)
CACHE_ENV = "SCALESIM_COURSE_CACHE"
_CACHE_KEEP = 20  # generated assignments kept on disk


def _generate(config, root: Path, tmp: Path, name: str, db: Path) -> None:
    """The assignment's release and gradebook in the temporary course: nbgrader's
    generate_assignment, run once per version of the assignment's source, course config and
    nbgrader, then copied from this process's cache or from the cache folder on disk
    (`cache_folder()`), so that a new kernel's first grading skips it too."""
    from nbgrader.converters import GenerateAssignment

    from ._nbgrader import SOURCE_DIR, fresh_gradebook, run_converter

    key = _source_key(root, root / SOURCE_DIR / name)
    disk = cache_folder()
    for cached in (_GENERATED.get(key), disk / key if disk else None):
        if cached is not None and (cached / "gradebook.db").is_file() \
                and (cached / "release" / name).is_dir():
            shutil.copyfile(cached / "gradebook.db", db)
            shutil.copytree(cached / "release", tmp / "release")
            _GENERATED[key] = cached
            return
    fresh_gradebook(db)
    run_converter(GenerateAssignment, config, "generate_assignment", force=True)
    keep = Path(tempfile.mkdtemp(prefix="scalesim-generated-"))
    atexit.register(shutil.rmtree, keep, ignore_errors=True)
    shutil.copyfile(db, keep / "gradebook.db")
    shutil.copytree(tmp / "release", keep / "release")
    _GENERATED[key] = keep
    if disk:
        _save(keep, disk, key)


def _memory_dir() -> str | None:
    """A folder in memory (Linux's /dev/shm) for the temporary gradebook, if there is one:
    nbgrader commits to it some forty times per grading, and each commit waits for the disk
    (20 ms measured here on /tmp, 0.04 ms on /dev/shm)."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def cache_folder() -> Path | None:
    """Where generated assignments are kept between processes: $SCALESIM_COURSE_CACHE, else
    $XDG_CACHE_HOME/scalesim-course, else ~/.cache/scalesim-course; None if set to ""."""
    if CACHE_ENV in os.environ:
        return Path(os.environ[CACHE_ENV]).expanduser() if os.environ[CACHE_ENV] else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scalesim-course"


def _source_key(root: Path, folder: Path) -> str:
    """A digest of everything generate_assignment's output depends on."""
    import hashlib

    import nbgrader

    from . import __version__

    digest = hashlib.sha256(f"{nbgrader.__version__} {__version__}".encode())
    config = root / "nbgrader_config.py"
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts)
    for path in ([config] if config.is_file() else []) + files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"generated-{folder.name}-{digest.hexdigest()[:20]}"


def _save(copy: Path, disk: Path, key: str) -> None:
    """Put a generated copy in the cache folder (atomically; quietly not, if it can't)."""
    try:
        disk.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=disk))
        shutil.copyfile(copy / "gradebook.db", staging / "gradebook.db")
        shutil.copytree(copy / "release", staging / "release")
        try:
            staging.rename(disk / key)
        except OSError:  # another process saved it first
            shutil.rmtree(staging, ignore_errors=True)
        kept = sorted((p for p in disk.glob("generated-*") if p.is_dir()),
                      key=lambda p: p.stat().st_mtime)
        for old in kept[:-_CACHE_KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    except OSError:
        pass


MIN_TIMEOUT = 10.0      # seconds: the least a cell gets when learners grade themselves
TIMEOUT_FACTOR = 10.0   # times the solution's own time for the cell
CELL_TIMES = "cell_times.json"


def cell_key(cell, index: int) -> str:
    """How cell_times.json names a cell: its grade_id, else its id, else its position."""
    from ._nbgrader import nbgrader_meta

    return nbgrader_meta(cell).get("grade_id") or cell.get("id") or f"#{index}"


def cell_seconds(nb) -> dict[str, float]:
    """cell_key -> seconds each code cell of an executed notebook ran (nbclient's timing)."""
    from datetime import datetime

    out = {}
    for index, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if cell.cell_type != "code" or not start or not end:
            continue
        try:
            seconds = (datetime.fromisoformat(end.replace("Z", "+00:00"))
                       - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
        except ValueError:
            continue
        out[cell_key(cell, index)] = round(max(seconds, 0.0), 3)
    return out


def cell_timeouts(root: Path, name: str) -> tuple[dict[str, float], float] | None:
    """(seconds per cell key, seconds for any other cell) from the solution's measured times.

    Each cell gets TIMEOUT_FACTOR times what the solution took for it, at least MIN_TIMEOUT;
    a cell the solution does not have gets TIMEOUT_FACTOR times the slowest.  None when the
    assignment has no cell_times.json (run `scalesim-course release --time`).
    """
    from ._nbgrader import SOURCE_DIR

    path = root / SOURCE_DIR / name / CELL_TIMES
    if not path.is_file():
        return None
    try:
        seconds = {str(k): float(v) for k, v in json.loads(path.read_text())["cells"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    per_cell = {k: max(MIN_TIMEOUT, TIMEOUT_FACTOR * v) for k, v in seconds.items()}
    other = max([MIN_TIMEOUT] + [TIMEOUT_FACTOR * v for v in seconds.values()])
    return per_cell, other


def _per_cell_timeouts(config, root: Path, name: str) -> None:
    """Point nbclient's timeout_func at the solution's measured cell times, if there are any."""
    limits = cell_timeouts(root, name)
    if limits is None:
        return
    per_cell, other = limits

    def timeout_func(cell):
        from ._nbgrader import nbgrader_meta

        key = nbgrader_meta(cell).get("grade_id") or cell.get("id")
        return int(max(1, round(per_cell.get(key, other))))

    config.Execute.timeout_func = timeout_func


def _progress(config, submission):
    """A tqdm bar over the submission's code cells, described by the part being run."""
    from tqdm.auto import tqdm

    titles, where, heading = {}, {}, ""
    ex_titles = exercise_titles(submission)
    for cell in submission.cells:
        if cell.cell_type == "markdown":
            found = _HEADING.search(cell.source)
            if found:
                heading = found.group(2).strip()
        elif cell.cell_type == "code":
            where[cell.get("id")] = heading
    for key, title in ex_titles.items():
        titles[key] = title
    n_code = sum(c.cell_type == "code" for c in submission.cells)
    bar = tqdm(total=n_code, desc="grading", unit="cell", leave=False, file=sys.stderr)

    def on_cell_start(cell, cell_index, **_):
        from ._nbgrader import nbgrader_meta

        if cell.get("cell_type") != "code":
            return
        gid = nbgrader_meta(cell).get("grade_id")
        label = titles.get(gid) or where.get(cell.get("id")) or ""
        bar.set_description(f"grading: {label[:48]}" if label else "grading", refresh=False)
        bar.update(1)

    config.Execute.on_cell_start = on_cell_start
    return bar


_HEADING = re.compile(r"^(#{1,4})\s+(.+?)\s*$", re.M)
_EXERCISE = re.compile(r"^##\s+(Exercise\s+\d+[^(\n]*?)\s*(?:\(\s*\d+\s*points?\s*\))?\s*$", re.M)


def exercise_titles(nb) -> dict[str, str]:
    """grade_id -> "Exercise N · Title" for the solution and test cells under each exercise."""
    from ._nbgrader import nbgrader_meta

    titles, current = {}, ""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            found = _EXERCISE.search(cell.source)
            if found:
                current = found.group(1).strip()
            elif _HEADING.search(cell.source) and \
                    _HEADING.search(cell.source).group(1) in ("#", "##"):
                current = ""
        gid = nbgrader_meta(cell).get("grade_id")
        if gid and current and gid != "setup":
            titles[gid] = current
    return titles


def _section_of(nb, index: int) -> str:
    """The heading of the section holding cell `index` (the nearest heading above it)."""
    for cell in reversed(nb.cells[:index]):
        if cell.cell_type == "markdown":
            found = _HEADING.search(cell.source)
            if found:
                return found.group(2).strip()
    return "the top of the notebook"


def _timeouts_noted(graded, titles) -> list[str]:
    """A note for each exercise whose tests were stopped at the time limit."""
    from ._nbgrader import nbgrader_meta

    notes = []
    for cell in graded.cells:
        gid = nbgrader_meta(cell).get("grade_id")
        stopped = any(o.get("output_type") == "error"
                      and o.get("ename") in ("CellTimeoutError", "KeyboardInterrupt")
                      for o in cell.get("outputs", []))
        if stopped and gid:   # other cells are listed under "cells that raised"
            note = (f"{titles.get(gid, gid)}: stopped at the time limit (an endless loop, or far "
                    "slower than needed?)")
            if note not in notes:
                notes.append(note)
    return notes


def _temp_config(root: Path, tmp: Path, name: str, timeout, db: Path):
    """The course's nbgrader config, pointed at a temporary course folder."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute, GetGrades

    from ._nbgrader import ScrubHiddenTests, course_config

    config = course_config(root)
    course = config.CourseDirectory
    course.root = str(tmp)
    course.source_directory, course.release_directory = "source", "release"
    course.submitted_directory, course.autograded_directory = "submitted", "autograded"
    course.feedback_directory = "feedback"
    course.assignment_id = name
    course.db_url = f"sqlite:///{db}"  # made by _generate
    if timeout is not None:
        config.Execute.timeout = max(1, int(-(-float(timeout) // 1)))
    config.Execute.extra_arguments = list(KERNEL_ARGUMENTS)
    config.Execute.shutdown_kernel = "immediate"
    config.Autograde.autograde_preprocessors = [
        early_kernel_execute() if p is Execute else p
        for p in config.Autograde.get("autograde_preprocessors",
                                      Autograde.class_traits()["autograde_preprocessors"]
                                      .default())]
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


def _results(graded, scores, titles=None) -> list[ExerciseResult]:
    """One ExerciseResult per test cell, in notebook order."""
    from ._nbgrader import is_test_cell, nbgrader_meta

    results = []
    for cell in graded.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if is_test_cell(cell) and grade_id in scores:
            earned, possible = scores.pop(grade_id)
            message = "" if earned >= possible else _failure(cell)
            results.append(ExerciseResult(grade_id, earned, possible, message,
                                          (titles or {}).get(grade_id, "")))
    results += [ExerciseResult(g, e, p, "graded by hand", (titles or {}).get(g, ""))
                for g, (e, p) in scores.items()]
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
    titles = exercise_titles(graded)
    for index, cell in enumerate(graded.cells):
        if cell.cell_type != "code" or is_test_cell(cell):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                gid = nbgrader_meta(cell).get("grade_id")
                if gid in titles:
                    label = f"your answer to {titles[gid]}"
                elif gid == "setup":
                    label = "the setup cell"
                elif gid and nbgrader_meta(cell).get("solution"):
                    label = f"your answer {gid}"
                else:
                    label = f"a cell under \"{_section_of(graded, index)}\""
                ename, evalue = output.get("ename") or "Error", output.get("evalue") or ""
                detail = f"{ename}: {evalue}" if evalue.strip() else ename
                if ename in ("CellTimeoutError", "KeyboardInterrupt"):
                    detail = describe_error(output, [])
                errors.append(f"{label}: {detail[:160]}")
                break
    return errors


def _write_feedback(config, tmp: Path, name: str, out: Path) -> None:
    """nbgrader's feedback HTML of the graded copy, hidden tests scrubbed, written to `out`."""
    from nbgrader.converters import GenerateFeedback

    from ._nbgrader import run_converter

    run_converter(GenerateFeedback, config, "generate_feedback", force=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp / "feedback" / STUDENT / name / f"{name}.html", out)


# ----------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scalesim-course grade`."""
    parser.add_argument("notebook", help="your notebook, e.g. 01_serving_fundamentals.ipynb")
    parser.add_argument("--json", action="store_true",
                        help='print {"exercises": {id: [earned, possible]}, "total": [...]}')
    parser.add_argument("--html", metavar="OUT", help="also write feedback HTML to OUT")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="seconds each cell may run (default: ten times the solution's "
                             "own time for that cell, at least 10 s)")
    parser.add_argument("--assignment", help="the assignment, if the file name doesn't say")
    parser.add_argument("--course-root", help="the course folder with solutions/")


def run(args) -> int:
    """Grade and print the report; 0 whenever grading ran, 2 when it could not."""
    try:
        report = grade_notebook(args.notebook, assignment=args.assignment,
                                timeout=args.timeout, html_path=args.html,
                                course_root_dir=args.course_root,
                                progress=not args.json and sys.stderr.isatty())
    except GradingError as err:
        print(f"scalesim-course grade: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(report.table())
        print(report.timing())
    return 0
