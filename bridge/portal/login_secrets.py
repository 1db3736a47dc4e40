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
) -> dict[str, Any]:
    """``metadata`` with sealed values opened; raises if one is sealed and ``box`` is None."""
    opened: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, str) and value.startswith(SEALED_PREFIX):
            if box is None:
                raise LookupError(
                    f"login {network}/{login_id}: {key} is sealed with the pickle key, but no "
                    "pickle key is loaded (turn encryption back on, or set PONTIS_PICKLE_KEY)"
                )
            value = box.open(value, context=_context(network, login_id, key))
        opened[key] = value
    return opened


def has_plaintext_secret(metadata: dict[str, Any]) -> bool:
    return any(
        isinstance(value, str) and value and is_secret_key(key)
        and not value.startswith(SEALED_PREFIX)
        for key, value in metadata.items()
    )  # fmt: skip


SEALED_PREFIX = "pontis-sealed:"
"""Every sealed value starts with this (see ``bridge.core.pickle_key``)."""
