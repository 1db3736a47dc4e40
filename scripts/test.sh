#!/usr/bin/env bash
# The test command: ./scripts/test.sh [pytest args...]
# Installs what the tests need (idempotent), then runs ruff, mypy and pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# Debian packages the tests need. prosody and ejabberd: the XMPP end-to-end tests run their own
# instances (tests/e2e/prosody.py, tests/e2e/ejabberd.py); postfix, dovecot-imapd and
# dovecot-lmtpd: the email end-to-end tests run their own mail servers (tests/e2e/mail.py).
# ensure_debian_packages keeps the packaged services from starting; postfix's installer is told
# not to configure the system's mail.
DEBIAN_PACKAGES=(python3-venv prosody ejabberd postfix dovecot-imapd dovecot-lmtpd systemd prometheus)
DEBCONF_SELECTIONS=("postfix postfix/main_mailer_type select No configuration")

step "Debian packages"
ensure_debian_packages "${DEBIAN_PACKAGES[@]}"
stop_system_prosody
stop_system_ejabberd
stop_system_mail

step "Project venv (.venv)"
setup_project_venv test

step "Synapse venv"
setup_synapse_venv

step "PostgreSQL at 127.0.0.1:5432"
pg_ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p 5432
    else
        (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
    fi
}
if pg_ready; then
    echo "PostgreSQL is accepting connections"
elif command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
        echo "Starting PostgreSQL cluster $version/main"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    for _ in $(seq 1 20); do pg_ready && break; sleep 0.5; done
    if pg_ready; then echo "PostgreSQL is accepting connections"; else
        echo "warning: PostgreSQL still not reachable; PostgreSQL tests will fail or skip" >&2
    fi
else
    echo "warning: no PostgreSQL at 127.0.0.1:5432; PostgreSQL tests will fail or skip" >&2
fi
export PONTIS_TEST_POSTGRES="${PONTIS_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"

lint_dirs=()
for dir in bridge graph_emulator tests bench demo; do
    [ -d "$dir" ] && lint_dirs+=("$dir")
done
format_dirs=()
for dir in bridge graph_emulator tests demo; do
    [ -d "$dir" ] && format_dirs+=("$dir")
done

step "ruff check ${lint_dirs[*]}"
.venv/bin/ruff check "${lint_dirs[@]}"

step "ruff format --check ${format_dirs[*]}"
.venv/bin/ruff format --check "${format_dirs[@]}"

step "mypy"
.venv/bin/mypy

if [ "$#" -gt 0 ]; then
    step "pytest $*"
    exec .venv/bin/pytest -q "$@"
fi

# The whole suite: the end-to-end tests spend much of their time waiting on servers, so the
# unit tests run beside them, niced so that the servers the end-to-end tests time get the CPU
# first. Each run has its own temporary directory; PostgreSQL tests each use a fresh schema.
step "pytest (unit tests beside the end-to-end tests)"
work=$(mktemp -d /tmp/pontis-test.XXXXXX)
nice -n 10 .venv/bin/pytest -q -p no:cacheprovider --basetemp="$work/unit" tests \
    --ignore=tests/e2e >"$work/unit.log" 2>&1 &
unit_pid=$!
e2e_status=0
.venv/bin/pytest -q --basetemp="$work/e2e" tests/e2e || e2e_status=$?
unit_status=0
wait "$unit_pid" || unit_status=$?
step "pytest: unit tests (exit status $unit_status)"
cat "$work/unit.log"
echo "end-to-end tests: exit status $e2e_status; unit tests: exit status $unit_status"
rm -rf "$work"
[ "$e2e_status" -eq 0 ] && [ "$unit_status" -eq 0 ]
