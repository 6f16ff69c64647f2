#!/usr/bin/env bash
# tools/deps.sh: installs the Debian 12 packages pmemfuse needs to build, test and run,
# when any is missing. Needs root (apt-get).
set -euo pipefail
pkgs=(meson ninja-build pkg-config g++ clang libclang-rt-14-dev libfuse3-dev fuse3 libpmem-dev
      libspdlog-dev libcli11-dev catch2 python3 python3-pytest attr diffutils rsync util-linux
      e2fsprogs xfsprogs fio sqlite3 git)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "deps: run as root (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
