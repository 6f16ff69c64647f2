#!/usr/bin/env bash
# tools/bench/cache.sh [--quick] [ROUNDS]: the buffered path with the DRAM write-back cache,
# in one invocation, interleaved (A B A B ...) over ROUNDS rounds (default 3):
#   1. write amplification: random 4 KiB overwrites of a laid-out file for a fixed time,
#      fsync every 10 s, pmemfuse with the cache (default options) and with cache_size=0;
#      bytes the application wrote vs bytes stored to the image; the file is then checked
#      page by page after a SIGKILL of the daemon and a remount;
#   2. fio (psync, one job) sequential 1 MiB and random 4 KiB reads and writes, cold and
#      warm, on pmemfuse (cache), pmemfuse cache_size=0, tmpfs and libfuse's passthrough_ll
#      over a tmpfs directory;
#   3. daemon memory: peak RSS of pmemfuse with cache_size=256M during a sequential write
#      larger than the cache.
# Prints a markdown report (medians with min-max) and writes it, with a CSV of every
# sample, under build/bench/. --quick: 1 round, smaller files and shorter runs (< 2 min).
# Needs root (mounts, drop_caches), fio, python3, fusermount3, getfattr/setfattr, cc and
# pkg-config fuse3 (passthrough_ll is built once from the libfuse examples, kept in
# build/bench/). PMEMFUSE_BUILD=DIR uses another build directory than build/.
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$0")/../.."
. tools/bench/lib.sh

parse_args "$@"  # quick, rounds (lib.sh)
if ((quick)); then
  img_mb=1024 tmpfs_size=1G seq_size=256M rand_size=64M rand_rt=2
  wa_mb=16 wa_rt=6 wa_interval=3 mem_size=512M
else
  img_mb=2048 tmpfs_size=2G seq_size=1G rand_size=256M rand_rt=10
  wa_mb=64 wa_rt=20 wa_interval=10 mem_size=1G
fi
mem_cache=256M

need_root
need_build
need_tools fio python3 fusermount3 getfattr setfattr cc pkg-config

mkdir -p "$b/bench"
build_passthrough  # sets pt (lib.sh)

stamp=$(date +%Y%m%d-%H%M%S)
out_md=$b/bench/cache-$stamp.md out_csv=$b/bench/cache-$stamp.csv
work=$(mktemp -d /tmp/pmemfuse-cache-bench.XXXXXX)
dir[pmem]=$work/pmem img[pmem]=/dev/shm/pmemfuse-cache-bench-$$-on.img opts[pmem]="" kind[pmem]=pmemfuse
dir[pmem0]=$work/pmem0 img[pmem0]=/dev/shm/pmemfuse-cache-bench-$$-off.img opts[pmem0]="cache_size=0" kind[pmem0]=pmemfuse
dir[pmemmem]=$work/pmemmem img[pmemmem]=/dev/shm/pmemfuse-cache-bench-$$-mem.img opts[pmemmem]="cache_size=$mem_cache" kind[pmemmem]=pmemfuse
dir[tmpfs]=$work/tmpfs kind[tmpfs]=tmpfs
dir[pt]=$work/pt kind[pt]=passthrough
ptsrc=$work/ptsrc

cleanup() {
  set +e
  unmount_all pmem pmem0 pmemmem pt
  mountpoint -q "${dir[tmpfs]}" && umount "${dir[tmpfs]}"
  mountpoint -q "$ptsrc" && umount "$ptsrc"
  rm -f "${img[pmem]}" "${img[pmem0]}" "${img[pmemmem]}"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- python helpers ----------------------------------------------------------------------
write_py_helpers  # fio.py, stats.py (lib.sh)
cat >"$work/wa.py" <<'PY'
# wa.py layout|write|verify PATH SIZE ...: page p written for the n-th time holds
# struct.pack("<QQ", p, n) repeated; layout writes n = 0 everywhere.
import array, json, os, random, struct, sys, time
PAGE = 4096
def page(p, n): return struct.pack("<QQ", p, n) * (PAGE // 16)
cmd, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
pages = size // PAGE
if cmd == "layout":
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for p0 in range(0, pages, 256):
        os.write(fd, b"".join(page(p, 0) for p in range(p0, min(p0 + 256, pages))))
    os.fsync(fd); os.close(fd)
elif cmd == "write":  # RUNTIME INTERVAL MODEL: random overwrites, fsync every INTERVAL s and at the end
    runtime, interval, model_path = float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
    model = array.array("Q", [0]) * pages
    rng = random.Random(42)
    fd = os.open(path, os.O_WRONLY)
    n = fsyncs = 0
    t0 = time.monotonic(); next_sync = t0 + interval; end = t0 + runtime
    while True:
        for _ in range(64):
            p = rng.randrange(pages); n += 1
            os.pwrite(fd, page(p, n), p * PAGE); model[p] = n
        now = time.monotonic()
        if now >= end: break
        if now >= next_sync:
            os.fsync(fd); fsyncs += 1; next_sync += interval
    os.fsync(fd); fsyncs += 1
    secs = time.monotonic() - t0
    os.close(fd)
    with open(model_path, "wb") as f: model.tofile(f)
    print(json.dumps({"writes": n, "bytes": n * PAGE, "seconds": secs, "fsyncs": fsyncs}))
elif cmd == "verify":  # MODEL: prints the number of wrong pages, then the first few
    model = array.array("Q")
    with open(sys.argv[4], "rb") as f: model.fromfile(f, pages)
    bad = []
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size != size: bad.append("size %d" % os.fstat(f.fileno()).st_size)
        for p in range(pages):
            got = f.read(PAGE)
            if got != page(p, model[p]):
                hdr = struct.unpack("<QQ", got[:16]) if len(got) >= 16 else None
                bad.append("page %d: want (%d,%d) got %s" % (p, p, model[p], hdr))
    print(len(bad), "; ".join(bad[:5]))
PY

cat >"$work/sampler.py" <<'PY'
# sampler.py PID STOPFILE: polls /proc/PID/status every 10 ms until STOPFILE exists; prints
# VmHWM and the peaks of RssAnon, RssShmem and RssFile, in bytes.
import os, sys, time
pid, stop = sys.argv[1], sys.argv[2]
peak = {"RssAnon": 0, "RssShmem": 0, "RssFile": 0}; hwm = 0
def sample():
    global hwm
    for line in open("/proc/%s/status" % pid):
        k, _, v = line.partition(":")
        if k in peak: peak[k] = max(peak[k], int(v.split()[0]) * 1024)
        elif k == "VmHWM": hwm = int(v.split()[0]) * 1024
while not os.path.exists(stop):
    sample(); time.sleep(0.01)
sample()
print(hwm, peak["RssAnon"], peak["RssShmem"], peak["RssFile"])
PY

fio_run() {  # round fs workload file rw bs size [fio options...]: records MB/s and IOPS
  local r=$1 f=$2 w=$3 file=$4 rw=$5 bs=$6 size=$7 mbs='' iops='' t0=$EPOCHREALTIME
  shift 7
  read -r mbs iops < <(fio --name=b --filename="${dir[$f]}/$file" --rw="$rw" --bs="$bs" --size="$size" \
    "${fio_common[@]}" "$@" 2>>"$work/fio.err" | python3 "$work/fio.py" "$rw")
  [ -n "$iops" ] || { echo "$me: fio $w on $f failed:" >&2; cat "$work/fio.err" >&2; exit 1; }
  csv "$r io $f $w MB/s $mbs"
  csv "$r io $f $w IOPS $iops"
  csv "$r time $f $w wall_s $(secs "$t0" "$EPOCHREALTIME")"
}

# --- setup -------------------------------------------------------------------------------
mkdir -p "${dir[pmem]}" "${dir[pmem0]}" "${dir[pmemmem]}" "${dir[tmpfs]}" "${dir[pt]}" "$ptsrc"
mount -t tmpfs -o size=$tmpfs_size tmpfs "${dir[tmpfs]}"
mount -t tmpfs -o size=$tmpfs_size tmpfs "$ptsrc"
for f in pmem pmem0 pmemmem; do
  make_image "${img[$f]}" $img_mb  # pre-faulted (lib.sh)
done
mount_fs pmem; mount_fs pmem0; mount_fs pt
echo "round,section,fs,workload,metric,value" >"$out_csv"

{
  echo "# tools/bench/cache.sh report"
  echo
  describe_run "$cmdline"
  echo "- images: ${img_mb} MiB files in /dev/shm, pre-faulted with dd of zeros before mkfs (first-touch faults on /dev/shm would otherwise be charged to the first writes); tmpfs and the passthrough_ll source are tmpfs mounts of $tmpfs_size"
  echo "- rounds: $rounds$( ((quick)) && echo ' (--quick: smaller files, shorter runs)')"
} | tee "$out_md"
echo >&2

# --- 1. write amplification --------------------------------------------------------------
wa_round() {  # round fs
  local r=$1 f=$2 m=${dir[$2]} res app secs fsyncs nbad detail
  local d_app d_pmem d_media d_batches dirty
  python3 "$work/wa.py" layout "$m/wa" $((wa_mb << 20))
  sync_pm "$m"
  stats "$m" >"$work/before.json"
  res=$(python3 "$work/wa.py" write "$m/wa" $((wa_mb << 20)) $wa_rt $wa_interval "$work/model")
  stats "$m" >"$work/after.json"
  read -r app secs fsyncs < <(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["bytes"], j["seconds"], j["fsyncs"])' "$res")
  read -r d_app d_pmem d_media d_batches dirty < <(python3 "$work/stats.py" "$work/before.json" "$work/after.json" \
    cache.app_bytes_written cache.pmem_bytes_written media.bytes_stored cache.flush_batches cache.dirty_bytes)
  csv "$r wa $f overwrite app_bytes $app"
  csv "$r wa $f overwrite cache_app_bytes $d_app"
  csv "$r wa $f overwrite cache_pmem_bytes $d_pmem"
  csv "$r wa $f overwrite media_bytes $d_media"
  csv "$r wa $f overwrite flush_batches $d_batches"
  csv "$r wa $f overwrite writes_per_s $(python3 -c "print('%.0f' % ($app / 4096 / $secs))")"
  csv "$r wa $f overwrite fsyncs $fsyncs"
  [ "$dirty" = "-" ] || [ "$dirty" = 0 ] || echo "$me: WARNING: $f: dirty_bytes grew by $dirty across a run that ended with fsync" >&2
  # Everything was fsynced: kill the daemon without a chance to write back, remount, check.
  kill -KILL "${pid[$f]}"
  wait "${pid[$f]}" 2>/dev/null || true
  fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m"
  drop_caches
  mount_fs "$f"
  read -r nbad detail < <(python3 "$work/wa.py" verify "$m/wa" $((wa_mb << 20)) "$work/model")
  csv "$r wa $f overwrite wrong_pages $nbad"
  [ "$nbad" = 0 ] || echo "$me: WRONG DATA on $f after fsync + SIGKILL + remount: $nbad pages; $detail" >&2
  rm -f "$m/wa"
}

# --- 2. fio ------------------------------------------------------------------------------
io_round() {  # round fs
  local r=$1 f=$2 m=${dir[$2]} t0
  cold "$r" "$f"
  fio_run "$r" "$f" seq-write-cold seq write 1M $seq_size
  fio_run "$r" "$f" seq-write-warm seq write 1M $seq_size
  fio_run "$r" "$f" seq-write-fsync seq write 1M $seq_size --end_fsync=1
  cold "$r" "$f"
  fio_run "$r" "$f" seq-read-cold seq read 1M $seq_size
  fio_run "$r" "$f" seq-read-warm seq read 1M $seq_size
  t0=$EPOCHREALTIME
  rm -f "$m/seq"
  fio --name=lay --filename="$m/rand" --rw=write --bs=1M --size=$rand_size "${fio_common[@]}" >/dev/null 2>>"$work/fio.err"
  csv "$r time $f rm+layout wall_s $(secs "$t0" "$EPOCHREALTIME")"
  cold "$r" "$f"
  fio_run "$r" "$f" rand-write-cold rand randwrite 4k $rand_size --time_based --runtime=$rand_rt
  fio_run "$r" "$f" rand-write-warm rand randwrite 4k $rand_size --time_based --runtime=$rand_rt
  cold "$r" "$f"
  # cold: one pass over the file in random order (each block once), at most rand_rt seconds
  fio_run "$r" "$f" rand-read-cold rand randread 4k $rand_size --runtime=$rand_rt
  fio_run "$r" "$f" rand-read-warm rand randread 4k $rand_size --time_based --runtime=$rand_rt
  rm -f "$m/rand"
}

# --- 3. daemon memory --------------------------------------------------------------------
mem_round() {  # round
  local r=$1 f=pmemmem m=${dir[pmemmem]} hwm anon shmem file mbs iops waits
  drop_caches
  mount_fs $f
  rm -f "$work/stop"
  python3 "$work/sampler.py" "${pid[$f]}" "$work/stop" >"$work/sampler.out" &
  local sp=$!
  stats "$m" >"$work/before.json"
  read -r mbs iops < <(fio --name=b --filename="$m/mem" --rw=write --bs=1M --size=$mem_size \
    "${fio_common[@]}" 2>>"$work/fio.err" | python3 "$work/fio.py" write)
  touch "$work/stop"; wait $sp
  stats "$m" >"$work/after.json"
  read -r hwm anon shmem file <"$work/sampler.out"
  read -r waits evict < <(python3 "$work/stats.py" "$work/before.json" "$work/after.json" cache.pressure_waits cache.evictions)
  csv "$r mem $f seq-write cache_bytes $(python3 -c "import json; print(json.load(open('$work/after.json'))['cache']['capacity_bytes'])")"
  csv "$r mem $f seq-write vmhwm $hwm"
  csv "$r mem $f seq-write rss_anon_peak $anon"
  csv "$r mem $f seq-write rss_shmem_peak $shmem"
  csv "$r mem $f seq-write rss_file_peak $file"
  csv "$r mem $f seq-write MB/s $mbs"
  csv "$r mem $f seq-write pressure_waits $waits"
  csv "$r mem $f seq-write evictions $evict"
  rm -f "$m/mem"
  umount_fs $f
}

start=$(date +%s)
for ((r = 1; r <= rounds; r++)); do
  for f in pmem pmem0; do log "round $r/$rounds: write amplification, $f"; wa_round $r $f; done
  for f in pmem pmem0 tmpfs pt; do log "round $r/$rounds: fio, $f"; io_round $r $f; done
  log "round $r/$rounds: daemon memory"; mem_round $r
done
log "done in $(($(date +%s) - start)) s"

# --- report ------------------------------------------------------------------------------
python3 - "$out_csv" "$wa_mb" "$wa_rt" "$wa_interval" "$seq_size" "$rand_size" "$rand_rt" "$mem_size" "$(($(date +%s) - start))" <<'PY' | tee -a "$out_md"
import csv, statistics, sys
path, wa_mb, wa_rt, wa_iv, seq, rnd, rrt, memsz, total = sys.argv[1:]
rows = list(csv.DictReader(open(path)))
def vals(sec, fs, w, m):
    return {int(r["round"]): float(r["value"]) for r in rows
            if (r["section"], r["fs"], r["workload"], r["metric"]) == (sec, fs, w, m) and r["value"] != "-"}
def fmt(xs, scale=1.0, prec=0):
    xs = sorted(x / scale for x in xs)
    if not xs: return "-"
    f = "%%.%df" % prec
    med = f % statistics.median(xs)
    return med if len(xs) == 1 else "%s (%s-%s)" % (med, f % xs[0], f % xs[-1])
def ratio(a, b):
    return [a[k] / b[k] for k in a if k in b and b[k]]
MiB = 1 << 20
names = {"pmem": "pmemfuse (cache)", "pmem0": "pmemfuse cache_size=0", "tmpfs": "tmpfs",
         "pt": "passthrough_ll"}

print("\n## 1. Write amplification: random 4 KiB overwrites\n")
print("A %s MiB file laid out and written back first; then %s s of 4 KiB `pwrite`s at random"
      " page-aligned offsets from one Python thread, `fsync` every %s s and at the end;"
      " counters are the difference of `user.pmemfuse.stats` read before and after."
      " Sizes in MiB.\n" % (wa_mb, wa_rt, wa_iv))
print("| mount | app wrote | cache -> pmem | media.bytes_stored | stored / app | writes/s | flush batches | wrong pages after SIGKILL + remount |")
print("|---|---|---|---|---|---|---|---|")
for fs in ("pmem", "pmem0"):
    app, media = vals("wa", fs, "overwrite", "app_bytes"), vals("wa", fs, "overwrite", "media_bytes")
    print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
        names[fs], fmt(app.values(), MiB), fmt(vals("wa", fs, "overwrite", "cache_pmem_bytes").values(), MiB),
        fmt(media.values(), MiB), fmt(ratio(media, app), 1, 3),
        fmt(vals("wa", fs, "overwrite", "writes_per_s").values()),
        fmt(vals("wa", fs, "overwrite", "flush_batches").values()),
        "+".join("%d" % v for v in vals("wa", fs, "overwrite", "wrong_pages").values())))
a = ratio(vals("wa", "pmem", "overwrite", "media_bytes"), vals("wa", "pmem", "overwrite", "app_bytes"))
b = ratio(vals("wa", "pmem0", "overwrite", "media_bytes"), vals("wa", "pmem0", "overwrite", "app_bytes"))
if a and b:
    print("\nBytes stored per byte written, cache_size=0 over cache: %.1fx (medians)." %
          (statistics.median(b) / statistics.median(a)))

print("\n## 2. fio, psync, one job\n")
print("Sequential: 1 MiB blocks, a %s file; random: 4 KiB blocks on a %s file, %s s runs"
      " (rand-read-cold: one pass, each block once, at most %s s). cold = after"
      " `drop_caches` and, for the FUSE mounts, a remount (empty daemon cache); warm = the same"
      " job again right after. seq-write-cold writes a new file, -warm overwrites it,"
      " -fsync overwrites it again with `--end_fsync=1` (the fsync counts in the time)."
      " fio runs with `--invalidate=0 --fallocate=none`.\n" % (seq, rnd, rrt, rrt))
wl = ["seq-write-cold", "seq-write-warm", "seq-write-fsync", "seq-read-cold", "seq-read-warm",
      "rand-write-cold", "rand-write-warm", "rand-read-cold", "rand-read-warm"]
unit = lambda w: "MB/s" if w.startswith("seq") else "IOPS"
print("| workload | " + " | ".join(names[f] for f in ("pmem", "pmem0", "tmpfs", "pt")) + " |")
print("|---|---|---|---|---|")
for w in wl:
    print("| %s (%s) | %s |" % (w, unit(w), " | ".join(fmt(vals("io", f, w, unit(w)).values()) for f in ("pmem", "pmem0", "tmpfs", "pt"))))
print("\nRatios, each computed within a round, then median (min-max):\n")
print("| workload | cache / tmpfs | cache / passthrough_ll | cache_size=0 / tmpfs | cache_size=0 / passthrough_ll | cache / cache_size=0 |")
print("|---|---|---|---|---|---|")
for w in wl:
    v = {f: vals("io", f, w, unit(w)) for f in ("pmem", "pmem0", "tmpfs", "pt")}
    print("| %s | %s |" % (w, " | ".join(fmt(ratio(v[a], v[b]), 1, 2) + "x" for a, b in
          (("pmem", "tmpfs"), ("pmem", "pt"), ("pmem0", "tmpfs"), ("pmem0", "pt"), ("pmem", "pmem0")))))

print("\n## 3. Daemon memory\n")
print("pmemfuse -o cache_size=256M, fresh daemon, fio sequential write of a new %s file"
      " (1 MiB blocks). VmHWM is the kernel's peak RSS; it includes the pages of the"
      " /dev/shm image the daemon has mapped (RssShmem), which are the \"pmem\", not daemon"
      " memory. RssAnon and RssShmem peaks are sampled every 10 ms. MiB.\n" % memsz)
m = lambda k: vals("mem", "pmemmem", "seq-write", k)
cache = m("cache_bytes"); hwm = m("vmhwm"); anon = m("rss_anon_peak")
over = lambda a: [a[k] - cache[k] for k in a if k in cache]
print("| cache | VmHWM | VmHWM - cache | peak RssAnon | peak RssAnon - cache | peak RssShmem | write MB/s | pressure waits |")
print("|---|---|---|---|---|---|---|---|")
print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
    fmt(cache.values(), MiB), fmt(hwm.values(), MiB), fmt(over(hwm), MiB), fmt(anon.values(), MiB),
    fmt(over(anon), MiB), fmt(m("rss_shmem_peak").values(), MiB), fmt(m("MB/s").values()),
    fmt(m("pressure_waits").values())))

slow = [r for r in rows if r["section"] == "time" and r["workload"] == "cold" and float(r["value"]) > 5]
print("\nRun time %s s. Remount steps over 5 s (not part of any measurement): %s." % (total,
      "; ".join("round %s %s %s %s" % (r["round"], r["fs"], r["metric"], r["value"]) for r in slow) or "none"))
PY
{
  echo
  echo "Samples: $out_csv; this report: $out_md"
} | tee -a "$out_md"
if [ -s "$work/fio.err" ]; then echo "fio stderr:" >&2; sort -u "$work/fio.err" | head -20 >&2; fi
# Daemon messages other than mount/unmount notices (and passthrough_ll's harmless note
# about libfuse 3.14's default max_threads).
for f in pmem pmem0 pmemmem pt; do
  if grep -v -e '\[info\]' -e 'Ignoring invalid max threads' "$work/$f.log" >"$work/$f.notes" 2>/dev/null && [ -s "$work/$f.notes" ]; then
    echo "$f daemon log:" >&2; head -20 "$work/$f.notes" >&2
  fi
done
