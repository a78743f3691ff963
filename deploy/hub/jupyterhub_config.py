"""JupyterHub serving the Sparse Models Lab to a room: ``make hub`` (as root), after ``make hub-users N=30``.

One JupyterLab server per learner, started on demand, each running as the learner's own Unix user with their own
copy of the notebooks; the lab's ``.venv`` is shared read-only (root owns it). Learners log in with the name and
password ``make hub-users`` gave them (PAM checks them against /etc/shadow; only members of LABHUB_GROUP get in, no
sign-up); the instructor (LABHUB_ADMIN) is the hub's admin. The hub, its proxy and every server listen on
127.0.0.1 only: put TLS and a public address in front (docs/instructors.md, "Serve a room").

Settings, from the environment (defaults for a room; tests/test_hub.py sets small ones):

=========================  ===================================  ================================================
LABHUB_PORT                8000                                 the hub's address, http://127.0.0.1:PORT
LABHUB_HUB_PORT            8081                                 the hub's own API, behind the proxy
LABHUB_PROXY_API_PORT      8001                                 configurable-http-proxy's REST API
LABHUB_GROUP               lab-learners                         the Unix group allowed to log in
LABHUB_ADMIN               instructor                           the admin (may also log in)
LABHUB_MEM_LIMIT           6G                                   memory limit per learner (server + all kernels)
LABHUB_CPU_LIMIT           2                                    CPU cores per learner (a quota, equal weights)
LABHUB_CULL_TIMEOUT        3600                                 stop a server idle this many seconds
LABHUB_CULL_EVERY          300 (at most half the timeout)       how often the culler looks
LABHUB_ACTIVITY_INTERVAL   300                                  how often servers and proxy report activity
LABHUB_STATE               deploy/hub/state                     database and cookie secret (root only, 0700)
LABHUB_CGROUP              labhub                               folder of the learners' cgroups
LABHUB_SHARED_CACHE        (unset: ~/.cache/labkit per learner) a pre-filled LABKIT_CACHE shared read-only
=========================  ===================================  ================================================

Why 6G: notebook 07's kernel peaks at 4.9-5.0 GB and 06's at 4.1-4.2 GB (README, docs/instructors.md "Machine
requirements"), the JupyterLab server of a learner takes 0.14 GB more (measured on this hub), and 00-05 each fit in
1-2 GiB; 5 GiB (5.37 GB) would leave 07 a quarter of a GB. A learner who keeps every notebook's kernel open
(7.1 GB measured) reaches the limit: the kernel start file then tells them to shut finished kernels down
(share/jupyter/kernels/python3/memory_notice.py). Why 2 CPUs: every run time in the README was measured with 2
torch threads on 2 cores (LABKIT_THREADS defaults to 2; OMP_NUM_THREADS is set to match).
"""
import grp
import os
import pwd
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from jupyterhub.spawner import set_user_setuid  # noqa: E402
from labhub import REPO, LabSpawner  # noqa: E402  (deploy/hub is not a package)

c = get_config()  # noqa: F821 - defined by JupyterHub when it loads this file

VENV = Path(sys.prefix)  # the hub runs from the lab's .venv (make hub), which the learners' servers use too
PORT = int(os.environ.get("LABHUB_PORT", "8000"))
HUB_PORT = int(os.environ.get("LABHUB_HUB_PORT", "8081"))
PROXY_API_PORT = int(os.environ.get("LABHUB_PROXY_API_PORT", "8001"))
GROUP = os.environ.get("LABHUB_GROUP", "lab-learners")
ADMIN = os.environ.get("LABHUB_ADMIN", "instructor")
MEM_LIMIT = os.environ.get("LABHUB_MEM_LIMIT", "6G")
CPU_LIMIT = float(os.environ.get("LABHUB_CPU_LIMIT", "2"))
CULL_TIMEOUT = int(os.environ.get("LABHUB_CULL_TIMEOUT", "3600"))
CULL_EVERY = int(os.environ.get("LABHUB_CULL_EVERY", str(max(1, min(300, CULL_TIMEOUT // 2)))))
ACTIVITY_INTERVAL = int(os.environ.get("LABHUB_ACTIVITY_INTERVAL", "300"))
STATE = Path(os.environ.get("LABHUB_STATE", HERE / "state")).resolve()
SHARED_CACHE = os.environ.get("LABHUB_SHARED_CACHE")
CHP = HERE / "node_modules" / ".bin" / "configurable-http-proxy"


def _refuse(message: str) -> None:
    sys.exit(f"jupyterhub_config.py: {message}")


# --- Checks that turn a room's confusing failures into one clear line at start-up ---------------------------------
if os.geteuid() != 0:
    _refuse("run the hub as root (make hub): it starts each learner's server as that learner's Unix user.")
if not (VENV / "bin" / "jupyterhub-singleuser").exists():
    _refuse(f"{VENV} has no jupyterhub-singleuser: run `make hub-install`, which installs the hub extra there.")
if not CHP.exists():
    _refuse(f"{CHP} is missing: run `make hub-install` (npm ci of deploy/hub/package.json).")
# Learners' servers run the lab's Python and read the lab as their own users, and the culler as nobody: try it as
# nobody. (A .venv made from a Python under /root, e.g. pyenv's, fails here: /root is 0700.)
try:
    _check = subprocess.run(
        [str(VENV / "bin" / "python"), "-I", "-c",
         "import os, sys; sys.exit(0 if all(os.access(p, os.R_OK) for p in sys.argv[1:]) else 3)",
         str(REPO / "labkit" / "__init__.py"), str(REPO / "notebooks"), str(HERE / "share" / "jupyter")],
        preexec_fn=set_user_setuid("nobody"), capture_output=True, text=True, timeout=60,
    )
    _why = "" if _check.returncode == 0 else (_check.stderr.strip() or "permission denied")[-300:]
except OSError as e:
    _why = str(e)
if _why:
    _refuse(f"other users cannot run the lab's Python ({os.path.realpath(VENV / 'bin' / 'python')}) or read the lab "
            f"({REPO}): {_why}. Serve the lab from a checkout and a Python that every user can read: e.g. clone it "
            f"under /srv and run `make hub-install PYTHON=/usr/bin/python3` there.")
try:
    grp.getgrnam(GROUP)
except KeyError:
    _refuse(f"no Unix group {GROUP!r}: create the learners first (make hub-users N=30).")
STATE.mkdir(parents=True, exist_ok=True)
STATE.chmod(0o700)

# --- Network: everything on loopback --------------------------------------------------------------------------------
c.JupyterHub.bind_url = f"http://127.0.0.1:{PORT}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{HUB_PORT}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{PROXY_API_PORT}"
c.ConfigurableHTTPProxy.command = [str(CHP)]
c.ConfigurableHTTPProxy.pid_file = str(STATE / "proxy.pid")
c.Spawner.ip = "127.0.0.1"
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every learner's server (and with it their kernels)

# --- Who may log in ---------------------------------------------------------------------------------------------------
c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.allowed_groups = {GROUP}
c.Authenticator.allowed_users = {ADMIN}
c.Authenticator.allow_existing_users = False  # access follows the group: leaving it revokes it at the next login
c.Authenticator.admin_users = {ADMIN}
c.PAMAuthenticator.open_sessions = False
c.JupyterHub.template_vars = {
    "announcement_login": "Sparse Models Lab: log in with the name and password your instructor gave you."
}

# --- Each learner's server ------------------------------------------------------------------------------------------
c.JupyterHub.spawner_class = LabSpawner
c.LabSpawner.cgroup_name = os.environ.get("LABHUB_CGROUP", "labhub")
c.Spawner.cmd = [str(VENV / "bin" / "jupyterhub-singleuser")]
c.Spawner.notebook_dir = "~"
c.Spawner.default_url = "/lab/tree/notebooks"
# The lab's JupyterLab settings, as under `make lab` (lab-settings/overrides.json: autosave off).
c.Spawner.args = [f"--LabApp.app_settings_dir={REPO / 'lab-settings'}"]
c.Spawner.mem_limit = int(MEM_LIMIT) if MEM_LIMIT.isdigit() else MEM_LIMIT  # bytes, or K/M/G/T (powers of 1024)
c.Spawner.cpu_limit = CPU_LIMIT
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 90
c.Spawner.env_keep = ["LANG", "LC_ALL"]  # and nothing else of root's environment


def _labkit_cache(spawner) -> str:
    return SHARED_CACHE or str(Path(pwd.getpwnam(spawner.user.name).pw_dir) / ".cache" / "labkit")


c.Spawner.environment = {
    "PATH": f"{VENV / 'bin'}:/usr/local/bin:/usr/bin:/bin",
    "VIRTUAL_ENV": str(VENV),
    # The kernel spec that runs memory_notice.py at each kernel's start (same name as the notebooks' kernel).
    "JUPYTER_PATH": str(HERE / "share" / "jupyter"),
    "LABKIT_CACHE": _labkit_cache,
    "OMP_NUM_THREADS": str(max(1, int(CPU_LIMIT))),
    "OMP_WAIT_POLICY": "PASSIVE",  # as `make lab`: idle OpenMP threads sleep instead of spinning
    "JUPYTERHUB_ACTIVITY_INTERVAL": str(ACTIVITY_INTERVAL),
}
c.JupyterHub.last_activity_interval = ACTIVITY_INTERVAL

# --- The idle culler, a service the hub starts and stops ------------------------------------------------------------
c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={CULL_TIMEOUT}",
                    f"--cull-every={CULL_EVERY}"],
        "user": "nobody",  # it needs the hub's API only
        "cwd": "/",
    }
]
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
]
