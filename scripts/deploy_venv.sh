#!/usr/bin/env bash
# Tooling for tests/it/deployment.rs: a Python virtualenv with the IoT Edge dev tool (iotedgedev,
# which expands deployment/deployment.template.json like `iotedgedev solution genconfig`),
# jsonschema (validates the generated manifest offline) and PyYAML (parses
# docker/compose.yaml). Prints the venv's path on stdout, the only output on success.
#
#   EDGEFILTER_IOTEDGEDEV="$(scripts/deploy_venv.sh)" cargo test --test it deployment::
#
# Idempotent: a venv that already imports all three is reused without touching the network.
# Location: $EDGEFILTER_DEPLOY_VENV, default <repository>/.venv-deploy.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${EDGEFILTER_DEPLOY_VENV:-$root/.venv-deploy}"
python="${PYTHON:-python3}"

ready() {
    [ -x "$venv/bin/python" ] && [ -x "$venv/bin/iotedgedev" ] &&
        "$venv/bin/python" -c 'import iotedgedev, jsonschema, referencing, yaml' 2>/dev/null
}

if ! ready; then
    # --without-pip would be faster but leaves no pip; --upgrade-deps is not needed.
    "$python" -m venv "$venv" >&2
    # Keep the venv out of git wherever it lives (Python >= 3.13 writes this itself).
    printf '*\n' > "$venv/.gitignore"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        'iotedgedev>=3.3,<4' 'jsonschema>=4.18,<5' 'PyYAML>=6,<7' >&2
    if ! ready; then
        echo "deploy_venv.sh: $venv was created but does not import iotedgedev, jsonschema and yaml" >&2
        exit 1
    fi
fi

printf '%s\n' "$venv"
