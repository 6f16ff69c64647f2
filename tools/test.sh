#!/usr/bin/env bash
# tools/test.sh: installs what is missing, builds, and runs every test: the unit tests
# (also under AddressSanitizer and UndefinedBehaviorSanitizer) and the integration tests
# on real FUSE mounts. Needs root (apt-get, mounting).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
tools/build.sh build
# The sanitizer build needs only the unit tests. GCC 12 reports a false
# -Wmaybe-uninitialized inside libstdc++'s <regex> (pulled in by Catch2) once
# sanitizers are on, so that one warning is off there; every other stays an error.
[ -f build-asan/build.ninja ] || meson setup build-asan -Db_sanitize=address,undefined \
  -Db_lundef=false -Doptimization=1 -Dcpp_args=-Wno-maybe-uninitialized >/dev/null
ninja -C build-asan tests/unit_tests
echo "== unit tests"
build/tests/unit_tests
echo "== unit tests (address, undefined sanitizers)"
UBSAN_OPTIONS=halt_on_error=1 build-asan/tests/unit_tests
echo "== integration tests"
PMEMFUSE_BUILD="$PWD/build" /usr/bin/python3 -m pytest tests/integration -q -p no:cacheprovider
