"""The lab's JupyterHub spawner: each learner's server runs as their own Unix user, in a cgroup with a memory limit.

:class:`LabSpawner` is JupyterHub's :class:`LocalProcessSpawner` (each server is a process of the learner's Unix user,
started by the hub, which runs as root) plus what a room needs:

- **A private copy of the notebooks.** Before each start, ``prepare_home.py`` runs *as the learner* and copies the
  lab's notebooks into ``~/notebooks`` (only those missing there: a learner's edits are never overwritten), makes
  the home directory private (0700), and links ``~/lab-source`` to the repository (read-only: root owns it), so the
  file browser reaches the code the notebooks ask learners to read, as under ``make lab``.
- **Limits that hold.** Where the hub may write the kernel's cgroup files (cgroup v2, or v1's ``memory`` and ``cpu``
  hierarchies; as root on most Linux machines, and in this lab's CI), the server and every kernel it starts run in
  ``<hub's cgroup>/<cgroup_name>/<learner>`` with ``mem_limit`` as a hard memory limit (no swap) and ``cpu_limit``
  as a CPU quota, all learners with equal CPU weight. Past the memory limit the kernel the OOM killer picks (the
  largest: the one asking for more) is killed, not the machine's other learners; the kernel start file in
  ``share/jupyter/kernels/python3/`` then says so in the learner's next cell. Where the files cannot be written,
  the hub logs a warning and the limits are only *announced* (``MEM_LIMIT`` and ``CPU_LIMIT`` in the server's
  environment, which the kernel start file compares with what the learner's processes use).
- **Nothing left behind.** Stopping a server (the learner, the admin, the idle culler, or the hub shutting down)
  also ends every process still in its cgroup (or, without one, every process the server started), then removes
  the cgroup.
"""
from __future__ import annotations

import asyncio
import atexit
import os
import sys
from pathlib import Path

import psutil
from cgroups import CgroupRoot, find_cgroup_root
from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from traitlets import Unicode

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class LabSpawner(LocalProcessSpawner):
    """LocalProcessSpawner with a private copy of the notebooks, a cgroup per learner, and a clean stop."""

    cgroup_name = Unicode(
        "labhub", config=True, help="Name of the folder holding the learners' cgroups, below the hub's own cgroup."
    )
    notebooks_source = Unicode(str(REPO / "notebooks"), config=True, help="The notebooks copied to each learner.")
    repo_link = Unicode(str(REPO), config=True, help="What ~/lab-source links to (read-only for learners).")

    _roots: dict[str, tuple[CgroupRoot | None, str]] = {}

    @property
    def cgroup_root(self) -> CgroupRoot | None:
        if self.cgroup_name not in self._roots:
            root, why = find_cgroup_root(self.cgroup_name)
            (self.log.info if root else self.log.warning)(
                "Learners' memory and CPU limits: %s",
                why if root else f"NOT enforced ({why}); only announced to the kernels through MEM_LIMIT/CPU_LIMIT",
            )
            self._roots[self.cgroup_name] = (root, why)
            if root is not None:
                atexit.register(root.remove)  # after the hub has stopped every server (cleanup_servers)
        return self._roots[self.cgroup_name][0]

    def user_env(self, env):
        env = super().user_env(env)
        # Learners' login shell is nologin (their password opens the hub only); JupyterLab's terminals use $SHELL.
        if env.get("SHELL", "").endswith(("nologin", "false")):
            env["SHELL"] = "/bin/bash"
        return env

    async def _prepare_home(self) -> None:
        """Run prepare_home.py as the learner: copy missing notebooks, make the home private, link the sources."""
        cmd = [sys.executable, "-I", str(HERE / "prepare_home.py"), self.notebooks_source, self.repo_link]
        home = self.user_env({})["HOME"]
        proc = await asyncio.create_subprocess_exec(
            *cmd, preexec_fn=set_user_setuid(self.user.name), env={"HOME": home, "PATH": "/usr/bin:/bin"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"preparing {home} for {self.user.name} failed: {out.decode(errors='replace')}")

    async def start(self):
        await self._prepare_home()
        root = self.cgroup_root
        if root is not None:
            cgroup = root.for_user(self.user.name)
            await asyncio.to_thread(cgroup.kill_all_and_remove)  # a leftover from a hub that was killed
            cgroup.create(self.mem_limit, self.cpu_limit)
        return await super().start()

    def make_preexec_fn(self, name):
        drop_privileges = super().make_preexec_fn(name)
        root = self.cgroup_root
        procs = root.for_user(name).procs_files if root is not None else []

        def preexec():
            # Runs in the child between fork and exec, still as root: join the learner's cgroup first (a failure
            # fails the start rather than running without limits), then become the learner.
            pid = str(os.getpid())
            for f in procs:
                _write(f, pid)
            os.umask(0o077)  # what the learner writes is theirs alone
            drop_privileges()

        return preexec

    async def stop(self, now=False):
        try:
            started = psutil.Process(self.pid).children(recursive=True) if self.pid else []
        except psutil.Error:
            started = []
        await super().stop(now=now)
        for p in started:  # kernels of a server that did not shut them down
            try:
                p.kill()
            except psutil.Error:
                pass
        root = self.cgroup_root
        if root is not None and not await asyncio.to_thread(root.for_user(self.user.name).kill_all_and_remove):
            self.log.warning("Could not remove the cgroup of %s", self.user.name)
