"""``pontis -c CONFIG dead-letters list|show|retry|drop`` on the database directly, both engines.

``main`` runs in a worker thread (it starts its own event loop, as on the command line) while
the test's store is open, as the bridge's would be.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.core.cli import main
from bridge.portal.dead_letters import UnreadableEvent
from bridge.portal.models import Portal
from bridge.portal.store import Store
from tests.cli_fixtures import CONFIG
from tests.test_dead_letters import KEY, NET, ROOM, matrix_letter, remote_letter

pytestmark = pytest.mark.usefixtures("no_pontis_env")


@pytest.fixture
def config(cli_config: str) -> str:
    return cli_config


async def pontis(config: str, *args: str) -> int:
    return await asyncio.to_thread(main, ["-c", config, "dead-letters", *args], factories={})


def out_and_err(capsys: pytest.CaptureFixture[str]) -> tuple[list[str], list[str]]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out.splitlines(), captured.err.splitlines()


async def test_list_show_retry_drop(
    store: Store, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await store.save_portal(Portal(network=NET, remote_id=KEY.remote_id, mxid=ROOM))
    to_network = await matrix_letter(store, "$refused", error="refused\nby policy")
    to_matrix = await remote_letter(store, "hello")
    assert await pontis(config, "list") == 0
    out, _ = out_and_err(capsys)
    assert len(out) == 3 and out[-1] == "2 dead letters"
    assert out[0].startswith(f"{to_network}  Matrix → network  reference  {ROOM}  ")
    assert out[0].endswith("1 attempt  refused by policy")
    assert out[1].startswith(f"{to_matrix}  network → Matrix  reference  portal chat-1 ({ROOM})")
    assert await pontis(config, "list", "--limit", "1") == 0
    out, _ = out_and_err(capsys)
    assert out == [out[0], "2 dead letters (1 older not shown)"] and out[0].startswith(
        f"{to_matrix}  "
    )

    assert await pontis(config, "show", str(to_matrix)) == 0
    out, _ = out_and_err(capsys)
    text = "\n".join(out)
    assert out[0] == f"Dead letter {to_matrix}" and "direction: network → Matrix" in text
    assert '"text": "hello"' in text and "hunter2" not in text and "[hidden]" in text

    assert await pontis(config, "retry", str(to_network)) == 0
    out, _ = out_and_err(capsys)
    assert f"Dead letter {to_network}: back in the inbox (Matrix → network)" in out[0]
    assert "within seconds" in out[-1]
    assert [r.event_id for r in await store.pending_inbox()] == ["$refused"]

    assert await pontis(config, "drop", str(to_matrix)) == 0
    assert out_and_err(capsys)[0] == [f"Dropped dead letter {to_matrix}."]
    assert await store.dead_letters.count() == 0 and await store.remote_inbox.pending() == []
    assert await pontis(config, "list") == 0
    assert out_and_err(capsys)[0] == ["0 dead letters"]


async def test_retry_all_and_drop_all(
    store: Store, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await matrix_letter(store, "$one")
    (bad,) = await store.dead_letters.park_unreadable(
        "t", [UnreadableEvent("pdu", 42, "events[0] must be an object")]
    )
    last = await remote_letter(store, "two")
    assert await pontis(config, "retry", "all") == 0
    out, _ = out_and_err(capsys)
    assert out[0].startswith(f"Dead letter {first}: back in the inbox")
    assert out[1] == (
        f"Dead letter {bad}: an event the bridge cannot read; it cannot be retried, only dropped."
    )
    assert out[2].startswith(f"Dead letter {last}: back in the remote inbox (network → Matrix)")
    assert len(await store.pending_inbox()) == 1 and len(await store.remote_inbox.pending()) == 1
    assert await pontis(config, "retry", str(bad)) == 1
    assert await pontis(config, "drop", "all") == 0
    assert out_and_err(capsys)[0][-1] == "Dropped 1 dead letters."
    assert await store.dead_letters.count() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "999"), "pontis: there is no dead letter 999"),
        (("retry", "999"), None),
        (("drop", "999"), "pontis: there is no dead letter 999"),
        (("show",), "pontis: usage: pontis -c CONFIG dead-letters show <id>"),
        (("show", "all"), "pontis: usage: pontis -c CONFIG dead-letters show <id>"),
        (("retry", "x1"), "pontis: usage: pontis -c CONFIG dead-letters retry <id>|all"),
        (("drop", "-1"), "pontis: usage: pontis -c CONFIG dead-letters drop <id>|all"),
        (("retry", "1" * 40), "pontis: usage: pontis -c CONFIG dead-letters retry <id>|all"),
    ],
)
async def test_what_cannot_be_done_is_one_line_and_exit_1(
    store: Store,
    config: str,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str | None,
) -> None:
    assert await pontis(config, *args) == 1
    out, err = out_and_err(capsys)
    if message is None:
        assert out == ["There is no dead letter 999."]
    else:
        assert err == [message]


async def test_an_unreachable_database_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(database="postgres://nobody@127.0.0.1:1/none"))
    assert await pontis(str(path), "list") == 1
    _, err = out_and_err(capsys)
    assert len(err) == 1 and err[0].startswith("pontis: database: cannot open 127.0.0.1:1/none")
