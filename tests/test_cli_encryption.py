"""The encryption commands of ``pontis``: pickle keys and the recovery key, run in-process."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bridge.core.app import KV_NETWORK
from bridge.core.cli import main
from bridge.core.encryption_settings import PICKLE_KEY_ENV
from bridge.core.ids import NetworkID
from bridge.core.pickle_key import KEY_BYTES, PickleKey, load_pickle_key, write_key_file
from bridge.portal.store import Store
from tests.config_text import BASE_CONFIG

CONFIG = (
    BASE_CONFIG
    + """\
database: sqlite:{db}
encryption:
  allow: {allow}
"""
)
RECOVERY_KEY = "EsTc 1234 5678 9abc defg hijk lmno pqrs tuvw xyzA BCDE FGHI JKLM"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PONTIS_* variable of the developer's shell, and a working directory that is not the
    config's, so "beside the config" cannot pass by accident."""
    for name in [n for n in os.environ if n.startswith("PONTIS_")]:
        monkeypatch.delenv(name)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)


def write_config(tmp_path: Path, *, allow: bool = True) -> Path:
    directory = tmp_path / "etc"
    directory.mkdir(exist_ok=True)
    path = directory / "config.yaml"
    text = CONFIG.format(db=tmp_path / "pontis.db", allow=str(allow).lower())
    path.write_text(text)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("pontis: ") for line in lines), err
    return lines


# --- generate-pickle-key ------------------------------------------------------------------------


def test_generate_pickle_key_writes_a_0600_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pickle.key"
    assert main(["generate-pickle-key", "-o", str(path)], factories={}) == 0
    assert mode_of(path) == 0o600
    assert len(base64.b64decode(path.read_text().strip(), validate=True)) == KEY_BYTES
    out = capsys.readouterr().out
    assert str(path) in out and "back it up" in out
    assert path.read_text().strip() not in out  # the key itself is not printed
    load_pickle_key(str(path), {})  # and the bridge accepts it as it is


def test_generate_pickle_key_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pickle.key"
    write_key_file(path)
    before = path.read_text()
    assert main(["generate-pickle-key", "-o", str(path)], factories={}) == 1
    (line,) = errors(capsys)
    assert str(path) in line and "exists" in line and "kept" in line
    assert path.read_text() == before


def test_generate_pickle_key_into_a_missing_directory_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "no" / "such" / "pickle.key"
    assert main(["generate-pickle-key", "-o", str(path)], factories={}) == 1
    (line,) = errors(capsys)
    assert line.startswith(f"pontis: cannot write {path}")


# --- generate-registration ----------------------------------------------------------------------


def test_generate_registration_creates_the_key_beside_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    reg = tmp_path / "reg.yaml"
    assert main(["-c", str(config), "generate-registration", "-r", str(reg)], factories={}) == 0
    key = config.parent / "pickle.key"
    assert key.exists() and mode_of(key) == 0o600
    assert not (Path.cwd() / "pickle.key").exists()
    assert f"Wrote a new encryption pickle key to {key}" in capsys.readouterr().out
    load_pickle_key("pickle.key", {}, base_dir=config.parent)
    registration = YAML(typ="safe").load(reg)
    assert registration["org.matrix.msc3202"] is True
    assert registration["io.element.msc4190"] is True

    # A second run keeps the key: everything stored with it depends on it.
    first = key.read_text()
    assert main(["-c", str(config), "generate-registration", "-r", str(reg)], factories={}) == 0
    assert key.read_text() == first
    assert "pickle key" not in capsys.readouterr().out


def test_generate_registration_keeps_an_existing_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    key = config.parent / "pickle.key"
    write_key_file(key)
    before = key.read_text()
    reg = tmp_path / "reg.yaml"
    assert main(["-c", str(config), "generate-registration", "-r", str(reg)], factories={}) == 0
    assert key.read_text() == before
    assert "pickle key" not in capsys.readouterr().out


def test_generate_registration_writes_no_key_with_encryption_off(tmp_path: Path) -> None:
    config = write_config(tmp_path, allow=False)
    reg = tmp_path / "reg.yaml"
    assert main(["-c", str(config), "generate-registration", "-r", str(reg)], factories={}) == 0
    assert not (config.parent / "pickle.key").exists()
    registration = YAML(typ="safe").load(reg)
    assert "org.matrix.msc3202" not in registration
    assert "io.element.msc4190" not in registration


def test_generate_registration_writes_no_key_with_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PICKLE_KEY_ENV, base64.b64encode(b"k" * KEY_BYTES).decode())
    config = write_config(tmp_path)
    reg = tmp_path / "reg.yaml"
    assert main(["-c", str(config), "generate-registration", "-r", str(reg)], factories={}) == 0
    assert not (config.parent / "pickle.key").exists()
    assert reg.exists()


# --- show-recovery-key --------------------------------------------------------------------------


def store_recovery_key(tmp_path: Path, value: str) -> None:
    async def put() -> None:
        store = await Store.open(f"sqlite:{tmp_path / 'pontis.db'}")
        try:
            await store.kv_set(NetworkID(KV_NETWORK), "recovery_key", value)
        finally:
            await store.close()

    asyncio.run(put())


def test_show_recovery_key_without_a_stored_key_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    write_key_file(config.parent / "pickle.key")
    assert main(["-c", str(config), "show-recovery-key"], factories={}) == 1
    (line,) = errors(capsys)
    assert "no recovery key yet" in line
    assert capsys.readouterr().out == ""


def test_show_recovery_key_prints_the_stored_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    key_file = config.parent / "pickle.key"
    write_key_file(key_file)
    pickle_key = load_pickle_key(str(key_file), {})
    assert KV_NETWORK == "crypto"
    store_recovery_key(tmp_path, pickle_key.secret_box().seal(RECOVERY_KEY, context="recovery_key"))
    assert main(["-c", str(config), "show-recovery-key"], factories={}) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == RECOVERY_KEY
    assert captured.err == ""


def test_show_recovery_key_sealed_with_another_key_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    write_key_file(config.parent / "pickle.key")
    other = PickleKey(b"o" * KEY_BYTES).secret_box()
    store_recovery_key(tmp_path, other.seal(RECOVERY_KEY, context="recovery_key"))
    assert main(["-c", str(config), "show-recovery-key"], factories={}) == 1
    (line,) = errors(capsys)
    assert "does not open with this pickle key" in line
    assert RECOVERY_KEY not in line


def test_show_recovery_key_without_a_pickle_key_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert main(["-c", str(config), "show-recovery-key"], factories={}) == 1
    (line,) = errors(capsys)
    assert "generate-pickle-key" in line
