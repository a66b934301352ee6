"""A real JupyterLab driven by a real headless Chromium: the fixtures and checks of the browser suite.

(Not a conftest.py: a second conftest module would shadow tests/conftest.py for the test modules
that `from conftest import ...`.)

One JupyterLab server and one browser per test session (per pytest-xdist worker), both always
stopped.  The server listens on 127.0.0.1 with a random port and token, and keeps its settings,
workspaces and runtime files in a throwaway folder; notebooks run from copies, so nothing in the
repository changes.

Chromium: the first of $SCALESIM_CHROMIUM, /usr/bin/chromium, chromium-browser, google-chrome,
or Playwright's own download; else, as root where apt-get exists, Debian's `chromium` package is
installed; else Playwright's download is tried.  Without any, the tests skip with a message saying
how to get one, except under CI (CI=true), where they fail.
"""
from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SCALESIM_SCREENSHOTS", REPO / "screenshots" / "browser"))
UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
HOW_TO_GET_CHROMIUM = (
    "no Chromium for the browser tests: install one (Debian/Ubuntu: `sudo apt-get install "
    "chromium`; elsewhere: `python -m playwright install chromium`) or point "
    "$SCALESIM_CHROMIUM at a Chromium/Chrome binary")
RUN_TIMEOUT_S = 300       # a whole notebook, its grade cell included
SLIDER_TIMEOUT_S = 20     # a widget's output redrawn after a slider moved


# ----------------------------------------------------------------------------- Chromium
def _playwright_chromium() -> str | None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        path = p.chromium.executable_path
    return path if path and os.path.isfile(path) else None


def find_chromium() -> str | None:
    """A Chromium or Chrome binary on this machine, or None."""
    wanted = os.environ.get("SCALESIM_CHROMIUM")
    if wanted:
        return wanted if os.access(wanted, os.X_OK) else None
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome",
                 "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return _playwright_chromium()


def _install_chromium() -> str:
    """Install Chromium the way this machine allows; return what was tried, for the message."""
    tried = []
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "install", "-y", "-q", "chromium"],
                    ["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            tried.append(f"`{' '.join(cmd)}` exited {done.returncode}")
            if find_chromium():
                return "; ".join(tried)
    done = subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"],
                          capture_output=True, text=True, timeout=900)
    tried.append(f"`playwright install chromium` exited {done.returncode}")
    return "; ".join(tried)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of a Chromium to drive: found, else installed, else skip (fail under CI)."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        message = "the browser tests need Playwright for Python: pip install -e '.[test]'"
        pytest.fail(message) if UNDER_CI else pytest.skip(message)
    path = find_chromium()
    if path is None:
        tried = _install_chromium()
        path = find_chromium()
        if path is None:
            message = f"{HOW_TO_GET_CHROMIUM} (tried: {tried})"
            pytest.fail(message) if UNDER_CI else pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def browser(chromium_path):
    """A headless Chromium, closed at the end of the session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        chromium = p.chromium.launch(executable_path=chromium_path, headless=True,
                                     args=args + ["--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


# ----------------------------------------------------------------------------- JupyterLab
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(folder: Path) -> None:
    """Throwaway user settings: no news or update checks (no network), autosave off."""
    for plugin, values in {
        "@jupyterlab/apputils-extension/notification":
            {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    }.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@dataclass
class Lab:
    """A running JupyterLab: where it listens, its token and the folder it serves."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen
    log: Path

    def path(self, relpath: str) -> str:
        """Where a repository path (notebooks/..., solutions/...) is in the server's root."""
        return relpath.split("/", 1)[1] if relpath.startswith("notebooks/") else relpath

    def api(self, method: str, path: str):
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Stop every kernel this server runs (one notebook's kernel at a time stays alive)."""
        for session in self.api("GET", "sessions"):
            self.api("DELETE", f"sessions/{session['id']}")

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _course_sh_ready() -> bool:
    """This Python is the venv `./course.sh` made and set up for this checkout (CI, and anyone
    who ran ./course.sh test), so `./course.sh lab` would start at once and install nothing."""
    stamp = Path(sys.prefix) / ".scalesim-installed"
    if not ((REPO / "course.sh").is_file() and stamp.is_file()
            and Path(sys.prefix).resolve() == (REPO / ".venv").resolve()):
        return False
    done = subprocess.run("cat pyproject.toml | cksum", shell=True, cwd=REPO,
                          capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip() == stamp.read_text().strip()


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """JupyterLab, as `./course.sh lab` starts it, on 127.0.0.1 with a random port and token.

    It serves a copy of notebooks/ with one of solutions/ inside, so running cells never writes
    into the repository.
    """
    tmp = tmp_path_factory.mktemp("lab")
    # A course folder as course.sh sees it: its notebooks/ (the server's root, as `./course.sh
    # lab` serves it) holds copies of the learner notebooks and, in solutions/, of the solutions.
    course = tmp / "course"
    root = course / "notebooks"
    skip = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__")
    shutil.copytree(REPO / "notebooks", root, ignore=skip)
    shutil.copytree(REPO / "solutions", root / "solutions", ignore=skip)
    _settings(tmp / "settings")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_DATA_DIR": str(tmp / "data"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
           "SCALESIM_COURSE_ROOT": str(REPO)}
    env.pop("JUPYTERHUB_API_TOKEN", None)
    flags = ["--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--LabApp.user_settings_dir={tmp / 'settings'}",
             f"--LabApp.workspaces_dir={tmp / 'workspaces'}", "--LabApp.expose_app_in_browser=True"]
    if _course_sh_ready():
        # `./course.sh lab` itself, run from the course folder copy with this venv linked in
        # (course.sh serves its own notebooks/ folder), so it installs nothing.
        shutil.copy2(REPO / "course.sh", course / "course.sh")
        shutil.copy2(REPO / "pyproject.toml", course / "pyproject.toml")
        (course / ".venv").symlink_to(Path(sys.prefix))
        cmd = ["bash", str(course / "course.sh"), "lab", *flags]
    else:
        # The same JupyterLab from this venv: course.sh would set up a venv of its own.
        cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root}",
               "--allow-root", *flags]
    print(f"starting JupyterLab: {' '.join(cmd[:3])} ... on 127.0.0.1:{port}")
    log = tmp / "jupyterlab.log"
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    server = Lab(f"http://127.0.0.1:{port}", token, root, process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {process.returncode}:\n{server.log_tail()}")
            try:
                server.api("GET", "status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within 60 s:\n{server.log_tail()}")
                time.sleep(0.3)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def page(browser, lab):
    """One browser tab, logged in to the JupyterLab server."""
    context = browser.new_context(viewport={"width": 1400, "height": 2400})
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    tab.goto(f"{lab.url}/lab/workspaces/browser-tests?reset&token={lab.token}")
    tab.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell")
    tab.evaluate("() => window.jupyterapp.restored")
    try:
        yield tab
    finally:
        context.close()


# ----------------------------------------------------------------------------- running a notebook
@dataclass
class NotebookRun:
    """What a notebook looked like in the browser after all its cells ran."""

    name: str                     # e.g. "solutions/01_x/01_x.ipynb"
    cells: list[dict]             # per cell: index, id, type, source, nbgrader, outputs, dom
    sliders: list[dict] = field(default_factory=list)  # per slider: cell, label, changed
    seconds: float = 0.0
    phases: dict = field(default_factory=dict)  # seconds spent opening, running, ...
    screenshot: Path | None = None

    def where(self, cell: dict) -> str:
        label = cell["nbgrader"].get("grade_id") or cell["id"]
        return f"{self.name} cell {cell['index'] + 1} (id {label})"


_WAIT_READY = """(path) => {
  const w = window.jupyterapp.shell.currentWidget;
  if (!w || !w.context || w.context.path !== path || !w.sessionContext) return false;
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  return w.context.isReady && !!k && k.status === 'idle';
}"""

# Run the notebook from cell `start` on; resolve when the kernel has run every queued cell.
_RUN_FROM = """async (start) => {
  const app = window.jupyterapp, panel = app.shell.currentWidget;
  panel.content.activeCellIndex = start;
  window.__scalesimRun = 'running';
  app.commands.execute('notebook:run-all-below')
     .then(() => { window.__scalesimRun = 'done'; },
           (e) => { window.__scalesimRun = 'failed: ' + e; });
}"""

_IDLE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  const pending = Array.from(w.node.querySelectorAll('.jp-InputPrompt'))
                       .some(p => p.textContent.includes('*'));
  const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator[data-status=idle]');
  return window.__scalesimRun !== 'running' && k && k.status === 'idle' && !pending && !!indicator;
}"""

# Every cell: the model's outputs (what the kernel sent) and what the page shows for them.
_CELLS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  return Array.from(panel.content.widgets).map((cell, index) => {
    const m = cell.model, area = cell.node.querySelector(".jp-Cell-outputArea");
    const json = m.toJSON();
    return {
      index, id: m.id, type: m.type, source: m.sharedModel.getSource(),
      nbgrader: (json.metadata && json.metadata.nbgrader) || {},
      outputs: m.type === 'code' ? json.outputs : [],
      dom: area ? {
        text: area.textContent,
        images: area.querySelectorAll('img').length,
        widgets: area.querySelectorAll('.jupyter-widgets').length,
        sliders: area.querySelectorAll('.widget-slider').length,
      } : {text: '', images: 0, widgets: 0, sliders: 0},
    };
  });
}"""


_OPEN = """async (path) => {
  const app = window.jupyterapp;
  for (const w of Array.from(app.shell.widgets('main'))) {
    if (w.context && w.context.model) w.context.model.dirty = false;  // no "save?" dialog
    w.close();
  }
  // Not awaited: the command's promise can be dropped by the page (Playwright then reports
  // "Resulting promise was garbage collected"); open_notebook waits for the notebook instead.
  window.__scalesimOpen = 'opening';
  app.commands.execute('docmanager:open', {path, factory: 'Notebook'})
     .then(() => { window.__scalesimOpen = 'open'; },
           (e) => { window.__scalesimOpen = 'failed: ' + e; });
}"""


def open_notebook(page, lab: Lab, relpath: str) -> None:
    """Open `relpath` (relative to the server's root) in the page's JupyterLab; wait for its kernel.

    The previous notebook's tab is closed first (its kernel is already stopped), so one page
    serves the whole session without reloading JupyterLab.
    """
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell")
    page.evaluate(_OPEN, relpath)
    page.wait_for_function(_WAIT_READY, arg=relpath, timeout=90_000)


def run_all(page, deadline: float) -> None:
    """Run every cell; after a cell fails (the kernel drops the queue) go on from the next one."""
    start = 0
    while True:
        page.evaluate(_RUN_FROM, start)
        page.wait_for_function(_IDLE, timeout=max(1.0, deadline - time.monotonic()) * 1000,
                               polling=250)
        cells = page.evaluate(_CELLS)
        failed = [c["index"] for c in cells[start:]
                  if any(o.get("output_type") == "error" for o in c["outputs"])]
        if not failed or failed[0] + 1 >= len(cells):
            return
        start = failed[0] + 1


def move_sliders(page, run: NotebookRun) -> None:
    """Press → on every slider of every widget output; note whether its output changed."""
    for cell in run.cells:
        if not cell["dom"]["sliders"]:
            continue
        area = page.locator(".jp-Notebook .jp-Cell").nth(cell["index"]).locator(".jp-Cell-outputArea")
        sliders = area.locator(".widget-slider")
        for i in range(sliders.count()):
            slider = sliders.nth(i)
            label = slider.locator(".widget-label").first.text_content() or f"slider {i + 1}"
            before = _widget_outputs(area)
            handle = slider.locator(".noUi-handle, input[type=range]").first
            handle.scroll_into_view_if_needed()
            handle.focus()
            handle.press("ArrowRight")
            changed, end = False, time.monotonic() + SLIDER_TIMEOUT_S
            while time.monotonic() < end:
                page.wait_for_timeout(250)
                now = _widget_outputs(area)
                if now != before and _kernel_idle(page):
                    changed = True
                    break
            run.sliders.append({"cell": cell, "label": label.strip(), "changed": changed})


def _widget_outputs(area) -> str:
    """What the widget outputs inside an output area show (images included, by their data)."""
    return area.evaluate("""(a) => Array.from(a.querySelectorAll('.widget-output'))
        .map(o => o.innerHTML).join('\\n')""")


def _kernel_idle(page) -> bool:
    return page.evaluate("""() => { const w = window.jupyterapp.shell.currentWidget;
        return w.sessionContext.session.kernel.status === 'idle'; }""")


def screenshot(page, path: Path) -> Path:
    """The whole notebook, scrolled through its windowed panel and stitched into one PNG."""
    from PIL import Image

    outer = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer").first
    height = outer.evaluate("(o) => o.clientHeight")
    shots, top = [], 0
    for _ in range(80):  # at most 80 screens
        top = outer.evaluate("(o, t) => { o.scrollTop = t; return o.scrollTop; }", top)
        page.wait_for_timeout(100)
        shots.append((top, Image.open(io.BytesIO(outer.screenshot()))))
        if top + height >= outer.evaluate("(o) => o.scrollHeight") - 1:
            break
        top += height
    scale = shots[0][1].height / height
    width = shots[0][1].width
    full = Image.new("RGB", (width, int(round((shots[-1][0]) * scale)) + shots[-1][1].height),
                     "white")
    for offset, shot in shots:
        full.paste(shot, (0, int(round(offset * scale))))
    path.parent.mkdir(parents=True, exist_ok=True)
    full.save(path, optimize=True)
    return path


def run_notebook(page, lab: Lab, relpath: str, shot: Path | None = None) -> NotebookRun:
    """Open, run all cells (past failures), move every slider, screenshot, stop the kernel."""
    started = time.monotonic()
    marks = [started]

    def lap() -> float:
        marks.append(time.monotonic())
        return round(marks[-1] - marks[-2], 1)

    try:
        open_notebook(page, lab, lab.path(relpath))
        phases = {"open": lap()}
        run_all(page, started + RUN_TIMEOUT_S)
        page.wait_for_timeout(300)  # let the last outputs and widget views render
        run = NotebookRun(relpath, page.evaluate(_CELLS))
        phases["run"] = lap()
        move_sliders(page, run)
        phases["sliders"] = lap()
        if shot is not None:
            run.screenshot = screenshot(page, shot)
            phases["screenshot"] = lap()
        run.seconds, run.phases = time.monotonic() - started, phases
        return run
    finally:
        lab.shutdown_kernels()


# ----------------------------------------------------------------------------- what must hold
TOTAL = re.compile(r"^total\s+([\d.]+) / ([\d.]+)\s*$", re.M)
_FIGURE_REPR = re.compile(r"<Figure size \d+x\d+ with \d+ Axes>")
_WIDGET_REPRS = re.compile(r"^(interactive|VBox|HBox|Box|Output|FloatSlider|IntSlider|"
                           r"Tab|Accordion|Dropdown)\(", re.M)


def exercise_functions(run: NotebookRun) -> set[str]:
    """Names the notebook's exercise (solution) cells define."""
    names = set()
    for cell in run.cells:
        if cell["nbgrader"].get("solution") and cell["type"] == "code":
            names |= set(re.findall(r"^def (\w+)\(", cell["source"], re.M))
    return names


def _text(output: dict) -> str:
    data = output.get("data", {}).get("text/plain", output.get("text", ""))
    return "".join(data) if isinstance(data, list) else str(data)


def problems(run: NotebookRun, *, learner: bool) -> list[str]:
    """Everything wrong with how the notebook ran and rendered, one line each, naming the cell.

    Args:
        run: the notebook as the browser showed it.
        learner: an untouched learner notebook: errors raised by an exercise left unanswered
            (NotImplementedError) are expected, but only in its test cells and in cells that call
            an exercise's function.
    """
    found = []
    exercises = exercise_functions(run)
    for cell in run.cells:
        if cell["type"] != "code":
            continue
        where = run.where(cell)
        calls_exercise = any(re.search(rf"\b{name}\b", cell["source"]) for name in exercises)
        for out in cell["outputs"]:
            kind = out.get("output_type")
            if kind == "error":
                expected = (learner and out.get("ename") == "NotImplementedError"
                            and (cell["nbgrader"].get("grade") or calls_exercise))
                if not expected:
                    found.append(f"{where}: raised {out.get('ename')}: "
                                 f"{str(out.get('evalue', ''))[:200]}")
            elif kind == "stream" and out.get("name") == "stderr" and "Traceback" in _text(out):
                found.append(f"{where}: printed a traceback to stderr")
            if _FIGURE_REPR.search(_text(out)) and "image/png" not in out.get("data", {}):
                found.append(f"{where}: a figure shown as text, not as an image")
        images = sum("image/png" in o.get("data", {}) or "image/svg+xml" in o.get("data", {})
                     for o in cell["outputs"])
        if cell["dom"]["images"] < images:
            found.append(f"{where}: {images} figure(s) sent, {cell['dom']['images']} shown as "
                         "images")
        # A widget view shows its controls, or nothing once its model is closed (a finished
        # tqdm bar); never an error, a "Loading widget..." that never ends, or its text repr.
        text = cell["dom"]["text"]
        has_view = any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                       for o in cell["outputs"])
        if "Error displaying widget" in text:
            found.append(f"{where}: shows 'Error displaying widget'")
        elif has_view and "Loading widget" in text:
            found.append(f"{where}: a widget that never rendered ('Loading widget...')")
        elif has_view and _WIDGET_REPRS.search(text):
            found.append(f"{where}: a widget shown as its text repr")
        if re.search(r"\bwidgets\.\w+_explorer\(", cell["source"]) and not cell["dom"]["sliders"]:
            found.append(f"{where}: the explorer shows no live slider")
    for slider in run.sliders:
        if not slider["changed"]:
            found.append(f"{run.where(slider['cell'])}: moving the slider "
                         f"'{slider['label']}' did not change the widget's output")
    return found


def grade_total(run: NotebookRun) -> tuple[float, float] | None:
    """(earned, possible) printed by the notebook's check-your-work cell, or None."""
    for cell in run.cells:
        if cell["type"] == "code" and re.search(r"^grade\(", cell["source"], re.M):
            for out in cell["outputs"]:
                match = TOTAL.search(_text(out))
                if match:
                    return float(match.group(1)), float(match.group(2))
    return None
