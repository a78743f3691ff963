"""Make a learner's home ready for their server; the hub runs it *as the learner* before each start (labhub.py).

    python -I prepare_home.py NOTEBOOKS REPO

- the home directory becomes private (0700): ``useradd`` leaves it readable by everyone under Debian's UMASK 022;
- each notebook of NOTEBOOKS that ``~/notebooks`` lacks is copied there (never over a learner's own version, so
  their edits and outputs survive restarts; to reset one, delete or rename it and restart the server);
- ``~/lab-source`` links to REPO (which root owns: learners read the lab's code there, as under ``make lab``);
- ``~/.cache/labkit`` (the learner's LABKIT_CACHE) exists.

Running as the learner, it can only ever touch what the learner may touch. Standard library only.
"""
import os
import shutil
import sys
from pathlib import Path


def main(notebooks: str, repo: str) -> None:
    os.umask(0o077)
    home = Path(os.environ["HOME"])
    home.chmod(0o700)
    target = home / "notebooks"
    target.mkdir(exist_ok=True)
    for source in sorted(Path(notebooks).glob("*.ipynb")):
        if not (target / source.name).exists():
            shutil.copyfile(source, target / source.name)
    link = home / "lab-source"
    if not link.exists() and not link.is_symlink():
        link.symlink_to(repo, target_is_directory=True)
    (home / ".cache" / "labkit").mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
