"""JupyterLab as a learner meets it: the source files the notebooks cite, notebooks that stay unmodified when
only read, and the pruning explorer's controls with the file browser open.

The lab server (conftest.py) is rooted like `make lab`: at a mirror of the repository, opened on notebooks/.
"""
from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the browser fixture skips these tests with the reason
    PlaywrightTimeout = TimeoutError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_PATHS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TIMEOUT_MS = 60_000
CURRENT = "window.jupyterapp?.shell?.currentWidget"
KERNEL_IDLE = f"() => {CURRENT}?.sessionContext?.session?.kernel?.status === 'idle'"


def test_notebooks_store_the_kernel_name_jupyterlab_writes():
    """JupyterLab rewrites the kernelspec's display name to the installed kernel's, then autosaves: a notebook
    that stores anything else shows up as modified after a read-only visit."""
    from jupyter_client.kernelspec import KernelSpecManager

    installed = KernelSpecManager().get_kernel_spec("python3").display_name
    assert installed == "Python 3 (ipykernel)"
    for path in NOTEBOOK_PATHS:
        spec = json.loads(path.read_text(encoding="utf-8"))["metadata"]["kernelspec"]
        assert spec == {"display_name": installed, "language": "python", "name": "python3"}, path.name


def _command(page, command: str, args: dict | None = None) -> None:
    page.evaluate("([c, a]) => window.jupyterapp.commands.execute(c, a)", [command, args or {}])


def test_file_browser_opens_labkit_prune(lab_server, browser):
    """Notebook 01 sends learners to labkit/prune.py: from the file browser they can open it."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(lab_server.url("notebooks"))
        listing = page.locator(".jp-FileBrowser .jp-DirListing-content")
        listing.locator(".jp-DirListing-item", has_text="00_welcome.ipynb").wait_for(timeout=TIMEOUT_MS)
        # Up to the repository root through the breadcrumbs, then labkit/, then prune.py, as a learner clicks.
        page.locator(".jp-FileBrowser .jp-BreadCrumbs-home").click()
        item = listing.locator(".jp-DirListing-item", has=page.locator(".jp-DirListing-itemText",
                                                                      has_text="labkit"))
        item.first.wait_for(timeout=TIMEOUT_MS)
        item.first.dblclick()
        source = listing.locator(".jp-DirListing-item", has=page.locator(".jp-DirListing-itemText",
                                                                        has_text="prune.py"))
        source.first.wait_for(timeout=TIMEOUT_MS)
        source.first.dblclick()
        page.wait_for_function(f"() => {CURRENT}?.context?.path === 'labkit/prune.py'", timeout=TIMEOUT_MS)
        # The editor shows the file's first lines, and holds the whole file (CodeMirror draws only what is on screen).
        editor = page.locator(".jp-FileEditor .cm-content")
        editor.first.wait_for(timeout=TIMEOUT_MS)
        text = (ROOT / "labkit" / "prune.py").read_text(encoding="utf-8")
        first_line = text.splitlines()[0]
        page.wait_for_function("t => document.querySelector('.jp-FileEditor .cm-content')?.innerText.includes(t)",
                               arg=first_line, timeout=TIMEOUT_MS)
        shown = page.evaluate(f"() => {CURRENT}.content.model.sharedModel.getSource()")
        assert shown == text and "def magnitude_mask" in shown
    finally:
        page.close()


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args], cwd=folder,
                          check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_opening_and_closing_a_notebook_leaves_git_status_clean(lab_server, browser):
    """Open each notebook (in a git repository), let its kernel start and its figures render, wait past an
    autosave interval, close it without saving: ``git status`` stays clean.

    Two things used to rewrite a notebook that was only read: a kernelspec display name other than the one
    JupyterLab writes (checked above, and here: the kernel does not change the notebook's metadata), and
    autosave after JupyterLab's plotly renderer stored a PNG of each figure in the open notebook. `make lab`
    (and this server) therefore run with autosave off (lab-settings/overrides.json).
    """
    settings = json.loads(lab_server.api("/lab/api/settings/@jupyterlab/docmanager-extension:plugin"))
    # overrides.json changes the default the server hands out (the learner may still switch autosave on)
    assert settings["schema"]["properties"]["autosave"]["default"] is False, "lab-settings/overrides.json not applied"
    visit = lab_server.root_dir / f"visit-{secrets.token_hex(4)}"
    visit.mkdir()
    for path in NOTEBOOK_PATHS:
        shutil.copy2(path, visit / path.name)
    _git(visit, "init", "-q")
    _git(visit, "add", ".")
    _git(visit, "commit", "-q", "-m", "committed notebooks")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        for path in NOTEBOOK_PATHS:
            stored = json.loads(path.read_text(encoding="utf-8"))["metadata"]
            page.goto(lab_server.url(f"{visit.name}/{path.name}"))
            page.wait_for_function(f"n => {CURRENT}?.context?.path === n", arg=f"{visit.name}/{path.name}",
                                   timeout=TIMEOUT_MS)
            page.wait_for_function(KERNEL_IDLE, timeout=TIMEOUT_MS)
            page.wait_for_timeout(1500)  # the kernel's info reaches the notebook's metadata
            metadata = page.evaluate(f"() => {CURRENT}.context.model.toJSON().metadata")
            assert metadata["kernelspec"] == stored["kernelspec"], path.name
            assert metadata.get("language_info", {}).get("name") == stored["language_info"]["name"], path.name
            page.evaluate(f"() => {CURRENT}.sessionContext.shutdown()")
            # Close without saving: a learner who only read it answers "Discard" if JupyterLab asks.
            page.evaluate("() => { window.jupyterapp.commands.execute('application:close-all'); }")
            discard = page.locator(".jp-Dialog button", has_text="Discard")
            try:
                discard.first.click(timeout=3000)
            except PlaywrightTimeout:
                pass  # not marked modified: no question
            page.wait_for_function(f"() => !{CURRENT}?.context", timeout=TIMEOUT_MS)
        page.wait_for_timeout(2000)
        changed = _git(visit, "status", "--porcelain", "--untracked-files=no")
        assert changed == "", f"opening notebooks changed them on disk:\n{changed}\n{_git(visit, 'diff')[:3000]}"
    finally:
        page.close()


EXPLORER_NOTEBOOK = ["from labkit.widgets.pruning import pruning_explorer\n", "explorer = pruning_explorer()\n",
                     "explorer"]

RECT = "el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; }"


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_pruning_explorer_controls_do_not_overlap_with_the_file_browser_open(lab_server, browser):
    """At 1400 px with the file browser open, the sparsity value stays readable: nothing covers it."""
    name = f"explorer-{secrets.token_hex(4)}.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("".join(EXPLORER_NOTEBOOK))])
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, lab_server.root_dir / "notebooks" / name)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(lab_server.notebook_url(name))
        page.wait_for_function(KERNEL_IDLE, timeout=TIMEOUT_MS)
        _command(page, "filebrowser:activate")  # the file browser open beside the notebook, as in the issue
        page.locator(".jp-FileBrowser").wait_for(state="visible", timeout=TIMEOUT_MS)
        _command(page, "notebook:run-all-cells")
        readout = page.locator(".widget-hslider .widget-readout")
        readout.first.wait_for(state="visible", timeout=300_000)  # a cold cache trains the dense MLP first
        toggles = page.locator(".widget-toggle-buttons")
        toggles.first.wait_for(state="visible", timeout=TIMEOUT_MS)
        assert readout.first.inner_text().strip() == "90%"
        assert {b.strip() for b in toggles.first.locator("button").all_inner_texts()} == {"one-shot", "fine-tuned"}
        value_box = readout.first.evaluate(RECT)
        slider_box = page.locator(".widget-hslider").first.evaluate(RECT)
        notebook_box = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first.evaluate(RECT)
        assert value_box[2] <= notebook_box[2] + 1, (value_box, notebook_box)  # not cut off at the right edge
        for other in page.locator(".widget-toggle-buttons, .widget-dropdown, .widget-html").all():
            box = other.evaluate(RECT)
            assert not _overlap(value_box, box), (value_box, box)
            assert not _overlap(slider_box, box), (slider_box, box)
        # the value on top is the readout itself, not another control drawn over it
        centre = [(value_box[0] + value_box[2]) / 2, (value_box[1] + value_box[3]) / 2]
        on_top = page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.closest('.widget-readout') !== null",
                               centre)
        assert on_top
    finally:
        try:
            page.evaluate(f"() => {CURRENT}?.sessionContext?.shutdown()")
        except Exception:
            pass
        page.close()
