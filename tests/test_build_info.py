"""The bridge's /metrics shows which build runs and how the process fares (issue #15, item 3):
``pontis_build_info`` with the installed version and the Python, and the ``process_*`` series
the dashboard and the restart alert read. Scraped through the handler the bridge serves, on a
real store, as Prometheus would."""

from __future__ import annotations

import platform
import re
import time
from importlib.metadata import version
from pathlib import Path

import aiohttp
from aiohttp import web
from packaging.version import Version

from bridge import __version__
from bridge.core.app import App
from bridge.core.config import Config
from bridge.portal.store import Store
from tests.config_text import BASE_CONFIG


async def _scrape(tmp_path: Path, store: Store) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(BASE_CONFIG + "metrics:\n  enabled: true\n")
    app = App(Config.load(path, environ={}), factories={})
    app.store = store
    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", app._metrics)
    runner = web.AppRunner(metrics_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=")
            return await resp.text()
    finally:
        await runner.cleanup()


def test_the_version_is_the_installed_package_version() -> None:
    """One source of truth: what pip installed (from the git tag, through setuptools-scm)."""
    assert __version__ == version("pontis")
    Version(__version__)  # PEP 440, or this raises


async def test_build_info_names_version_and_python(tmp_path: Path, store: Store) -> None:
    text = await _scrape(tmp_path, store)
    found = re.findall(r"^pontis_build_info\{(.*)\} (\S+)$", text, re.M)
    assert len(found) == 1, text
    labels, value = found[0]
    assert dict(re.findall(r'(\w+)="([^"]*)"', labels)) == {
        "version": version("pontis"),
        "python": platform.python_version(),
    }
    assert float(value) == 1.0


async def test_process_metrics_are_the_bridge_process(tmp_path: Path, store: Store) -> None:
    text = await _scrape(tmp_path, store)

    def sample(name: str) -> float:
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        assert match, f"{name} missing from /metrics"
        return float(match.group(1))

    assert sample("process_resident_memory_bytes") > 10_000_000  # a Python with aiohttp loaded
    assert sample("process_virtual_memory_bytes") >= sample("process_resident_memory_bytes")
    assert sample("process_cpu_seconds_total") > 0
    assert sample("process_open_fds") > 0
    assert time.time() - 86_400 < sample("process_start_time_seconds") <= time.time()
    assert re.search(
        r'^python_info\{.*version="' + re.escape(platform.python_version()), text, re.M
    )
