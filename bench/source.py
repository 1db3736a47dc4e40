"""A frozen copy of the code the bridge process runs, so one run measures one version.

The bridge subprocess imports ``bridge`` (and the reference connector from ``tests/reference``)
from the copy, which comes first on its ``PYTHONPATH``: edits made to the working tree while a
run is under way cannot reach a bridge started later in the run. The copy carries its own
``pontis`` distribution metadata with the connector entry points of its ``pyproject.toml``, which
shadows the editable install's: otherwise the bridge would load the connectors the project venv
lists *now* (a connector added to ``pyproject.toml`` by someone else during the run would be
missing from the copy, and the bridge would refuse to start).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bridge", "tests/__init__.py", "tests/reference")
SOURCES = ("worktree", "head")
ENTRY_POINT_GROUP = "pontis.connectors"


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
        pyproject = _git("show", "HEAD:pyproject.toml")
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
        pyproject = (REPO / "pyproject.toml").read_text()
    _write_distribution(dest, tomllib.loads(pyproject))
    sys.path.insert(0, str(dest))
    return revision


def _write_distribution(dest: Path, pyproject: dict[str, object]) -> None:
    """``pontis.dist-info`` in ``dest`` with the connector entry points of ``pyproject``
    whose module is in the copy (one being written while the copy was taken is left out)."""
    project = pyproject.get("project")
    assert isinstance(project, dict), "pyproject.toml has no [project]"
    declared = project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
    lines = []
    for name, target in declared.items():
        module = dest.joinpath(*target.partition(":")[0].split("."))
        if module.with_suffix(".py").exists() or (module / "__init__.py").exists():
            lines.append(f"{name} = {target}")
    dist = dest / f"pontis-{project.get('version', '0')}.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: pontis\nVersion: {project.get('version', '0')}\n"
    )
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n" + "\n".join(lines) + "\n")
