"""The bridge config a benchmark runs with.

Like the end-to-end tests' config (``tests/e2e/conftest.py``), but with only the connectors
under measurement enabled and logging at INFO, the production default, instead of DEBUG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

DOMAIN = "bench.test"


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
