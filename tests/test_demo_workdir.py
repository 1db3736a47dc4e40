"""The demo empties its working directory at each start: never one it did not make."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.stack import MARKER, Stack, clear_workdir


async def test_a_directory_the_demo_did_not_make_is_refused_and_left_alone(tmp_path: Path) -> None:
    precious = tmp_path / "thesis.tex"
    precious.write_text("years of work")
    with pytest.raises(RuntimeError, match="not made by the demo"):
        await Stack(tmp_path).start(progress=lambda _text: None)
    assert precious.read_text() == "years of work"


def test_a_new_an_empty_or_a_marked_directory_is_taken(tmp_path: Path) -> None:
    clear_workdir(tmp_path / "new")
    clear_workdir(tmp_path)
    (tmp_path / MARKER).write_text("")
    (tmp_path / "bridge.log").write_text("old run")
    clear_workdir(tmp_path)
