"""The appservice registration the homeserver is given (``pontis generate-registration``)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML

from bridge.core.config_checks import BUILTIN_CONNECTORS
from bridge.core.config_yaml import atomic_write, plain
from bridge.core.ghost_names import GhostNames

if TYPE_CHECKING:
    from bridge.core.config import Config


def make_registration(config: Config, connector_ids: Iterable[str]) -> dict[str, Any]:
    """The appservice registration for the homeserver.

    Claims the ghost names of teams, xmpp and email (always, DESIGN §3) and of every other id in
    ``connector_ids`` (``@<id>_.*`` unless ``connectors.<id>.ghost_username_template`` says
    otherwise), ``#<id>_.*`` aliases and the bot, on the bridge's domain, exclusively. Regexes
    are anchored, since some homeservers search rather than match them.
    """
    ids = list(dict.fromkeys([*BUILTIN_CONNECTORS, *connector_ids]))
    domain = re.escape(config.domain)
    ghost_names = GhostNames.from_config(config)
    users = [
        {"exclusive": True, "regex": f"^@{re.escape(config.bot_username)}:{domain}$"},
        *({"exclusive": True, "regex": ghost_names.regex(cid)} for cid in ids),
    ]
    aliases = [{"exclusive": True, "regex": f"^#{re.escape(cid)}_.*:{domain}$"} for cid in ids]
    return {
        "id": config.appservice_id,
        "url": config.appservice_address,
        "as_token": config.as_token,
        "hs_token": config.hs_token,
        "sender_localpart": config.bot_username,
        "rate_limited": False,
        "receive_ephemeral": True,
        "de.sorunome.msc2409.push_ephemeral": True,
        "namespaces": {"users": users, "aliases": aliases, "rooms": []},
        # Encryption without /sync: to-device events, device lists and one-time-key counts in
        # transactions (MSC3202/MSC4203), and the bot's device made by the appservice (MSC4190).
        **(
            {"org.matrix.msc3202": True, "io.element.msc4190": True}
            if config.encryption.allow
            else {}
        ),
    }


def write_registration(path: str | Path, registration: Mapping[str, Any]) -> None:
    """Write ``registration`` as YAML to ``path`` atomically (it holds both tokens)."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    buffer = io.StringIO()
    buffer.write("# Appservice registration written by `pontis generate-registration`.\n")
    buffer.write("# Give this file to the homeserver (Synapse: app_service_config_files).\n")
    yaml.dump(plain(registration), buffer)
    atomic_write(Path(path), buffer.getvalue())
