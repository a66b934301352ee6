"""Every notebook as learners meet it: opened in JupyterLab in a real Chromium, all cells run.

For each learner notebook (notebooks/) and each solution (solutions/): no error output (an
untouched learner notebook may fail only where an exercise is unanswered), figures rendered as
images, widgets rendered as live controls whose every slider changes the output, the
check-your-work cell at full marks (solutions) or 0 (learner notebooks), and a screenshot in
screenshots/browser/ (git-ignored).  Select with `-m browser`.
"""
from __future__ import annotations

import re

import nbformat
import pytest
from labdriver import (  # noqa: F401 - browser, chromium_path, lab and page are fixtures
    REPO,
    SCREENSHOTS,
    browser,
    chromium_path,
    grade_total,
    lab,
    page,
    problems,
    run_notebook,
)

pytestmark = pytest.mark.browser


def _notebooks(folder: str) -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / folder).glob("*/*.ipynb")
                  if p.stem == p.parent.name)


LEARNER, SOLUTION = _notebooks("notebooks"), _notebooks("solutions")

def _params(paths):
    return list(paths)


def test_every_assignment_is_covered():
    assert LEARNER and SOLUTION
    assert [p.split("/", 1)[1] for p in LEARNER] == [p.split("/", 1)[1] for p in SOLUTION]


def _check(page, lab, relpath: str, learner: bool):
    kind = "learner" if learner else "solution"
    shot = SCREENSHOTS / f"{kind}-{relpath.split('/')[1]}.png"
    run = run_notebook(page, lab, relpath, shot)
    print(f"{relpath}: ran in the browser in {run.seconds:.1f} s {run.phases}; screenshot {run.screenshot}")
    found = problems(run, learner=learner)
    assert not found, "\n".join(found)
    assert any(c["dom"]["images"] for c in run.cells), f"{relpath} shows no figure"
    if any('"application/vnd.jupyter.widget-view+json"' in str(c["outputs"]) for c in run.cells):
        assert run.sliders, f"{relpath}: a widget without a slider to move"
    total = grade_total(run)
    assert total is not None, f"{relpath}: the check-your-work cell printed no total"
    earned, possible = total
    expected = 0 if learner else possible
    assert possible > 0 and earned == expected, (
        f"{relpath}: check-your-work reports {earned:g} / {possible:g}, expected {expected:g}")
    assert run.screenshot.stat().st_size > 10_000


@pytest.mark.parametrize("relpath", _params(SOLUTION))
def test_solution_in_the_browser(page, lab, relpath):
    _check(page, lab, relpath, learner=False)


@pytest.mark.parametrize("relpath", _params(LEARNER))
def test_learner_notebook_in_the_browser(page, lab, relpath):
    _check(page, lab, relpath, learner=True)


def test_a_broken_widget_and_an_error_cell_fail_naming_notebook_and_cell(page, lab):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    broken_view = {"application/vnd.jupyter.widget-view+json":
                   {"model_id": "no-such-model", "version_major": 2, "version_minor": 0},
                   "text/plain": "FloatSlider(value=1.0)"}
    nb.cells = [
        nbformat.v4.new_code_cell("import ipywidgets as w\nfrom IPython.display import display"),
        nbformat.v4.new_code_cell(f"display({broken_view!r}, raw=True)"),
        nbformat.v4.new_code_cell("1 / 0"),
        nbformat.v4.new_code_cell(
            "s = w.FloatSlider(value=1.0, description='dead slider')\nout = w.Output()\n"
            "with out:\n    print('never redrawn')\ndisplay(w.VBox([s, out]))"),
    ]
    for number, cell in enumerate(nb.cells, start=1):
        cell.id = f"cell-{number}"
    (lab.root / "broken").mkdir(exist_ok=True)
    nbformat.write(nb, str(lab.root / "broken" / "broken.ipynb"))
    run = run_notebook(page, lab, "broken/broken.ipynb")
    found = "\n".join(problems(run, learner=True))
    assert re.search(r"^broken/broken.ipynb cell 2 \(id cell-2\): .*widget", found, re.M), found
    assert "broken/broken.ipynb cell 3 (id cell-3): raised ZeroDivisionError" in found
    assert ("broken/broken.ipynb cell 4 (id cell-4): moving the slider 'dead slider' did not "
            "change the widget's output") in found
