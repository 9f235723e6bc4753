#!/usr/bin/env bash
# Builds the FROM-scratch image rpool:VERSION (packaging/Dockerfile) from the
# release binaries, copying exactly the shared libraries they need.
#
#   packaging/image.sh                   # binaries already in target/release
#   packaging/image.sh --build           # cargo build --release first
#   packaging/image.sh --profile debug   # target/debug instead (quick tests)
#   packaging/image.sh --tag rpool:dev
# Prints the image's size at the end. Honours CARGO_TARGET_DIR.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
profile=release
build=0
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)"
tag="rpool:$version"
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=1; shift ;;
    --profile) profile="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "image.sh: unknown argument $1 (accepted --build, --profile release|debug, --tag NAME:TAG)" >&2; exit 64 ;;
  esac
done
case "$profile" in
  release|debug) ;;
  *) echo "image.sh: --profile $profile (accepted release or debug)" >&2; exit 64 ;;
esac

cd "$repo"
bindir="${CARGO_TARGET_DIR:-target}/$profile"
if [ "$build" = 1 ]; then
  flag=--release; [ "$profile" = debug ] && flag=
  cargo build --locked $flag -p rpool-agent -p rpool-controller -p rpoolctl --bins
  cargo build --locked $flag --bin kubesim   # wherever kubesim lives
fi
bins=(rpool-controller rpool-agent rpoolctl kubesim)
for bin in "${bins[@]}"; do
  [ -x "$bindir/$bin" ] || { echo "image.sh: $bindir/$bin is missing (build it, or pass --build)" >&2; exit 66; }
done

ctx="${CARGO_TARGET_DIR:-target}/image"
rm -rf "$ctx"
root="$ctx/rootfs"
mkdir -p "$root/usr/bin" "$root/usr/libexec/kubesim" "$root/tmp" "$root/etc/rpool" \
  "$root/var/lib/rpool/controller" "$root/var/lib/rpool/agent" "$root/var/log/rpool"
chmod 1777 "$root/tmp"
for bin in "${bins[@]}"; do
  install -m 0755 "$bindir/$bin" "$root/usr/bin/$bin"
  strip --strip-unneeded "$root/usr/bin/$bin" 2>/dev/null || true
done
ln -s ../../bin/kubesim "$root/usr/libexec/kubesim/kubeadm"
ln -s ../../bin/kubesim "$root/usr/libexec/kubesim/kubectl"

# Shared libraries: every absolute path ldd prints, copied (links resolved)
# to the same path, the loader included. A static binary lists none.
libs="$(for bin in "${bins[@]}"; do ldd "$bindir/$bin" 2>/dev/null || true; done \
  | grep -o '/[^ ]*' | sort -u)"
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# https webhooks trust the system roots unless [webhook] ca is set.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
printf 'root:x:0:0:root:/root:/nonexistent\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"

echo "libraries copied: ${libs:-none (static)}" | tr '\n' ' '; echo
docker build -q -f packaging/Dockerfile -t "$tag" "$ctx" >/dev/null
docker run --rm "$tag" rpoolctl --version
docker run --rm "$tag" rpool-controller --version
docker run --rm "$tag" rpool-agent --version
docker run --rm --entrypoint /usr/libexec/kubesim/kubectl "$tag" version --client >/dev/null
size="$(docker image inspect -f '{{.Size}}' "$tag")"
echo "$tag: $((size / 1024 / 1024)) MiB ($size bytes)"
