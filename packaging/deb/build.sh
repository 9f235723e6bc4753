#!/usr/bin/env bash
# Builds the Debian packages rpool-agent, rpool-controller and rpoolctl with
# plain dpkg-deb (no debian/ source tree, no debhelper): one command.
#
#   packaging/deb/build.sh                    # release build, then the .debs in target/deb/
#   packaging/deb/build.sh --no-build         # package the binaries already in target/release
#   packaging/deb/build.sh --profile debug    # package target/debug (quick; CI's lint check)
#
# Needs: cargo, dpkg-deb, dpkg-shlibdeps (dpkg-dev), help2man, strip
# (binutils): `apt-get install -y dpkg-dev help2man binutils`.
# Package layout: packaging/README.md.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
profile=release
build=1
out="$repo/target/deb"
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (accepted --profile release|debug, --no-build, --out DIR)" >&2; exit 64 ;;
  esac
done
case "$profile" in
  release|debug) ;;
  *) echo "build.sh: --profile $profile (accepted release or debug)" >&2; exit 64 ;;
esac
for tool in cargo dpkg-deb dpkg-shlibdeps help2man strip; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing (apt-get install -y dpkg-dev help2man binutils)" >&2; exit 69; }
done

cd "$repo"
# Cargo puts binaries under CARGO_TARGET_DIR when it is set.
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-$repo/target}")"
bindir="$target_dir/$profile"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
# A pre-release (0.2.0-dev) sorts before its release in Debian as 0.2.0~dev.
debversion="${version/-/\~}-1"
arch="$(dpkg --print-architecture)"
maintainer="rpool developers <rpool@example.invalid>"
homepage="$(sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml | head -1)"

if [ "$build" = 1 ]; then
  flag=--release; [ "$profile" = debug ] && flag=
  cargo build --locked $flag -p rpool-agent -p rpool-controller -p rpoolctl --bins
fi
for bin in rpool-agent rpool-controller rpoolctl; do
  [ -x "$bindir/$bin" ] || { echo "build.sh: $bindir/$bin is missing (drop --no-build)" >&2; exit 66; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# Man pages: rpoolctl's from its clap tree (clap_mangen), the daemons' from
# their --help (help2man, section 8).
cargo run --locked --quiet -p rpoolctl --example rpoolctl-mangen -- "$work/man1"
for bin in rpool-agent rpool-controller; do
  help2man --no-info --section=8 --version-string="$version" \
    --name="$(sed -n 's/^Description=//p' "packaging/systemd/$bin.service")" \
    --output="$work/$bin.8" "$bindir/$bin"
done

# stage PKG: a fresh tree with the parts every package has.
stage() {
  local pkg="$1" root="$work/$1"
  mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/doc/$pkg"
  sed -e "s/@PKG@/$pkg/g" packaging/deb/copyright >"$root/usr/share/doc/$pkg/copyright"
  printf '%s (%s) unstable; urgency=medium\n\n  * Package built from the rpool repository (%s).\n\n -- %s  %s\n' \
    "$pkg" "$debversion" "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$maintainer" "$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}")" \
    | gzip -9n >"$root/usr/share/doc/$pkg/changelog.Debian.gz"
  mkdir -p "$root/usr/share/lintian/overrides"
  install -m 0644 packaging/deb/lintian-overrides "$root/usr/share/lintian/overrides/$pkg"
  for script in postinst prerm postrm; do
    if [ -f "packaging/deb/$pkg.$script" ]; then
      install -m 0755 "packaging/deb/$pkg.$script" "$root/DEBIAN/$script"
    fi
  done
}

# put_bin PKG BIN: the stripped binary in /usr/bin.
put_bin() {
  install -m 0755 "$bindir/$2" "$work/$1/usr/bin/$2"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$work/$1/usr/bin/$2"
}

# put_man PKG SECTION FILE...: gzipped man pages.
put_man() {
  local pkg="$1" section="$2"; shift 2
  mkdir -p "$work/$pkg/usr/share/man/man$section"
  for page in "$@"; do
    gzip -9n <"$page" >"$work/$pkg/usr/share/man/man$section/$(basename "$page").gz"
    chmod 0644 "$work/$pkg/usr/share/man/man$section/$(basename "$page").gz"
  done
}

# put_conf PKG FILE...: conffiles under /etc/rpool.
put_conf() {
  local pkg="$1"; shift
  mkdir -p "$work/$pkg/etc/rpool"
  for f in "$@"; do
    install -m 0644 "packaging/etc/rpool/$f" "$work/$pkg/etc/rpool/$f"
    echo "/etc/rpool/$f" >>"$work/$pkg/DEBIAN/conffiles"
  done
}

put_unit() {
  mkdir -p "$work/$1/lib/systemd/system"
  install -m 0644 "packaging/systemd/$1.service" "$work/$1/lib/systemd/system/$1.service"
}

put_example() {
  mkdir -p "$work/$1/usr/share/doc/$1/examples"
  install -m 0644 "packaging/etc/rpool/$2" "$work/$1/usr/share/doc/$1/examples/$2"
}

# finish PKG DEPENDS SHORT LONG: control file (Depends from the binaries'
# shared libraries, dpkg-shlibdeps) and the .deb.
finish() {
  local pkg="$1" extra="$2" short="$3" long="$4" root="$work/$1" shlibs=""
  mkdir -p "$work/shlibs/debian"
  printf 'Source: rpool\n\nPackage: %s\nArchitecture: any\n' "$pkg" >"$work/shlibs/debian/control"
  local bins=() f
  for f in "$root"/usr/bin/*; do bins+=("-e$f"); done
  shlibs="$(cd "$work/shlibs" && dpkg-shlibdeps -O "${bins[@]}" | sed -n 's/^shlibs:Depends=//p')"
  [ -n "$shlibs" ] || { echo "build.sh: dpkg-shlibdeps found no dependencies for $pkg" >&2; exit 1; }
  {
    echo "Package: $pkg"
    echo "Version: $debversion"
    echo "Architecture: $arch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)"
    echo "Depends: ${shlibs}${extra:+, $extra}"
    echo "Section: admin"
    echo "Priority: optional"
    echo "Homepage: $homepage"
    echo "Description: $short"
    printf '%s\n' "$long" | fold -s -w 72 | sed -e 's/ *$//' -e 's/^/ /'
  } >"$root/DEBIAN/control"
  find "$root" -type d -exec chmod 0755 {} +
  dpkg-deb --root-owner-group -Zxz --build "$root" "$out/${pkg}_${debversion}_${arch}.deb" >/dev/null
  echo "$out/${pkg}_${debversion}_${arch}.deb"
}

stage rpool-controller
put_bin rpool-controller rpool-controller
put_unit rpool-controller
put_conf rpool-controller controller.toml
put_man rpool-controller 8 "$work/rpool-controller.8"
finish rpool-controller "adduser" \
  "rpool controller: Raft-replicated registry of hosts and pools" \
  "rpool pools servers into Kubernetes clusters sized in cores and memory. The controller is one member of a group of 1, 3 or 5: it keeps the replicated registry of hosts and pools, watches agent heartbeats, heals pools whose hosts go down and serves rpoolctl and the agents over mutual TLS. It runs as the system user rpool under a hardened systemd unit."

stage rpool-agent
put_bin rpool-agent rpool-agent
put_unit rpool-agent
put_conf rpool-agent agent.toml
put_example rpool-agent simulated-host.toml
put_man rpool-agent 8 "$work/rpool-agent.8"
finish rpool-agent "" \
  "rpool agent: reports a host to rpool and runs its kubeadm tasks" \
  "rpool pools servers into Kubernetes clusters sized in cores and memory. The agent runs on every pooled host: it enrolls with a bootstrap token, reports cores, memory and health to the controllers over mutual TLS and runs the kubeadm and kubectl tasks of the pool the host belongs to, as root."

stage rpoolctl
put_bin rpoolctl rpoolctl
put_example rpoolctl ctl.toml
put_man rpoolctl 1 "$work"/man1/*.1
mkdir -p "$work/rpoolctl/usr/share/bash-completion/completions" \
  "$work/rpoolctl/usr/share/zsh/vendor-completions" "$work/rpoolctl/usr/share/fish/vendor_completions.d"
"$bindir/rpoolctl" completions bash >"$work/rpoolctl/usr/share/bash-completion/completions/rpoolctl"
"$bindir/rpoolctl" completions zsh >"$work/rpoolctl/usr/share/zsh/vendor-completions/_rpoolctl"
"$bindir/rpoolctl" completions fish >"$work/rpoolctl/usr/share/fish/vendor_completions.d/rpoolctl.fish"
chmod 0644 "$work"/rpoolctl/usr/share/*/*completions*/*
finish rpoolctl "" \
  "rpool admin CLI: hosts, pools, controllers, tokens and PKI" \
  "rpool pools servers into Kubernetes clusters sized in cores and memory. rpoolctl creates the rpool certificate authority and the controller and admin certificates, issues bootstrap tokens for agents, and lists hosts, creates, resizes and destroys pools and manages the controller group. It also runs a local sandbox with simulated hosts."
