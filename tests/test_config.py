from __future__ import annotations

import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bridge.core.config import (
    Config,
    ConfigError,
    ConfigProblem,
    load_template,
    make_registration,
    validate_section,
    write_registration,
)

GOOD = """\
# Operator's own comment at the top
homeserver:
  address: https://matrix.hub.test  # where synapse lives
  domain: hub.test
appservice:
  port: 29331
  as_token: as-secret-value-1
  hs_token: hs-secret-value-2
# Below: the networks
connectors:
  xmpp:
    enabled: true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str = GOOD, **env: str) -> Config:
    return Config.load(write(tmp_path, text), environ=env)


def problems_of(tmp_path: Path, text: str, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, **env)
    return [str(problem) for problem in caught.value.problems]


def test_good_config_reads_typed_values_and_defaults(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config.homeserver_address == "https://matrix.hub.test"
    assert config.domain == "hub.test"
    assert config.port == 29331
    assert config.bot_mxid == "@pontis:hub.test"
    assert config.verify_ssl is True
    assert config.database_url == "sqlite:pontis.db"
    assert config.retry_attempts == 5
    assert config.retry_backoff == 2.0
    assert config.queue_size == 256
    assert config.max_body_mib == 16
    assert config.metrics_listen == "127.0.0.1:9103"
    assert config.metrics_host_port == ("127.0.0.1", 9103)
    assert config.log_level == "INFO"
    assert config.log_format == "text"
    assert config.permissions["@admin:example.org"] == "admin"
    assert config["homeserver"]["domain"] == "hub.test"
    assert config.section("connectors", "xmpp")["component"]["port"] == 5347
    assert config.enabled_connectors() == ["xmpp"]
    section = config.connector_section("xmpp")
    assert type(section) is dict and type(section["component"]) is dict
    assert section["component"]["jid"] == "matrix.xmpp.example.org"


def test_template_is_shipped_and_linked_from_repo_root() -> None:
    root = Path(__file__).resolve().parent.parent
    link = root / "config.example.yaml"
    assert link.is_symlink()
    assert link.resolve() == (root / "bridge" / "example-config.yaml").resolve()
    template = load_template()
    assert list(template) == [
        "homeserver",
        "appservice",
        "database",
        "bridge",
        "encryption",
        "connectors",
        "provisioning",
        "metrics",
        "logging",
    ]


def test_broken_config_reports_every_problem_with_key_paths(tmp_path: Path) -> None:
    text = """\
homeserver:
  address: ftp://hub.test
  domain: hub.test
  verify_ssl: "yes"
appservice:
  port: abc
  bot_username: Pontis Bot
  as_token: a
  hs_token: b
database: mysql://x
bridge:
  permissions:
    "*": relay
    "@boss:hub.test": superuser
  retry:
    backoff_seconds: 3
metrics:
  listen: nowhere
logging:
  level: LOUD
connectors:
  xmpp:
    enabled: maybe
  reference: {}
colour: blue
"""
    problems = problems_of(tmp_path, text)
    assert problems == [
        "homeserver.address: expected an http:// or https:// URL, got 'ftp://hub.test'",
        "homeserver.verify_ssl: expected true or false, got 'yes'",
        "appservice.port: expected an integer from 1 to 65535, got 'abc'",
        "appservice.bot_username: expected a Matrix localpart (lowercase letters, digits and "
        "._=-/+), got 'Pontis Bot'",
        "database: expected a database URL starting with sqlite:, postgres:// or "
        "postgresql://, got 'mysql://x'",
        "metrics.listen: expected host:port, such as 127.0.0.1:9103, got 'nowhere'",
        "logging.level: expected one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'",
        "colour: unknown key",
        'bridge.permissions["@boss:hub.test"]: expected one of relay, user, admin, '
        "got 'superuser'",
        "connectors.xmpp.enabled: expected true or false, got 'maybe'",
        "connectors.reference.enabled: missing; expected true or false",
    ]
    # backoff_seconds is a float key: an integer is fine, so it is not in the list.


def test_nested_unknown_key_and_wrong_section_type(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, GOOD + "metrics: 5\nlogging:\n  levle: DEBUG\n")
    assert "metrics: expected a mapping, got 5" in problems
    assert "logging.levle: unknown key" in problems


def test_config_error_str_lists_one_problem_per_line() -> None:
    error = ConfigError([ConfigProblem("a.b", "bad"), ConfigProblem("c", "worse")])
    assert str(error) == "a.b: bad\nc: worse"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        Config.load(path, environ={})
    assert [str(p) for p in caught.value.problems] == [f"{path}: file not found"]


def test_bad_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "homeserver:\n  address: [http://x\n  domain: hub.test\n")
    with pytest.raises(ConfigError) as caught:
        Config.load(path, environ={})
    (problem,) = caught.value.problems
    assert problem.path == str(path)
    assert re.search(r"invalid YAML at line 3, column \d+", problem.message)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, "- a\n- b\n")
    assert "expected a mapping of settings at the top level, got a list" in problem


def test_placeholder_tokens_rejected_only_when_required(tmp_path: Path) -> None:
    text = GOOD.replace("as-secret-value-1", "generate")
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and problems[0].startswith("appservice.as_token: still the")
    config = Config.load(tmp_path / "config.yaml", environ={}, require_tokens=False)
    assert config.as_token == "generate"


def test_secrets_never_appear_in_problems(tmp_path: Path) -> None:
    text = """\
homeserver:
  address: https://matrix.hub.test
  domain: hub.test
appservice:
  as_token: [s3cr3t-as]
  hs_token: 12345678
database: mysql://bridge:hunter2pw@db/pontis
connectors:
  xmpp:
    enabled: false
    component:
      secret: 987654321
"""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        Config.load(path, environ={})
    message = str(caught.value)
    assert "appservice.as_token: expected a non-empty string, got <hidden>" in message
    assert "appservice.hs_token: expected a non-empty string, got <hidden>" in message
    assert "database:" in message
    for secret in ("s3cr3t-as", "12345678", "hunter2pw"):
        assert secret not in message
    environ = {
        "PONTIS_APPSERVICE_AS_TOKEN": "x1",
        "PONTIS_APPSERVICE_HS_TOKEN": "x2",
        "PONTIS_DATABASE": "sqlite:y.db",
    }
    config = Config.load(path, environ=environ)  # the core no longer objects
    connector_problems = config.validate_connector(
        "xmpp", "enabled: false\ncomponent:\n  secret: abc\n"
    )
    assert [str(p) for p in connector_problems] == [
        "connectors.xmpp.component.secret: expected a string, got <hidden>"
    ]


def test_env_overrides_with_underscores_and_types(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        PONTIS_APPSERVICE_PORT="8080",
        PONTIS_APPSERVICE_BOT_USERNAME="hub_bot",
        PONTIS_CONNECTORS_TEAMS_ENABLED="true",
        PONTIS_BRIDGE_RETRY_BACKOFF_SECONDS="0.5",
        PONTIS_DATABASE="postgres://u:p@db/pontis",
        PONTIS_HOMESERVER_DOMAIN="1234",  # a string key stays a string
    )
    assert config.port == 8080
    assert config.bot_username == "hub_bot"
    assert config.bot_mxid == "@hub_bot:1234"
    assert config.enabled_connectors() == ["xmpp", "teams"]
    assert config.retry_backoff == 0.5
    assert config.database_url == "postgres://u:p@db/pontis"
    assert config.domain == "1234"


def test_env_override_is_validated_and_replaces_a_bad_file_value(tmp_path: Path) -> None:
    text = GOOD.replace("port: 29331", "port: abc")
    assert load(tmp_path, text, PONTIS_APPSERVICE_PORT="9000").port == 9000
    problems = problems_of(tmp_path, GOOD, PONTIS_APPSERVICE_PORT="70000")
    assert problems == ["appservice.port: expected an integer from 1 to 65535, got 70000"]


def test_unknown_env_var(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, GOOD, PONTIS_FOO="1", PONTIS_APPSERVICE_NOPE="2")
    assert problems == [
        "PONTIS_APPSERVICE_NOPE: no such config key",
        "PONTIS_FOO: no such config key",
    ]


def test_env_var_for_a_connector_key_resolves_once_the_connector_validates(
    tmp_path: Path,
) -> None:
    text = GOOD + "  reference:\n    enabled: true\n"
    config = load(tmp_path, text, PONTIS_CONNECTORS_REFERENCE_PING_INTERVAL="30")
    example = "enabled: false\nping_interval: 60  # seconds\nname: ref\n"
    assert config.validate_connector("reference", example) == []
    assert config.connector_section("reference") == {
        "enabled": True,
        "ping_interval": 30,
        "name": "ref",
    }
    config2 = load(tmp_path, text, PONTIS_CONNECTORS_REFERENCE_TYPO="1")
    assert [str(p) for p in config2.validate_connector("reference", example)] == [
        "PONTIS_CONNECTORS_REFERENCE_TYPO: no such config key"
    ]


def test_generate_tokens_and_save_keep_user_comments(tmp_path: Path) -> None:
    text = GOOD.replace("as-secret-value-1", "generate").replace("hs-secret-value-2", "generate")
    path = write(tmp_path, text)
    config = Config.load(path, environ={"PONTIS_APPSERVICE_PORT": "1111"}, require_tokens=False)
    assert config.generate_tokens() is True
    assert config.generate_tokens() is False
    config.save()

    saved = path.read_text()
    assert "# Operator's own comment at the top" in saved
    assert "# where synapse lives" in saved
    assert "# Below: the networks" in saved
    # The comment stays right above the key it was written for.
    assert "# Below: the networks\nconnectors:" in saved
    assert "port: 29331" in saved and "1111" not in saved  # env overrides are not saved
    assert "generate\n" not in saved.split("connectors:")[0]

    reloaded = Config.load(path, environ={})  # tokens now pass require_tokens
    assert reloaded.as_token == config.as_token and len(config.as_token) >= 64
    assert reloaded.as_token != reloaded.hs_token
    # Defaults the user omitted were written too, in template order.
    data = YAML().load(saved)
    assert list(data["appservice"])[:3] == ["id", "address", "hostname"]
    assert data["metrics"]["listen"] == "127.0.0.1:9103"


def test_save_is_atomic_and_keeps_file_mode(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    path.chmod(0o600)
    load(tmp_path).save()
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_registration_namespaces(tmp_path: Path) -> None:
    config = load(tmp_path)
    registration = make_registration(config, ["xmpp", "reference"])
    assert registration["id"] == "pontis"
    assert registration["url"] == "http://localhost:29330"
    assert registration["as_token"] == "as-secret-value-1"
    assert registration["hs_token"] == "hs-secret-value-2"
    assert registration["sender_localpart"] == "pontis"
    assert registration["rate_limited"] is False
    assert registration["receive_ephemeral"] is True
    assert registration["de.sorunome.msc2409.push_ephemeral"] is True
    assert registration["namespaces"]["rooms"] == []

    users = registration["namespaces"]["users"]
    assert all(namespace["exclusive"] for namespace in users)

    def claimed(mxid: str) -> bool:
        return any(re.fullmatch(namespace["regex"], mxid) for namespace in users)

    for mxid in (
        "@xmpp_alice=40xmpp.example:hub.test",
        "@teams_0b1c2d3e-aaaa-bbbb-cccc-000000000000:hub.test",
        "@email_bob=40example.org:hub.test",
        "@reference_carol:hub.test",
        "@pontis:hub.test",
    ):
        assert claimed(mxid), mxid
    for mxid in (
        "@alice:hub.test",
        "@xmpp_alice:other.test",
        "@xmpp_alice:hubxtest",
        "@pontis2:hub.test",
    ):
        assert not claimed(mxid), mxid

    aliases = registration["namespaces"]["aliases"]
    assert len(aliases) == 4
    assert any(re.fullmatch(a["regex"], "#xmpp_room=3ahub:hub.test") for a in aliases)
    assert not any(re.fullmatch(a["regex"], "#room:hub.test") for a in aliases)


def test_write_registration_round_trips(tmp_path: Path) -> None:
    registration = make_registration(load(tmp_path), [])
    path = tmp_path / "registration.yaml"
    write_registration(path, registration)
    assert YAML(typ="safe").load(path.read_text()) == registration


def test_validate_section_for_a_connector_fragment() -> None:
    template = YAML().load(
        "enabled: false\ncomponent:\n  jid: a.example\n  port: 5347\n  secret: x\n"
        "ratio: 0.5\nrooms: []\n"
    )
    good = {
        "enabled": True,
        "component": {"jid": "b", "port": 5348, "secret": "s"},
        "ratio": 1,
        "rooms": [],
    }
    assert validate_section(good, template, "connectors.xmpp") == []
    bad = {
        "enabled": "no",
        "component": {"jid": 5, "port": 0, "secret": 42},
        "ratio": True,
        "rooms": {},
        "extra": 1,
    }
    assert [str(p) for p in validate_section(bad, template, "connectors.xmpp")] == [
        "connectors.xmpp.enabled: expected true or false, got 'no'",
        "connectors.xmpp.component.jid: expected a string, got 5",
        "connectors.xmpp.component.port: expected an integer from 1 to 65535, got 0",
        "connectors.xmpp.component.secret: expected a string, got <hidden>",
        "connectors.xmpp.ratio: expected a number, got true",
        "connectors.xmpp.rooms: expected a list, got a mapping",
        "connectors.xmpp.extra: unknown key",
    ]
    missing = validate_section({"enabled": False}, template, "connectors.xmpp")
    assert "connectors.xmpp.component: missing; expected a mapping" in [str(p) for p in missing]


def test_validate_connector_merges_example_defaults_into_saved_file(tmp_path: Path) -> None:
    config = load(tmp_path)
    # The example omits rooms_domain, which the core template documents for xmpp (and which
    # the merged section therefore holds): a key the core template knows is not "unknown".
    example = "enabled: false\ncomponent:\n  jid: x\n  host: h\n  port: 1\n  secret: s\n"
    example += "resource: pontis\n"
    assert "rooms_domain" in config.section("connectors", "xmpp")
    assert config.validate_connector("xmpp", example) == [
        # GOOD enables xmpp without setting the component secret the core template defaults to
        ConfigProblem(
            "connectors.xmpp.component.secret",
            "still the placeholder 'generate'; set the shared secret configured on the other side",
        )
    ]
    assert config.connector_section("xmpp")["resource"] == "pontis"
    config.save()
    assert (
        YAML().load((tmp_path / "config.yaml").read_text())["connectors"]["xmpp"]["resource"]
        == "pontis"
    )


def test_secrets_lists_every_secret_value_for_log_scrubbing(tmp_path: Path) -> None:
    text = GOOD + (
        "  teams:\n    enabled: false\n    tenants:\n"
        "      - tenant_id: t1\n        client_secret: teams-client-secret\n"
        "database: postgres://bridge:db-password-9@db/pontis\n"
    )
    config = load(tmp_path, text)
    secrets = config.secrets()
    for value in ("as-secret-value-1", "hs-secret-value-2", "teams-client-secret", "db-password-9"):
        assert value in secrets
    assert "generate" not in secrets  # xmpp component secret placeholder
    assert "t1" not in secrets and "hub.test" not in secrets
