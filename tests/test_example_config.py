"""The config file operators start from (bridge/example-config.yaml) shows every key each
connector knows, with the connector's own defaults: a key missing there is a setting nobody
finds, since the bridge merges it in silently."""

from __future__ import annotations

import importlib
import io
from typing import Any

import pytest
from ruamel.yaml import YAML

from bridge.core.config_yaml import load_template


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    found: dict[str, Any] = {}
    for key, value in node.items():
        found.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


@pytest.mark.parametrize("network", ["xmpp", "email", "teams"])
def test_the_example_config_shows_each_connector_key_with_its_default(network: str) -> None:
    own = YAML(typ="safe").load(importlib.import_module(f"bridge.{network}.config").EXAMPLE_CONFIG)
    shown = load_template()["connectors"][network]
    assert _leaves(YAML(typ="safe").load(_dump(shown))) == _leaves(own)


def _dump(node: Any) -> str:
    buffer = io.StringIO()
    YAML().dump(node, buffer)
    return buffer.getvalue()
