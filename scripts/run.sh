#!/usr/bin/env bash
# The run command: ./scripts/run.sh
# Installs Pontis into .venv, writes config.yaml and registration.yaml on first use, runs the bridge.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# `./scripts/run.sh --demo [--tour]`: the whole hub with its networks on loopback, no homeserver
# needed (scripts/demo.sh).
if [ "${1:-}" = "--demo" ]; then
    shift
    exec scripts/demo.sh "$@"
fi
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

step "Project venv (.venv)"
setup_project_venv

if [ ! -f config.yaml ]; then
    cp config.example.yaml config.yaml
    echo "Wrote config.yaml from config.example.yaml: edit homeserver.address, homeserver.domain and appservice.address"
    echo "No homeserver yet? ./scripts/run.sh --demo runs the hub with Synapse, XMPP, mail and Teams on loopback."
fi

if [ ! -f registration.yaml ]; then
    .venv/bin/pontis -c config.yaml generate-registration -r registration.yaml
fi
echo "Add $(pwd)/registration.yaml to your homeserver's app_service_config_files and restart the homeserver."

step "pontis run"
exec .venv/bin/pontis -c config.yaml run
