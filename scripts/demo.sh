#!/usr/bin/env bash
# The demo command: ./scripts/demo.sh [--tour [--exit]]
# Installs what the demo needs (idempotent: quick when nothing changed), then runs `python -m demo`:
# Synapse, Prosody, Postfix/Dovecot, the Graph emulator and the bridge on 127.0.0.1, with a
# conversation on each network. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# prosody: the XMPP server; postfix, dovecot-imapd, dovecot-lmtpd: the mail servers. The
# packaged services are kept from starting; postfix is told not to configure the system's mail.
DEBIAN_PACKAGES=(python3-venv prosody postfix dovecot-imapd dovecot-lmtpd)
DEBCONF_SELECTIONS=("postfix postfix/main_mailer_type select No configuration")

step "Debian packages"
ensure_debian_packages "${DEBIAN_PACKAGES[@]}"
stop_system_prosody
stop_system_mail

# The demo drives the hub with the end-to-end harness's clients (matrix-nio for encryption),
# which come with the test extras.
step "Project venv (.venv)"
setup_project_venv test

step "Synapse venv"
setup_synapse_venv

step "python -m demo $*"
exec "$VENV/bin/python" -m demo "$@"
