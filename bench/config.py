"""The bridge config a benchmark runs with.

Like the end-to-end tests' config (``tests/e2e/conftest.py``), but with only the connectors
under measurement enabled (the reference network, XMPP, email and Teams) and logging at INFO, the
production default, instead of DEBUG.

The main bridge runs with ``encryption: {allow: false}``, written out rather than left to the
template (whose defaults are ``allow: true, default: true``), so that its figures stay comparable
with the runs before encryption existed. The encryption comparison (:mod:`bench.encryption`)
runs bridges of its own, with encryption off and on (:func:`write_encryption_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.hub import write_bridge_config, xmpp_section

DOMAIN = "bench.test"

XMPP_SECRET = "component-secret-for-the-benchmark"

MAIL_DOMAIN = "bench-mail.test"
"""The bridge's mail domain: portal addresses are ``<name>.<token>@bench-mail.test``."""
MAIL_AUTHSERV_ID = "mx.agency.test"
"""The authserv-id the bridge trusts, as if the agency's MX ran a DMARC milter."""


def xmpp_connector(*, component_port: int, upload_service: str) -> dict[str, Any]:
    """The ``connectors.xmpp`` section for a Prosody that has both components with
    :data:`XMPP_SECRET`, as in ``tests/e2e/conftest.py``."""
    return xmpp_section(
        component_port=component_port, secret=XMPP_SECRET, upload_service=upload_service
    )


def email_connector(*, lmtp_port: int, relay_port: int) -> dict[str, Any]:
    """The ``connectors.email`` section: mail in over LMTP on ``lmtp_port``, mail out through
    the SMTP relay on ``relay_port`` (in the benchmark, a sink that timestamps arrivals).

    As ``email_section`` in ``tests/e2e/conftest.py``, whose relay is Postfix instead.
    """
    return {
        "enabled": True,
        "domain": MAIL_DOMAIN,
        "inbound": {"protocol": "lmtp", "host": "127.0.0.1", "port": lmtp_port},
        "outbound": {"host": "127.0.0.1", "port": relay_port, "security": "none"},
        "trusted_authserv_id": MAIL_AUTHSERV_ID,
        "sender_verification": "dmarc",
    }


ENCRYPTION_OFF: dict[str, Any] = {"allow": False}
"""``encryption:`` of the main bridge: off, as in every run before encryption existed."""


def encryption_on(*, encrypt_new_portals: bool) -> dict[str, Any]:
    """``encryption:`` of the encryption comparison's bridge: allowed, with the template's
    defaults for everything else (key waits, verification levels, rotation); new portals are
    encrypted only with ``encrypt_new_portals``. The pickle key is the ``pickle.key`` that
    ``generate-registration`` writes beside the config."""
    return {"allow": True, "default": encrypt_new_portals}


def write_config(
    path: Path, *, as_port: int, metrics_port: int, connectors: dict[str, dict[str, Any]]
) -> None:
    write_bridge_config(
        path, domain=DOMAIN, as_port=as_port, metrics_port=metrics_port, connectors=connectors,
        bridge={"permissions": {DOMAIN: "user"}}, log_level="INFO", encryption=ENCRYPTION_OFF,
    )  # fmt: skip


def write_encryption_config(
    path: Path, *, as_port: int, metrics_port: int, remote_url: str, encryption: dict[str, Any]
) -> None:
    """A bridge of the encryption comparison: the reference network only, ``encryption`` as
    given (:data:`ENCRYPTION_OFF` or :func:`encryption_on`)."""
    write_bridge_config(
        path, domain=DOMAIN, as_port=as_port, metrics_port=metrics_port,
        connectors={"reference": {"enabled": True, "url": remote_url}},
        bridge={"permissions": {DOMAIN: "user"}}, log_level="INFO", encryption=encryption,
    )  # fmt: skip
