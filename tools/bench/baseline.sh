#!/usr/bin/env bash
# tools/bench/baseline.sh [ROUNDS]: first baseline of pmemfuse against tmpfs, interleaved
# (A B A B ...) in one invocation: sequential 1 MiB write and read of a 1 GiB file (fio,
# one job, psync) and creating 20,000 empty files in one directory. Prints medians with
# min-max and the ratio to tmpfs. The image lives in /dev/shm and is pre-faulted.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}
b=build
command -v fio >/dev/null || { echo "baseline: needs fio (apt-get install fio)" >&2; exit 1; }
work=$(mktemp -d /tmp/pmemfuse-bench.XXXXXX)
img=/dev/shm/pmemfuse-bench.img
mnt=$work/pmem tmp=$work/tmpfs
mkdir -p "$mnt" "$tmp"
mount -t tmpfs -o size=3G tmpfs "$tmp"
dd if=/dev/zero of="$img" bs=1M count=3072 status=none   # pre-fault the image pages
$b/tools/mkfs.pmemfuse -q -f "$img"
$b/daemon/pmemfuse "$img" "$mnt"
cleanup() { fusermount3 -u "$mnt" 2>/dev/null || true; umount "$tmp" 2>/dev/null || true; rm -rf "$work" "$img"; }
trap cleanup EXIT

fio_mbs() {  # dir rw -> MB/s
  fio --name=b --directory="$1" --rw="$2" --bs=1M --size=1G --numjobs=1 --ioengine=psync \
      --end_fsync=0 --output-format=terse --terse-version=3 2>/dev/null |
    awk -F';' -v rw="$2" '{ print (rw == "read" ? $7 : $48) / 1024 }'
}
creates() {  # dir -> creates/s
  python3 - "$1" <<'PY'
import os, sys, time
d = os.path.join(sys.argv[1], "c"); os.mkdir(d)
t = time.perf_counter()
for i in range(20000):
    os.close(os.open(os.path.join(d, "f%d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
print(20000 / (time.perf_counter() - t))
PY
  rm -rf "$1/c"
}
declare -A res
for ((r = 0; r < rounds; r++)); do
  for fs in pmemfuse tmpfs; do
    dir=$mnt; [ $fs = tmpfs ] && dir=$tmp
    res[$fs,write]+="$(fio_mbs "$dir" write) "
    res[$fs,read]+="$(fio_mbs "$dir" read) "
    rm -f "$dir"/b.0.0
    res[$fs,create]+="$(creates "$dir") "
  done
done
stat_line() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {printf "%.0f %.0f %.0f", a[int((NR+1)/2)], a[1], a[NR]}'; }
printf "| workload | pmemfuse median (min-max) | tmpfs median (min-max) | ratio |\n|---|---|---|---|\n"
for w in write read create; do
  read -r pm pmin pmax <<<"$(echo "${res[pmemfuse,$w]}" | stat_line)"
  read -r tm tmin tmax <<<"$(echo "${res[tmpfs,$w]}" | stat_line)"
  unit=MB/s; [ $w = create ] && unit=files/s
  printf "| %s (%s) | %s (%s-%s) | %s (%s-%s) | %.2fx |\n" "$w" "$unit" "$pm" "$pmin" "$pmax" "$tm" "$tmin" "$tmax" "$(echo "$pm / $tm" | bc -l)"
done
