"""Secrets from files and the environment, files written 0600, and ``check`` warning about
secret files every user can read."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bridge.core.config import Config, ConfigError
from bridge.core.secret_files import exposed_files, log_exposed_files
from bridge.teams.config import EXAMPLE_CONFIG as TEAMS_EXAMPLE
from bridge.xmpp.config import EXAMPLE_CONFIG as XMPP_EXAMPLE
from tests.config_text import BASE_CONFIG
from tests.e2e.hub import REPO
from tests.test_cli import pontis

SECRETS = {
    "as.txt": "as-from-a-file\n",
    "hs.txt": "hs-from-a-file",
    "db.txt": "postgres://pontis:db-pass-from-file@127.0.0.1/pontis\n",
    "component.txt": "component-from-a-file\n",
    "smtp.txt": "smtp-pass-from-a-file\n",
    "tenant.txt": "tenant-secret-from-a-file\n",
}

FILE_CONFIG = """\
homeserver:
  address: https://matrix.hub.test
  domain: hub.test
appservice:
  port: 29331
  as_token_file: as.txt
  hs_token_file: {dir}/hs.txt
database_file: db.txt
connectors:
  xmpp:
    enabled: true
    component:
      secret_file: component.txt
  email:
    enabled: false
    outbound:
      password_file: smtp.txt
  teams:
    enabled: true
    tenants:
      - tenant_id: 00000000-0000-0000-0000-000000000001
        client_id: 00000000-0000-0000-0000-000000000002
        client_secret_file: tenant.txt
"""


def write_secrets(directory: Path) -> Path:
    for name, value in SECRETS.items():
        (directory / name).write_text(value)
        (directory / name).chmod(0o600)
    config = directory / "config.yaml"
    config.write_text(FILE_CONFIG.format(dir=directory))
    config.chmod(0o600)
    return config


def test_every_secret_can_come_from_a_file(tmp_path: Path) -> None:
    config = Config.load(write_secrets(tmp_path), environ={})
    assert config.as_token == "as-from-a-file"
    assert config.hs_token == "hs-from-a-file"
    assert config.database_url == "postgres://pontis:db-pass-from-file@127.0.0.1/pontis"
    assert config.validate_connector("xmpp", XMPP_EXAMPLE) == []
    assert config.validate_connector("teams", TEAMS_EXAMPLE) == []
    assert config.connector_section("xmpp")["component"]["secret"] == "component-from-a-file"
    assert config.connector_section("email")["outbound"]["password"] == "smtp-pass-from-a-file"
    tenant = config.connector_section("teams")["tenants"][0]
    assert tenant["client_secret"] == "tenant-secret-from-a-file"
    # the log scrubber knows all of them
    assert {v.strip() for v in SECRETS.values() if "://" not in v} <= set(config.secrets())
    assert "db-pass-from-file" in config.secrets()
    # saving keeps the *_file keys and never writes a value read from a file
    config.save()
    text = (tmp_path / "config.yaml").read_text()
    assert "as_token_file: as.txt" in text and "client_secret_file: tenant.txt" in text
    assert not any(value.strip() in text for value in SECRETS.values())


def test_the_environment_wins_over_files_and_reaches_list_items(tmp_path: Path) -> None:
    env = {
        "PONTIS_APPSERVICE_AS_TOKEN": "as-from-env",
        "PONTIS_CONNECTORS_TEAMS_TENANTS_0_CLIENT_SECRET": "tenant-from-env",
    }
    config = Config.load(write_secrets(tmp_path), environ=env)
    assert config.as_token == "as-from-env"
    assert config.validate_connector("teams", TEAMS_EXAMPLE) == []
    assert config.connector_section("teams")["tenants"][0]["client_secret"] == "tenant-from-env"
    beyond = "PONTIS_CONNECTORS_TEAMS_TENANTS_3_CLIENT_SECRET"  # there is one tenant
    problems = Config.load(tmp_path / "config.yaml", environ={beyond: "x"}).validate_connector(
        "teams", TEAMS_EXAMPLE
    )
    assert [str(p) for p in problems] == [f"{beyond}: no such config key"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: (d / "as.txt").unlink(), "appservice.as_token_file: {d}/as.txt does not exist"),
        (lambda d: (d / "as.txt").write_text("\n"), "appservice.as_token_file: {d}/as.txt is empty"),
        (lambda d: ((d / "as.txt").unlink(), (d / "as.txt").mkdir()), "cannot read {d}/as.txt"),
        (lambda d: (d / "tenant.txt").unlink(),
         "connectors.teams.tenants[0].client_secret_file: {d}/tenant.txt does not exist"),
    ],
)  # fmt: skip
def test_an_unusable_secret_file_names_the_key_and_the_path(
    tmp_path: Path, change: object, expected: str
) -> None:
    config_path = write_secrets(tmp_path)
    change(tmp_path)  # type: ignore[operator]
    with pytest.raises(ConfigError) as err:
        Config.load(config_path, environ={})
    assert expected.format(d=tmp_path) in str(err.value)
    assert not any(value.strip() in str(err.value) for value in SECRETS.values())


def test_a_secret_given_twice_is_refused(tmp_path: Path) -> None:
    config_path = write_secrets(tmp_path)
    config_path.write_text(
        config_path.read_text().replace("as_token_file:", "as_token: inline\n  as_token_file:")
    )
    with pytest.raises(
        ConfigError, match=r"appservice\.as_token_file: appservice\.as_token is set"
    ):
        Config.load(config_path, environ={})


def test_generated_files_are_private(tmp_path: Path) -> None:
    """The registration and a config rewritten by generate-registration hold both tokens."""
    (tmp_path / "config.yaml").write_text((REPO / "config.example.yaml").read_text())
    (tmp_path / "config.yaml").chmod(0o644)  # as an editor leaves it
    old = os.umask(0o022)
    try:
        result = pontis(tmp_path, "-c", "config.yaml", "generate-registration", "-r", "reg.yaml")
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "reg.yaml").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "pickle.key").stat().st_mode) == 0o600
    # the operator's file keeps its owner's and group's access, but no longer everyone's
    assert stat.S_IMODE((tmp_path / "config.yaml").stat().st_mode) == 0o640
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_text((REPO / "config.example.yaml").read_text())
    (fresh / "config.yaml").chmod(0o600)
    assert pontis(fresh, "-c", "config.yaml", "generate-registration").returncode == 0
    assert stat.S_IMODE((fresh / "config.yaml").stat().st_mode) == 0o600
    assert stat.S_IMODE((fresh / "registration.yaml").stat().st_mode) == 0o600


def test_tokens_from_files_are_not_generated_into_the_config(tmp_path: Path) -> None:
    config_path = write_secrets(tmp_path)
    result = pontis(tmp_path, "-c", "config.yaml", "generate-registration", "-r", "reg.yaml")
    assert result.returncode == 0, result.stderr
    registration = YAML().load(tmp_path / "reg.yaml")
    assert registration["as_token"] == "as-from-a-file"
    text = config_path.read_text()
    assert "as-from-a-file" not in text and "as_token_file: as.txt" in text
    assert Config.load(config_path, environ={}).as_token == "as-from-a-file"


def test_world_readable_secret_files_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_path = write_secrets(tmp_path)
    config = Config.load(config_path, environ={})
    assert exposed_files(config) == []
    (tmp_path / "tenant.txt").chmod(0o644)
    config_path.chmod(0o604)
    (tmp_path / "registration.yaml").write_text("as_token: x\n")
    (tmp_path / "registration.yaml").chmod(0o644)
    (tmp_path / "group-only.txt").write_text("x")
    (tmp_path / "smtp.txt").chmod(0o640)  # a shared group is the operator's choice
    warnings = exposed_files(config, [tmp_path / "registration.yaml"])
    assert len(warnings) == 3, warnings
    assert warnings[0].startswith(f"the config file: {config_path} holds secrets")
    assert warnings[1].startswith("the registration file: ")
    assert warnings[2].startswith(
        f"connectors.teams.tenants[0].client_secret_file: {tmp_path}/tenant.txt"
    )
    assert all("chmod o-rwx" in w for w in warnings)
    assert not any(value.strip() in " ".join(warnings) for value in SECRETS.values())
    with caplog.at_level(logging.WARNING):
        log_exposed_files(config, logging.getLogger("pontis-test"))
    assert len(caplog.records) == 3  # registration.yaml beside the config is found by itself


def test_check_warns_about_world_readable_files(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(BASE_CONFIG + "encryption:\n  allow: false\n")
    (tmp_path / "config.yaml").chmod(0o644)
    result = pontis(tmp_path, "-c", "config.yaml", "check")
    assert (
        "pontis: warning: the config file: config.yaml holds secrets and every user on this "
        "machine can read it; run `chmod o-rwx config.yaml`" in result.stderr
    ), result.stderr
    (tmp_path / "config.yaml").chmod(0o600)
    result = pontis(tmp_path, "-c", "config.yaml", "check")
    assert "warning" not in result.stderr, result.stderr
