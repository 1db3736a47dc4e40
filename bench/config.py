"""The bridge config a benchmark runs with.

Like the end-to-end tests' config (``tests/e2e/conftest.py``), but with only the connectors
under measurement enabled (the reference network and XMPP) and logging at INFO, the production
default, instead of DEBUG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

DOMAIN = "bench.test"

XMPP_COMPONENT = "matrix.xmpp.test"
"""The bridge's XEP-0114 component: Matrix users are JIDs on it."""
XMPP_ROOMS = "rooms.xmpp.test"
XMPP_SECRET = "component-secret-for-the-benchmark"


def xmpp_connector(*, component_port: int, upload_service: str) -> dict[str, Any]:
    """The ``connectors.xmpp`` section for a Prosody that has both components with
    :data:`XMPP_SECRET`, as in ``tests/e2e/conftest.py``."""
    return {
        "enabled": True,
        "component": {
            "jid": XMPP_COMPONENT,
            "host": "127.0.0.1",
            "port": component_port,
            "secret": XMPP_SECRET,
        },
        "rooms_domain": XMPP_ROOMS,
        "upload_service": upload_service,
    }


def write_config(
    path: Path, *, as_port: int, metrics_port: int, connectors: dict[str, dict[str, Any]]
) -> None:
    config = {
        "homeserver": {"address": "http://127.0.0.1:9", "domain": DOMAIN, "verify_ssl": False},
        "appservice": {
            "id": "pontis",
            "address": f"http://127.0.0.1:{as_port}",
            "hostname": "127.0.0.1",
            "port": as_port,
            "bot_username": "pontis",
            "as_token": "generate",
            "hs_token": "generate",
        },
        "database": "sqlite:pontis.db",
        "bridge": {"permissions": {DOMAIN: "user"}},
        "connectors": connectors,
        "metrics": {"enabled": True, "listen": f"127.0.0.1:{metrics_port}"},
        "logging": {"level": "INFO", "format": "text"},
    }
    with path.open("w") as f:
        YAML().dump(config, f)
