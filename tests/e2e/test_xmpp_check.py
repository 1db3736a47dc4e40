"""`pontis check` for XMPP: a real XEP-0114 handshake against a real Prosody and a real
ejabberd, which answer a domain they do not serve differently."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bridge.xmpp.connector import XmppConnector
from bridge.xmpp.protocol.handshake import component_handshake
from tests.e2e.conftest import XMPP_SERVERS, XmppServer
from tests.e2e.ejabberd import EjabberdServer
from tests.e2e.process import free_port
from tests.e2e.prosody import ProsodyServer

pytestmark = pytest.mark.e2e
SECRET = "right-secret"


@pytest_asyncio.fixture(scope="module", params=XMPP_SERVERS)
async def xmpp_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[XmppServer]:
    """The XMPP server (Prosody, then ejabberd) with one component configured."""
    kind = EjabberdServer if request.param == "ejabberd" else ProsodyServer
    server = kind(Path(tmp_path_factory.mktemp("check")), components={"matrix.check.test": SECRET})
    await server.start()
    yield server
    await server.stop()


async def test_right_settings_pass(xmpp_server: XmppServer) -> None:
    assert (
        await component_handshake(
            "127.0.0.1", xmpp_server.component_port, "matrix.check.test", SECRET
        )
        is None
    )


@pytest.mark.parametrize(
    ("domain", "secret", "expected"),
    [
        ("matrix.check.test", "wrong", "refused the secret"),
        # Prosody: host-unknown; ejabberd: not-authorized, as for a wrong secret.
        ("unknown.check.test", SECRET, "no component unknown.check.test configured"),
    ],
)
async def test_wrong_settings_are_explained(
    xmpp_server: XmppServer, domain: str, secret: str, expected: str
) -> None:
    problem = await component_handshake("127.0.0.1", xmpp_server.component_port, domain, secret)
    assert problem is not None and expected in problem


async def test_nothing_listening_is_explained() -> None:
    port = free_port()
    problem = await component_handshake("127.0.0.1", port, "matrix.check.test", SECRET)
    assert problem is not None and problem.startswith(f"cannot connect to 127.0.0.1:{port}")


async def test_connector_check_names_the_config_key(xmpp_server: XmppServer) -> None:
    section = {
        "enabled": True, "rooms_domain": "rooms.check.test", "upload_service": "", "muc_nick": "M",
        "history_on_join": 0, "max_file_mib": 1,
        "component": {"jid": "matrix.check.test", "host": "127.0.0.1", "port": xmpp_server.component_port, "secret": SECRET},
    }  # fmt: skip
    problems = await XmppConnector().check(section)
    assert len(problems) == 1
    assert problems[0].startswith("connectors.xmpp.rooms_domain: rooms.check.test: ")
    assert "no component rooms.check.test configured" in problems[0]
