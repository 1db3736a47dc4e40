"""Secrets in a login's metadata (refresh tokens, passwords) sealed at rest.

A connector keeps what it needs to reconnect in ``Login.metadata``; the store seals every value
whose key names a secret before it writes the row and opens it when it reads the row, so the
database (and every dump or backup of it) holds no usable token. The seal is bound to the row
(network, login id, key): a sealed value copied into another login does not open there.
"""

from __future__ import annotations

from typing import Any, Protocol

_SECRET_WORDS = ("token", "secret", "password")


class Sealer(Protocol):
    """:class:`bridge.core.pickle_key.SecretBox`, seen from the store."""

    @staticmethod
    def is_sealed(value: str) -> bool: ...

    def seal(self, plaintext: str, *, context: str = "") -> str: ...

    def open(self, sealed: str, *, context: str = "") -> str: ...


def is_secret_key(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS)


def _context(network: str, login_id: str, key: str) -> str:
    return f"login\x1f{network}\x1f{login_id}\x1f{key}"


def seal_metadata(
    box: Sealer, network: str, login_id: str, metadata: dict[str, Any]
) -> dict[str, Any]:
    """A copy of ``metadata`` with every secret string value sealed (sealed ones kept)."""
    return {
        key: box.seal(value, context=_context(network, login_id, key))
        if isinstance(value, str) and value and is_secret_key(key) and not box.is_sealed(value)
        else value
        for key, value in metadata.items()
    }


def open_metadata(
    box: Sealer | None, network: str, login_id: str, metadata: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """``metadata`` with sealed values opened, and the problems of those that cannot be: they
    are left out (the login then fails to authenticate and its user is asked to log in again)
    rather than stopping the bridge."""
    opened: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in metadata.items():
        if isinstance(value, str) and value.startswith(SEALED_PREFIX):
            if box is None:
                problems.append(
                    f"login {network}/{login_id}: {key} is sealed with a pickle key, but none is "
                    "loaded (set encryption.pickle_key_file or PONTIS_PICKLE_KEY)"
                )
                continue
            try:
                value = box.open(value, context=_context(network, login_id, key))
            except ValueError as err:
                problems.append(f"login {network}/{login_id}: {key} unreadable: {err}")
                continue
        opened[key] = value
    return opened, problems


def has_plaintext_secret(metadata: dict[str, Any]) -> bool:
    return any(
        isinstance(value, str) and value and is_secret_key(key)
        and not value.startswith(SEALED_PREFIX)
        for key, value in metadata.items()
    )  # fmt: skip


SEALED_PREFIX = "pontis-sealed:"
"""Every sealed value starts with this (see ``bridge.core.pickle_key``)."""
