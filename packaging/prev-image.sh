#!/usr/bin/env bash
# Builds the image of a previous release (packaging/releases.txt; default the
# last one) from its own commit, for the fault suite's rolling-upgrade
# scenario: the commit's tree is exported (git archive) into a temporary
# directory, its debug binaries are built with a target directory seeded by
# a copy of the current one (cp -a --reflink=auto: the dependencies are
# reused, only the workspace crates recompile), and the commit's own
# packaging/image.sh makes the image.
#
#   packaging/prev-image.sh                      # rpool:prev from the last release
#   packaging/prev-image.sh --tag rpool:0.1.0    # another tag
#   packaging/prev-image.sh --release 0.1.0      # another release of releases.txt
#   packaging/prev-image.sh --keep-target DIR    # build in DIR (kept, reused next time)
#
# CARGO_TARGET_DIR (default target) is the directory copied. Needs the
# release's commit in this clone: a shallow clone fails with a clear message.
# Prints the time the build took and the image's size.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
tag=rpool:prev
release=
keep=
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="${2:?--tag needs NAME:TAG}"; shift 2 ;;
    --release) release="${2:?--release needs a VERSION of packaging/releases.txt}"; shift 2 ;;
    --keep-target) keep="${2:?--keep-target needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "prev-image.sh: unknown argument $1 (accepted --tag NAME:TAG, --release VERSION, --keep-target DIR)" >&2; exit 64 ;;
  esac
done

releases="$repo/packaging/releases.txt"
if [ -z "$release" ]; then
  line="$(grep -v '^#' "$releases" | grep . | tail -1)"
else
  line="$(grep -v '^#' "$releases" | awk -v v="$release" '$1 == v' | tail -1)"
  [ -n "$line" ] || { echo "prev-image.sh: --release $release is not in packaging/releases.txt (has: $(grep -v '^#' "$releases" | awk '{print $1}' | xargs))" >&2; exit 64; }
fi
read -r version commit <<<"$line"
[ -n "${commit:-}" ] || { echo "prev-image.sh: packaging/releases.txt: no release line (VERSION COMMIT)" >&2; exit 65; }

if ! git -C "$repo" cat-file -e "$commit^{commit}" 2>/dev/null; then
  shallow="$(git -C "$repo" rev-parse --is-shallow-repository 2>/dev/null || echo unknown)"
  echo "prev-image.sh: release $version's commit $commit is not in this clone (shallow clone: $shallow)." >&2
  echo "  The rolling-upgrade scenario needs it: clone with full history, or run 'git fetch --unshallow' (or 'git fetch origin tag v$version')." >&2
  exit 69
fi
target="$(realpath -m "${CARGO_TARGET_DIR:-$repo/target}")"
profile_dir="$target/debug"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/rpool-prev.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
src="$tmp/src"
mkdir -p "$src"
if [ -n "$keep" ]; then
  prev_target="$(realpath -m "$keep")"
else
  prev_target="$tmp/target"
fi
# Cargo decides that a workspace crate is fresh by comparing its sources'
# mtimes with its artifacts' (the crates' hashes do not depend on where the
# tree is). With the commit's (older) mtimes, the artifacts copied from the
# current target would pass for this release's: so the files get the time
# of extraction (-m), unless the kept target was built from this very
# commit (its stamp says so), where the commit's mtimes keep it fresh.
stamp="$prev_target/rpool-release-commit"
touch_opt=-m
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$commit" ]; then touch_opt=; fi
git -C "$repo" archive "$commit" | tar -x $touch_opt -C "$src"
started=$SECONDS
if [ ! -d "$prev_target/debug" ] && [ -d "$profile_dir" ]; then
  mkdir -p "$prev_target"
  # The dependencies' artifacts only: the workspace's binaries and the
  # image staging are rebuilt anyway.
  cp -a --reflink=auto "$profile_dir" "$prev_target/debug"
  echo "prev-image.sh: target seeded from $profile_dir in $((SECONDS - started)) s"
fi
copied=$SECONDS
echo "--- building release $version ($commit) debug binaries"
(
  cd "$src"
  export CARGO_TARGET_DIR="$prev_target"
  # The whole workspace, as the copied target was built: the same feature
  # set for every dependency, so only the workspace crates recompile.
  cargo build --locked --workspace
)
built=$SECONDS
echo "$commit" >"$stamp"
echo "prev-image.sh: release $version built in $((built - copied)) s (seeding $((copied - started)) s)"
CARGO_TARGET_DIR="$prev_target" "$src/packaging/image.sh" --profile debug --tag "$tag"
echo "prev-image.sh: $tag is release $version ($commit), $((SECONDS - started)) s in all"
