"""The ``pontis`` command as an operator meets it: one clear line per problem, exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.e2e.hub import REPO
from tests.e2e.process import free_port


def pontis(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PONTIS_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("pontis: ") for line in lines), result.stderr
    return lines


def test_check_lists_every_problem_with_its_key_path(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "homeserver:\n  address: ftp://hub.test\n  domain: hub.test\n"
        "appservice:\n  port: 99999\n  bot_username: 'Bad Bot'\n  as_token: s3cret-as-token-value\n"
        "database: mysql://nope\n"
        "bridge:\n  permissions:\n    '*': superuser\n"
        "connectors:\n  xmpp:\n    enabled: maybe\n"
        "logging:\n  level: LOUD\n"
        "colour: blue\n"
    )
    lines = assert_clean_failure(pontis(tmp_path, "-c", "config.yaml", "check"))
    text = "\n".join(lines)
    for path in ("homeserver.address", "appservice.port", "appservice.bot_username", "database",
                 "bridge.permissions[\"*\"]", "connectors.xmpp.enabled", "logging.level", "colour"):  # fmt: skip
        assert f"pontis: {path}: " in text, (path, text)
    assert "s3cret-as-token-value" not in text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "file not found"),
        ("homeserver: [unclosed\n", "invalid YAML at line"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_unreadable_config_is_one_line(tmp_path: Path, content: str | None, expected: str) -> None:
    if content is not None:
        (tmp_path / "config.yaml").write_text(content)
    for command in ("check", "run"):
        lines = assert_clean_failure(pontis(tmp_path, "-c", "config.yaml", command))
        assert len(lines) == 1 and expected in lines[0], lines


def test_unreachable_homeserver_is_reported_by_check(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text((REPO / "config.example.yaml").read_text())
    assert (
        pontis(tmp_path, "-c", "config.yaml", "generate-registration", "-r", "reg.yaml").returncode
        == 0
    )
    config = YAML().load(tmp_path / "config.yaml")
    config["homeserver"]["address"] = f"http://127.0.0.1:{free_port()}"
    with (tmp_path / "config.yaml").open("w") as f:
        YAML().dump(config, f)
    lines = assert_clean_failure(pontis(tmp_path, "-c", "config.yaml", "check", "-r", "reg.yaml"))
    assert lines == [
        f"pontis: homeserver.address: cannot reach {config['homeserver']['address']}: "
        + lines[0].split(": ", 3)[3]
    ]
    assert "cannot reach" in lines[0]


def test_generate_registration_keeps_comments_and_fills_tokens(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text((REPO / "config.example.yaml").read_text())
    result = pontis(tmp_path, "-c", "config.yaml", "generate-registration", "-r", "reg.yaml")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "config.yaml").read_text()
    config, registration = YAML().load(text), YAML().load(tmp_path / "reg.yaml")
    assert "as_token: generate" not in text and text.count("#") >= 20  # comments survived
    assert registration["as_token"] == config["appservice"]["as_token"]
    assert registration["hs_token"] == config["appservice"]["hs_token"]
    assert registration["sender_localpart"] == "pontis"
    again = pontis(tmp_path, "-c", "config.yaml", "generate-registration", "-r", "reg2.yaml")
    assert (
        again.returncode == 0
        and YAML().load(tmp_path / "reg2.yaml")["as_token"] == registration["as_token"]
    )


def test_run_stops_on_sigterm_while_waiting_for_the_homeserver(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text((REPO / "config.example.yaml").read_text())
    assert (
        pontis(tmp_path, "-c", "config.yaml", "generate-registration", "-r", "reg.yaml").returncode
        == 0
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PONTIS_")}
    env |= {"PYTHONPATH": str(REPO), "PONTIS_HOMESERVER_ADDRESS": f"http://127.0.0.1:{free_port()}",
            "PONTIS_APPSERVICE_PORT": str(free_port())}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "-c", "config.yaml", "run"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wait until it is retrying the homeserver
            if "not reachable" in line:
                break
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        proc.kill()


def test_enabled_connector_with_placeholder_secret_is_reported(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text((REPO / "config.example.yaml").read_text())
    assert (
        pontis(tmp_path, "-c", "config.yaml", "generate-registration", "-r", "reg.yaml").returncode
        == 0
    )
    config = YAML().load(tmp_path / "config.yaml")
    config["connectors"]["xmpp"]["enabled"] = True
    with (tmp_path / "config.yaml").open("w") as f:
        YAML().dump(config, f)
    lines = assert_clean_failure(pontis(tmp_path, "-c", "config.yaml", "check"))
    assert any(
        line.startswith("pontis: connectors.xmpp.component.secret: still the placeholder")
        for line in lines
    )
