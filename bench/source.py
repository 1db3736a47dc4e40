"""A frozen copy of the code the bridge process runs, so one run measures one version.

The bridge subprocess imports ``bridge`` (and the reference connector from ``tests/reference``)
from the copy, which comes first on its ``PYTHONPATH``: edits made to the working tree while a
run is under way cannot reach a bridge started later in the run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bridge", "tests/__init__.py", "tests/reference")
SOURCES = ("worktree", "head")


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.strip()


def snapshot(dest: Path, source: str) -> str:
    """Copy the bridge's code as of ``source`` (``worktree`` or ``head``) into ``dest`` and put
    ``dest`` first on this process's ``sys.path`` too; returns the revision it describes."""
    dest.mkdir(parents=True, exist_ok=True)
    if source == "head":
        archive = subprocess.run(
            ["git", "archive", "HEAD", *PACKAGES], cwd=REPO, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        revision = _git("rev-parse", "--short", "HEAD")
    else:
        ignore = shutil.ignore_patterns("__pycache__")
        for name in PACKAGES:
            src, dst = REPO / name, dest / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=ignore, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dst)
        revision = _git("describe", "--always", "--dirty") + " (working tree)"
    sys.path.insert(0, str(dest))
    return revision
