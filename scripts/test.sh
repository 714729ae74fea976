#!/usr/bin/env bash
# Runs every test of edgefilter from a fresh machine: installs what the tests need when it is
# missing (mosquitto, prometheus; the IoT Edge dev tool in a venv), checks formatting and
# lints, then runs the whole suite with cargo-nextest (cargo test when nextest is absent).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says how long it took (the suite's time is watched: README, "Tests").
step_name=""; step_t=$SECONDS
step() {
  [ -n "$step_name" ] && echo "    ($step_name: $((SECONDS - step_t)) s)"
  step_name="$1"; step_t=$SECONDS
  echo "==> $1"
}
trap 'rc=$?; [ -n "$step_name" ] && echo "    ($step_name: $((SECONDS - step_t)) s; scripts/test.sh: ${SECONDS} s in all, exit $rc)"' EXIT

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
# protoc: the `cluster` feature's gRPC code is generated at build time (rmqtt's grpc feature).
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
# Prometheus (tests/it/prometheus.rs scrapes edgefilter with the real server; promtool ships in
# the same package). Without recommends: the node exporter is not needed.
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# ip: the SDK peer's smoke test brings up loopback in its own network namespace.
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # The packages' services must not start (tests run their own instances on ephemeral ports;
  # Prometheus' would hold 9090): deny service starts while installing, unless a policy
  # already exists.
  policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 0755 /usr/sbin/policy-rc.d
    policy_added=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  if [ -n "$policy_added" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi
# Brokers and Prometheus are started by each test on its own port; the system services are
# not needed (and must not hold 1883/9090).
for svc in mosquitto prometheus; do
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  elif [ -x "/etc/init.d/$svc" ]; then
    "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
  fi
done

if [ -x scripts/deploy_venv.sh ]; then
  step "IoT Edge dev tool venv"
  EDGEFILTER_IOTEDGEDEV="$(scripts/deploy_venv.sh)"
  export EDGEFILTER_IOTEDGEDEV
fi

if [ -x scripts/peers/setup.sh ]; then
  # The seed's own module on the Python SDK (tests/edgehub-standin/tests/sdk_peer.rs).
  step "Python SDK peer venv"
  EDGEFILTER_PEERS_VENV="$(scripts/peers/setup.sh)"
  export EDGEFILTER_PEERS_VENV
fi

if [ "${EDGEFILTER_SKIP_LINT:-0}" != "1" ]; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

# Dependency policy (deny.toml): licenses, banned crates, sources. Offline once the crates are
# fetched; advisories need the RustSec database from the network (RELIABILITY.md).
if ! cargo deny --version >/dev/null 2>&1; then
  step "installing cargo-deny"
  cargo install cargo-deny --locked --quiet
fi
step "cargo deny check bans licenses sources"
cargo fetch --locked --quiet
deny_out=$(mktemp)
if ! cargo deny --offline check --hide-inclusion-graph bans licenses sources >"$deny_out" 2>&1; then
  cat "$deny_out"; rm -f "$deny_out"; exit 1
fi
tail -n 1 "$deny_out"; rm -f "$deny_out"   # "bans ok, licenses ok, sources ok" (duplicates: warnings)

# Our rust-version must not promise less than a dependency needs (rmqtt needs 1.94).
step "rust-version covers every dependency's"
cargo metadata --locked --offline --all-features --format-version 1 | python3 -c '
import json, sys
m = json.load(sys.stdin)
v = lambda s: tuple((list(map(int, s.split("."))) + [0, 0])[:3])
f = lambda t: ".".join(map(str, t))
ours = [p for p in m["packages"] if p["id"] in m["workspace_members"]]
floor = min(v(p["rust_version"]) for p in ours if p.get("rust_version"))
need, name = max((v(p["rust_version"]), p["name"]) for p in m["packages"]
                 if p.get("rust_version") and p not in ours)
if need > floor:
    sys.exit(f"Cargo.toml: rust-version {f(floor)} is below what {name} needs ({f(need)})")
print(f"rust-version {f(floor)}: enough for every dependency (highest: {name}, {f(need)})")
'

# The Debian package test (tests/it/debian_package.rs) packages the suite's own binary with
# cargo-deb.
if ! cargo deb --version >/dev/null 2>&1; then
  step "installing cargo-deb"
  cargo install cargo-deb --locked --quiet
fi

# One debug build for every test: with the `cluster` feature (off by default; it only adds the
# broadcast plugin and its gRPC) the suite includes the three-node test, tests/cluster.rs. A
# separate run with the feature used to build the whole crate and rmqtt a second time. The
# default features are still built by clippy above. The fault suite's short form runs the
# binaries of this same build (scripts/faults.sh --short builds exactly this), and the
# Debian package test packages it: no second build, no release build.
step "build the tests (debug, --features edgefilter/cluster)"
cargo test --workspace --features edgefilter/cluster --locked --no-run --quiet

# The fault suite's short form (RELIABILITY.md): the cases that pass today; the known failures
# are listed, not run. Before the tests so that their summary closes the output.
step "scripts/faults.sh --short"
scripts/faults.sh --short

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --features edgefilter/cluster --locked --no-fail-fast "$@"
else
  cargo test --workspace --features edgefilter/cluster --locked --no-fail-fast "$@"
fi
