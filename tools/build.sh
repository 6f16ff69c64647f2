#!/usr/bin/env bash
# tools/build.sh [BUILDDIR] [meson options...]: configures (once) and builds.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
[ -f "$dir/build.ninja" ] || meson setup "$dir" "$@" >/dev/null
ninja -C "$dir"
