"""The ``provisioning`` section of the config: off by default, the shared secret from the file
or from a ``*_file``, the template's placeholder meaning "no shared secret", a short one refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.core.config import Config, ConfigError
from bridge.provision.api import shared_secret
from tests.config_text import BASE_CONFIG


def _load(tmp_path: Path, extra: str = "") -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(BASE_CONFIG + extra)
    return Config.load(path, environ={})


def test_off_by_default_and_the_placeholder_is_no_secret(tmp_path: Path) -> None:
    section = _load(tmp_path).section("provisioning")
    assert section["enabled"] is False
    assert shared_secret(section) is None


def test_the_secret_comes_from_its_file(tmp_path: Path) -> None:
    (tmp_path / "provisioning.secret").write_text("a-long-secret-from-a-file-0123456789\n")
    config = _load(tmp_path, "provisioning:\n  enabled: true\n"
                             "  shared_secret_file: provisioning.secret\n")  # fmt: skip
    assert shared_secret(config.section("provisioning")) == "a-long-secret-from-a-file-0123456789"
    assert "a-long-secret-from-a-file-0123456789" in config.secrets()  # hidden from messages


def test_a_short_secret_stops_the_bridge(tmp_path: Path) -> None:
    config = _load(tmp_path, "provisioning:\n  enabled: true\n  shared_secret: hunter2\n")
    with pytest.raises(ConfigError) as err:
        shared_secret(config.section("provisioning"))
    assert "provisioning.shared_secret" in str(err.value) and "hunter2" not in str(err.value)


def test_a_mistyped_section_is_a_config_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "provisioning:\n  enabled: maybe\n")
    assert "provisioning.enabled" in str(err.value)
