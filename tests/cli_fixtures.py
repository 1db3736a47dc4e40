"""Fixtures for tests that run ``pontis -c CONFIG <command>`` against the test's own store.

``cli_config`` is a config file naming the store the test has open (SQLite file, or the
PostgreSQL schema), as an operator's would while the bridge runs; ``PONTIS_*`` variables of
the environment are cleared so they cannot change what the file says.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.config_text import BASE_CONFIG
from tests.store_fixtures import StoreTarget

CONFIG = BASE_CONFIG + "database: '{database}'\n"


@pytest.fixture
def no_pontis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``PONTIS_*`` variable of the test run (the harness's own, such as
    ``PONTIS_SYNAPSE_VENV``) reaches a config the test loads: it would be an unknown key."""
    for name in [n for n in os.environ if n.startswith("PONTIS_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def cli_config(tmp_path: Path, store_target: StoreTarget, no_pontis_env: None) -> str:
    database = store_target.url
    if store_target.engine == "postgres":  # the test's schema, as a server setting
        database += f"?search_path={store_target.db_args['server_settings']['search_path']}"
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(database=database))
    return str(path)
