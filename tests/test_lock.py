"""requirements.lock, the pinned and hashed set an operator installs for a reproducible bridge
(docs/upgrades.md), still satisfies pyproject.toml: a dependency added or raised there without
regenerating the lock fails here, not at an operator's ``pip install --require-hashes``."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parent.parent
LOCK = ROOT / "requirements.lock"


def _pins(text: str) -> dict[str, tuple[Version, int]]:
    """name → (pinned version, number of hashes) for every requirement in a pip-compile file."""
    pins: dict[str, tuple[Version, int]] = {}
    for block in re.split(r"\n(?=\S)", text):
        head = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        if head:
            name = canonicalize_name(head.group(1))
            pins[name] = (
                Version(head.group(2)),
                len(re.findall(r"--hash=sha256:[0-9a-f]{64}", block)),
            )
    return pins


def _dependencies() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


def test_pins_reads_pip_compile_output() -> None:
    text = (
        "aiohttp==3.14.5 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64
        + "\n    # via pontis (pyproject.toml)\nruamel-yaml==0.19.1 \\\n    --hash=sha256:"
        + "c" * 64 + "\n"
    )  # fmt: skip
    assert _pins(text) == {"aiohttp": (Version("3.14.5"), 2), "ruamel-yaml": (Version("0.19.1"), 1)}


def test_every_dependency_is_pinned_within_its_range() -> None:
    pins = _pins(LOCK.read_text())
    assert len(pins) >= len(_dependencies())
    wrong = []
    for requirement in _dependencies():
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            wrong.append(f"{requirement.name}: not in requirements.lock")
        elif not requirement.specifier.contains(pinned[0], prereleases=True):
            wrong.append(f"{requirement.name}: locked {pinned[0]}, pyproject wants {requirement}")
    assert wrong == [], "regenerate requirements.lock (docs/upgrades.md): " + "; ".join(wrong)


def test_every_pin_carries_hashes_and_no_index_of_this_machine() -> None:
    text = LOCK.read_text()
    pins = _pins(text)
    assert [name for name, (_, hashes) in pins.items() if hashes == 0] == []
    assert "pontis" not in pins  # the bridge itself is installed after, with --no-deps
    assert not re.search(r"^--(extra-)?index-url|^--find-links|file://", text, re.M)
