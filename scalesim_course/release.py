"""Regenerate the learners' notebooks/ from solutions/ with nbgrader, or check they match."""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

from ._nbgrader import (
    MARKERS,
    RELEASE_DIR,
    SOURCE_DIR,
    CourseError,
    assignments,
    course_config,
    course_root,
    marked_regions,
    run_converter,
    source_notebook,
)

_IGNORED = {".ipynb_checkpoints", "__pycache__"}
_MIN_SECRET = 12  # shorter lines ("return x", "else:") are too common to call a leak


def generate(assignment: str, out_dir, root=None) -> Path:
    """Write nbgrader's learner version of one assignment into out_dir/<assignment>/.

    Args:
        assignment: a folder name in solutions/.
        out_dir: where to write (nothing outside it is touched, no gradebook is used).
    Returns:
        The folder written.
    """
    from nbgrader.converters import GenerateAssignment

    root = course_root(root)
    if assignment not in assignments(root):
        raise CourseError(f"no assignment {assignment!r} in {root / SOURCE_DIR} "
                          f"(have: {', '.join(assignments(root)) or 'none'})")
    config = course_config(root)
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.source_directory = SOURCE_DIR
    config.CourseDirectory.release_directory = str(Path(out_dir).resolve())
    config.CourseDirectory.assignment_id = assignment
    config.CourseDirectory.db_url = "sqlite://"  # in memory; never written (--no-db below)
    config.GenerateAssignment.no_database = True
    config.SaveCells.enabled = False
    run_converter(GenerateAssignment, config, "generate_assignment", force=True)
    return Path(out_dir) / assignment


def strip_outputs(path) -> bool:
    """Clear the outputs and execution counts of a notebook in place; True if it changed."""
    nb = nbformat.read(str(path), as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
    if changed:
        nbformat.write(nb, str(path))
    return changed


def release_all(root=None, names=None) -> list[Path]:
    """Regenerate notebooks/<assignment>/ for every assignment (or `names`); return the folders.

    Outputs left in a solutions/ notebook are cleared first, so the repo never stores them.
    """
    root = course_root(root)
    written = []
    with tempfile.TemporaryDirectory(prefix="scalesim-release-") as tmp:
        for name in names or assignments(root):
            strip_outputs(source_notebook(name, root))
            built = generate(name, tmp, root)
            target = root / RELEASE_DIR / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(built, target)
            written.append(target)
    return written


def _files(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of the files under `folder`, skipping checkpoints and caches."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not _IGNORED.intersection(rel.parts):
            out[rel.as_posix()] = path.read_bytes()
    return out


def secret_lines(nb) -> set[str]:
    """Stripped lines of a source notebook's solutions and hidden tests not found elsewhere."""
    inside, outside = set(), set()
    for cell in nb.cells:
        lines = cell.source.split("\n")
        secret = {n for kind in MARKERS for a, b in marked_regions(cell.source, kind)
                  for n in range(a + 1, b)}
        for number, line in enumerate(lines, start=1):
            (inside if number in secret else outside).add(line.strip())
    return {line for line in inside - outside if len(line) >= _MIN_SECRET}


def leaks(release_nb, source_nb, label: str) -> list[str]:
    """Problems where a learner notebook shows solution code, hidden tests or their markers."""
    secrets, problems = secret_lines(source_nb), []
    for index, cell in enumerate(release_nb.cells):
        where = f"{label} cell {index}"
        for line in cell.source.split("\n"):
            marker = next((m for pair in MARKERS.values() for m in pair if m in line), None)
            if marker:
                problems.append(f"{where}: still has the nbgrader marker '### {marker}'")
            elif line.strip() in secrets:
                shown = line.strip()[:60]
                problems.append(f"{where}: shows solution or hidden-test code: {shown!r}")
    return problems


def check_assignment(name: str, root: Path, tmp) -> list[str]:
    """Problems of one assignment: stale or edited files in notebooks/<name>/, leaks, outputs."""
    source_nb = nbformat.read(str(source_notebook(name, root)), as_version=4)
    problems = []
    if any(c.cell_type == "code" and (c.outputs or c.execution_count) for c in source_nb.cells):
        problems.append(f"{SOURCE_DIR}/{name}/{name}.ipynb: has outputs; "
                        "`scalesim-course release` clears them")
    want, have = _files(generate(name, tmp, root)), _files(root / RELEASE_DIR / name)
    for rel in sorted(set(want) | set(have)):
        label = f"{RELEASE_DIR}/{name}/{rel}"
        if rel not in have:
            problems.append(f"{label}: missing; run `scalesim-course release`")
        elif rel not in want:
            problems.append(f"{label}: not generated from {SOURCE_DIR}/{name}/; remove it")
        elif have[rel] != want[rel]:
            problems.append(f"{label}: differs from what `scalesim-course release` generates")
        if rel in have and rel.endswith(".ipynb"):
            try:
                release_nb = nbformat.reads(have[rel].decode("utf-8"), as_version=4)
            except Exception as err:  # noqa: BLE001 - any unreadable file is a problem to report
                problems.append(f"{label}: not a readable notebook ({err})")
                continue
            problems += leaks(release_nb, source_nb, label)
    return problems


def check_release(root=None) -> list[str]:
    """Every way notebooks/ differs from a fresh release of solutions/, or leaks; [] if none."""
    root = course_root(root)
    names = assignments(root)
    release = root / RELEASE_DIR
    folders = [p.name for p in sorted(release.iterdir()) if p.is_dir()] if release.is_dir() else []
    problems = [f"{RELEASE_DIR}/{f}/: no {SOURCE_DIR}/{f}/{f}.ipynb to release it from"
                for f in folders if f not in names and f not in _IGNORED]
    with tempfile.TemporaryDirectory(prefix="scalesim-release-check-") as tmp:
        for name in names:
            problems += check_assignment(name, root, tmp)
    return problems


def measure_cell_times(name: str, root=None) -> Path:
    """Grade the solution of `name` once and store how long each cell ran, for self-grading.

    Writes solutions/<name>/cell_times.json ({"cells": {cell key: seconds}}), which the release
    copies next to the learner's notebook; `scalesim-course grade` gives each cell ten times its
    solution's time (at least 10 s), so an endless loop costs seconds, not minutes.
    """
    import json

    from .grading import CELL_TIMES, GradingError, grade_notebook

    root = course_root(root)
    try:
        report = grade_notebook(source_notebook(name, root), course_root_dir=root, timeout=600)
    except GradingError as err:
        raise CourseError(str(err)) from None
    if report.errors or not all(e.passed for e in report.exercises):
        raise CourseError(f"the solution of {name} does not run clean, so its times mean nothing: "
                          f"{report.errors or [e.label for e in report.exercises if not e.passed]}")
    path = root / SOURCE_DIR / name / CELL_TIMES
    path.write_text(json.dumps({"cells": report.cell_seconds,
                                "note": "seconds each cell of the solution ran; written by "
                                        "`scalesim-course release --time`"}, indent=1) + "\n")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scalesim-course release`."""
    parser.add_argument("assignments", nargs="*", metavar="ASSIGNMENT",
                        help="assignments to release (default: all in solutions/)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if notebooks/ is stale or leaks solutions")
    parser.add_argument("--time", action="store_true",
                        help="first run each solution once and store its cell times "
                             "(cell_times.json: self-grading's per-cell time limits)")
    parser.add_argument("--course-root", default=None, help=argparse.SUPPRESS)


def run(args) -> int:
    """Release (or check) and print what happened; 0 on success."""
    try:
        root = course_root(args.course_root)
        if args.check:
            problems = check_release(root)
            for problem in problems:
                print(problem)
            if not problems:
                count = len(assignments(root))
                print(f"{RELEASE_DIR}/ matches {SOURCE_DIR}/ ({count} assignments)")
            return 1 if problems else 0
        if getattr(args, "time", False):
            for name in args.assignments or assignments(root):
                print(f"timed {measure_cell_times(name, root).relative_to(root)}")
        for folder in release_all(root, args.assignments or None):
            print(f"released {folder.relative_to(root)}/")
        return 0
    except CourseError as err:
        print(f"scalesim-course release: {err}", file=sys.stderr)
        return 2
