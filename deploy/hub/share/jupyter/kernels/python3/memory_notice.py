"""Kernel start file of the lab's JupyterHub: says plainly when a learner's memory runs short.

The hub's kernel spec (``kernel.json`` beside this file, found through ``JUPYTER_PATH``) runs it at the start of
every kernel (``IPKernelApp.exec_files``). A learner's server and all its kernels share one memory limit
(``deploy/hub/labhub.py``); past it, the kernel asking for more is killed and JupyterLab only says "the kernel
appears to have died". So:

- **after each cell**, if the learner's processes use 85% of the limit or more, the cell's output ends with a
  warning: how much is used, and to shut down the kernels of finished notebooks;
- **at the first cell of a new kernel**, if the limit killed one of the learner's kernels since the last notice,
  the cell's output starts with what happened, why, and what to do.

Usage and kills are read from the learner's cgroup (v2 ``memory.current``/``memory.max``/``memory.events``, v1
``memory.usage_in_bytes``/``memory.limit_in_bytes``/``memory.oom_control``), less reclaimable file cache. Where the
hub could not set a cgroup, the limit is the announced ``MEM_LIMIT`` and usage the resident memory of the learner's
processes: the warning still comes, a kill cannot be detected.

It adds no name to the learner's namespace (everything is removed at the end), and never raises: a notice that
fails is skipped.
"""


def _labhub_install(shell, proc="/proc/self", home=None):
    """Register the two notices with IPython ``shell`` (``proc`` and ``home`` are for the tests)."""
    import os
    import sys
    from pathlib import Path

    proc = Path(proc)
    warn_at, rearm_at = 0.85, 0.70
    state = Path(home or Path.home()) / ".cache" / "labhub" / "memory-kills-seen"

    def cgroup_dir():
        """The memory cgroup folder of this process (v2 or v1), or None."""
        mounts = []
        for line in (proc / "mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fields, after = left.split(), right.split()
            if len(fields) >= 5 and len(after) >= 3 and after[0] in ("cgroup", "cgroup2"):
                mounts.append((fields[3], fields[4], after[0], set(after[2].split(","))))
        for line in (proc / "cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                kind, wanted = "cgroup2", None
            elif "memory" in controllers.split(","):
                kind, wanted = "cgroup", "memory"
            else:
                continue
            for root, point, fstype, options in mounts:
                if fstype != kind or (wanted and wanted not in options):
                    continue
                root = root.rstrip("/")
                if root and not (path == root or path.startswith(root + "/")):
                    continue
                folder = Path(point) / path[len(root):].lstrip("/")
                if (folder / "memory.max").exists() or (folder / "memory.limit_in_bytes").exists():
                    return folder
        return None

    def read_keyed(path):
        values = {}
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                values[key] = int(value)
        return values

    folder = None
    try:
        folder = cgroup_dir()
    except Exception:
        pass

    def usage():
        """(bytes used, limit in bytes or None, enforced) for the learner's server and kernels together."""
        if folder is not None:
            v2 = (folder / "memory.max").exists()
            raw = (folder / ("memory.max" if v2 else "memory.limit_in_bytes")).read_text().strip()
            limit = None if raw == "max" or int(raw) >= 2**60 else int(raw)
            if limit is not None:
                used = int((folder / ("memory.current" if v2 else "memory.usage_in_bytes")).read_text())
                stat = read_keyed(folder / "memory.stat")
                used -= stat.get("inactive_file" if v2 else "total_inactive_file", 0)  # cache the kernel reclaims
                return used, limit, True
        announced = os.environ.get("MEM_LIMIT", "")
        if not announced.isdigit():
            return 0, None, False
        import psutil

        uid = os.getuid()
        used = 0
        for p in psutil.process_iter(["uids", "memory_info"]):
            if p.info["uids"] and p.info["uids"].real == uid and p.info["memory_info"]:
                used += p.info["memory_info"].rss
        return used, int(announced), False

    def kills():
        """(identity of the cgroup, kills by its memory limit so far), or None where they cannot be read."""
        if folder is None:
            return None
        for name in ("memory.events", "memory.oom_control"):
            if (folder / name).exists():
                count = read_keyed(folder / name).get("oom_kill")
                if count is not None:
                    return f"{folder}:{folder.stat().st_ino}", count
        return None

    def gb(n):
        return f"{n / 2**30:.1f} GiB"

    shut_down = ("Shut down the kernels of the notebooks you have finished (Kernel > Shut Down Kernel, or the "
                 "Running Terminals and Kernels panel on the left); notebooks 06 and 07 alone need about 4 and "
                 "5 GB (4.2 and 5.0 GB), so run them with no other kernel open.")
    armed = [True]
    first = [True]

    def before_cell(*_):
        if not first[0]:
            return
        first[0] = False
        try:
            now = kills()
            if now is None:
                return
            seen = state.read_text().split() if state.exists() else []
            count_seen = int(seen[1]) if len(seen) == 2 and seen[0] == now[0] else 0
            if now[1] > count_seen:
                _, limit, _ = usage()
                print(f"[lab hub] A kernel of yours was stopped: your notebooks' kernels together reached your memory "
                      f"limit on this JupyterHub{f' ({gb(limit)})' if limit else ''}, and the kernel asking for more "
                      f"was ended (JupyterLab calls it 'Kernel Restarting' or 'the kernel appears to have died'). "
                      f"Its variables are gone. {shut_down} Then use Run > Run All Above Selected Cell where you "
                      f"were.", file=sys.stderr)
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text(f"{now[0]} {now[1]}\n")
        except Exception:
            pass

    def after_cell(*_):
        try:
            used, limit, enforced = usage()
            if not limit:
                return
            if used >= warn_at * limit and armed[0]:
                armed[0] = False
                then = ("past it, the kernel that asks for more is stopped" if enforced else
                        "past it, this machine may run out of memory for everyone")
                print(f"[lab hub] Memory: your kernels use {gb(used)} of your {gb(limit)} limit "
                      f"({used / limit:.0%}); {then}. {shut_down}", file=sys.stderr)
            elif used < rearm_at * limit:
                armed[0] = True
        except Exception:
            pass

    shell.events.register("pre_run_cell", before_cell)
    shell.events.register("post_run_cell", after_cell)


if __name__ == "__main__":  # IPython runs start files in the learner's namespace, where __name__ is "__main__"
    try:
        _labhub_install(get_ipython())  # noqa: F821 - defined by IPython
    except Exception:
        pass
    del _labhub_install
