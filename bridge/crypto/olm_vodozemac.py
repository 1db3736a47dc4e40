"""The python-olm API that mautrix.crypto uses, implemented over vodozemac.

mautrix.crypto (0.21) is written against python-olm, the CFFI binding of libolm. libolm is
deprecated upstream (no longer maintained, with known and unfixed side-channel CVEs), while
vodozemac is the maintained Rust implementation of the same Olm and Megolm protocols, wire
compatible with libolm. This module provides exactly the part of python-olm that mautrix.crypto
touches (``Account``, ``Session``, ``InboundSession``, ``OutboundSession``, ``OlmMessage``,
``OlmPreKeyMessage``, ``InboundGroupSession``, ``OutboundGroupSession``, ``PkSigning``,
``ed25519_verify`` and the error classes), over vodozemac; ``PkSigning`` (cross-signing keys)
uses pycryptodome's Ed25519, as vodozemac has no signing object for a bare Ed25519 seed.

Call :func:`install` before anything imports ``mautrix.crypto``: it registers this module as
``olm`` and a stand-in for python-olm's CFFI module as ``_libolm`` in :data:`sys.modules`.

Differences from python-olm that callers may notice:

* Pickles are vodozemac pickles, keyed with SHA-256 of the passphrase (vodozemac needs exactly 32
  bytes). libolm pickles of an ``Account``, ``Session`` or ``InboundGroupSession`` are still read
  (and are written back in vodozemac's format the next time they are stored); a libolm pickle of
  an ``OutboundGroupSession`` is not readable and raises :class:`OlmGroupSessionError`.
* vodozemac decrypts a pre-key message while creating the inbound session, and the message cannot
  be decrypted twice. mautrix creates the session, pickles and reloads it, and only then decrypts,
  so the plaintext is kept (once, briefly) for that first decrypt of the same message.
* ``Account.remove_one_time_keys`` is a no-op: vodozemac removes the one-time key when it creates
  the inbound session. ``Session.matches`` takes no ``identity_key``; ``InboundSession`` requires
  it. ``Session.describe`` returns the session ID only.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
import types
from collections import OrderedDict
from collections.abc import Callable
from typing import ClassVar, Self, TypeVar

import vodozemac as vz
from Crypto.Signature import eddsa

__all__ = [
    "OLM_MESSAGE_TYPE_MESSAGE",
    "OLM_MESSAGE_TYPE_PRE_KEY",
    "Account",
    "InboundGroupSession",
    "InboundSession",
    "OlmAccountError",
    "OlmGroupSessionError",
    "OlmMessage",
    "OlmPreKeyMessage",
    "OlmSessionError",
    "OlmVerifyError",
    "OutboundGroupSession",
    "OutboundSession",
    "PkSigning",
    "PkSigningError",
    "Session",
    "ed25519_verify",
    "install",
]

OLM_MESSAGE_TYPE_PRE_KEY = 0
OLM_MESSAGE_TYPE_MESSAGE = 1
_SEED_BYTES = 32
# Plaintexts of pre-key messages decrypted while creating an inbound session, waiting for the
# first decrypt call on the (reloaded) session; bounded so an abandoned entry cannot pile up.
_FIRST_PLAINTEXT_LIMIT = 16
_first_plaintexts: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()

_T = TypeVar("_T")


class OlmAccountError(Exception):
    """An account operation failed (python-olm's name)."""


class OlmSessionError(Exception):
    """An Olm session could not be created, or a message not encrypted or decrypted."""


class OlmGroupSessionError(Exception):
    """A Megolm session could not be created or loaded, or a message not decrypted."""


class OlmVerifyError(Exception):
    """An Ed25519 signature did not verify."""


class PkSigningError(Exception):
    """A PkSigning key could not be made from the given seed."""


def _to_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(data: str | bytes) -> bytes:
    """Decode (un)padded standard base64, as Matrix uses; raises ValueError when invalid."""
    text = data.decode("ascii") if isinstance(data, bytes) else data
    text = text.rstrip("=")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _canonical_b64(data: str | bytes) -> str:
    """Unpadded base64, which is all vodozemac accepts for keys."""
    return _b64encode(_b64decode(data))


def _pickle_key(passphrase: str | bytes) -> bytes:
    return hashlib.sha256(_to_bytes(passphrase)).digest()


def _curve_key(key: str | bytes) -> vz.Curve25519PublicKey:
    return vz.Curve25519PublicKey.from_bytes(_b64decode(key))


def _unpickle(
    pickle: str | bytes,
    passphrase: str | bytes,
    native: Callable[[str, bytes], _T],
    libolm: Callable[[str, bytes], _T] | None,
    error: type[Exception],
) -> _T:
    """Read a vodozemac pickle, or else (if ``libolm`` is given) a libolm one."""
    if not pickle:
        raise ValueError("Pickle can't be empty")
    try:
        text = pickle.decode("ascii") if isinstance(pickle, bytes) else pickle
    except UnicodeDecodeError as e:
        raise error(f"Cannot read the pickle: {e}") from e
    try:
        return native(text, _pickle_key(passphrase))
    except ValueError as native_error:
        if libolm is None:
            raise error(f"Cannot read the pickle: {native_error}") from native_error
        try:
            # libolm keys its pickle cipher with the passphrase bytes as they are.
            return libolm(text, _to_bytes(passphrase))
        except ValueError as libolm_error:
            raise error(
                f"Cannot read the pickle as vodozemac ({native_error}) "
                f"or libolm ({libolm_error}); wrong passphrase?"
            ) from libolm_error


class _OlmMessage:
    message_type: ClassVar[int]

    def __init__(self, ciphertext: str | bytes) -> None:
        if not ciphertext:
            raise ValueError("Ciphertext can't be empty")
        self.ciphertext = ciphertext

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ciphertext!r})"

    def _raw(self) -> bytes:
        try:
            return _b64decode(self.ciphertext)
        except ValueError as e:
            raise OlmSessionError(f"INVALID_BASE64: {e}") from e


class OlmPreKeyMessage(_OlmMessage):
    """A pre-key message (unpadded base64 ciphertext), which can establish a session."""

    message_type = OLM_MESSAGE_TYPE_PRE_KEY


class OlmMessage(_OlmMessage):
    """A normal Olm message (unpadded base64 ciphertext)."""

    message_type = OLM_MESSAGE_TYPE_MESSAGE


class Account:
    """An Olm account: identity keys and one-time keys."""

    _vz: vz.Account

    def __init__(self) -> None:
        self._vz = vz.Account()

    def pickle(self, passphrase: str | bytes = "") -> bytes:
        return self._vz.pickle(_pickle_key(passphrase)).encode("ascii")

    @classmethod
    def from_pickle(cls, pickle: str | bytes, passphrase: str | bytes = "") -> Self:
        account = cls.__new__(cls)
        account._vz = _unpickle(
            pickle,
            passphrase,
            vz.Account.from_pickle,
            vz.Account.from_libolm_pickle,
            OlmAccountError,
        )
        return account

    @property
    def identity_keys(self) -> dict[str, str]:
        return {
            "curve25519": self._vz.curve25519_key.to_base64(),
            "ed25519": self._vz.ed25519_key.to_base64(),
        }

    def sign(self, message: str | bytes) -> str:
        return self._vz.sign(_to_bytes(message)).to_base64()

    @property
    def max_one_time_keys(self) -> int:
        # libolm reports how many keys the account can hold (100) and mautrix keeps half of that
        # on the server; vodozemac reports how many to keep on the server (50) and holds more.
        return 2 * self._vz.max_number_of_one_time_keys

    def mark_keys_as_published(self) -> None:
        self._vz.mark_keys_as_published()

    def generate_one_time_keys(self, count: int) -> None:
        self._vz.generate_one_time_keys(count)

    @property
    def one_time_keys(self) -> dict[str, dict[str, str]]:
        """The unpublished one-time keys, as ``{"curve25519": {key_id: key}}``."""
        keys = self._vz.one_time_keys
        return {"curve25519": {key_id: key.to_base64() for key_id, key in keys.items()}}

    def remove_one_time_keys(self, session: Session) -> None:
        """No-op: vodozemac already removed the key when it created the inbound session."""


class Session:
    """An Olm session; made by :class:`InboundSession`, :class:`OutboundSession` or unpickling."""

    _vz: vz.Session

    def __init__(self) -> None:
        if type(self) is Session:
            raise TypeError("Session class may not be instantiated.")

    def pickle(self, passphrase: str | bytes = "") -> bytes:
        return self._vz.pickle(_pickle_key(passphrase)).encode("ascii")

    @classmethod
    def from_pickle(cls, pickle: str | bytes, passphrase: str | bytes = "") -> Self:
        session = cls.__new__(cls)
        session._vz = _unpickle(
            pickle,
            passphrase,
            vz.Session.from_pickle,
            vz.Session.from_libolm_pickle,
            OlmSessionError,
        )
        return session

    @property
    def id(self) -> str:
        return self._vz.session_id

    def encrypt(self, plaintext: str | bytes) -> OlmPreKeyMessage | OlmMessage:
        try:
            message_type, body = self._vz.encrypt(_to_bytes(plaintext)).to_parts()
        except ValueError as e:
            raise OlmSessionError(str(e)) from e
        if message_type == OLM_MESSAGE_TYPE_PRE_KEY:
            return OlmPreKeyMessage(_b64encode(body))
        return OlmMessage(_b64encode(body))

    def decrypt(self, message: _OlmMessage, unicode_errors: str = "replace") -> str:
        if not message.ciphertext:
            raise ValueError("Ciphertext can't be empty")
        raw = message._raw()
        plaintext = None
        if message.message_type == OLM_MESSAGE_TYPE_PRE_KEY:
            plaintext = _first_plaintexts.pop((self.id, raw), None)
        if plaintext is None:
            try:
                plaintext = self._vz.decrypt(vz.AnyOlmMessage.from_parts(message.message_type, raw))
            except ValueError as e:
                raise OlmSessionError(str(e)) from e
        return plaintext.decode("utf-8", unicode_errors)

    def matches(self, message: OlmPreKeyMessage) -> bool:
        """Whether a pre-key message belongs to this session (same keys, sender included)."""
        if not isinstance(message, OlmPreKeyMessage):
            raise TypeError("Matches can only be called with prekey messages.")
        try:
            pre_key = vz.AnyOlmMessage.pre_key(message._raw()).to_pre_key()
        except ValueError as e:
            raise OlmSessionError(str(e)) from e
        return pre_key is not None and self._vz.session_matches(pre_key)

    def describe(self) -> str:
        return f"vodozemac Olm session {self.id}"


class InboundSession(Session):
    """The receiving end of a session, created from the first (pre-key) message."""

    def __init__(
        self, account: Account, message: _OlmMessage, identity_key: str | bytes | None = None
    ) -> None:
        if not isinstance(message, OlmPreKeyMessage):
            raise OlmSessionError("An inbound session needs a pre-key message")
        if not identity_key:
            raise OlmSessionError("vodozemac needs the sender's identity key for a new session")
        raw = message._raw()
        try:
            pre_key = vz.AnyOlmMessage.pre_key(raw).to_pre_key()
            if pre_key is None:
                raise OlmSessionError("Not a pre-key message")
            self._vz, plaintext = account._vz.create_inbound_session(
                _curve_key(identity_key), pre_key
            )
        except ValueError as e:
            raise OlmSessionError(str(e)) from e
        _first_plaintexts[(self._vz.session_id, raw)] = plaintext
        while len(_first_plaintexts) > _FIRST_PLAINTEXT_LIMIT:
            _first_plaintexts.popitem(last=False)


class OutboundSession(Session):
    """The initiating end of a session, to a device's identity key and one of its one-time keys."""

    def __init__(
        self, account: Account, identity_key: str | bytes, one_time_key: str | bytes
    ) -> None:
        if not identity_key:
            raise ValueError("Identity key can't be empty")
        if not one_time_key:
            raise ValueError("One-time key can't be empty")
        try:
            self._vz = account._vz.create_outbound_session(
                _curve_key(identity_key), _curve_key(one_time_key)
            )
        except ValueError as e:
            raise OlmSessionError(str(e)) from e


class InboundGroupSession:
    """The receiving side of a Megolm session."""

    _vz: vz.InboundGroupSession

    def __init__(self, session_key: str | bytes) -> None:
        try:
            self._vz = vz.InboundGroupSession(vz.SessionKey(_canonical_b64(session_key)))
        except ValueError as e:
            raise OlmGroupSessionError(str(e)) from e

    def pickle(self, passphrase: str | bytes = "") -> bytes:
        return self._vz.pickle(_pickle_key(passphrase)).encode("ascii")

    @classmethod
    def from_pickle(cls, pickle: str | bytes, passphrase: str | bytes = "") -> Self:
        session = cls.__new__(cls)
        session._vz = _unpickle(
            pickle,
            passphrase,
            vz.InboundGroupSession.from_pickle,
            vz.InboundGroupSession.from_libolm_pickle,  # type: ignore[attr-defined]
            OlmGroupSessionError,
        )
        return session

    @classmethod
    def import_session(cls, session_key: str | bytes) -> Self:
        """Create a session from :meth:`export_session` output (a key without a signature)."""
        session = cls.__new__(cls)
        try:
            key = vz.ExportedSessionKey(_canonical_b64(session_key))
            session._vz = vz.InboundGroupSession.import_session(key)
        except ValueError as e:
            raise OlmGroupSessionError(str(e)) from e
        return session

    @property
    def id(self) -> str:
        return self._vz.session_id

    @property
    def first_known_index(self) -> int:
        return self._vz.first_known_index

    def decrypt(self, ciphertext: str | bytes, unicode_errors: str = "replace") -> tuple[str, int]:
        """Return the plaintext and the message index."""
        if not ciphertext:
            raise ValueError("Ciphertext can't be empty.")
        try:
            decrypted = self._vz.decrypt(vz.MegolmMessage.from_bytes(_b64decode(ciphertext)))
        except ValueError as e:
            raise OlmGroupSessionError(str(e)) from e
        return decrypted.plaintext.decode("utf-8", unicode_errors), decrypted.message_index

    def export_session(self, message_index: int) -> str:
        exported = self._vz.export_at(message_index)
        if exported is None:
            raise OlmGroupSessionError("OLM_UNKNOWN_MESSAGE_INDEX")
        return exported.to_base64()


class OutboundGroupSession:
    """The sending side of a Megolm session."""

    _vz: vz.GroupSession

    def __init__(self) -> None:
        self._vz = vz.GroupSession()

    def pickle(self, passphrase: str | bytes = "") -> bytes:
        return self._vz.pickle(_pickle_key(passphrase)).encode("ascii")

    @classmethod
    def from_pickle(cls, pickle: str | bytes, passphrase: str | bytes = "") -> Self:
        # vodozemac's Python binding cannot read libolm pickles of outbound sessions.
        session = cls.__new__(cls)
        session._vz = _unpickle(
            pickle, passphrase, vz.GroupSession.from_pickle, None, OlmGroupSessionError
        )
        return session

    @property
    def id(self) -> str:
        return self._vz.session_id

    @property
    def message_index(self) -> int:
        return self._vz.message_index

    @property
    def session_key(self) -> str:
        return self._vz.session_key.to_base64()

    def encrypt(self, plaintext: str | bytes) -> str:
        return self._vz.encrypt(_to_bytes(plaintext)).to_base64()


class PkSigning:
    """An Ed25519 signing key from a 32-byte seed (cross-signing keys)."""

    def __init__(self, seed: bytes) -> None:
        if not seed:
            raise ValueError("seed can't be empty")
        if len(seed) != _SEED_BYTES:
            raise PkSigningError(f"seed must be {_SEED_BYTES} bytes, got {len(seed)}")
        self._key = eddsa.import_private_key(bytes(seed))
        self.public_key: str = _b64encode(self._key.public_key().export_key(format="raw"))

    def sign(self, message: str | bytes) -> str:
        signature: bytes = eddsa.new(self._key, "rfc8032").sign(_to_bytes(message))
        return _b64encode(signature)

    @classmethod
    def generate_seed(cls) -> bytes:
        return secrets.token_bytes(_SEED_BYTES)


def ed25519_verify(key: str | bytes, message: str | bytes, signature: str | bytes) -> None:
    """Raise :class:`OlmVerifyError` unless ``signature`` (base64) is ``key``'s over ``message``."""
    try:
        public_key = vz.Ed25519PublicKey.from_base64(_canonical_b64(key))
        parsed = vz.Ed25519Signature.from_base64(_canonical_b64(signature))
        public_key.verify_signature(_to_bytes(message), parsed)
    except ValueError as e:
        raise OlmVerifyError(str(e)) from e


# mautrix.crypto.sessions does ``from _libolm import ffi, lib`` for Session.describe(); it only
# reaches them when the olm Session has no describe() of its own, which ours has. The ``lib``
# stand-in has no ``olm_session_describe``, so that fallback answers "describe not supported".
_LIBOLM = types.ModuleType("_libolm", "Stand-in for python-olm's CFFI module (bridge.crypto).")
_LIBOLM.__dict__.update(ffi=types.SimpleNamespace(), lib=types.SimpleNamespace())


def install() -> None:
    """Make ``import olm`` and ``import _libolm`` give this adapter; idempotent.

    Must run before ``mautrix.crypto`` is imported. Refuses (ImportError) when a real python-olm
    is already imported, as mautrix would then already be bound to libolm.
    """
    this = sys.modules[__name__]
    current = sys.modules.get("olm")
    if current is not None and current is not this:
        raise ImportError(
            f"python-olm is already imported (olm from {getattr(current, '__file__', '?')}); "
            "bridge.crypto.olm_vodozemac.install() must run before anything imports olm or "
            "mautrix.crypto"
        )
    libolm = sys.modules.get("_libolm")
    if libolm is not None and libolm is not _LIBOLM:
        raise ImportError(
            "libolm's _libolm module is already imported; bridge.crypto.olm_vodozemac.install() "
            "must run before anything imports olm or mautrix.crypto"
        )
    sys.modules["_libolm"] = _LIBOLM
    sys.modules["olm"] = this
