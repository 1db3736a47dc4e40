# Shared setup for scripts/test.sh and scripts/run.sh. Source it; do not run it.
# Every step is idempotent and cheap when the work is already done.

PONTIS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$PONTIS_ROOT/.venv"
SYNAPSE_VENV="${PONTIS_SYNAPSE_VENV:-$PONTIS_ROOT/.cache/synapse-venv}"
# The Synapse the end-to-end tests were written against; bump deliberately.
SYNAPSE_VERSION="1.163.2"

# pip, minus the "Location 'file:///…' is ignored" noise a local extra index produces.
quiet_pip() {
    local pip="$1"
    shift
    { "$pip" install -q --disable-pip-version-check "$@" 2>&1; } \
        | { grep -v "^WARNING: Location 'file://.*' is ignored" || true; }
}

step() {
    printf '\n==> %s\n' "$*"
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: need root to run: $*" >&2
        return 1
    fi
}

# ensure_debian_packages PKG... : apt-get install the packages that dpkg does not report installed.
# Debconf answers in the array DEBCONF_SELECTIONS (debconf-set-selections lines, e.g.
# "postfix postfix/main_mailer_type select No configuration") are set first, so no package asks.
ensure_debian_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "Debian packages present: $*"
        return 0
    fi
    echo "Installing Debian packages: ${missing[*]}"
    if [ -n "${DEBCONF_SELECTIONS+set}" ] && [ "${#DEBCONF_SELECTIONS[@]}" -gt 0 ]; then
        printf '%s\n' "${DEBCONF_SELECTIONS[@]}" | as_root debconf-set-selections
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # Packaged services (prosody would listen on 0.0.0.0:5222) must not start: a policy-rc.d
    # that exits 101 forbids it. An existing one is left alone; ours is removed afterwards.
    local policy=/usr/sbin/policy-rc.d created_policy=0 status=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# Pontis scripts/test.sh: no services start during apt-get install.\nexit 101\n' \
            | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        created_policy=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" || status=$?
    if [ "$created_policy" -eq 1 ]; then
        as_root rm -f "$policy"
    fi
    return "$status"
}

# stop_system_prosody : the tests run their own Prosody; stop the packaged daemon if it started
# anyway (it would hold 0.0.0.0:5222). Never runs `prosody --version`: that starts a server.
stop_system_prosody() {
    local pidfile=/run/prosody/prosody.pid pid
    if [ -f "$pidfile" ] && pid="$(cat "$pidfile")" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "Stopping the packaged Prosody daemon (pid $pid)"
        as_root prosodyctl stop >/dev/null 2>&1 || as_root kill "$pid" || true
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    fi
    return 0
}

# stop_system_ejabberd : the tests run their own ejabberd (tests/e2e/ejabberd.py); stop the
# packaged daemon if it started anyway (it would hold 0.0.0.0:5222 and 5269, and epmd's 4369).
# `ejabberdctl stop` reaches it over Erlang distribution, as its own user with its own cookie;
# if that fails, its pidfile (set in /etc/default/ejabberd) names the beam process.
stop_system_ejabberd() {
    local pidfile=/run/ejabberd/ejabberd.pid pid
    if [ -f "$pidfile" ] && pid="$(cat "$pidfile")" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "Stopping the packaged ejabberd daemon (pid $pid)"
        as_root ejabberdctl stop >/dev/null 2>&1 || as_root kill "$pid" || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    fi
    return 0
}

# stop_system_mail : the tests run their own Postfix and Dovecot (tests/e2e/mail.py); stop the
# packaged daemons if they started anyway (they would hold ports 25, 143, 993...).
stop_system_mail() {
    local pidfile pid
    for pidfile in /var/spool/postfix/pid/master.pid /run/dovecot/master.pid; do
        [ -f "$pidfile" ] || continue
        # Postfix pads its pid file with spaces.
        pid="$(tr -d ' \n' <"$pidfile" 2>/dev/null || true)"
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || continue
        case "$pidfile" in
            /var/spool/*)
                echo "Stopping the packaged Postfix daemon (pid $pid)"
                as_root postfix stop >/dev/null 2>&1 || as_root kill "$pid" || true
                ;;
            *)
                echo "Stopping the packaged Dovecot daemon (pid $pid)"
                as_root doveadm stop >/dev/null 2>&1 || as_root kill "$pid" || true
                ;;
        esac
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    done
    return 0
}

_stamp_of() {
    # What an install depends on: the pyproject.toml content plus the requested extras.
    { sha256sum "$PONTIS_ROOT/pyproject.toml" | cut -d' ' -f1; echo "$1"; } | sha256sum | cut -d' ' -f1
}

# setup_project_venv [EXTRAS] : .venv with Pontis installed editable (EXTRAS e.g. "test").
setup_project_venv() {
    local extras="${1:-}" spec="." stamp_file stamp
    [ -n "$extras" ] && spec=".[$extras]"
    stamp_file="$VENV/.pontis-install-${extras:-base}"
    stamp="$(_stamp_of "$extras")"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "Creating $VENV"
        python3 -m venv "$VENV"
    fi
    if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
        echo "Project venv up to date ($VENV)"
        return 0
    fi
    echo "Installing Pontis into $VENV: pip install -e '$spec'"
    quiet_pip "$VENV/bin/pip" -e "$PONTIS_ROOT/$spec"
    echo "$stamp" >"$stamp_file"
    # The test extras include everything the base install has.
    [ -n "$extras" ] && _stamp_of "" >"$VENV/.pontis-install-base"
    return 0
}

# setup_synapse_venv : matrix-synapse==$SYNAPSE_VERSION in its own venv; exports PONTIS_SYNAPSE_VENV.
setup_synapse_venv() {
    local stamp_file="$SYNAPSE_VENV/.pontis-synapse-version" installed
    export PONTIS_SYNAPSE_VENV="$SYNAPSE_VENV"
    if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$SYNAPSE_VERSION" ] \
        && [ -x "$SYNAPSE_VENV/bin/python" ]; then
        echo "Synapse $SYNAPSE_VERSION present ($SYNAPSE_VENV)"
        return 0
    fi
    if [ ! -x "$SYNAPSE_VENV/bin/python" ]; then
        echo "Creating $SYNAPSE_VENV"
        mkdir -p "$(dirname "$SYNAPSE_VENV")"
        python3 -m venv "$SYNAPSE_VENV"
    fi
    installed="$("$SYNAPSE_VENV/bin/pip" show matrix-synapse 2>/dev/null | sed -n 's/^Version: //p' || true)"
    if [ "$installed" != "$SYNAPSE_VERSION" ]; then
        echo "Installing matrix-synapse==$SYNAPSE_VERSION into $SYNAPSE_VENV (20-60 s)"
        quiet_pip "$SYNAPSE_VENV/bin/pip" "matrix-synapse==$SYNAPSE_VERSION"
    fi
    echo "$SYNAPSE_VERSION" >"$stamp_file"
}
