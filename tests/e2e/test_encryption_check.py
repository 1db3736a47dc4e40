"""The hub tells an operator which homeserver settings encryption still needs: the running
bridge in ``/_pontis/health`` and its log, ``pontis check`` with a one-line reason each."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import DOMAIN, Hub
from tests.e2e.hub import BridgeProcess, install_reference_entry_point, write_bridge_config
from tests.e2e.process import free_port
from tests.e2e.synapse import SynapseServer

pytestmark = pytest.mark.e2e


async def test_the_running_bridge_finds_its_homeserver_ready(encrypted_hub: Hub) -> None:
    url = f"http://127.0.0.1:{encrypted_hub.as_port}/_pontis/health"
    encryption: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(150):
            async with http.get(url) as resp:
                encryption = (await resp.json())["encryption"]
            if encryption["probe"] == "done":
                break
            await asyncio.sleep(0.2)
    assert encryption["probe"] == "done", encryption
    assert encryption["problems"] == []
    assert encryption["device"]


async def _check(tmp_path: Path, synapse_config: dict[str, Any]) -> tuple[int, list[str]]:
    """``pontis check`` of an encrypting bridge that is not running, against a fresh Synapse."""
    site = tmp_path / "site"
    install_reference_entry_point(site)
    config = tmp_path / "config.yaml"
    write_bridge_config(
        config, domain=DOMAIN, as_port=free_port(), metrics_port=free_port(), connectors={},
        bridge={"permissions": {DOMAIN: "user"}}, log_level="INFO", encryption={"allow": True},
    )  # fmt: skip
    bridge = BridgeProcess(tmp_path, config, site, env={})
    assert bridge.cli("generate-registration", "-r", str(tmp_path / "reg.yaml")).returncode == 0
    synapse = SynapseServer(
        DOMAIN, tmp_path / "synapse", [tmp_path / "reg.yaml"], extra_config=synapse_config
    )
    async with synapse:
        bridge.env["PONTIS_HOMESERVER_ADDRESS"] = synapse.base_url
        result = bridge.cli("check", "-r", str(tmp_path / "reg.yaml"))
    return result.returncode, result.stderr.splitlines()


async def test_check_passes_against_a_homeserver_with_everything_set(tmp_path: Path) -> None:
    code, lines = await _check(tmp_path, {})  # the harness turns both features on
    assert code == 0, lines


async def test_check_names_each_missing_synapse_setting(tmp_path: Path) -> None:
    """Neither to-device events nor key counts arrive: check's stand-in probe sees both gaps."""
    code, lines = await _check(tmp_path, {"experimental_features": {}})
    assert code == 1
    problems = [line for line in lines if line.startswith("pontis: homeserver:")]
    assert len(problems) == 2, lines
    assert "msc2409_to_device_messages_enabled" in problems[0]
    assert "msc3202_transaction_extensions" in problems[1]
