"""Learner accounts for the lab's JupyterHub: real Unix users, each with a random password (``make hub-users``).

    python3 deploy/hub/users.py create --count 30      # learner01..learner30 + instructor, as root
    python3 deploy/hub/users.py remove --group lab-learners   # after the workshop: the learners and their homes

Each learner is a Unix user in the group the hub admits (``lab-learners``; no one else can log in), with
``/usr/sbin/nologin`` as login shell (the password opens the hub and nothing else: no ssh, no su) and a home
directory only they can enter (mode 0700). The instructor is a user of the same kind outside that group, named as
the hub's admin. Passwords are 12 random characters (about 59 bits) from an alphabet without look-alikes; the hub
checks them through PAM against /etc/shadow. They are appended to a file only root can read (mode 0600, in a folder
of mode 0700), one ``name<TAB>password`` a line, to print or hand out; accounts that already exist keep their
password and are not listed again.

Standard library only, so it runs before ``.venv`` exists.
"""
from __future__ import annotations

import argparse
import grp
import os
import pwd
import secrets
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PASSWORDS = HERE / "state" / "passwords.txt"
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no i, l, o, 0, 1
NOLOGIN = next((p for p in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false") if os.path.exists(p)), "/bin/false")


def new_password(length: int = 12) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _run(*cmd: str, stdin: str | None = None) -> None:
    subprocess.run(cmd, input=stdin, text=True, check=True)


def ensure_group(group: str) -> None:
    try:
        grp.getgrnam(group)
    except KeyError:
        _run("groupadd", "--system", group)


def create_user(name: str, groups: list[str]) -> str | None:
    """Create ``name`` with a random password (returned); ``None`` if the account exists (it is left as it is)."""
    if exists(name):
        return None
    extra = ["--groups", ",".join(groups)] if groups else []
    # --user-group: a private group per learner, so group-readable files stay private too.
    _run("useradd", "--create-home", "--user-group", "--shell", NOLOGIN, *extra, name)
    home = pwd.getpwnam(name).pw_dir
    os.chmod(home, 0o700)  # useradd leaves 0755 under Debian's UMASK 022: other learners could read it
    password = new_password()
    _run("chpasswd", stdin=f"{name}:{password}\n")
    return password


def remove_user(name: str) -> None:
    """Delete ``name`` and its home directory, ending its processes first (userdel refuses while they run)."""
    if not exists(name):
        return
    kill_processes_of(pwd.getpwnam(name).pw_uid)
    _run("userdel", "--remove", name)


def kill_processes_of(uid: int) -> None:
    """SIGKILL every process whose real user id is ``uid`` (read from /proc: procps may not be installed)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:  # the process ended meanwhile
            continue
        uids = next((line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), [])
        if uids and int(uids[0]) == uid:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def write_passwords(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        os.fchmod(f.fileno(), 0o600)
        f.writelines(f"{name}\t{password}\n" for name, password in rows)


def create(prefix: str, count: int, group: str, admin: str | None, passwords: Path) -> list[tuple[str, str]]:
    ensure_group(group)
    made: list[tuple[str, str]] = []
    names = [f"{prefix}{i:02d}" for i in range(1, count + 1)]
    for name in names:
        password = create_user(name, [group])
        if password is not None:
            made.append((name, password))
        else:  # an existing account joins the group, so the hub admits it; its password is not changed
            _run("usermod", "--append", "--groups", group, name)
    if admin:
        password = create_user(admin, [])
        if password is not None:
            made.append((admin, password))
    write_passwords(passwords, made)
    return made


def remove(names: list[str], group: str | None) -> None:
    if group:
        try:
            names = names + list(grp.getgrnam(group).gr_mem)
        except KeyError:
            pass
    for name in dict.fromkeys(names):
        remove_user(name)
    if group:
        subprocess.run(["groupdel", group], check=False, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", help="create learners (and the instructor) with random passwords")
    c.add_argument("--count", type=int, default=30)
    c.add_argument("--prefix", default="learner")
    c.add_argument("--group", default="lab-learners", help="the group the hub admits (LABHUB_GROUP)")
    c.add_argument("--admin", default="instructor", help="the hub's admin (LABHUB_ADMIN); '' for none")
    c.add_argument("--passwords", type=Path, default=DEFAULT_PASSWORDS)
    r = sub.add_parser("remove", help="delete accounts and their home directories")
    r.add_argument("names", nargs="*")
    r.add_argument("--group", help="also every member of this group, then the group")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("users.py creates and removes Unix users: run it as root.", file=sys.stderr)
        return 1
    if args.command == "create":
        if not 1 <= args.count <= 999:
            parser.error("--count must be between 1 and 999")
        made = create(args.prefix, args.count, args.group, args.admin or None, args.passwords)
        print(f"{len(made)} new account(s); passwords appended to {args.passwords} (root only). "
              f"The hub admits group {args.group}" + (f", admin: {args.admin}." if args.admin else "."))
    else:
        remove(args.names, args.group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
