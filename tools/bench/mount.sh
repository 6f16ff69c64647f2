#!/usr/bin/env bash
# tools/bench/mount.sh [--quick] [ROUNDS]: how long pmemfuse takes to mount an image that
# holds 1,000,000 files (--quick: 100,000), and the daemon's memory once mounted.
#
# The files are empty and spread over 1,000 directories; they are made once, through a
# mount, on a 4 GiB image in /dev/shm pre-faulted with zeros before mkfs. Then ROUNDS times
# (default 3): unmount (waiting for the daemon), `echo 3 > /proc/sys/vm/drop_caches`,
# start the daemon, and time until the mount point answers (`mountpoint -q`, polled every
# 10 ms); then read the daemon's VmRSS and RssAnon. Prints medians (min-max) as markdown
# and writes them under build/bench/ (PMEMFUSE_BUILD=DIR: DIR/bench/). Needs root.
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$0")/../.."
. tools/bench/lib.sh

parse_args "$@"  # quick, rounds (lib.sh)
((quick)) && nfiles=100000 || nfiles=1000000
((quick)) && rounds=1
need_root
need_build
need_tools python3 fusermount3

mkdir -p "$b/bench"
stamp=$(date +%Y%m%d-%H%M%S)
out_md=$b/bench/mount-$stamp.md out_csv=$b/bench/mount-$stamp.csv
work=$(mktemp -d /tmp/pmemfuse-mount-bench.XXXXXX)
dir[pm]=$work/mnt img[pm]=/dev/shm/pmemfuse-mount-bench-$$.img opts[pm]="" kind[pm]=pmemfuse
cleanup() {
  set +e
  unmount_all pm
  rm -f "${img[pm]}"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

populate() {  # dir files
  python3 - "$1" "$2" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
per = n // 1000
for d in range(1000):
    p = os.path.join(root, "d%03d" % d)
    os.mkdir(p)
    fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(per):
        os.close(os.open("f%06d" % i, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644, dir_fd=fd))
    os.close(fd)
PY
}

mkdir -p "${dir[pm]}"
log "image: 4 GiB in /dev/shm, pre-faulted; making $nfiles files"
make_image "${img[pm]}" 4096
mount_fs pm
t0=$EPOCHREALTIME
populate "${dir[pm]}" "$nfiles"
log "made $nfiles files in $(secs "$t0" "$EPOCHREALTIME") s"
: >"$out_csv"
for r in $(seq "$rounds"); do
  umount_fs pm
  drop_caches
  t0=$EPOCHREALTIME
  "$b/daemon/pmemfuse" -f "${img[pm]}" "${dir[pm]}" >>"$work/pm.log" 2>&1 &
  pid[pm]=$!
  until mountpoint -q "${dir[pm]}"; do
    kill -0 "${pid[pm]}" 2>/dev/null || die "the daemon exited (see $work/pm.log)"
    sleep 0.01
  done
  t1=$EPOCHREALTIME
  rss=$(awk '/^VmRSS/ {print int($2 / 1024)}' "/proc/${pid[pm]}/status")
  anon=$(awk '/^RssAnon/ {print int($2 / 1024)}' "/proc/${pid[pm]}/status")
  csv "$r mount pm $nfiles mount_s $(secs "$t0" "$t1")"
  csv "$r mount pm $nfiles vmrss_mib $rss"
  csv "$r mount pm $nfiles rssanon_mib $anon"
  log "round $r: mounted in $(secs "$t0" "$t1") s, VmRSS $rss MiB, RssAnon $anon MiB"
done
n=$(find "${dir[pm]}" -type f | wc -l)
[ "$n" = "$nfiles" ] || die "the mount shows $n files, not $nfiles"
{
  describe_run "$cmdline"
  echo "- $nfiles empty files in 1,000 directories; a 4 GiB image in /dev/shm, pre-faulted"
  echo
  echo "| files | mount (s) | VmRSS (MiB) | RssAnon (MiB) |"
  echo "|---|---|---|---|"
  python3 - "$out_csv" "$nfiles" <<'PY'
import csv, statistics, sys
v = {}
for row in csv.reader(open(sys.argv[1])):
    v.setdefault(row[4], []).append(float(row[5]))
def f(k, p):
    xs = sorted(v[k]); m = statistics.median(xs)
    return ("%.*f" % (p, m)) + ("" if len(xs) == 1 else " (%.*f-%.*f)" % (p, xs[0], p, xs[-1]))
print("| %s | %s | %s | %s |" % (format(int(sys.argv[2]), ","), f("mount_s", 2), f("vmrss_mib", 0), f("rssanon_mib", 0)))
PY
} | tee "$out_md"
