#!/usr/bin/env bash
# Packaging check (the lead may call it from .ci/run): builds the three
# Debian packages from the debug binaries (same layout as the release ones,
# no release build needed), runs lintian on them (overrides with reasons in
# packaging/deb/*.lintian-overrides), and `systemd-analyze verify` on the
# units as installed. A few minutes once the workspace is built.
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
trap 'rm -rf "$out"' EXIT
packaging/deb/build.sh --profile debug --out "$out/debs"
ls -l "$out/debs"

echo "--- lintian"
# --fail-on warning: errors and warnings fail; info/pedantic tags are shown.
lintian --fail-on error,warning --info --tag-display-limit 0 "$out"/debs/*.deb

echo "--- systemd-analyze verify (units as installed)"
root="$out/root"
for deb in "$out"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
packaging/deb/verify-units.sh "$root"
echo "packaging ok"
