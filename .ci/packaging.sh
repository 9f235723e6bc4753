#!/usr/bin/env bash
# Packaging check (the lead may call it from .ci/run): builds the three
# Debian packages from the debug binaries (same layout as the release ones,
# no release build needed), runs lintian on them (overrides with reasons in
# packaging/deb/*.lintian-overrides), and `systemd-analyze verify` on the
# units as installed. Then, when Docker answers (RPOOL_CI_TESTBED=0 skips it),
# the FROM-scratch image from the debug binaries and the testbed: 3
# controllers and 6 agent hosts must come up, enroll and form a pool. A few
# minutes once the workspace is built.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in lintian:lintian help2man:help2man dpkg-shlibdeps:dpkg-dev strip:binutils systemd-analyze:systemd; do
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
cleanup() {
  if [ "$testbed_up" = 1 ]; then
    RPOOL_TESTBED_DIR="$out/testbed" packaging/testbed/testbed.sh down || true
    docker rmi rpool:ci >/dev/null 2>&1 || true
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
if [ "${RPOOL_CI_TESTBED:-1}" = 1 ] && docker info >/dev/null 2>&1; then
  echo "--- image (debug binaries) and testbed"
  cargo build --locked --bin kubesim   # wherever kubesim lives (agent today, its own crate later)
  packaging/image.sh --profile debug --tag rpool:ci
  export RPOOL_IMAGE=rpool:ci RPOOL_TESTBED_DIR="$out/testbed"
  testbed_up=1
  packaging/testbed/testbed.sh up
  packaging/testbed/testbed.sh ctl pool create ci --cores 16 --memory 32GiB --wait --timeout 60s
  packaging/testbed/testbed.sh ctl pool list
else
  echo "--- image and testbed skipped (no Docker, or RPOOL_CI_TESTBED=0)"
fi
echo "packaging ok"
