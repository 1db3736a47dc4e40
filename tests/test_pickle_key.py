"""The pickle key: where it comes from, when it is refused, and what it seals."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from bridge.core.encryption_settings import PICKLE_KEY_ENV
from bridge.core.pickle_key import (
    KEY_BYTES,
    PickleKey,
    PickleKeyError,
    SecretBox,
    SecretError,
    generate_key_text,
    load_pickle_key,
    write_key_file,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_text(byte: int) -> str:
    return base64.b64encode(bytes([byte]) * KEY_BYTES).decode()


def box_of(byte: int) -> SecretBox:
    return PickleKey(bytes([byte]) * KEY_BYTES).secret_box()


def test_generated_key_is_32_random_bytes_in_base64() -> None:
    one, two = generate_key_text(), generate_key_text()
    assert len(base64.b64decode(one, validate=True)) == KEY_BYTES
    assert one != two


def test_key_file_is_created_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "pickle.key"
    old_umask = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        write_key_file(path)
    finally:
        os.umask(old_umask)
    assert mode_of(path) == 0o600
    first = path.read_text()
    assert len(base64.b64decode(first.strip(), validate=True)) == KEY_BYTES
    with pytest.raises(FileExistsError):
        write_key_file(path)
    assert path.read_text() == first
    # What was written loads back, and is the key the file holds.
    loaded = load_pickle_key(str(path), {})
    assert loaded.olm_passphrase() == PickleKey(base64.b64decode(first)).olm_passphrase()


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pickle.key"
    path.write_text(key_text(1) + "\n")
    path.chmod(0o600)
    from_env = load_pickle_key(str(path), {PICKLE_KEY_ENV: key_text(2)})
    assert from_env.olm_passphrase() == PickleKey(bytes([2]) * KEY_BYTES).olm_passphrase()
    assert from_env.olm_passphrase() != load_pickle_key(str(path), {}).olm_passphrase()
    # With the variable set, the file need not even exist.
    missing = str(tmp_path / "nowhere.key")
    assert load_pickle_key(missing, {PICKLE_KEY_ENV: key_text(2)}).olm_passphrase() == (
        from_env.olm_passphrase()
    )


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_file_others_can_read_is_refused_with_chmod_600(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "pickle.key"
    path.write_text(key_text(1))
    path.chmod(mode)
    with pytest.raises(PickleKeyError) as caught:
        load_pickle_key(str(path), {})
    message = str(caught.value)
    assert f"chmod 600 {path}" in message
    assert key_text(1) not in message


def test_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(PickleKeyError) as caught:
        load_pickle_key(str(path), {})
    message = str(caught.value)
    assert "generate-pickle-key" in message
    assert str(path) in message and "does not exist" in message
    assert PICKLE_KEY_ENV in message


@pytest.mark.parametrize("environ", [{}, {PICKLE_KEY_ENV: ""}, {PICKLE_KEY_ENV: "  \n"}])
def test_no_key_at_all_says_how_to_make_one(environ: dict[str, str]) -> None:
    with pytest.raises(PickleKeyError) as caught:
        load_pickle_key("", environ)
    assert "generate-pickle-key" in str(caught.value)
    assert "back it up" in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(b"x" * 16).decode(),  # too short
        base64.b64encode(b"x" * 33).decode(),  # too long
        "not base64 at all!",
        "",
    ],
)
def test_wrong_length_or_not_base64_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "pickle.key"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(PickleKeyError, match="generate-pickle-key"):
        load_pickle_key(str(path), {})
    if text:
        with pytest.raises(PickleKeyError, match=PICKLE_KEY_ENV):
            load_pickle_key("", {PICKLE_KEY_ENV: text})


def test_raw_key_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(PickleKeyError):
        PickleKey(b"short")


def test_relative_path_is_resolved_against_base_dir(tmp_path: Path) -> None:
    base = tmp_path / "etc"
    base.mkdir()
    write_key_file(base / "pickle.key")
    assert load_pickle_key("pickle.key", {}, base_dir=base).olm_passphrase()
    with pytest.raises(PickleKeyError) as caught:
        load_pickle_key("pickle.key", {}, base_dir=tmp_path)
    assert str(tmp_path / "pickle.key") in str(caught.value)


def test_derived_keys_differ_per_purpose_and_per_key() -> None:
    key = PickleKey(bytes([7]) * KEY_BYTES)
    passphrase = key.olm_passphrase()
    assert passphrase == key.olm_passphrase()
    assert passphrase != PickleKey(bytes([8]) * KEY_BYTES).olm_passphrase()
    assert bytes.fromhex(passphrase) != bytes([7]) * KEY_BYTES


def test_seal_and_open_round_trip() -> None:
    box = box_of(1)
    for secret in ("EsTc 1234 abcd", "", "ünïcödé ✓"):
        sealed = box.seal(secret, context="recovery_key")
        assert SecretBox.is_sealed(sealed)
        assert box.open(sealed, context="recovery_key") == secret
    # The same secret seals differently each time (random nonce).
    assert box.seal("x") != box.seal("x")
    # And the same pickle key gives a box that opens it.
    assert box_of(1).open(box.seal("again")) == "again"


def test_sealed_text_does_not_contain_the_plaintext() -> None:
    secret = "EsTc-recovery-key-material-1234567890"
    sealed = box_of(1).seal(secret, context="recovery_key")
    assert secret not in sealed
    assert base64.b64encode(secret.encode()).decode()[:16] not in sealed


def test_another_key_does_not_open_it() -> None:
    sealed = box_of(1).seal("secret", context="recovery_key")
    with pytest.raises(SecretError):
        box_of(2).open(sealed, context="recovery_key")


def test_a_tampered_value_does_not_open() -> None:
    box = box_of(1)
    sealed = box.seal("secret", context="recovery_key")
    prefix, blob = sealed[: sealed.rindex(":") + 1], sealed[sealed.rindex(":") + 1 :]
    raw = bytearray(base64.b64decode(blob))
    for index in (0, 12, len(raw) - 1):  # nonce, ciphertext, tag
        changed = bytearray(raw)
        changed[index] ^= 1
        with pytest.raises(SecretError):
            box.open(prefix + base64.b64encode(bytes(changed)).decode(), context="recovery_key")
    for broken in ("plain text", prefix + "!!!", prefix + base64.b64encode(b"short").decode()):
        with pytest.raises(SecretError):
            box.open(broken, context="recovery_key")


def test_a_value_moved_to_another_context_does_not_open() -> None:
    box = box_of(1)
    sealed = box.seal("secret", context="recovery_key")
    with pytest.raises(SecretError):
        box.open(sealed, context="teams/refresh_token")
    with pytest.raises(SecretError):
        box.open(sealed)
    assert box.open(sealed, context="recovery_key") == "secret"


def test_repr_never_shows_the_key() -> None:
    raw = bytes(range(KEY_BYTES))
    key = PickleKey(raw)
    box = key.secret_box()
    for text in (repr(key), str(key), repr(box), str(box), f"{key!r} {box!r}"):
        assert raw.hex() not in text
        assert base64.b64encode(raw).decode() not in text
        assert key.olm_passphrase() not in text
        assert "hidden" in text
