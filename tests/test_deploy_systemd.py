"""deploy/systemd/pontis.service is a unit systemd accepts, hardened, running the real CLI.

``systemd-analyze verify`` works without a running systemd, but it wants ExecStart's binary to
exist: the tests check a copy whose ExecStart is this venv's ``pontis`` script. It reports
unknown keys and bad values on stderr and still exits 0, so any output is a failure.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

UNIT = Path(__file__).parent.parent / "deploy" / "systemd" / "pontis.service"
INSTALLED_PONTIS = "/opt/pontis/venv/bin/pontis"
VENV_PONTIS = Path(sys.executable).parent / "pontis"
MAX_EXPOSURE = 20
"""``systemd-analyze security`` exposure, 0-100 (printed as 0.0-10.0): at most 2.0."""


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: scripts/test.sh installs Debian's systemd package"
    return found


def _exec_start(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0].removeprefix("ExecStart="))


def _testable_copy(text: str, directory: Path) -> Path:
    """The unit with ExecStart pointing at this venv's ``pontis`` (which verify needs)."""
    assert VENV_PONTIS.is_file(), f"{VENV_PONTIS} missing: install the project into the venv"
    assert f"ExecStart={INSTALLED_PONTIS} " in text
    path = directory / "pontis.service"
    path.write_text(text.replace(f"ExecStart={INSTALLED_PONTIS} ", f"ExecStart={VENV_PONTIS} "))
    return path


def _verify(unit: Path) -> str:
    """What ``systemd-analyze verify`` has to say about ``unit``: "" when it is fine."""
    done = subprocess.run(
        [_systemd_analyze(), "verify", str(unit)],
        capture_output=True, text=True, timeout=60, cwd=unit.parent,
    )  # fmt: skip
    said = (done.stdout + done.stderr).strip()
    return said if said or done.returncode == 0 else f"exit status {done.returncode}"


def test_verify_refuses_a_broken_unit(tmp_path: Path) -> None:
    """The check below is not vacuous: a typo'd key and a bad value are both reported."""
    text = _testable_copy(UNIT.read_text(), tmp_path).read_text()
    broken = tmp_path / "pontis.service"
    broken.write_text(
        text.replace("Restart=on-failure", "Restart=sometimes") + "\nPrivateTMP=yes\n"
    )
    said = _verify(broken)
    assert "Failed to parse service restart specifier" in said
    assert "Unknown key 'PrivateTMP'" in said
    broken.write_text(text.replace(f"ExecStart={VENV_PONTIS}", "ExecStart=/nonexistent/pontis"))
    assert "is not executable" in _verify(broken)


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    assert _verify(_testable_copy(UNIT.read_text(), tmp_path)) == ""


def test_the_unit_is_hardened(tmp_path: Path) -> None:
    text = UNIT.read_text()
    for setting in (
        "User=pontis", "StateDirectory=pontis", "WorkingDirectory=/var/lib/pontis",
        "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "CapabilityBoundingSet=",
        "Restart=on-failure",
    ):  # fmt: skip
        assert f"\n{setting}\n" in text, setting
    # ProcSubset=pid hides /proc/stat, and prometheus_client then exports no process_* metrics.
    assert "\nProcSubset=" not in text
    unit = _testable_copy(text, tmp_path)
    done = subprocess.run(
        [_systemd_analyze(), "security", "--offline=yes", f"--threshold={MAX_EXPOSURE}", str(unit)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "Overall exposure level for pontis.service" in done.stdout


def test_exec_start_runs_the_installed_cli(tmp_path: Path) -> None:
    """ExecStart names the console script the package installs, and its arguments are ones
    the CLI accepts: with a config that does not exist, ``run`` ends with status 1 and one
    line naming the file (a usage error would be status 2)."""
    argv = _exec_start(UNIT.read_text())
    assert argv[0] == INSTALLED_PONTIS
    (script,) = entry_points(group="console_scripts", name=Path(argv[0]).name)
    assert script.value == "bridge.core.cli:main"
    assert argv[1:] == ["-c", "/etc/pontis/config.yaml", "run"]
    missing = tmp_path / "etc" / "config.yaml"
    args = [str(VENV_PONTIS), "-c", str(missing), *argv[3:]]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1, done.stderr
    assert str(missing) in done.stderr
    assert "Traceback" not in done.stderr
