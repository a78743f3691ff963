"""Fixtures for the browser tests: one headless Chromium and one JupyterLab server per test session.

The tests drive Debian's Chromium (``apt-get install chromium``) through Playwright for Python; Playwright's
own browser download is never used. Without Chromium they are skipped with a reason that says how to get it.
Set LABKIT_CHROMIUM=/path/to/chromium to use another Chromium build; LABKIT_REQUIRE_BROWSER=1 (set by .ci/run)
turns the skip into a failure, so CI can never pass without them.

JupyterLab runs on 127.0.0.1, a free port and a random token, with fresh workspace and settings folders, rooted
(as `make lab` is) at a temporary folder that mirrors the repository: a *copy* of notebooks/, so executed outputs
can never be saved over the committed notebooks, beside symlinks to every other top-level entry, so relative
paths such as ``../benchmarks/results/x.json`` work exactly as they do from notebooks/, and the file browser
reaches labkit/ and kernels/.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "test-artifacts"
# /usr/bin/chromium on Debian is a shell wrapper; Playwright wants the real binary.
CHROMIUM_CANDIDATES = ["/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# The lab's own settings, as `make lab` uses them (autosave off: lab-settings/overrides.json).
APP_SETTINGS = ROOT / "lab-settings"
# JupyterLab settings for a test run, on top: attach every cell to the DOM
# (no virtual scrolling, so every output is rendered and countable), record each cell's execution times,
# and make no requests to the internet for news or updates.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none", "recordTiming": True},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


def chromium_executable() -> str | None:
    """The Chromium binary to drive: $LABKIT_CHROMIUM, else Debian's, else None."""
    wanted = os.environ.get("LABKIT_CHROMIUM")
    if wanted:
        return wanted if os.access(wanted, os.X_OK) else None
    return next((c for c in CHROMIUM_CANDIDATES if os.access(c, os.X_OK)), None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session (skips the test when Chromium is missing)."""
    exe = chromium_executable()
    if exe is None and os.environ.get("LABKIT_REQUIRE_BROWSER") == "1":  # CI: a skip would hide the tests
        pytest.fail("LABKIT_REQUIRE_BROWSER=1 but Chromium was not found (apt-get install chromium)")
    if exe is None:
        pytest.skip("Chromium not found: install it with `apt-get install chromium` (Debian/Ubuntu) or set "
                    "LABKIT_CHROMIUM=/path/to/chromium; CI (.ci/run) installs it, so there these tests run")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: "
                                   "pip install -e '.[test]' -c requirements/constraints.txt")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class LabServer:
    """A running JupyterLab: where it listens, its token, and the folder it serves (a mirror of the repository)."""
    base_url: str
    token: str
    root_dir: Path

    @staticmethod
    def notebook_path(name: str) -> str:
        """The server-side path of notebook ``name`` (a file name in notebooks/)."""
        return f"notebooks/{name}"

    def url(self, path: str) -> str:
        """The URL that opens ``path`` (a file or folder under the root; token in the query string) in a
        workspace of its own, so JupyterLab does not reopen the tabs of the tests before it."""
        return (f"{self.base_url}/lab/workspaces/{Path(path).stem or 'root'}-{secrets.token_hex(4)}/tree/{path}"
                f"?token={self.token}")

    def notebook_url(self, name: str) -> str:
        """The URL that opens notebook ``name`` of notebooks/ in a workspace of its own."""
        return self.url(self.notebook_path(name))

    def api(self, path: str, method: str = "GET") -> bytes:
        request = urllib.request.Request(f"{self.base_url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()


def _lab_root(tmp: Path) -> Path:
    """A copy of notebooks/ beside symlinks to the rest of the repository; returns the mirror's root."""
    for entry in ROOT.iterdir():
        if entry.name not in {"notebooks", ".git"}:
            (tmp / entry.name).symlink_to(entry)
    shutil.copytree(NOTEBOOKS, tmp / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return tmp


@pytest.fixture(scope="session")
def lab_server(browser, tmp_path_factory) -> LabServer:
    """One JupyterLab server for every notebook test; shut down cleanly at the end of the session."""
    tmp = tmp_path_factory.mktemp("lab")
    (tmp / "repo").mkdir()
    root_dir = _lab_root(tmp / "repo")
    settings = tmp / "user-settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    token, port = secrets.token_hex(24), free_port()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root_dir}", "--LabApp.default_url=/lab/tree/notebooks",
           f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
           f"--LabApp.user_settings_dir={settings}", f"--LabApp.app_settings_dir={APP_SETTINGS}",
           "--LabApp.expose_app_in_browser=True",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "jupyter-server.log", "w")
    # Fresh Jupyter config, data and runtime folders: a user's own settings or a "python3" kernelspec in
    # ~/.local/share/jupyter cannot change what is tested. (The environment's own, under sys.prefix, still
    # apply: that is where the widget and plotly front ends are installed.)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_DATA_DIR=str(tmp / "data"))
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = LabServer(f"http://127.0.0.1:{port}", token, root_dir)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {proc.returncode}: see {log.name}")
            try:
                server.api("/api/status")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer within 120 s: see {log.name}") from None
                time.sleep(0.5)
        yield server
    finally:
        try:  # the REST shutdown stops kernels and the server cleanly
            server.api("/api/shutdown", method="POST")
            proc.wait(timeout=30)
        except Exception:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
