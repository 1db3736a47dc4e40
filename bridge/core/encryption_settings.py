"""The ``encryption:`` section of the config, read once into typed settings.

The template (``config.example.yaml``) already checks every key's type; this module adds the
checks a type cannot express (trust level names, a pickle key that can be found) and turns the
section into :class:`EncryptionSettings`, which nothing else reads through dotted strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TRUST_LEVELS = (
    "blacklisted",
    "unverified",
    "unknown-device",
    "forwarded",
    "cross-signed-untrusted",
    "cross-signed-tofu",
    "cross-signed-trusted",
    "verified",
)
"""mautrix's ``TrustState`` names, weakest first."""

PICKLE_KEY_ENV = "PONTIS_PICKLE_KEY"
"""Environment variable that holds the pickle key itself (it wins over ``pickle_key_file``)."""

DEFAULT_DEVICE_NAME = "Pontis hub (encryption ends here)"

_DELETE_KEYS = (
    "dont_store_outbound",
    "delete_outbound_on_ack",
    "delete_prev_on_new_session",
    "ratchet_on_decrypt",
    "delete_fully_used_on_decrypt",
    "delete_on_device_delete",
)


@dataclass(frozen=True, slots=True)
class VerificationLevels:
    receive: str = "unverified"
    """Least trust a Matrix device needs to receive the keys of what the bridge sends."""
    send: str = "unverified"
    """Least trust of the device a Matrix message was encrypted on for it to be bridged."""
    share: str = "cross-signed-tofu"
    """Least trust a device needs for the bridge to answer its key requests."""


@dataclass(frozen=True, slots=True)
class Rotation:
    enable_custom: bool = False
    milliseconds: int = 604_800_000
    messages: int = 100
    disable_device_change_key_rotation: bool = False

    def room_content(self) -> dict[str, Any]:
        """The rotation fields of an ``m.room.encryption`` event the bridge writes."""
        if not self.enable_custom:
            return {}
        return {"rotation_period_ms": self.milliseconds, "rotation_period_msgs": self.messages}


@dataclass(frozen=True, slots=True)
class EncryptionSettings:
    allow: bool = False
    default: bool = False
    require: bool = False
    pickle_key_file: str = ""
    self_sign: bool = True
    allow_key_sharing: bool = False
    device_name: str = DEFAULT_DEVICE_NAME
    key_wait_seconds: float = 3.0
    key_request_seconds: float = 20.0
    verification_levels: VerificationLevels = field(default_factory=VerificationLevels)
    rotation: Rotation = field(default_factory=Rotation)
    delete_keys: Mapping[str, bool] = field(default_factory=dict)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> EncryptionSettings:
        """Build the settings from a section that :func:`check_section` found no fault with."""
        levels = section.get("verification_levels") or {}
        rotation = section.get("rotation") or {}
        delete = section.get("delete_keys") or {}
        return cls(
            allow=bool(section.get("allow", False)),
            default=bool(section.get("default", False)) and bool(section.get("allow", False)),
            require=bool(section.get("require", False)),
            pickle_key_file=str(section.get("pickle_key_file") or ""),
            self_sign=bool(section.get("self_sign", True)),
            allow_key_sharing=bool(section.get("allow_key_sharing", False)),
            device_name=str(section.get("device_name") or DEFAULT_DEVICE_NAME),
            key_wait_seconds=float(section.get("key_wait_seconds", 3.0)),
            key_request_seconds=float(section.get("key_request_seconds", 20.0)),
            verification_levels=VerificationLevels(
                **{k: str(levels[k]) for k in ("receive", "send", "share") if k in levels}
            ),
            rotation=Rotation(
                enable_custom=bool(rotation.get("enable_custom", False)),
                milliseconds=int(rotation.get("milliseconds", 604_800_000)),
                messages=int(rotation.get("messages", 100)),
                disable_device_change_key_rotation=bool(
                    rotation.get("disable_device_change_key_rotation", False)
                ),
            ),
            delete_keys={k: bool(delete.get(k, False)) for k in _DELETE_KEYS},
        )


def check_section(section: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems the template's type checks cannot see: (key path, what is wrong)."""
    problems: list[tuple[str, str]] = []
    levels = section.get("verification_levels") or {}
    for name in ("receive", "send", "share"):
        value = levels.get(name)
        if value is not None and value not in TRUST_LEVELS:
            problems.append(
                (
                    f"encryption.verification_levels.{name}",
                    f"unknown trust level {value!r}; use one of {', '.join(TRUST_LEVELS)}",
                )
            )
    for name in ("key_wait_seconds", "key_request_seconds"):
        value = section.get(name)
        if value is not None and (not isinstance(value, int | float) or value < 0):
            problems.append((f"encryption.{name}", "expected a number of seconds, 0 or more"))
    rotation = section.get("rotation") or {}
    for name in ("milliseconds", "messages"):
        value = rotation.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            problems.append((f"encryption.rotation.{name}", "expected a positive integer"))
    if section.get("require") and not section.get("allow"):
        problems.append(("encryption.require", "needs encryption.allow: true to mean anything"))
    return problems
