"""Per-learner memory and CPU limits through the Linux kernel's cgroups (v2, or v1's memory and cpu hierarchies).

Used by labhub.py (the hub's spawner) and tests/test_hub.py; standard library only. The hub, as root, makes a folder
``<name>`` below its own cgroup (v1) or at the v2 root, and one folder per learner in it; the learner's server is
moved there before it becomes the learner (labhub.LabSpawner.make_preexec_fn), and every kernel it starts inherits
the cgroup. v2: ``memory.max`` (and ``memory.swap.max`` 0), ``cpu.max`` and ``cpu.weight``; v1:
``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``), ``cpu.cfs_quota_us`` and ``cpu.shares``.
"""
from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CPU_PERIOD_US = 100_000
_NAME = re.compile(r"^[a-z_][a-z0-9_.-]*$")


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _mounts(mountinfo: Path) -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, file system type, super options) of every cgroup mount in ``mountinfo``."""
    found = []
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, after = left.split(), right.split()
        if len(fields) >= 5 and len(after) >= 3 and after[0] in ("cgroup", "cgroup2"):
            found.append((fields[3], fields[4], after[0], set(after[2].split(","))))
    return found


def _own_paths(proc_cgroup: Path) -> dict[str, str]:
    """The calling process's cgroup path per v1 controller (``memory``, ``cpu``, ...) and ``""`` for v2."""
    paths = {}
    for line in proc_cgroup.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _join(mount_root: str, mount_point: str, path: str) -> Path | None:
    """The folder of cgroup ``path`` under a mount of ``mount_root`` at ``mount_point`` (None if not under it)."""
    root = mount_root.rstrip("/")
    if root and not (path == root or path.startswith(root + "/")):
        return None
    return Path(mount_point) / path[len(root):].lstrip("/")


@dataclass
class Cgroup:
    """One learner's cgroup: a folder per hierarchy (v2: one; v1: memory and cpu)."""

    version: int
    memory: Path
    cpu: Path

    @property
    def folders(self) -> list[Path]:
        return [self.memory] if self.memory == self.cpu else [self.memory, self.cpu]

    def create(self, mem_limit: int | None, cpu_limit: float | None) -> None:
        for folder in self.folders:
            folder.mkdir(exist_ok=True)
        quota = str(int(cpu_limit * CPU_PERIOD_US)) if cpu_limit else None
        if self.version == 2:
            if mem_limit:
                _write(self.memory / "memory.max", str(mem_limit))
                if (self.memory / "memory.swap.max").exists():
                    _write(self.memory / "memory.swap.max", "0")
            _write(self.cpu / "cpu.weight", "100")
            _write(self.cpu / "cpu.max", f"{quota or 'max'} {CPU_PERIOD_US}")
        else:
            if mem_limit:
                _write(self.memory / "memory.limit_in_bytes", str(mem_limit))
                if (self.memory / "memory.memsw.limit_in_bytes").exists():  # swap accounting on: no swap either
                    _write(self.memory / "memory.memsw.limit_in_bytes", str(mem_limit))
            _write(self.cpu / "cpu.shares", "1024")
            _write(self.cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(self.cpu / "cpu.cfs_quota_us", quota or "-1")

    @property
    def procs_files(self) -> list[Path]:
        return [folder / "cgroup.procs" for folder in self.folders]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for f in self.procs_files:
            try:
                found |= {int(p) for p in f.read_text().split()}
            except OSError:
                pass
        return found

    def kill_all_and_remove(self, timeout: float = 10) -> bool:
        """SIGKILL every process left in the cgroup, then remove it; False if it could not be removed."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not pids or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        ok = True
        for folder in self.folders:
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
        return ok


@dataclass
class CgroupRoot:
    """Where the hub puts its learners' cgroups: ``<hub's cgroup>/<name>`` in each hierarchy it needs."""

    version: int
    memory: Path
    cpu: Path

    def for_user(self, user: str) -> Cgroup:
        if not _NAME.match(user):
            raise ValueError(f"not a safe cgroup name: {user!r}")
        return Cgroup(self.version, self.memory / user, self.cpu / user)

    def remove(self) -> None:
        for folder in {self.memory, self.cpu}:
            try:
                folder.rmdir()
            except OSError:
                pass


def find_cgroup_root(name: str, proc: Path = Path("/proc/self"), create: bool = True) -> tuple[CgroupRoot | None, str]:
    """The folders for learners' cgroups, created (unless ``create`` is False); or None and the reason why not.

    cgroup v2 is used where its root offers both the memory and cpu controllers; the learners' parent then sits at
    the v2 root, which alone may hold processes next to child cgroups with controllers. Otherwise cgroup v1's
    ``memory`` and ``cpu`` hierarchies, below this process's own cgroup in each. ``proc`` is for the tests.
    """
    if not _NAME.match(name):
        return None, f"not a safe cgroup name: {name!r}"
    try:
        mounts = _mounts(proc / "mountinfo")
        own = _own_paths(proc / "cgroup")
    except OSError as e:
        return None, f"cannot read this process's cgroups: {e}"
    v2 = next((m for m in mounts if m[2] == "cgroup2" and m[0] == "/"), None)
    if v2 is not None:
        top = Path(v2[1])
        try:
            offered = set((top / "cgroup.controllers").read_text().split())
        except OSError:
            offered = set()
        if {"memory", "cpu"} <= offered:
            folder = top / name
            if create:
                try:
                    enabled = set((top / "cgroup.subtree_control").read_text().split())
                    if not {"memory", "cpu"} <= enabled:
                        _write(top / "cgroup.subtree_control", "+memory +cpu")
                    folder.mkdir(exist_ok=True)
                    _write(folder / "cgroup.subtree_control", "+memory +cpu")
                except OSError as e:
                    return None, f"cgroup v2 at {top} is not writable here ({e})"
            return CgroupRoot(2, folder, folder), f"cgroup v2: {folder}"
    folders = {}
    for controller in ("memory", "cpu"):
        mount = next((m for m in mounts if m[2] == "cgroup" and controller in m[3]), None)
        if mount is None or controller not in own:
            return None, f"no cgroup v1 '{controller}' hierarchy and no cgroup v2 with memory and cpu controllers"
        base = _join(mount[0], mount[1], own[controller])
        if base is None:
            return None, f"this process's {controller} cgroup {own[controller]} is outside the mounted hierarchy"
        folders[controller] = base / name
    root = CgroupRoot(1, folders["memory"], folders["cpu"])
    if create:
        try:
            for folder in folders.values():
                folder.mkdir(exist_ok=True)
            probe = root.for_user("_probe")  # a write test: some containers mount the files read-only
            probe.create(None, None)
            probe.kill_all_and_remove()
        except OSError as e:
            return None, f"cgroup v1 at {folders['memory'].parent} is not writable here ({e})"
    return root, f"cgroup v1: {folders['memory']}, {folders['cpu']}"
