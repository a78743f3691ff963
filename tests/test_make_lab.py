"""`make lab` serves JupyterLab on 127.0.0.1 with token authentication on, rooted at the repository and opened
on notebooks/ (so the file browser reaches labkit/ and kernels/, which the notebooks ask learners to read)."""
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_serves_jupyterlab_with_a_token(tmp_path):
    port = _free_port()
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"PORT={port}",
         f"LAB_ARGS=--no-browser --LabApp.workspaces_dir={tmp_path / 'ws'}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        token = None
        deadline = time.monotonic() + 120
        while token is None and time.monotonic() < deadline and proc.poll() is None:
            match = re.search(rf"http://127\.0\.0\.1:{port}/lab/tree/notebooks\?token=(\w+)", "".join(lines))
            token = match.group(1) if match else None
            time.sleep(0.5)
        output = "".join(lines)
        assert token, f"no URL with a token in make lab's output:\n{output[-3000:]}"
        if os.geteuid() == 0:
            assert "--allow-root" in output
        base = f"http://127.0.0.1:{port}"
        page = requests.get(f"{base}/lab?token={token}", timeout=30)
        assert page.status_code == 200 and "JupyterLab" in page.text
        # Token auth is on: the API refuses a request without it, and serves notebooks/ with it.
        assert requests.get(f"{base}/api/contents", timeout=30).status_code == 403
        listing = requests.get(f"{base}/api/contents", headers={"Authorization": f"token {token}"}, timeout=30)
        assert listing.status_code == 200
        # Rooted at the repository (the file browser reaches labkit/ and kernels/, which the notebooks cite) ...
        assert {"notebooks", "labkit", "kernels"} <= {item["name"] for item in listing.json()["content"]}
        source = requests.get(f"{base}/api/contents/labkit/prune.py", headers={"Authorization": f"token {token}"},
                              timeout=30)
        assert source.status_code == 200 and "def magnitude_mask" in source.json()["content"]
        notebooks = requests.get(f"{base}/api/contents/notebooks", headers={"Authorization": f"token {token}"},
                                 timeout=30)
        assert "00_welcome.ipynb" in {item["name"] for item in notebooks.json()["content"]}
        # ... and opens on notebooks/ (the URL it prints, matched above, is the notebooks folder)
        opened = requests.get(f"{base}/lab/tree/notebooks?token={token}", timeout=30)
        assert opened.status_code == 200 and "JupyterLab" in opened.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
