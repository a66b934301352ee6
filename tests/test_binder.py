"""Binder as learners get it: repo2docker's build, reproduced without Docker, then checked.

repo2docker (what mybinder.org runs) installs `binder/requirements.txt` with pip, then runs
`binder/postBuild` from the repository root.  Docker is not needed to check that: this test makes
a fresh virtual environment with the Python of `binder/runtime.txt` (or the nearest one on this
machine, said in the output), runs the same two steps in a copy of the repository, and checks in
that environment that the course imports, torch is the pinned CPU build, nbgrader's learner
extensions are on and its instructor ones off and locked, and one notebook runs and grades.
A step that breaks fails the test with the step's name.

PyTorch's CPU index named in binder/requirements.txt may be unreachable (it is on the course's
build machines): pip is given one retry and a short timeout per index, and torch then comes from
any other index or wheel folder pip is configured with (PIP_FIND_LINKS, pip.conf).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

PIP_BOUNDS = ["--retries", "1", "--timeout", "10"]  # an unreachable index costs seconds, not minutes
STEP_TIMEOUT_S = 1200
LEARNER_PLUGINS = ["@jupyter/nbgrader:validate-assignment"]
INSTRUCTOR_PLUGINS = ["@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment",
                      "@jupyter/nbgrader:course-list"]
INSTRUCTOR_SERVER = ["nbgrader.server_extensions.formgrader",
                     "nbgrader.server_extensions.course_list"]
LEARNER_SERVER = ["nbgrader.server_extensions.validate_assignment"]


class BinderStepFailed(AssertionError):
    """One step of the Binder build failed; the message names it."""


# ----------------------------------------------------------------------------- Python
def wanted_python(repo: Path) -> tuple[int, int] | None:
    """(major, minor) from binder/runtime.txt (`python-3.11`), or None without one."""
    path = repo / "binder" / "runtime.txt"
    if not path.is_file():
        return None
    match = re.fullmatch(r"python-(\d+)\.(\d+)(?:\.\d+)?", path.read_text().strip())
    if not match:
        raise BinderStepFailed(f"binder step 'read binder/runtime.txt' failed: "
                               f"{path.read_text().strip()!r} is not python-X.Y")
    return int(match.group(1)), int(match.group(2))


def find_python(want: tuple[int, int] | None) -> tuple[str, str]:
    """(path, note): a base Python for the venv, exactly `want` or the nearest available."""
    found = {}
    search = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                             if p and not p.startswith(sys.prefix))  # base Pythons, not venvs
    for minor in range(8, 16):
        path = shutil.which(f"python3.{minor}", path=search)
        if path:
            found[(3, minor)] = path
    base = Path(getattr(sys, "_base_executable", "") or sys.executable)
    found.setdefault(sys.version_info[:2], str(base))
    if want is None:
        version = sys.version_info[:2]
        return found[version], f"no binder/runtime.txt: Python {version[0]}.{version[1]}"
    nearest = min(found, key=lambda v: (abs(v[1] - want[1]) if v[0] == want[0] else 99, -v[1]))
    note = (f"binder/runtime.txt asks for python-{want[0]}.{want[1]}; using "
            f"{found[nearest]} (Python {nearest[0]}.{nearest[1]}"
            f"{', the nearest available' if nearest != want else ''})")
    return found[nearest], note


# ----------------------------------------------------------------------------- the build
def copy_repo(dest: Path) -> Path:
    """The repository's tracked files (what Binder clones), or the folder without build files."""
    try:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], cwd=REPO, capture_output=True,
                               check=True, timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        files = None
    if files:
        for name in filter(None, files):
            src = REPO / name
            if src.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
    else:
        shutil.copytree(REPO, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.egg-info", "screenshots", ".pytest_cache"))
    return dest


class Build:
    """A fresh venv built from a copy of the repository as repo2docker would build it."""

    def __init__(self, repo: Path, venv: Path, home: Path):
        self.repo, self.venv, self.home = repo, venv, home
        self.log: list[str] = []
        path = [p for p in os.environ.get("PATH", "").split(os.pathsep)
                if p and not p.startswith(sys.prefix)]  # not the test's own venv
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("PYTHONPATH", "VIRTUAL_ENV", "SCALESIM_COURSE_ROOT",
                                 "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_PATH",
                                 "JUPYTER_CONFIG_PATH", "PYTHONHOME")}
        self.env.update(PATH=os.pathsep.join([str(venv / "bin")] + path), HOME=str(home),
                        VIRTUAL_ENV=str(venv), PIP_DISABLE_PIP_VERSION_CHECK="1",
                        PIP_RETRIES="1", PIP_TIMEOUT="10", PYTHONNOUSERSITE="1",
                        # the caller's download cache (HOME changes): a fresh venv, not a
                        # fresh download of every wheel on each run
                        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR",
                                                     str(Path.home() / ".cache" / "pip")),
                        JUPYTER_CONFIG_DIR=str(home / ".jupyter"))
        home.mkdir(parents=True, exist_ok=True)

    def step(self, name: str, cmd: list[str], timeout: float = STEP_TIMEOUT_S) -> str:
        """Run one build step in the repository copy; BinderStepFailed naming it if it fails."""
        started = time.monotonic()
        try:
            done = subprocess.run(cmd, cwd=self.repo, env=self.env, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BinderStepFailed(f"binder step '{name}' failed: still running after "
                                   f"{timeout:.0f} s") from None
        output = done.stdout + done.stderr
        self.log.append(f"{name}: {time.monotonic() - started:.1f} s, exit {done.returncode}")
        if done.returncode != 0:
            raise BinderStepFailed(f"binder step '{name}' failed (exit {done.returncode}):\n"
                                   + "\n".join(output.strip().splitlines()[-25:]))
        return output

    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def create(self, base_python: str) -> None:
        self.step("create the virtual environment", [base_python, "-m", "venv", str(self.venv)])

    def requirements(self) -> None:
        self.step("pip install -r binder/requirements.txt",
                  [self.python(), "-m", "pip", "install", *PIP_BOUNDS,
                   "-r", "binder/requirements.txt"])

    def post_build(self) -> None:
        script = self.repo / "binder" / "postBuild"
        if script.is_file():
            script.chmod(0o755)
            self.step("binder/postBuild", [str(script)])


def build_binder(tmp: Path) -> Build:
    """The Binder environment, built in `tmp` for the checks below."""
    repo = copy_repo(tmp / "repo")
    base, note = find_python(wanted_python(repo))
    print(f"\n{note}")
    build = Build(repo, tmp / "venv", tmp / "home")
    started = time.monotonic()
    build.create(base)
    build.requirements()
    build.post_build()
    print(f"Binder environment built in {time.monotonic() - started:.0f} s: "
          + "; ".join(build.log))
    return build


# ----------------------------------------------------------------------------- the checks
def check_course_imports_with_the_pinned_cpu_torch(binder):
    pinned = re.search(r"^torch==([\w.+]+)", (binder.repo / "binder" / "requirements.txt")
                       .read_text(), re.M)
    assert pinned, "binder/requirements.txt must pin torch exactly"
    out = binder.step("check: imports", [binder.python(), "-c", (
        "import json, torch, scalesim_course, scalesim_course.grading, nbgrader, jupyterlab;"
        "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda,"
        " 'package': scalesim_course.__file__}))")])
    got = json.loads(out.strip().splitlines()[-1])
    assert got["cuda"] is None, f"torch {got['torch']} is a CUDA build"
    assert got["torch"].split("+")[0] == pinned.group(1).split("+")[0]
    assert Path(got["package"]).is_relative_to(binder.repo), "the course package is not the repo's"


def _plugin_states(text: str) -> dict[str, set[str]]:
    """plugin or extension name -> words on its line of `jupyter ... list` output."""
    states = {}
    for line in text.splitlines():
        words = re.sub(r"\x1b\[[0-9;]*m", "", line).replace("(", " ").replace(")", " ").split()
        for word in words:
            if word.startswith("@jupyter/nbgrader") or word.startswith("nbgrader."):
                states.setdefault(word, set()).update(w.lower() for w in words)
    return states


def check_learner_extensions_on_instructor_extensions_off_and_locked(binder):
    lab = binder.step("check: jupyter labextension list",
                      ["jupyter", "labextension", "list"])
    server = binder.step("check: jupyter server extension list",
                         ["jupyter", "server", "extension", "list"])
    page_config = json.loads((binder.venv / "etc" / "jupyter" / "labconfig" /
                              "page_config.json").read_text())
    disabled = page_config.get("disabledExtensions", {})
    locked = page_config.get("lockedExtensions", {})
    for plugin in INSTRUCTOR_PLUGINS:
        assert disabled.get(plugin) is True, f"{plugin} is not disabled:\n{lab}"
        assert locked.get(plugin) is True, f"{plugin} is not locked:\n{lab}"
    for plugin in LEARNER_PLUGINS:
        assert not disabled.get(plugin), f"{plugin} is disabled"
    assert "@jupyter/nbgrader" in lab and "enabled" in lab.lower(), lab
    states = _plugin_states(server)
    for ext in INSTRUCTOR_SERVER:
        assert "disabled" in states.get(ext, set()), f"{ext} is not disabled:\n{server}"
    for ext in LEARNER_SERVER:
        assert "enabled" in states.get(ext, set()), f"{ext} is not enabled:\n{server}"


def check_a_notebook_runs_and_grades(binder):
    name = sorted(p.name for p in (binder.repo / "solutions").iterdir() if p.is_dir())[0]
    out = binder.step("check: a notebook runs and grades",
                      [str(binder.venv / "bin" / "scalesim-course"), "grade", "--json",
                       f"solutions/{name}/{name}.ipynb"])
    scores = json.loads(out[out.index("{"):])
    earned, possible = scores["total"]
    assert possible > 0 and earned == possible, scores


def test_binder_builds_and_works(tmp_path_factory):
    """One test, so that pytest-xdist never builds the environment twice (once per worker)."""
    binder = build_binder(tmp_path_factory.mktemp("binder"))
    check_course_imports_with_the_pinned_cpu_torch(binder)
    check_learner_extensions_on_instructor_extensions_off_and_locked(binder)
    check_a_notebook_runs_and_grades(binder)


# ----------------------------------------------------------------------------- broken files
def _broken_build(tmp_path: Path, breaks: dict[str, str]) -> Build:
    repo = tmp_path / "repo"
    (repo / "binder").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", repo)
    for name, text in breaks.items():
        (repo / "binder" / name).write_text(text)
    build = Build(repo, tmp_path / "venv", tmp_path / "home")
    base, _ = find_python(wanted_python(repo))
    build.create(base)
    return build


def test_a_broken_requirements_file_fails_naming_the_step(tmp_path):
    text = (REPO / "binder" / "requirements.txt").read_text()
    build = _broken_build(tmp_path, {"requirements.txt": text + "\nscalesim-no-such-package==0.0\n"})
    with pytest.raises(BinderStepFailed, match=r"binder step 'pip install -r "
                       r"binder/requirements.txt' failed[\s\S]*scalesim-no-such-package"):
        build.requirements()


def test_a_broken_post_build_fails_naming_the_step(tmp_path):
    build = _broken_build(tmp_path, {"postBuild": "#!/bin/bash\nset -euo pipefail\n"
                                                  "jupyter-no-such-command --help\n"})
    with pytest.raises(BinderStepFailed, match=r"binder step 'binder/postBuild' failed"):
        build.post_build()


def test_a_broken_runtime_file_fails_naming_the_step(tmp_path):
    (tmp_path / "binder").mkdir()
    (tmp_path / "binder" / "runtime.txt").write_text("pithon-3\n")
    with pytest.raises(BinderStepFailed, match=r"binder step 'read binder/runtime.txt' failed"):
        wanted_python(tmp_path)
