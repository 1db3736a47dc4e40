"""The bridge config a benchmark runs with.

Like the end-to-end tests' config (``tests/e2e/conftest.py``), but with only the connectors
under measurement enabled (the reference network and XMPP) and logging at INFO, the production
default, instead of DEBUG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.hub import write_bridge_config, xmpp_section

DOMAIN = "bench.test"

XMPP_SECRET = "component-secret-for-the-benchmark"


def xmpp_connector(*, component_port: int, upload_service: str) -> dict[str, Any]:
    """The ``connectors.xmpp`` section for a Prosody that has both components with
    :data:`XMPP_SECRET`, as in ``tests/e2e/conftest.py``."""
    return xmpp_section(
        component_port=component_port, secret=XMPP_SECRET, upload_service=upload_service
    )


def write_config(
    path: Path, *, as_port: int, metrics_port: int, connectors: dict[str, dict[str, Any]]
) -> None:
    write_bridge_config(
        path, domain=DOMAIN, as_port=as_port, metrics_port=metrics_port, connectors=connectors,
        bridge={"permissions": {DOMAIN: "user"}}, log_level="INFO",
    )  # fmt: skip
