"""The wheel holds the product and nothing else (issue #15, item 4): the ``bridge`` package with
every subpackage and its data files (the example config, the provisioning API's OpenAPI
document), and no Graph emulator, test harness, demo or benchmark, although all of these sit
beside it in the tree.

The wheel is built by pip as an operator would (``pip wheel --no-deps``, build isolation, the
build backend pyproject.toml names) from a copy of the working tree, so the build leaves nothing
in the checkout and tests what is about to be committed, not the last commit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
NOT_PRODUCT = ("graph_emulator", "tests", "demo", "bench", "scripts", "deploy", "docs")
DATA_FILES = ("bridge/example-config.yaml", "bridge/provision/openapi.yaml", "bridge/py.typed")
PRETEND_VERSION = "9.8.7"


@dataclass
class Built:
    wheel: zipfile.ZipFile
    tree: Path  # the copy it was built from (others may edit the checkout meanwhile)

    def source(self, pattern: str) -> set[str]:
        """Files under bridge/ in the copy matching ``pattern``, as wheel paths."""
        return {
            str(path.relative_to(self.tree))
            for path in (self.tree / "bridge").rglob(pattern)
            if "__pycache__" not in path.parts
        }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("wheel")
    tree = work / "tree"
    shutil.copytree(
        ROOT,
        tree,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".cache", "*_cache", "__pycache__", "*.egg-info", "build", "dist"
        ),
    )
    # The copy has no .git: setuptools-scm is told the version, as a release build from a tag
    # would find it.
    env = {**os.environ, "SETUPTOOLS_SCM_PRETEND_VERSION": PRETEND_VERSION}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "out"), "."],
        cwd=tree, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (work / "out").glob("*.whl")
    assert wheel.name == f"pontis-{PRETEND_VERSION}-py3-none-any.whl"
    return Built(zipfile.ZipFile(wheel), tree)


def test_the_wheel_holds_bridge_and_its_metadata_only(built: Built) -> None:
    top = {name.split("/")[0] for name in built.wheel.namelist()}
    assert top == {"bridge", f"pontis-{PRETEND_VERSION}.dist-info"}


def test_no_emulator_test_demo_or_bench_module(built: Built) -> None:
    for name in built.wheel.namelist():
        parts = name.split("/")
        assert not set(parts) & set(NOT_PRODUCT), name
        assert "emulator" not in name and "conftest" not in name, name
        assert not parts[-1].startswith("test_"), name


def test_every_bridge_package_and_data_file_is_in(built: Built) -> None:
    names = set(built.wheel.namelist())
    packages = {str(Path(init).parent) for init in built.source("__init__.py")}
    assert {"bridge", "bridge/core", "bridge/xmpp", "bridge/email", "bridge/teams"} <= packages
    assert set(DATA_FILES) <= names
    assert built.source("*.py") - names == set(), "modules left out of the wheel"


def test_the_wheel_declares_the_command_and_the_connectors(built: Built) -> None:
    wheel = built.wheel
    info = f"pontis-{PRETEND_VERSION}.dist-info"
    entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert "pontis = bridge.core.cli:main" in entry_points
    for network in ("xmpp", "email", "teams"):
        assert f"{network} = bridge.{network}.connector:" in entry_points
    metadata = wheel.read(f"{info}/METADATA").decode()
    assert f"Version: {PRETEND_VERSION}\n" in metadata
    assert "Requires-Dist: mautrix" in metadata
    assert "matrix-nio" not in metadata.split("Provides-Extra: test")[0]
