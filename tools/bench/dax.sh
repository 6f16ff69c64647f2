#!/usr/bin/env bash
# tools/bench/dax.sh [--quick] [ROUNDS]: what the DAX data path saves in memory and CPU,
# DAX files against buffered files of pmemfuse, with tmpfs as a reference, in one
# invocation over ROUNDS rounds (default 3).
#
# Two pmemfuse daemons with default options, each on its own image in /dev/shm, so daemon
# CPU and memory are each mode's own: on one the file lives in a directory with
# user.pmemfuse.dax=1 (it inherits the flag: DAX), on the other in a plain one (buffered:
# kernel page cache plus the daemon's DRAM cache). The file is 1 GiB (--quick: 64 MiB).
# The images are pre-faulted (zeros written over them before mkfs) and kept mapped by a
# helper for the whole run, so that drop_caches does not change how they fault (lib.sh).
# For each request size (4k, 128k, 1M) and each mount, interleaved (DAX, buffered, tmpfs,
# DAX, ...), fio sequential jobs (psync, one job):
#   write-new   the file removed, cold, then written from empty (allocation included)
#   write-cold  cold, then an overwrite of the existing, fully written file
#   write-warm  the same overwrite again, right after
#   read-cold   cold, then a read of the file
#   read-warm   the same read again, right after
# cold = unmount, `echo 3 > /proc/sys/vm/drop_caches`, mount again: a fresh daemon, so the
# buffered daemon's cache is empty, and the DAX daemon starts without DAX windows or page
# tables over the image (tmpfs: drop_caches only; its file is its page cache); then a tiny
# fio job reads fio's own binaries back in, outside the measurement.
# Per run: MB/s; kernel page-cache growth, as the /proc/meminfo "Cached" delta right after
# fio, and as cachestat(2) of the file once the kernel has revalidated it (a stat after fio:
# FUSE drops the pages of a file whose mtime changed, as every buffered write does); CPU
# seconds, fio's (usr+sys from its JSON) and the daemon's (utime+stime of /proc/PID/stat,
# from just before fio to the end of the run: for writes, until user.pmemfuse.sync has
# written the daemon's cache back to pmem, which DAX did before each write returned; MB/s
# stops at fio's end); the daemon's RssAnon right after fio. The file is written fully
# (write-new) before any overwrite or read is timed.
# Prints a markdown report (medians with min-max; ratios taken within a round) and writes
# it, with a CSV of every sample, under build/bench/ (PMEMFUSE_BUILD=DIR: DIR/bench/).
# --quick: 1 round, a 64 MiB file (a smoke test, under 2 minutes).
# Needs root (mounts, drop_caches), fio, python3, fusermount3, getfattr/setfattr and a
# kernel with cachestat (6.5 or later).
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$0")/../.."
. tools/bench/lib.sh

parse_args "$@"  # quick, rounds (lib.sh)
if ((quick)); then
  file_mb=64 img_mb=1024 tmpfs_size=1G
else
  file_mb=1024 img_mb=2048 tmpfs_size=2G
fi
sizes=(4k 128k 1M)
mounts=(dax buf tmpfs)

need_root
need_build
need_tools fio python3 fusermount3 getfattr setfattr pkg-config

mkdir -p "$b/bench"
stamp=$(date +%Y%m%d-%H%M%S)
out_md=$b/bench/dax-$stamp.md out_csv=$b/bench/dax-$stamp.csv
work=$(mktemp -d /tmp/pmemfuse-dax-bench.XXXXXX)
declare -A file  # per mount: the benchmark file
dir[dax]=$work/dax img[dax]=/dev/shm/pmemfuse-dax-bench-$$-dax.img opts[dax]="" kind[dax]=pmemfuse
dir[buf]=$work/buf img[buf]=/dev/shm/pmemfuse-dax-bench-$$-buf.img opts[buf]="" kind[buf]=pmemfuse
dir[tmpfs]=$work/tmpfs kind[tmpfs]=tmpfs
for f in "${mounts[@]}"; do file[$f]=${dir[$f]}/data/file; done

cleanup() {
  set +e
  unmount_all dax buf
  release_images
  mountpoint -q "${dir[tmpfs]}" && umount "${dir[tmpfs]}"
  rm -f "${img[dax]}" "${img[buf]}"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- python helpers ----------------------------------------------------------------------
write_py_helpers  # stats.py (lib.sh)
cat >"$work/cachestat.py" <<'PY'
# cachestat.py FILE: bytes of FILE in the kernel page cache, by cachestat(2) (x86-64
# syscall 451) over the whole file; 0 when FILE does not exist.
import ctypes, os, sys
class Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]  # len 0: to the end
class Stat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in
                ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]
def cached_bytes(path):
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    rng, st = Range(0, 0), Stat()
    if libc.syscall(451, fd, ctypes.byref(rng), ctypes.byref(st), 0) != 0:
        sys.exit("cachestat: " + os.strerror(ctypes.get_errno()))
    os.close(fd)
    return st.nr_cache * os.sysconf("SC_PAGE_SIZE")
if __name__ == "__main__":
    print(cached_bytes(sys.argv[1]))
PY

cat >"$work/fio_result.py" <<'PY'
# fio_result.py RW FIO.JSON FILE: MB/s (1e6 bytes), bytes moved, the job's user and system
# CPU seconds (fio gives them as percentages of the job's run time), and the bytes of FILE
# in the page cache now (one python start instead of two: each costs ~0.15 s here).
import json, sys
from cachestat import cached_bytes
t = open(sys.argv[2]).read()
j = json.loads(t[t.index("{"):])["jobs"][0]
side = j["read" if "read" in sys.argv[1] else "write"]
run_s = j["job_runtime"] / 1000
print("%.1f %d %.3f %.3f %d" % (side["bw_bytes"] / 1e6, side["io_bytes"], j["usr_cpu"] / 100 * run_s,
                                j["sys_cpu"] / 100 * run_s, cached_bytes(sys.argv[3])))
PY

# --- samples from /proc ------------------------------------------------------------------
clk_tck=$(getconf CLK_TCK)
daemon_cpu_s() {  # pid: utime + stime of every thread, in seconds ("-" without a daemon)
  [ -n "$1" ] || { echo -; return; }
  # Fields after the ")" that closes comm: utime and stime are the 12th and 13th.
  sed 's/.*) //' "/proc/$1/stat" | awk -v hz="$clk_tck" '{ printf "%.2f", ($12 + $13) / hz }'
}
daemon_minflt() {  # pid: minor page faults so far ("-" without a daemon)
  [ -n "$1" ] || { echo -; return; }
  sed 's/.*) //' "/proc/$1/stat" | awk '{ print $8 }'
}
rss_anon() {  # pid: bytes ("-" without a daemon)
  [ -n "$1" ] || { echo -; return; }
  awk '/^RssAnon:/ { print $2 * 1024 }' "/proc/$1/status"
}
meminfo_cached() { awk '/^Cached:/ { print $2 * 1024 }' /proc/meminfo; }
cached_bytes() { python3 "$work/cachestat.py" "$1"; }
sub() { if [ "$1" = - ] || [ "$2" = - ]; then echo -; else awk -v a="$1" -v b="$2" 'BEGIN { print b - a }'; fi; }

# --- one measured run --------------------------------------------------------------------
run() {  # round fs workload bs: one fio job over fs's file, with its memory and CPU
  local r=$1 f=$2 w=$3 bs=$4 p=${pid[$2]:-} rw=read fsync_s=-
  local pc0 pc1 mc0 mc1 cpu0 cpu1 flt0 flt1 rss wall mbs bytes usr sys t0
  if [[ $w == write* ]]; then rw="write"; fi
  pc0=$(cached_bytes "${file[$f]}")
  [ -n "$p" ] && stats "${dir[$f]}" >"$work/before.json"
  mc0=$(meminfo_cached)
  cpu0=$(daemon_cpu_s "$p") flt0=$(daemon_minflt "$p")
  t0=$EPOCHREALTIME
  fio --name=b --filename="${file[$f]}" --rw="$rw" --bs="$bs" --size=${file_mb}M \
    "${fio_common[@]}" --output="$work/fio.json" 2>>"$work/fio.err" ||
    { echo "$me: fio $w $bs on $f failed:" >&2; cat "$work/fio.err" "$work/fio.json" >&2; exit 1; }
  wall=$(secs "$t0" "$EPOCHREALTIME")
  mc1=$(meminfo_cached)  # right after fio, before anything looks at the file again
  rss=$(rss_anon "$p")
  if [ -n "$p" ] && [ $rw = write ]; then  # the write-back the buffered daemon still owes
    t0=$EPOCHREALTIME; sync_pm "${dir[$f]}"; fsync_s=$(secs "$t0" "$EPOCHREALTIME")
  fi
  cpu1=$(daemon_cpu_s "$p") flt1=$(daemon_minflt "$p")
  [ -z "$p" ] || stats "${dir[$f]}" >"$work/after.json"
  # What stays cached: a write leaves the kernel's attributes of the file stale, so a stat
  # asks the daemon, and the kernel drops the file's pages when the mtime is not the one it
  # cached (FUSE auto_inval_data), as after every buffered write. Without the stat,
  # cachestat's own open would do that, or not, depending on the entry timeout (1 s).
  [ -z "$p" ] || stat "${file[$f]}" >/dev/null
  read -r mbs bytes usr sys pc1 < <(python3 "$work/fio_result.py" $rw "$work/fio.json" "${file[$f]}")
  local wb="$r io $f $w/$bs"
  csv "$wb MB/s $mbs"
  csv "$wb bytes $bytes"
  csv "$wb app_usr_s $usr"
  csv "$wb app_sys_s $sys"
  csv "$wb daemon_cpu_s $(sub "$cpu0" "$cpu1")"
  csv "$wb daemon_minflt $(sub "$flt0" "$flt1")"
  csv "$wb cachestat_bytes $(sub "$pc0" "$pc1")"
  csv "$wb meminfo_cached_bytes $(sub "$mc0" "$mc1")"
  csv "$wb daemon_rss_anon_bytes $rss"
  csv "$r time $f $w/$bs wall_s $wall"
  csv "$r time $f $w/$bs sync_s $fsync_s"
  if [ -n "$p" ]; then
    local d_miss d_recl d_fall d_media
    read -r d_miss d_recl d_fall d_media < <(python3 "$work/stats.py" "$work/before.json" "$work/after.json" \
      dax_windows.misses dax_windows.reclaims dax_windows.fallbacks media.bytes_stored)
    csv "$wb window_misses $d_miss"
    csv "$wb window_reclaims $d_recl"
    csv "$wb window_fallbacks $d_fall"
    csv "$wb media_bytes $d_media"
  fi
}

# drop_caches also drops fio's own binaries and libraries; reading them back during a run
# would add some 50 MiB to "Cached". A tiny job loads them again first (python's come back
# with the cachestat taken before the run's first sample).
cold_start() {  # round fs
  cold "$1" "$2"
  fio --name=tools --filename=/dev/zero --rw=read --bs=4k --size=1M "${fio_common[@]}" >/dev/null
}

size_block() {  # round fs bs: the five runs of one request size on one mount
  local r=$1 f=$2 bs=$3
  rm -f "${file[$f]}"
  cold_start "$r" "$f"
  run "$r" "$f" write-new "$bs"
  check_mode "$f" "${file[$f]}"
  cold_start "$r" "$f"
  run "$r" "$f" write-cold "$bs"
  run "$r" "$f" write-warm "$bs"
  cold_start "$r" "$f"
  run "$r" "$f" read-cold "$bs"
  run "$r" "$f" read-warm "$bs"
}

# --- setup -------------------------------------------------------------------------------
mkdir -p "${dir[dax]}" "${dir[buf]}" "${dir[tmpfs]}"
mount -t tmpfs -o size=$tmpfs_size tmpfs "${dir[tmpfs]}"
make_image "${img[dax]}" $img_mb  # pre-faulted (lib.sh)
make_image "${img[buf]}" $img_mb
hold_images "${img[dax]}" "${img[buf]}"  # so drop_caches leaves them alone (lib.sh)
mount_fs dax; mount_fs buf
for f in "${mounts[@]}"; do mkdir -p "${dir[$f]}/data"; done
setfattr -n user.pmemfuse.dax -v 1 "${dir[dax]}/data"  # files created in it are DAX
echo "round,section,fs,workload,metric,value" >"$out_csv"

{
  echo "# tools/bench/dax.sh report"
  echo
  describe_run "$cmdline"
  echo "- mounts: two pmemfuse daemons with default options (cache_size $(stats "${dir[buf]}" | python3 -c 'import json, sys; print(json.load(sys.stdin)["cache"]["capacity_bytes"] >> 20)') MiB, dax_window 256M), each on its own ${img_mb} MiB image in /dev/shm: \"DAX\" keeps the file in a directory with user.pmemfuse.dax=1, \"buffered\" in a plain one; tmpfs of $tmpfs_size as a reference"
  echo "- pre-faulting: each image is written with zeros (dd) before mkfs, which allocates and zeroes every page of it (first-touch faults on /dev/shm cost several times a copy; fallocate alone would leave the zeroing to the first touch); a helper keeps every page of both images mapped for the whole run, so drop_caches leaves them alone (without it, later mappings of them fault 4 KiB at a time, without fault-around); the file is written fully (write-new) before it is overwritten or read"
  echo "- file: ${file_mb} MiB; request sizes: ${sizes[*]}; fio ${fio_common[*]}"
  echo "- rounds: $rounds$( ((quick)) && echo ' (--quick: a smaller file)'), interleaved per request size: DAX, buffered, tmpfs"
} | tee "$out_md"
echo >&2

start=$(date +%s)
for ((r = 1; r <= rounds; r++)); do
  for bs in "${sizes[@]}"; do
    for f in "${mounts[@]}"; do
      log "round $r/$rounds: $bs, $f"
      size_block $r "$f" "$bs"
    done
  done
done
total=$(($(date +%s) - start))
log "done in $total s"

# --- report ------------------------------------------------------------------------------
python3 - "$out_csv" "$file_mb" "$total" "${sizes[*]}" <<'PY' | tee -a "$out_md"
import csv, statistics, sys
path, file_mb, total, sizes = sys.argv[1:]
rows = [r for r in csv.DictReader(open(path)) if r["section"] == "io"]
MiB, GiB = 1 << 20, 1 << 30
runs = ["%s/%s" % (w, bs) for w in ("write-new", "write-cold", "write-warm", "read-cold", "read-warm")
        for bs in sizes.split()]
def vals(fs, w, m):  # {round: value}
    return {int(r["round"]): float(r["value"]) for r in rows
            if (r["fs"], r["workload"], r["metric"]) == (fs, w, m) and r["value"] != "-"}
def per_gib(fs, w, m):  # the metric per GiB the run moved, per round
    v, n = vals(fs, w, m), vals(fs, w, "bytes")
    return {k: v[k] * GiB / n[k] for k in v if n.get(k)}
def add(a, b): return {k: a[k] + b[k] for k in a if k in b}
def app_cpu(fs, w): return add(per_gib(fs, w, "app_usr_s"), per_gib(fs, w, "app_sys_s"))
def all_cpu(fs, w): return add(app_cpu(fs, w), per_gib(fs, w, "daemon_cpu_s"))
def ratio(a, b): return {k: a[k] / b[k] for k in a if k in b and b[k]}
def fmt(d, scale=1.0, prec=0):
    xs = sorted(x / scale for x in d.values())
    if not xs: return "-"
    f = "%%.%df" % prec
    med = f % statistics.median(xs)
    return med if len(xs) == 1 else "%s (%s-%s)" % (med, f % xs[0], f % xs[-1])
name = lambda w: w.replace("/", " ")

print("\n## Throughput (MB/s)\n")
print("| run | DAX | buffered | tmpfs | DAX / buffered |")
print("|---|---|---|---|---|")
for w in runs:
    d, b = vals("dax", w, "MB/s"), vals("buf", w, "MB/s")
    print("| %s | %s | %s | %s | %sx |" % (name(w), fmt(d), fmt(b), fmt(vals("tmpfs", w, "MB/s")),
                                        fmt(ratio(d, b), 1, 2)))

print("\n## Memory\n")
print("Kernel page-cache growth in MiB per GiB moved: \"Cached\" is the /proc/meminfo delta"
      " right after fio (machine-wide, so other work on the machine shows in it); \"stays\" is"
      " cachestat(2) of the file after the kernel revalidated it (a stat after fio; FUSE then"
      " drops the pages of a file whose mtime changed). Daemon RssAnon in MiB right after fio."
      " tmpfs, whose file is its page cache, grows by the file on write-new and by nothing"
      " otherwise.\n")
print("| run | DAX Cached | DAX stays | buffered Cached | buffered stays | DAX RssAnon | buffered RssAnon |")
print("|---|---|---|---|---|---|---|")
for w in runs:
    print("| %s | %s |" % (name(w), " | ".join(
        [fmt(per_gib(fs, w, m), MiB) for fs in ("dax", "buf") for m in ("meminfo_cached_bytes", "cachestat_bytes")] +
        [fmt(vals(fs, w, "daemon_rss_anon_bytes"), MiB) for fs in ("dax", "buf")])))

print("\n## CPU seconds per GiB moved\n")
print("app = fio's usr+sys; daemon = utime+stime of the pmemfuse process over the run (for"
      " writes including the write-back of its cache by user.pmemfuse.sync after fio).\n")
print("| run | DAX app | DAX daemon | DAX sum | buffered app | buffered daemon | buffered sum | tmpfs app | DAX / buffered sum |")
print("|---|---|---|---|---|---|---|---|---|")
for w in runs:
    cells = []
    for fs in ("dax", "buf"):
        cells += [fmt(app_cpu(fs, w), 1, 2), fmt(per_gib(fs, w, "daemon_cpu_s"), 1, 2), fmt(all_cpu(fs, w), 1, 2)]
    cells += [fmt(app_cpu("tmpfs", w), 1, 2), fmt(ratio(all_cpu("dax", w), all_cpu("buf", w)), 1, 2) + "x"]
    print("| %s | %s |" % (name(w), " | ".join(cells)))

print("\n## Daemon page faults and DAX windows\n")
print("Minor page faults of the daemon per GiB moved (a fresh daemon, after a cold remount,"
      " faults its mapping of the image in again), and the DAX window counters of the run.\n")
print("| run | DAX faults | buffered faults | DAX window misses | reclaims | fallbacks |")
print("|---|---|---|---|---|---|")
for w in runs:
    print("| %s | %s | %s | %s |" % (name(w), fmt(per_gib("dax", w, "daemon_minflt")),
          fmt(per_gib("buf", w, "daemon_minflt")), " | ".join(fmt(vals("dax", w, m)) for m in
          ("window_misses", "window_reclaims", "window_fallbacks"))))

times = [r for r in csv.DictReader(open(path)) if r["section"] == "time"]
slow = [r for r in times if r["workload"] == "cold" and float(r["value"]) > 5]
syncs = {fs: [float(r["value"]) for r in times if r["fs"] == fs and r["metric"] == "sync_s" and r["value"] != "-"]
         for fs in ("dax", "buf")}
print("\nRun time %s s. Write-back after the buffered writes (not in MB/s): median %.2f s, at most"
      " %.2f s. Remount steps over 5 s (not part of any measurement): %s." % (
          total, statistics.median(syncs["buf"] or [0]), max(syncs["buf"] or [0]),
          "; ".join("round %s %s %s %s" % (r["round"], r["fs"], r["metric"], r["value"]) for r in slow) or "none"))
PY
{
  echo
  echo "Samples: $out_csv; this report: $out_md"
} | tee -a "$out_md"
if [ -s "$work/fio.err" ]; then echo "fio stderr:" >&2; sort -u "$work/fio.err" | head -20 >&2; fi
for f in dax buf; do  # daemon messages other than mount/unmount notices
  if grep -v '\[info\]' "$work/$f.log" >"$work/$f.notes" 2>/dev/null && [ -s "$work/$f.notes" ]; then
    echo "$f daemon log:" >&2; head -20 "$work/$f.notes" >&2
  fi
done
