"""The ``encryption:`` config section: typed settings, the checks a type cannot express, and
the registration flags it turns on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.core.config import Config, ConfigError, make_registration
from bridge.core.encryption_settings import (
    DEFAULT_DEVICE_NAME,
    TRUST_LEVELS,
    EncryptionSettings,
    Rotation,
    VerificationLevels,
    check_section,
)
from tests.config_text import BASE_CONFIG

BASE = BASE_CONFIG

DELETE_KEYS = (
    "dont_store_outbound",
    "delete_outbound_on_ack",
    "delete_prev_on_new_session",
    "ratchet_on_decrypt",
    "delete_fully_used_on_decrypt",
    "delete_on_device_delete",
)

FULL: dict[str, Any] = {
    "allow": True,
    "default": True,
    "require": True,
    "pickle_key_file": "/etc/pontis/pickle.key",
    "self_sign": False,
    "allow_key_sharing": True,
    "device_name": "Hub device",
    "key_wait_seconds": 1.5,
    "key_request_seconds": 0,
    "verification_levels": {
        "receive": "cross-signed-tofu",
        "send": "verified",
        "share": "cross-signed-trusted",
    },
    "rotation": {
        "enable_custom": True,
        "milliseconds": 3_600_000,
        "messages": 10,
        "disable_device_change_key_rotation": True,
    },
    "delete_keys": dict.fromkeys(DELETE_KEYS, True),
}


def load(tmp_path: Path, encryption_yaml: str = "", **env: str) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(BASE + encryption_yaml)
    return Config.load(path, environ=env)


def test_defaults_are_off_and_safe() -> None:
    settings = EncryptionSettings()
    assert (settings.allow, settings.default, settings.require) == (False, False, False)
    assert settings.self_sign is True and settings.allow_key_sharing is False
    assert settings.device_name == DEFAULT_DEVICE_NAME
    assert (settings.key_wait_seconds, settings.key_request_seconds) == (3.0, 20.0)
    assert settings.verification_levels == VerificationLevels(
        receive="unverified", send="unverified", share="cross-signed-tofu"
    )
    assert settings.rotation == Rotation()
    assert settings.rotation.room_content() == {}
    # An empty section reads as the defaults, with every delete_keys option present and off.
    empty = EncryptionSettings.from_section({})
    assert empty.allow is False and empty.default is False
    assert empty.verification_levels == VerificationLevels()
    assert dict(empty.delete_keys) == dict.fromkeys(DELETE_KEYS, False)
    assert check_section({}) == []


def test_trust_levels_are_mautrix_names_weakest_first() -> None:
    from mautrix.types import TrustState

    assert [TrustState.parse(name) for name in TRUST_LEVELS] == sorted(TrustState)


def test_from_section_reads_every_key() -> None:
    assert check_section(FULL) == []
    settings = EncryptionSettings.from_section(FULL)
    assert settings == EncryptionSettings(
        allow=True,
        default=True,
        require=True,
        pickle_key_file="/etc/pontis/pickle.key",
        self_sign=False,
        allow_key_sharing=True,
        device_name="Hub device",
        key_wait_seconds=1.5,
        key_request_seconds=0.0,
        verification_levels=VerificationLevels(
            receive="cross-signed-tofu", send="verified", share="cross-signed-trusted"
        ),
        rotation=Rotation(
            enable_custom=True,
            milliseconds=3_600_000,
            messages=10,
            disable_device_change_key_rotation=True,
        ),
        delete_keys=dict.fromkeys(DELETE_KEYS, True),
    )
    # One delete_keys option at a time maps to itself only.
    for name in DELETE_KEYS:
        one = EncryptionSettings.from_section({"delete_keys": {name: True}})
        assert [k for k, v in one.delete_keys.items() if v] == [name]


def test_default_is_false_when_allow_is_false() -> None:
    settings = EncryptionSettings.from_section({"allow": False, "default": True})
    assert settings.default is False
    assert EncryptionSettings.from_section({"allow": True, "default": True}).default is True
    assert EncryptionSettings.from_section({"allow": True, "default": False}).default is False


@pytest.mark.parametrize("name", ["receive", "send", "share"])
def test_unknown_trust_level_is_named_with_its_key_path(name: str) -> None:
    problems = check_section({"verification_levels": {name: "trusted-ish"}})
    assert len(problems) == 1
    path, message = problems[0]
    assert path == f"encryption.verification_levels.{name}"
    assert "'trusted-ish'" in message and "cross-signed-tofu" in message


@pytest.mark.parametrize("name", ["key_wait_seconds", "key_request_seconds"])
def test_negative_or_non_numeric_waits_are_refused(name: str) -> None:
    assert check_section({name: -1}) == [
        (f"encryption.{name}", "expected a number of seconds, 0 or more")
    ]
    assert check_section({name: "soon"})[0][0] == f"encryption.{name}"
    assert check_section({name: 0}) == []
    assert check_section({name: 0.5}) == []


@pytest.mark.parametrize("name", ["milliseconds", "messages"])
@pytest.mark.parametrize("value", [0, -5, 1.5])
def test_non_positive_rotation_values_are_refused(name: str, value: Any) -> None:
    assert check_section({"rotation": {name: value}}) == [
        (f"encryption.rotation.{name}", "expected a positive integer")
    ]
    assert check_section({"rotation": {name: 1}}) == []


def test_require_without_allow_is_refused() -> None:
    problems = check_section({"require": True, "allow": False})
    assert [path for path, _ in problems] == ["encryption.require"]
    assert "encryption.allow" in problems[0][1]
    assert check_section({"require": True, "allow": True}) == []
    assert check_section({"require": False, "allow": False}) == []


def test_every_problem_is_listed() -> None:
    problems = check_section(
        {
            "require": True,
            "verification_levels": {"send": "x", "share": "y"},
            "key_wait_seconds": -1,
            "rotation": {"messages": 0},
        }
    )
    assert sorted(path for path, _ in problems) == [
        "encryption.key_wait_seconds",
        "encryption.require",
        "encryption.rotation.messages",
        "encryption.verification_levels.send",
        "encryption.verification_levels.share",
    ]


def test_rotation_room_content_only_with_enable_custom() -> None:
    assert Rotation(milliseconds=1000, messages=5).room_content() == {}
    assert Rotation(enable_custom=True, milliseconds=1000, messages=5).room_content() == {
        "rotation_period_ms": 1000,
        "rotation_period_msgs": 5,
    }


def test_config_template_turns_encryption_on(tmp_path: Path) -> None:
    settings = load(tmp_path).encryption
    assert settings.allow is True and settings.default is True and settings.require is False
    assert settings.pickle_key_file == "pickle.key"
    assert load(tmp_path).pickle_key_base_dir == tmp_path.resolve()


def test_config_with_a_bad_send_level_names_the_key(tmp_path: Path) -> None:
    text = "encryption:\n  verification_levels:\n    send: very-trusted\n"
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    problems = [str(problem) for problem in caught.value.problems]
    assert len(problems) == 1
    assert problems[0].startswith("encryption.verification_levels.send: unknown trust level")
    assert "'very-trusted'" in problems[0]


def test_config_with_require_but_not_allow_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "encryption:\n  allow: false\n  require: true\n")
    assert [p.path for p in caught.value.problems] == ["encryption.require"]


def test_config_takes_fractional_wait_seconds(tmp_path: Path) -> None:
    text = "encryption:\n  key_wait_seconds: 2.5\n  key_request_seconds: 0.5\n"
    settings = load(tmp_path, text).encryption
    assert (settings.key_wait_seconds, settings.key_request_seconds) == (2.5, 0.5)


def test_registration_has_the_crypto_flags_with_encryption_allowed(tmp_path: Path) -> None:
    registration = make_registration(load(tmp_path, "encryption:\n  allow: true\n"), [])
    assert registration["org.matrix.msc3202"] is True
    assert registration["io.element.msc4190"] is True
    assert registration["receive_ephemeral"] is True


def test_registration_leaves_the_crypto_flags_out_with_encryption_off(tmp_path: Path) -> None:
    text = "encryption:\n  allow: false\n  default: false\n"
    registration = make_registration(load(tmp_path, text), [])
    assert "org.matrix.msc3202" not in registration
    assert "io.element.msc4190" not in registration
    assert registration["receive_ephemeral"] is True
