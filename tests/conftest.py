"""Shared fixtures: the course repo, and a tiny nbgrader course built fresh for each test."""
from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = "00_tiny"
HIDDEN_SENTINEL = "tiny-hidden-sentinel"  # appears only in the tiny course's hidden tests


def _cell(kind: str, cell_id: str, source: str, **nbgrader):
    new = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    cell = new(source)
    cell.id = cell_id
    if nbgrader:
        meta = {"grade": False, "locked": False, "solution": False, "task": False,
                "schema_version": 3, "grade_id": cell_id}
        cell.metadata["nbgrader"] = {**meta, **nbgrader}
    return cell


def tiny_notebook():
    """Two exercises, `add` (2 points) and `mean` (3 points), with visible and hidden tests."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                  "name": "python3"}, "language_info": {"name": "python"}}
    nb.cells = [
        _cell("markdown", "intro", "# A tiny assignment"),
        _cell("code", "setup", "from scalesim_course.grading import assert_raises, silenced",
              locked=True),
        _cell("code", "add", "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n"
              "    ### END SOLUTION", solution=True),
        _cell("code", "add_tests",
              "with silenced():\n    assert add(1, 2) == 3, 'add(1, 2) should be 3'\n"
              f"    ### BEGIN HIDDEN TESTS\n    sentinel = '{HIDDEN_SENTINEL}'\n"
              "    assert add(-1, 1) == 0, sentinel\n    ### END HIDDEN TESTS",
              grade=True, locked=True, points=2),
        _cell("code", "mean", "def mean(xs):\n    ### BEGIN SOLUTION\n    if not xs:\n"
              "        raise ValueError('empty')\n    return sum(xs) / len(xs)\n"
              "    ### END SOLUTION", solution=True),
        _cell("code", "mean_tests",
              "with silenced():\n    assert mean([1, 2, 3]) == 2, 'mean([1, 2, 3]) should be 2'\n"
              f"    ### BEGIN HIDDEN TESTS\n    sentinel = '{HIDDEN_SENTINEL}'\n"
              "    assert_raises(ValueError, mean, [])\n    ### END HIDDEN TESTS",
              grade=True, locked=True, points=3),
    ]
    return nb


@pytest.fixture(autouse=True, scope="session")
def _grading_cache(tmp_path_factory):
    """Keep generated assignments in a folder of this test run, not in ~/.cache."""
    import os

    saved = os.environ.get("SCALESIM_COURSE_CACHE")
    os.environ["SCALESIM_COURSE_CACHE"] = str(tmp_path_factory.mktemp("grading-cache"))
    yield
    if saved is None:
        os.environ.pop("SCALESIM_COURSE_CACHE", None)
    else:
        os.environ["SCALESIM_COURSE_CACHE"] = saved


@pytest.fixture
def tiny_course(tmp_path) -> Path:
    """A course folder (in this test's tmp_path) with solutions/00_tiny and its release."""
    from scalesim_course.release import release_all

    root = tmp_path / "course"
    (root / "solutions" / TINY).mkdir(parents=True)
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    nbformat.write(tiny_notebook(), str(root / "solutions" / TINY / f"{TINY}.ipynb"))
    release_all(root)
    return root


@pytest.fixture
def submit(tiny_course, tmp_path):
    """Write a learner's copy of the tiny release with some cells' sources replaced or removed.

    Call as submit(add="def add(a, b): ...", mean=None): a string replaces the cell with that
    grade_id, None deletes it. Returns the path of the copy.
    """
    def make(name: str = f"{TINY}.ipynb", **cells) -> Path:
        nb = nbformat.read(str(tiny_course / "notebooks" / TINY / f"{TINY}.ipynb"), as_version=4)
        keep = []
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id in cells and cells[grade_id] is None:
                continue
            if grade_id in cells:
                cell.source = cells[grade_id]
            keep.append(cell)
        nb.cells = keep
        path = tmp_path / "learner" / name
        path.parent.mkdir(exist_ok=True)
        nbformat.write(nb, str(path))
        return path

    return make



# ----------------------------------------------------------------------------- timing summary
_AUTOGRADE: list[tuple[str, float, float]] = []


def pytest_runtest_logreport(report):
    """Collect the autograde timings tests record (with xdist, in the controlling process)."""
    if report.when == "call":
        _AUTOGRADE.extend(value for key, value in report.user_properties if key == "autograde")


def pytest_terminal_summary(terminalreporter):
    """Print autograde seconds per submission of each notebook, measured by this run."""
    if not _AUTOGRADE:
        return
    terminalreporter.section("autograde seconds per submission (nbgrader's Autograde, "
                             "one solution notebook each, measured by this run)")
    for name, seconds, cells in sorted(_AUTOGRADE):
        terminalreporter.write_line(f"{name}: {seconds:5.1f} s ({cells:.1f} s running its "
                                    f"cells); a class of 200: {200 * seconds / 60:.0f} min")
