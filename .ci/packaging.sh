#!/usr/bin/env bash
# Packaging check (the lead may call it from .ci/run): builds the three
# Debian packages from the debug binaries (same layout as the release ones,
# no release build needed), runs lintian on them (overrides with reasons in
# packaging/deb/*.lintian-overrides), and `systemd-analyze verify` on the
# units as installed, and `promtool check rules` on packaging/monitoring.
# Then, when Docker answers (RPOOL_CI_TESTBED=0 skips it), the FROM-scratch
# image from the debug binaries and the testbed: 3 controllers and 6 agent
# hosts must come up, enroll and form a pool; then the fault suite
# (tests/tests/faults, RPOOL_CI_FAULTS=0 skips it) on a testbed of its own,
# bounded at 15 minutes. Before the suite, packaging/prev-image.sh builds the
# previous release's image (packaging/releases.txt) for its rolling-upgrade
# scenario: the release's workspace crates recompile in a copy of the target
# directory (RPOOL_PREV_TARGET=DIR keeps that copy in DIR for the next run).
# A few minutes plus the suite once the workspace is built.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in lintian:lintian help2man:help2man dpkg-shlibdeps:dpkg-dev strip:binutils systemd-analyze:systemd \
  promtool:prometheus iptables:iptables nsenter:util-linux; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "--- installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "--- packages (packaging/deb/build.sh --profile debug)"
out="$(mktemp -d)"
testbed_up=0
image_built=0
cleanup() {
  if [ "$testbed_up" = 1 ]; then
    RPOOL_TESTBED_DIR="$out/testbed" packaging/testbed/testbed.sh down || true
  fi
  if [ "$image_built" = 1 ]; then
    # The fault suite's own testbed, should a timeout have left it up.
    faults="${RPOOL_FAULTS_NAME:-rpoolfaults}"
    RPOOL_TESTBED_NAME="$faults" RPOOL_TESTBED_SUBNET="${RPOOL_FAULTS_SUBNET:-172.31.251.0/24}" \
      RPOOL_TESTBED_DIR="${TMPDIR:-/tmp}/$faults-testbed" packaging/testbed/testbed.sh down >/dev/null 2>&1 || true
    docker rmi rpool:ci rpool:ci-prev >/dev/null 2>&1 || true
  fi
  rm -rf "$out"
}
trap cleanup EXIT
packaging/deb/build.sh --profile debug --out "$out/debs"
ls -l "$out/debs"

echo "--- lintian"
# --fail-on warning: errors and warnings fail; info/pedantic tags are shown.
lintian --fail-on error,warning --info --tag-display-limit 0 "$out"/debs/*.deb

echo "--- systemd-analyze verify (units as installed)"
root="$out/root"
for deb in "$out"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
packaging/deb/verify-units.sh "$root"

echo "--- promtool check rules (packaging/monitoring)"
promtool check rules packaging/monitoring/rpool-alerts.yml
if [ "${RPOOL_CI_TESTBED:-1}" = 1 ] && docker info >/dev/null 2>&1; then
  echo "--- image (debug binaries) and testbed"
  cargo build --locked --bin kubesim   # wherever kubesim lives (agent today, its own crate later)
  image_built=1
  packaging/image.sh --profile debug --tag rpool:ci
  export RPOOL_IMAGE=rpool:ci RPOOL_TESTBED_DIR="$out/testbed"
  testbed_up=1
  packaging/testbed/testbed.sh up
  packaging/testbed/testbed.sh ctl pool create ci --cores 16 --memory 32GiB --wait --timeout 60s
  packaging/testbed/testbed.sh ctl pool list
  packaging/testbed/testbed.sh down
  testbed_up=0
  if [ "${RPOOL_CI_FAULTS:-1}" = 1 ]; then
    echo "--- previous release's image (packaging/prev-image.sh, for rolling-upgrade)"
    prev_args=(--tag rpool:ci-prev)
    [ -z "${RPOOL_PREV_TARGET:-}" ] || prev_args+=(--keep-target "$RPOOL_PREV_TARGET")
    packaging/prev-image.sh "${prev_args[@]}"
    echo "--- fault suite on the testbed (tests/tests/faults; figures at the end)"
    # RUST_LIB_BACKTRACE=0: a failed scenario ends with its cause chain,
    # not a backtrace of the test thread that pushes it out of CI's tail.
    RUST_LIB_BACKTRACE=0 RPOOL_FAULTS=1 RPOOL_IMAGE=rpool:ci RPOOL_PREV_IMAGE=rpool:ci-prev RPOOL_FAULTS_TABLE="$out/faults.md" \
      cargo nextest run --locked -p rpool-tests --test faults --no-capture
    cat "$out/faults.md"
  fi
else
  echo "--- image and testbed skipped (no Docker, or RPOOL_CI_TESTBED=0)"
fi
echo "packaging ok"
