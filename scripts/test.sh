#!/usr/bin/env bash
# Runs every test of edgefilter from a fresh machine: installs what the tests need when it is
# missing (mosquitto; the IoT Edge dev tool in a venv), checks formatting and lints, then runs
# the whole suite with cargo-nextest (cargo test when nextest is absent).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The broker is started by each test on its own port; the system service is not needed.
if command -v systemctl >/dev/null 2>&1; then systemctl stop mosquitto >/dev/null 2>&1 || true; fi

if [ -x scripts/deploy_venv.sh ]; then
  echo "==> IoT Edge dev tool venv"
  EDGEFILTER_IOTEDGEDEV="$(scripts/deploy_venv.sh)"
  export EDGEFILTER_IOTEDGEDEV
fi

if [ "${EDGEFILTER_SKIP_LINT:-0}" != "1" ]; then
  echo "==> cargo fmt --check"
  cargo fmt --all -- --check
  echo "==> cargo clippy --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
