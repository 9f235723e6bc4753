#!/usr/bin/env bash
# Runs `systemd-analyze verify` on the packaged units as installed under
# ROOT (the .debs unpacked with dpkg-deb -x), so the ExecStart= binaries and
# the Documentation= man pages of the packages are checked too. Any message
# fails.
#   packaging/deb/verify-units.sh ROOT
set -euo pipefail
root="$(cd "${1:?usage: verify-units.sh ROOT (the packages unpacked with dpkg-deb -x)}" && pwd)"
units=("$root"/lib/systemd/system/rpool-*.service)
[ -e "${units[0]}" ] || { echo "verify-units.sh: no rpool units under $root/lib/systemd/system" >&2; exit 66; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
log="$tmp/log"
# Copies whose /usr/bin/ paths point into ROOT (so the packaged binaries are
# the ones checked), and MANPATH for the man:… links; the rest of each unit
# is verified as shipped against this machine's systemd.
for unit in "${units[@]}"; do
  sed "s|/usr/bin/|$root/usr/bin/|g" "$unit" >"$tmp/$(basename "$unit")"
done
MANPATH="$root/usr/share/man" systemd-analyze verify "$tmp"/rpool-*.service >"$log" 2>&1 || true
if [ -s "$log" ]; then
  cat "$log" >&2
  echo "verify-units.sh: systemd-analyze verify reported the above" >&2
  exit 1
fi
echo "systemd-analyze verify: ${#units[@]} units ok"
# The exposure score of each unit's sandboxing (informational).
for unit in "$tmp"/rpool-*.service; do
  systemd-analyze security --offline=yes "$unit" 2>/dev/null | grep -o 'Overall exposure level.*' || true
done
