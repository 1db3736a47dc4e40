"""``pontis check`` compares the registration on disk with the config (the first-run trap)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bridge.core.config import Config, make_registration, write_registration
from bridge.core.registration_check import check_registration
from tests.config_text import BASE_CONFIG
from tests.e2e.hub import REPO
from tests.test_cli import assert_clean_failure, pontis

pytestmark = pytest.mark.usefixtures("no_pontis_env")

AS_TOKEN, HS_TOKEN = "as-secret-value-1", "hs-secret-value-2"


def _config(tmp_path: Path, extra: str = "") -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(BASE_CONFIG + extra)
    return Config.load(path)


def _registration(tmp_path: Path, config: Config, **changes: object) -> Path:
    """The registration ``generate-registration`` writes for ``config``, with ``changes``."""
    registration = make_registration(config, config.enabled_connectors()) | changes
    path = tmp_path / "registration.yaml"
    write_registration(path, registration)
    return path


def _edit(path: Path, **changes: object) -> None:
    yaml = YAML(typ="safe", pure=True)
    data = yaml.load(path.read_text()) | changes
    with path.open("w") as file:
        yaml.dump(data, file)


# --- what is wrong, one line each -----------------------------------------------------------------


def test_a_registration_written_for_another_config_names_each_difference(tmp_path: Path) -> None:
    written_for = _config(tmp_path)
    path = _registration(tmp_path, written_for)
    now = _config(
        tmp_path,
        "  address: http://bridge.internal:29331\n  id: hub-bridge\n  bot_username: hubbot\n",
    )
    lines = check_registration(now, path)
    text = "\n".join(lines)
    assert all(line.startswith(f"registration: {path}: ") for line in lines), text
    fix = f"`pontis -c {now.path} generate-registration -r {path}` and restart the homeserver"
    assert all(line.endswith(f"; regenerate it with {fix}") for line in lines), text
    assert (
        "url is 'http://localhost:29330' but appservice.address is 'http://bridge.internal:29331'"
        in text
    )
    assert "id is 'pontis' but appservice.id is 'hub-bridge'" in text
    assert "sender_localpart is 'pontis' but appservice.bot_username is 'hubbot'" in text
    assert "namespaces.users does not claim @hubbot:hub.test" in text
    assert len(lines) == 4, text


def test_the_domain_changed_after_the_registration_was_written(tmp_path: Path) -> None:
    path = _registration(tmp_path, _config(tmp_path))
    now_text = (
        (tmp_path / "config.yaml").read_text().replace("domain: hub.test", "domain: gov.test")
    )
    (tmp_path / "config.yaml").write_text(now_text)
    now = Config.load(tmp_path / "config.yaml")
    lines = check_registration(now, path)
    claims = sorted(line.split(": ")[2].split(" (")[0] for line in lines)
    assert claims == sorted(
        [f"namespaces.users does not claim @{n}_example:gov.test" for n in ("teams", "xmpp", "email")]
        + ["namespaces.users does not claim @pontis:gov.test"]
        + [f"namespaces.aliases does not claim #{n}_example:gov.test" for n in ("teams", "xmpp", "email")]
    )  # fmt: skip


def test_tokens_are_compared_but_never_shown(tmp_path: Path) -> None:
    config = _config(tmp_path)
    path = _registration(tmp_path, config, as_token="old-as-token-7", hs_token="")
    lines = check_registration(config, path)
    text = "\n".join(lines)
    assert "as_token differs from appservice.as_token in the config" in text
    assert "hs_token is missing" in text
    assert len(lines) == 2
    for secret in ("old-as-token-7", AS_TOKEN, HS_TOKEN):
        assert secret not in text


def test_an_enabled_connector_s_ghosts_and_aliases_must_be_claimed(tmp_path: Path) -> None:
    path = _registration(tmp_path, _config(tmp_path))
    config = _config(tmp_path, "connectors:\n  reference:\n    enabled: true\n")
    lines = check_registration(config, path)
    assert len(lines) == 2, lines
    assert "namespaces.users does not claim @reference_example:hub.test" in lines[0]
    assert "namespaces.aliases does not claim #reference_example:hub.test" in lines[1]


def test_a_namespace_that_is_not_exclusive_is_named(tmp_path: Path) -> None:
    config = _config(tmp_path)
    registration = make_registration(config, [])
    registration["namespaces"]["users"][2]["exclusive"] = False  # @xmpp_…
    path = tmp_path / "registration.yaml"
    write_registration(path, registration)
    (line,) = check_registration(config, path)
    assert "namespaces.users claims @xmpp_example:hub.test but not exclusively" in line


def test_encryption_needs_the_msc_flags_in_the_registration(tmp_path: Path) -> None:
    path = _registration(tmp_path, _config(tmp_path, "encryption:\n  allow: false\n"))
    config = _config(tmp_path, "encryption:\n  allow: true\n")
    lines = check_registration(config, path)
    assert [line.split(": ")[2].split(";")[0] for line in lines] == [
        "org.matrix.msc3202 is missing, not True (encryption.allow needs it)",
        "io.element.msc4190 is missing, not True (encryption.allow needs it)",
    ]
    _edit(path, **{"receive_ephemeral": False})
    assert any(
        "receive_ephemeral is False, not True" in line for line in check_registration(config, path)
    )


# --- the file itself --------------------------------------------------------------------------------


def test_a_missing_registration_says_how_to_write_it(tmp_path: Path) -> None:
    config = _config(tmp_path)
    missing = tmp_path / "nowhere" / "registration.yaml"
    assert check_registration(config, missing) == [
        f"registration: {missing} does not exist; write it with "
        f"`pontis -c {config.path} generate-registration -r {missing}` and restart the homeserver"
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"id: [unclosed\n", "is not valid YAML at line 2"),
        (b"- just\n- a list\n", "is not a registration"),
        (b"", "is not a registration"),
        (b"\xff\xfe not text", "cannot read"),
        (None, "cannot read"),  # a directory where the file should be
    ],
)
def test_an_unreadable_registration_is_one_clear_line(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    config = _config(tmp_path)
    path = tmp_path / "registration.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    (line,) = check_registration(config, path)
    assert line.startswith("registration: ") and expected in line, line


def test_a_matching_registration_passes_however_its_regexes_are_written(tmp_path: Path) -> None:
    config = _config(tmp_path, "encryption:\n  allow: true\n")
    path = _registration(tmp_path, config)
    assert check_registration(config, path) == []
    registration = make_registration(config, [])
    for namespace in registration["namespaces"].values():
        for entry in namespace:  # unanchored, as many hand-written registrations are
            entry["regex"] = entry["regex"].removeprefix("^").removesuffix("$")
    write_registration(path, registration)
    assert check_registration(config, path) == []


# --- the command ------------------------------------------------------------------------------------


def test_check_catches_the_first_run_trap(tmp_path: Path) -> None:
    """What scripts/run.sh does: the registration from the unedited template, then the operator
    sets the real domain and address; ``check`` names what the homeserver still has wrong."""
    shutil.copy(REPO / "config.example.yaml", tmp_path / "config.yaml")
    written = pontis(
        tmp_path, "-c", "config.yaml", "generate-registration", "-r", "registration.yaml"
    )
    assert written.returncode == 0, written.stderr
    config = tmp_path / "config.yaml"
    text = config.read_text()
    template = Config.load(config)
    text = text.replace(f"domain: {template.domain}", "domain: agency.test", 1)
    text = text.replace(
        f"address: {template.appservice_address}", "address: http://10.0.0.5:29320", 1
    )
    config.write_text(text)
    lines = assert_clean_failure(pontis(tmp_path, "-c", "config.yaml", "check"))
    trap = [line for line in lines if line.startswith("pontis: registration: registration.yaml: ")]
    assert any("but appservice.address is 'http://10.0.0.5:29320'" in line for line in trap), lines
    assert any("does not claim @pontis:agency.test" in line for line in trap), lines
    assert all(
        "`pontis -c config.yaml generate-registration -r registration.yaml`" in line
        for line in trap
    )

    assert pontis(tmp_path, "-c", "config.yaml", "generate-registration").returncode == 0
    again = pontis(tmp_path, "-c", "config.yaml", "check")
    assert "registration" not in again.stderr, again.stderr


def test_check_reads_the_registration_it_is_given(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(BASE_CONFIG)
    lines = assert_clean_failure(
        pontis(tmp_path, "-c", "config.yaml", "check", "-r", "hs/pontis.yaml")
    )
    assert "pontis: registration: hs/pontis.yaml does not exist; write it with " in "\n".join(lines)
