#!/usr/bin/env bash
# The Python SDK peer's virtualenv: azure-iot-device 2.14.0 (the SDK the tutorial's module
# used) with its own dependencies (paho-mqtt 1.6, requests-unixsocket2). Prints the venv's
# path on stdout, the only output on success. Idempotent: a venv that already imports the
# SDK at that version is reused without touching the network.
# Location: $EDGEFILTER_PEERS_VENV, default <repository>/.venv-peers.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${EDGEFILTER_PEERS_VENV:-$root/.venv-peers}"
python="${PYTHON:-python3}"

ready() {
    [ -x "$venv/bin/python" ] &&
        "$venv/bin/python" -c 'import azure.iot.device.constant as c, sys; sys.exit(c.VERSION != "2.14.0")' 2>/dev/null
}

if ! ready; then
    "$python" -m venv "$venv" >&2
    printf '*\n' > "$venv/.gitignore"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'azure-iot-device==2.14.0' >&2
    if ! ready; then
        echo "peers/setup.sh: $venv was created but does not import azure-iot-device 2.14.0" >&2
        exit 1
    fi
fi

printf '%s\n' "$venv"
