"""The pickle key: the one secret that protects every other secret the hub keeps at rest.

Olm and Megolm sessions are stored *pickled* (encrypted) with a key derived from it, and
:class:`SecretBox` seals the other secrets the store keeps (the bot's recovery key, network
refresh tokens). The key itself is never in the database: it comes from the environment
variable ``PONTIS_PICKLE_KEY`` or from a file only the bridge's user can read, so a copy of the
database (a backup, a dump) holds no readable key material.

Sub-keys are derived per purpose (SHA-256 of a label and the key), so the AES key that seals
secrets is not the passphrase given to the Olm pickles.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from Crypto.Cipher import AES

from bridge.core.encryption_settings import PICKLE_KEY_ENV

KEY_BYTES = 32
_SEALED_PREFIX = "pontis-sealed:v1:"
_NONCE_BYTES = 12
_TAG_BYTES = 16


class PickleKeyError(RuntimeError):
    """No usable pickle key; the message says how to make one."""


class PickleKeyMissing(PickleKeyError):
    """Neither the variable nor the file is there (as opposed to a key that is unusable)."""


class SecretError(ValueError):
    """A sealed secret could not be opened: another pickle key, or the value was altered."""


def generate_key_text() -> str:
    """A new random pickle key, as the text a key file or the environment variable holds."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def write_key_file(path: Path) -> None:
    """Create ``path`` (mode 0600) with a new key; refuses to overwrite an existing file,
    because the old key is the only way to read what the hub stored with it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(generate_key_text() + "\n")


def _parse(text: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise PickleKeyError(
            f"the pickle key in {where} is not {KEY_BYTES} random bytes in base64; make one "
            "with `pontis generate-pickle-key -o FILE`"
        )
    return raw


def load_pickle_key(
    key_file: str, environ: Mapping[str, str], *, base_dir: Path | None = None
) -> PickleKey:
    """The pickle key from ``PONTIS_PICKLE_KEY`` or else ``key_file``.

    Raises :class:`PickleKeyError` with what to do when there is none, or when the file can be
    read by other users (the key would be as good as public on that machine).
    """
    if text := environ.get(PICKLE_KEY_ENV, "").strip():
        return PickleKey(_parse(text, f"${PICKLE_KEY_ENV}"))
    how = (
        "Encryption is on (encryption.allow), so the bridge needs a pickle key: run "
        "`pontis generate-pickle-key -o /etc/pontis/pickle.key` and set encryption.pickle_key_file "
        f"to that path, or put the key in ${PICKLE_KEY_ENV}"
    )
    if not key_file:
        raise PickleKeyMissing(f"{how}. Keep it out of the database and back it up.")
    path = Path(key_file)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except FileNotFoundError:
        raise PickleKeyMissing(
            f"{how} (encryption.pickle_key_file {path} does not exist)."
        ) from None
    except OSError as err:
        raise PickleKeyError(f"cannot read encryption.pickle_key_file {path}: {err}") from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PickleKeyError(
            f"encryption.pickle_key_file {path} can be read by other users "
            f"(mode {stat.filemode(mode)}); run `chmod 600 {path}`"
        )
    return PickleKey(_parse(text, str(path)))


class PickleKey:
    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_BYTES:
            raise PickleKeyError(f"a pickle key has {KEY_BYTES} bytes, not {len(raw)}")
        self._raw = raw

    def __repr__(self) -> str:  # never the key itself, whatever logs it
        return "PickleKey(<hidden>)"

    def _derive(self, label: str) -> bytes:
        return hashlib.sha256(label.encode() + b"\x00" + self._raw).digest()

    def olm_passphrase(self) -> str:
        """What the crypto store pickles Olm and Megolm sessions with."""
        return self._derive("pontis olm pickles").hex()

    def secret_box(self) -> SecretBox:
        return SecretBox(self._derive("pontis sealed secrets"))


class SecretBox:
    """Seals short secrets (text) with AES-256-GCM; the result is text safe to store."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "SecretBox(<hidden>)"

    @staticmethod
    def is_sealed(value: str) -> bool:
        return value.startswith(_SEALED_PREFIX)

    def seal(self, plaintext: str, *, context: str = "") -> str:
        """``context`` (e.g. the row the secret belongs to) is authenticated, not stored: a
        sealed value copied into another row does not open there."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce)
        cipher.update(context.encode())
        ciphertext, tag = cipher.encrypt_and_digest(plaintext.encode())
        return _SEALED_PREFIX + base64.b64encode(nonce + ciphertext + tag).decode()

    def open(self, sealed: str, *, context: str = "") -> str:
        if not self.is_sealed(sealed):
            raise SecretError("not a sealed value")
        try:
            blob = base64.b64decode(sealed[len(_SEALED_PREFIX) :], validate=True)
        except (binascii.Error, ValueError) as err:
            raise SecretError("sealed value is not valid base64") from err
        if len(blob) < _NONCE_BYTES + _TAG_BYTES:
            raise SecretError("sealed value is too short")
        nonce, body, tag = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:-_TAG_BYTES], blob[-_TAG_BYTES:]
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce)
        cipher.update(context.encode())
        try:
            return cipher.decrypt_and_verify(body, tag).decode()
        except ValueError as err:
            raise SecretError(
                "sealed value does not open with this pickle key (another key, or altered)"
            ) from err
