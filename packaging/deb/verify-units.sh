#!/usr/bin/env bash
# Runs `systemd-analyze verify` on the packaged units as installed under
# ROOT (the .debs unpacked with dpkg-deb -x), so ExecStart= binaries and the
# Documentation= man pages are checked too. Any message fails.
#   packaging/deb/verify-units.sh ROOT
set -euo pipefail
root="${1:?usage: verify-units.sh ROOT (the packages unpacked with dpkg-deb -x)}"
units=("$root"/lib/systemd/system/rpool-*.service)
[ -e "${units[0]}" ] || { echo "verify-units.sh: no rpool units under $root/lib/systemd/system" >&2; exit 66; }
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# --root: binaries and man pages are looked up under ROOT; MANPATH for the
# man:… links.
MANPATH="$root/usr/share/man" systemd-analyze verify --root="$root" "${units[@]}" >"$log" 2>&1 || true
if [ -s "$log" ]; then
  cat "$log" >&2
  echo "verify-units.sh: systemd-analyze verify reported the above" >&2
  exit 1
fi
echo "systemd-analyze verify: ${#units[@]} units ok"
