#!/usr/bin/env bash
# tools/test.sh: installs what is missing, builds, and runs every test: the unit tests
# (also under AddressSanitizer and UndefinedBehaviorSanitizer), a bounded fuzzing run,
# and the integration tests on real FUSE mounts. Needs root (apt-get, mounting).
# PMEMFUSE_FUZZ_SECONDS sets the fuzzing time (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
tools/build.sh build
# One clang build serves the sanitizers and libFuzzer: the unit tests and the fuzz
# targets come out of the same instrumented libraries. A build-asan configured any other
# way (GCC, without -Dfuzz) is set up afresh.
if ! grep -qs fuzzer-no-link build-asan/compile_commands.json; then
  rm -rf build-asan
  CXX=clang++ meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false \
    -Doptimization=1 -Dfuzz=true >/dev/null
fi
ninja -C build-asan tests/unit_tests tests/fuzz/mount_fuzz
echo "== unit tests"
build/tests/unit_tests
echo "== unit tests (address, undefined sanitizers)"
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
build-asan/tests/unit_tests
fuzz_seconds=${PMEMFUSE_FUZZ_SECONDS:-30}
echo "== fuzzing mount_fuzz for ${fuzz_seconds} s (log: build-asan/fuzz.log)"
# New inputs go to build-asan/fuzz-corpus, so local runs pick up where they stopped;
# a finding is written to build-asan/ and the run fails.
mkdir -p build-asan/fuzz-corpus
if ! build-asan/tests/fuzz/mount_fuzz -max_total_time="$fuzz_seconds" -timeout=30 \
    -rss_limit_mb=2560 -len_control=20 -print_final_stats=1 -artifact_prefix=build-asan/ \
    build-asan/fuzz-corpus tests/fuzz/corpus >build-asan/fuzz.log 2>&1; then
  tail -n 60 build-asan/fuzz.log
  exit 1
fi
grep -E '^(#[0-9]+[[:space:]]+DONE|stat::)' build-asan/fuzz.log
echo "== power-loss simulation (crash_explorer --full runs every fence locally)"
build/tests/crash/crash_explorer --max-states 400
echo "== the simulation catches misordered persistence (fences dropped on purpose)"
build/tests/crash/crash_explorer -w namespace --ignore-fence-every 3 --expect-violations >/dev/null
echo "== integration tests"
PMEMFUSE_BUILD="$PWD/build" /usr/bin/python3 -m pytest tests/integration -q -p no:cacheprovider
