#!/usr/bin/env bash
# tools/bench/peers.sh [--quick] [ROUNDS]: pmemfuse against its peers, the same workloads on
# five filesystems in one invocation, over ROUNDS rounds (default 3):
#   buf     pmemfuse, default options (buffered: kernel page cache plus the daemon's cache)
#   dax     pmemfuse -o dax=always (every file DAX), a second daemon on its own image
#   tmpfs   tmpfs
#   pt      libfuse's passthrough_ll example over a tmpfs directory, default options
#   ptfast  passthrough_ll over another tmpfs directory with its fastest options for data,
#           writeback,cache=always (PTFAST_OPTS=... to try others; without writeback it
#           has half the random-write IOPS, but 5-10x the stats after creates)
# Each round runs every section on the five in turn (buf dax tmpfs pt ptfast, then the next
# section), so the ratios between them are taken close together in time:
#   seq    fio sequential write of new files, cold (the first write after a remount) and
#          warm (removed and written again at once), then read cold (unmount, drop_caches,
#          mount) and warm (again at once); 1M and 128k blocks; 1 job on a 1 GiB file,
#          2 jobs on a file of 512 MiB each (the same total); MB/s
#   rand   4 KiB random reads, then writes, 1 and 2 jobs on one laid-out 1 GiB file,
#          time-based (5 s); then 4 KiB random writes with fsync after each (fio --fsync=1,
#          1 job); IOPS
#   meta   tools/bench/meta.c: create, stat (right after, with what the kernel still has
#          cached: on FUSE, within the entry and attribute timeouts, 60 s on pmemfuse, 1 s on
#          pt), unlink of 10,000 empty files in one directory, then in 100 directories;
#          then the same with 100,000 files on all but passthrough_ll (it holds a
#          descriptor per inode the kernel knows, and 20,000 is the limit here); ops/s
#   tree   untar of a tarball of system trees, git init/add/commit of it (not timed),
#          then a timed `git status`, then `rm -rf`; seconds. On all five /usr/include
#          (~9,000 inodes, what passthrough_ll's descriptors allow here), then on all but
#          passthrough_ll a tree of >= 30,000 files (-big; both printed)
# and per round the memcpy bandwidth of a /dev/shm mapping made like the images
# (tools/bench/memcpy.c): the physical limit of a DAX copy here.
# Per workload and filesystem also: daemon CPU seconds (utime+stime, including the
# write-back forced after writes), daemon peak RSS (VmHWM, reset before the workload; it
# counts the image pages the daemon maps), its private memory after it (RssAnon) and
# the growth of "Cached" in /proc/meminfo. After each write workload (not timed) `sync -f`
# and, on pmemfuse, user.pmemfuse.sync write back what is still dirty, so it does not bleed
# into the next measurement.
# Prints a markdown report (medians with min-max, ratios to tmpfs and to pt taken per round
# then the median, the targets of the performance issue marked met or not) and writes it
# with a CSV of every sample and a JSON summary under build/bench/peers-STAMP.{md,csv,json}.
# --quick: 1 round, 64 MiB files, 1 s runs, 5,000 files, a tree of ~1,500 files (< 2 min).
# Needs root, fio, python3, fusermount3, getfattr/setfattr, cc, pkg-config fuse3, tar and
# git; about 12 GiB of RAM (two 3 GiB images). PMEMFUSE_BUILD=DIR uses another build
# directory. A full run takes some 30 minutes.
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$0")/../.."
. tools/bench/lib.sh

parse_args "$@"  # quick, rounds (lib.sh)
if ((quick)); then
  img_mb=1024 tmpfs_size=1G seq_mb=64 rand_mb=64 rt=1 nfiles=5000 ndirs=100 memcpy_mb=256
  tree_min=1500 big_min=0
  tree_cand=(usr/include/linux usr/include/c++ usr/include/x86_64-linux-gnu usr/share/perl
    usr/share/man)
else
  img_mb=3072 tmpfs_size=3G seq_mb=1024 rand_mb=1024 rt=5 nfiles=100000 ndirs=100 memcpy_mb=1024
  tree_min=5000
  tree_cand=(usr/include)
  big_min=30000  # a -big tree too, on all but passthrough_ll
  big_cand=(usr/include usr/share/man usr/lib/python3 usr/share/perl usr/share/doc usr/share/locale)
fi
fsl=(buf dax tmpfs pt ptfast)
nfiles_pt=$((nfiles < 10000 ? nfiles : 10000))  # what passthrough_ll can hold here (meta_section)
sections=(seq rand meta tree)

need_root
need_build
need_tools fio python3 fusermount3 getfattr setfattr cc pkg-config tar git

mkdir -p "$b/bench"
build_passthrough  # sets pt (lib.sh)
build_tool() {  # name: tools/bench/NAME.c into $b/bench/NAME, again when the source is newer
  local out=$b/bench/$1
  [ "$out" -nt "tools/bench/$1.c" ] && return 0
  cc -O2 -Wall -o "$out.tmp.$$" "tools/bench/$1.c"
  mv "$out.tmp.$$" "$out"
}
build_tool meta
build_tool memcpy

stamp=$(date +%Y%m%d-%H%M%S)
out_md=$b/bench/peers-$stamp.md out_csv=$b/bench/peers-$stamp.csv
out_json=$b/bench/peers-$stamp.json
work=$(mktemp -d /tmp/pmemfuse-peers-bench.XXXXXX)
shm=/dev/shm/pmemfuse-peers-bench-$$
dir[buf]=$work/buf img[buf]=$shm-buf.img opts[buf]="" kind[buf]=pmemfuse
dir[dax]=$work/dax img[dax]=$shm-dax.img opts[dax]="dax=always" kind[dax]=pmemfuse
dir[tmpfs]=$work/tmpfs kind[tmpfs]=tmpfs
dir[pt]=$work/pt src[pt]=$work/pt.src opts[pt]="" kind[pt]=passthrough
dir[ptfast]=$work/ptfast src[ptfast]=$work/ptfast.src kind[ptfast]=passthrough
opts[ptfast]=${PTFAST_OPTS:-writeback,cache=always}
memfile=$shm-memcpy.img tarball=$shm-tree.tar big_tarball=$shm-tree-big.tar

cleanup() {
  set +e
  unmount_all buf dax pt ptfast  # waits for the daemons (lib.sh)
  release_images
  local m
  for m in "${dir[tmpfs]}" "${src[pt]}" "${src[ptfast]}"; do mountpoint -q "$m" && umount "$m"; done
  rm -f "${img[buf]}" "${img[dax]}" "$memfile" "$tarball" "$big_tarball"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- samples from /proc -----------------------------------------------------------------
# Read with shell builtins: on a loaded machine a fork costs some 10 ms, and each workload
# takes a dozen samples. The functions set variables instead of printing (no $(...)).
clk_tck=$(getconf CLK_TCK) elapsed=0 settle_s=-
daemon_ticks() {  # pid: sets ticks, utime + stime of all the daemon's threads
  local s fields
  read -r s <"/proc/$1/stat"
  read -ra fields <<<"${s##*) }"  # the fields after the ")" that closes comm, from state on
  ticks=$((fields[11] + fields[12]))
}
proc_kib() {  # file key: sets kib, the value of "key:" in a /proc file of "key: N kB" lines
  local k v _
  kib=-
  while read -r k v _; do [ "$k" = "$2:" ] && { kib=$v; return; }; done <"$1"
}
decimal() {  # var n scale digits: var = n / scale with that many decimals
  local u=$((10 ** $4))
  printf -v "$1" "%d.%0${4}d" $(($2 / $3)) $(($2 % $3 * u / $3))
}

# The write-back a write leaves behind, done now (not timed) so that it does not run during
# the next measurement: the kernel's dirty pages (passthrough_ll with writeback), then the
# pmemfuse daemon's own DRAM cache.
settle() {  # fs: sets settle_s
  local t0=${EPOCHREALTIME/./}
  settle_s=-
  [ "${kind[$1]}" != tmpfs ] || return 0
  sync -f "${dir[$1]}"
  if [ "${kind[$1]}" = pmemfuse ]; then sync_pm "${dir[$1]}"; fi
  decimal settle_s $((${EPOCHREALTIME/./} - t0)) 1000000 3
}

# One measured workload: runs CMD (in this shell; its output goes where measure's goes) and
# records around it the daemon's CPU seconds and peak RSS and the page-cache growth. A
# workload that writes is settled before the daemon's CPU time is read, so the write-back
# it caused is counted with it. Leaves the wall time of CMD in $elapsed (seconds).
measure() {  # round fs workload writes CMD...
  local r=$1 f=$2 w=$3 writes=$4 p=${pid[$2]:-} c0 m0 m1 t0 t1 cpu=- rss=- anon=-
  shift 4
  if [ -n "$p" ]; then echo 5 >"/proc/$p/clear_refs"; daemon_ticks "$p"; c0=$ticks; fi
  proc_kib /proc/meminfo Cached; m0=$kib
  t0=${EPOCHREALTIME/./}
  "$@"
  t1=${EPOCHREALTIME/./}
  proc_kib /proc/meminfo Cached; m1=$kib
  settle_s=-
  if ((writes)); then settle "$f"; fi
  if [ -n "$p" ]; then
    daemon_ticks "$p"; decimal cpu $((ticks - c0)) "$clk_tck" 2
    proc_kib "/proc/$p/status" VmHWM; rss=$((kib / 1024))
    proc_kib "/proc/$p/status" RssAnon; anon=$((kib / 1024))
  fi
  decimal elapsed $((t1 - t0)) 1000000 3
  csv "$r res $f $w daemon_cpu_s $cpu"
  csv "$r res $f $w daemon_peak_rss_mib $rss"
  csv "$r res $f $w daemon_anon_mib $anon"
  csv "$r res $f $w cached_growth_mib $(((m1 - m0) / 1024))"
  csv "$r time $f $w wall_s $elapsed"
  csv "$r time $f $w settle_s $settle_s"
}

# fio's results are read from its JSON by one python at the end (a python start costs
# ~0.2 s on a loaded machine): until then the CSV holds @N:RW, for fio/N.json and its side.
nfio=0
fio_json() {  # fio options...: runs fio, its JSON in $work/fio/$nfio.json
  nfio=$((nfio + 1))
  fio "$@" "${fio_common[@]}" --output="$work/fio/$nfio.json" 2>>"$work/fio.err" ||
    { echo "$me: fio $* failed:" >&2; cat "$work/fio.err" "$work/fio/$nfio.json" >&2; exit 1; }
}
fio_run() {  # round fs workload unit rw bs numjobs [fio options...]: records MB/s or IOPS
  local r=$1 f=$2 w=$3 unit=$4 rw=$5 bs=$6 nj=$7 writes=0
  shift 7
  [[ $rw != *write* ]] || writes=1
  measure "$r" "$f" "$w" $writes fio_json --name=b --directory="${dir[$f]}" --rw="$rw" --bs="$bs" \
    --numjobs="$nj" --group_reporting "$@"
  csv "$r perf $f $w $unit @$nfio:$rw"
}

# drop_caches also drops fio's binary and its ~70 libraries, some 30 MiB that the cold run
# would read back in and count as page-cache growth; `fio --version` reads in what a job
# needs of them (all but ~0.1 MiB) for less than a tiny job (~0.3 s) costs.
cold_start() {  # round fs
  cold "$1" "$2"  # lib.sh
  fio --version >/dev/null
}

# --- sections ----------------------------------------------------------------------------
# Writes make new files. write-cold is the first write of a daemon since its mount (the
# section starts with a remount, and each variant ends with one followed by reads only,
# which leave pmemfuse's DRAM cache untouched), so it may include faulting in the daemon's
# cache (anonymous memory, zeroed by the kernel at first touch; up to 4x slower). write-warm
# removes the files and writes them again, so the cache pages are reused, as on a daemon
# that has been up a while. 2 jobs: each its own file of half the size, so both counts
# move the same bytes.
seq_section() {  # round fs
  local r=$1 f=$2 nj bs w
  cold_start "$r" "$f"
  for nj in 1 2; do
    for bs in 1M 128k; do
      w=$bs-${nj}j
      # shellcheck disable=SC2016  # $jobnum is fio's
      local files=(--size=$((seq_mb / nj))M --filename_format='seq.$jobnum')
      rm -f "${dir[$f]}"/seq.*
      fio_run "$r" "$f" "seq-write-$w-cold" MB/s write "$bs" $nj "${files[@]}"
      [ "$w" != 1M-1j ] || check_mode "$f" "${dir[$f]}/seq.0"
      rm -f "${dir[$f]}"/seq.*
      fio_run "$r" "$f" "seq-write-$w-warm" MB/s write "$bs" $nj "${files[@]}"
      cold_start "$r" "$f"
      fio_run "$r" "$f" "seq-read-$w-cold" MB/s read "$bs" $nj "${files[@]}"
      fio_run "$r" "$f" "seq-read-$w-warm" MB/s read "$bs" $nj "${files[@]}"
    done
  done
  rm -f "${dir[$f]}"/seq.*
}

# Both jobs of the 2-job runs go over the same file, at random. The reads start right after
# the layout, with no read pass: what a filesystem kept cached of the written file counts
# (buffered FUSE writes change the mtime, and the kernel then drops the file's pages).
rand_section() {  # round fs
  local r=$1 f=$2 nj
  local file=(--filename=rand "--size=${rand_mb}M")
  local timed=("${file[@]}" --time_based "--runtime=$rt" --norandommap --randrepeat=0)
  fio_json --name=layout --directory="${dir[$f]}" --rw=write --bs=1M "${file[@]}"
  check_mode "$f" "${dir[$f]}/rand"
  settle "$f"
  for nj in 1 2; do fio_run "$r" "$f" "rand-read-4k-${nj}j" IOPS randread 4k $nj "${timed[@]}"; done
  for nj in 1 2; do fio_run "$r" "$f" "rand-write-4k-${nj}j" IOPS randwrite 4k $nj "${timed[@]}"; done
  fio_run "$r" "$f" write-fsync-4k IOPS randwrite 4k 1 "${timed[@]}" --fsync=1
  rm -f "${dir[$f]}/rand"
}

meta_section() {  # round fs
  meta_run "$1" "$2" meta "$nfiles_pt"
  # passthrough_ll keeps a descriptor open for every inode the kernel holds: more new files
  # than the open-files limit here (20,000) make its creates fail (EBADF, EMFILE).
  if ((nfiles > nfiles_pt)) && [ "${kind[$2]}" != passthrough ]; then
    meta_run "$1" "$2" "meta$((nfiles / 1000))k" "$nfiles"
  fi
}

meta_run() {  # round fs name files
  local r=$1 f=$2 w d phase ops
  for d in 0 $ndirs; do
    w=$3-flat; ((d)) && w=$3-tree
    measure "$r" "$f" "$w" 1 "$b/bench/meta" "${dir[$f]}" "$4" "$d" >"$work/meta.out"
    while read -r phase ops; do csv "$r perf $f $w-$phase ops/s $ops"; done <"$work/meta.out"
  done
}

# git as the tree's own: no system or user configuration, no compression (add and commit
# are not timed; status does not read objects).
tree_git() {  # dir git-args...
  GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null git -C "$1" -c user.name=bench \
    -c user.email=bench@localhost -c init.defaultBranch=main -c core.compression=0 -c gc.auto=0 "${@:2}"
}
tree_section() {  # round fs
  tree_run "$1" "$2" "" "$tarball"
  if ((big_min)) && [ "${kind[$2]}" != passthrough ]; then tree_run "$1" "$2" -big "$big_tarball"; fi
}

tree_run() {  # round fs suffix tarball
  local r=$1 f=$2 x=$3 t=${dir[$2]}/tree n
  mkdir "$t"
  measure "$r" "$f" "untar$x" 1 tar -xf "$4" -C "$t"
  csv "$r perf $f untar$x s $elapsed"
  tree_git "$t" init -q
  tree_git "$t" add -A
  tree_git "$t" commit -q -m tree
  settle "$f"
  measure "$r" "$f" "git-status$x" 0 tree_git "$t" status --porcelain >"$work/status"
  csv "$r perf $f git-status$x s $elapsed"
  # A clean tree must stay clean: anything listed means the fs returned other attributes
  # than at `git add`.
  n=$(wc -l <"$work/status")
  csv "$r check $f git-status$x changed_paths $n"
  ((n == 0)) ||
    echo "$me: WARNING: git status on $f lists $n paths, e.g. $(head -3 "$work/status" | tr '\n' ' ')" >&2
  measure "$r" "$f" "rm-tree$x" 1 rm -rf "$t"
  csv "$r perf $f rm-tree$x s $elapsed"
}

memcpy_round() {  # round
  local r=$1 way gbs
  while read -r way gbs; do
    csv "$r memcpy - memcpy-$way GB/s $gbs"
  done < <("$b/bench/memcpy" "$memfile" 5)
}

# --- setup -------------------------------------------------------------------------------
# A tree: candidate system folders in order, until there are min regular files.
make_tarball() {  # out min candidate...: prints what it holds
  local out=$1 min=$2 d n=0 picked=() types
  for d in "${@:3}"; do
    [ -d "/$d" ] || continue
    picked+=("$d")
    n=$((n + $(find "/$d" -type f | wc -l)))
    ((n < min)) || break
  done
  ((n >= min)) || log "WARNING: the tree has only $n files (wanted $min)"
  tar -C / -cf "$out" "${picked[@]}"
  types=$(tar -tvf "$out" | cut -c1 | sort | uniq -c | awk '
    { n[$2] = $1 } END { printf "%d files, %d directories, %d symlinks", n["-"] + n["h"], n["d"], n["l"] }')
  echo "$(printf '/%s ' "${picked[@]}")($types; $(du -m "$out" | cut -f1) MiB tarball in /dev/shm)"
}

log "setting up"
for f in "${fsl[@]}"; do mkdir -p "${dir[$f]}"; done
mkdir -p "${src[pt]}" "${src[ptfast]}"
for m in "${dir[tmpfs]}" "${src[pt]}" "${src[ptfast]}"; do mount -t tmpfs -o size=$tmpfs_size tmpfs "$m"; done
make_image "${img[buf]}" $img_mb  # pre-faulted (lib.sh)
make_image "${img[dax]}" $img_mb
dd if=/dev/zero of="$memfile" bs=1M count=$memcpy_mb status=none  # made like the images
hold_images "${img[buf]}" "${img[dax]}" "$memfile"  # so drop_caches leaves them alone (lib.sh)
mkdir "$work/fio"
for f in buf dax pt ptfast; do mount_fs "$f"; done
tree_desc=$(make_tarball "$tarball" "$tree_min" "${tree_cand[@]}")
((big_min)) && tree_desc+="; -big: $(make_tarball "$big_tarball" "$big_min" "${big_cand[@]}")"
echo "round,section,fs,workload,metric,value" >"$out_csv"

cache_mib=$(stats "${dir[buf]}" | python3 -c 'import json, sys; print(json.load(sys.stdin)["cache"]["capacity_bytes"] >> 20)')
declare -A desc=(
  [buf]="pmemfuse, default options (DRAM cache ${cache_mib} MiB)"
  [dax]="pmemfuse -o ${opts[dax]}, a second daemon on its own image (DAX here: direct_io requests that the daemon serves from its mapping of the image, docs/dax.md)"
  [tmpfs]="tmpfs, size=$tmpfs_size"
  [pt]="passthrough_ll -o source=DIR, default options (cache=auto: 1 s timeouts, the page cache dropped at each open, no writeback cache), DIR a tmpfs of $tmpfs_size"
  [ptfast]="passthrough_ll -o ${opts[ptfast]},source=DIR, DIR another tmpfs of $tmpfs_size"
)
if [ -z "${PTFAST_OPTS:-}" ]; then
  desc[ptfast]+=": its fastest options for data, by a measurement on this machine (cache=always: 86400 s timeouts and keep_cache; writeback: twice the random-write IOPS of cache=always alone, and written pages kept for the next read, but stats right after creates go to the daemon, 5-10x fewer per second; clone_fd changed nothing)"
else
  desc[ptfast]+=" (options from PTFAST_OPTS)"
fi
{
  echo "# tools/bench/peers.sh report"
  echo
  describe_run "$cmdline"
  echo "- filesystems:"
  for f in "${fsl[@]}"; do echo "  - $f: ${desc[$f]}"; done
  echo "- images: buf and dax each on a ${img_mb} MiB file in /dev/shm; pre-faulted: zeros written over the whole file (dd) before mkfs, and every page kept mapped by a helper for the whole run (hold_images), so no measurement pays first-touch faults and drop_caches does not change how the images fault; the ${memcpy_mb} MiB memcpy file is made and held the same way"
  echo "- seq: ${seq_mb} MiB per run (2 jobs: a file of $((seq_mb / 2)) MiB each); rand: one ${rand_mb} MiB file, ${rt} s runs; meta: ${nfiles_pt} files on all five, ${nfiles} on all but passthrough_ll (more than its descriptors allow here), flat and in ${ndirs} directories; fio ${fio_common[*]} --group_reporting"
  echo "- tree: $tree_desc"
  echo "- rounds: $rounds$( ((quick)) && echo ' (--quick: small sizes)'); in each round every section runs on ${fsl[*]} in turn"
} | tee "$out_md"
echo >&2

start=$(date +%s)
for ((r = 1; r <= rounds; r++)); do
  log "round $r/$rounds: memcpy"
  memcpy_round $r
  for s in "${sections[@]}"; do
    for f in "${fsl[@]}"; do
      log "round $r/$rounds: $s, $f"
      "${s}_section" $r "$f"
    done
  done
done
total=$(($(date +%s) - start))
log "done in $total s"

# --- report ------------------------------------------------------------------------------
python3 - "$out_csv" "$work/fio" <<'PY'
# The @N:RW placeholders of the CSV become fio's MB/s or IOPS, from fio/N.json.
import csv, json, sys
path, fio_dir = sys.argv[1:]
rows = list(csv.reader(open(path)))
for r in rows[1:]:
    if r[5].startswith("@"):
        n, rw = r[5][1:].split(":")
        t = open("%s/%s.json" % (fio_dir, n)).read()
        side = json.loads(t[t.index("{"):])["jobs"][0]["read" if "read" in rw else "write"]
        r[5] = "%.1f" % (side["bw_bytes"] / 1e6) if r[4] == "MB/s" else "%.0f" % side["iops"]
csv.writer(open(path, "w"), lineterminator="\n").writerows(rows)
PY
python3 - "$out_csv" "$out_json" "$total" "$quick" "$cmdline" "$tree_desc" \
  "$(for f in "${fsl[@]}"; do printf '%s\t%s\n' "$f" "${desc[$f]}"; done)" <<'PY' | tee -a "$out_md"
import csv, json, statistics, sys
path, out_json, total, quick, cmdline, tree, descs = sys.argv[1:]
FS = ["buf", "dax", "tmpfs", "pt", "ptfast"]
rows = list(csv.DictReader(open(path)))

def vals(sec, fs, w, m):  # {round: value}
    return {int(r["round"]): float(r["value"]) for r in rows
            if (r["section"], r["fs"], r["workload"], r["metric"]) == (sec, fs, w, m) and r["value"] != "-"}
def keys(sec):  # (workload, metric) in the order of the samples
    seen = {}
    for r in rows:
        if r["section"] == sec: seen.setdefault((r["workload"], r["metric"]), None)
    return list(seen)
def ratio(a, b, lower_better=False):  # per round; > 1: a is faster than b
    return {k: (b[k] / a[k] if lower_better else a[k] / b[k]) for k in a
            if k in b and a[k] and b[k]}
def summary(d):
    xs = sorted(d.values())
    return {"median": statistics.median(xs), "min": xs[0], "max": xs[-1], "n": len(xs)} if xs else None
def fmt(d, prec=0, suffix=""):
    s = summary(d)
    if not s: return "-"
    f = "%%.%df%s" % (prec, suffix)
    return f % s["median"] if s["n"] == 1 else "%s (%s-%s)" % (f % s["median"], f % s["min"], f % s["max"])
PREC = {"MB/s": 0, "IOPS": 0, "ops/s": 0, "s": 3, "GB/s": 2,
        "daemon_cpu_s": 2, "daemon_peak_rss_mib": 0, "daemon_anon_mib": 0, "cached_growth_mib": 0}

summ = {"command": cmdline, "run_s": int(total), "quick": quick == "1", "tree": tree,
        "filesystems": dict(l.split("\t", 1) for l in descs.splitlines()),
        "ratios": "per round, then median; > 1 means faster than (or, for resources, more than) the reference",
        "perf": {}, "resources": {}, "memcpy": {}, "targets": []}
perf = keys("perf")

print("\n## Results\n")
print("Medians over the rounds (min-max). seq: MB/s (1e6 bytes/s); rand and write-fsync: IOPS;"
      " meta: operations/s; untar, git-status, rm-tree: seconds (lower is better).\n")
print("| workload | unit | " + " | ".join(FS) + " |")
print("|---|---|" + "---|" * len(FS))
for w, u in perf:
    print("| %s | %s | %s |" % (w, u, " | ".join(fmt(vals("perf", f, w, u), PREC[u]) for f in FS)))
    e = summ["perf"][w] = {"unit": u}
    for f in FS:
        v = vals("perf", f, w, u)
        e[f] = {"value": summary(v), "ratio_tmpfs": summary(ratio(v, vals("perf", "tmpfs", w, u), u == "s")),
                "ratio_pt": summary(ratio(v, vals("perf", "pt", w, u), u == "s"))}

for ref, others in (("tmpfs", ["buf", "dax", "pt", "ptfast"]), ("pt", ["buf", "dax", "tmpfs", "ptfast"])):
    print("\n## Speed ratios to %s\n" % ref)
    print("Each filesystem's figure over %s's from the same round, then the median (min-max);"
          " for times, %s's time over the filesystem's: above 1 is faster than %s.\n" % (ref, ref, ref))
    print("| workload | " + " | ".join(others) + " |")
    print("|---|" + "---|" * len(others))
    for w, u in perf:
        print("| %s | %s |" % (w, " | ".join(fmt(ratio(vals("perf", f, w, u), vals("perf", ref, w, u), u == "s"), 2, "x")
                                            for f in others)))

titles = {"daemon_cpu_s": "Daemon CPU seconds (utime+stime of the daemon process over the workload,"
                          " for writes including the write-back forced after it)",
          "daemon_peak_rss_mib": "Daemon peak RSS, MiB (VmHWM after `echo 5 > clear_refs` before the"
                                 " workload; for pmemfuse it includes the image pages the daemon has"
                                 " mapped, RssShmem)",
          "daemon_anon_mib": "Daemon private memory, MiB (RssAnon right after the workload: the"
                             " daemon's own memory, its DRAM cache included, without the image)",
          "cached_growth_mib": "Page-cache growth, MiB (\"Cached\" of /proc/meminfo after the workload"
                               " minus before; machine-wide, so other work on the machine shows in it;"
                               " tmpfs files and the passthrough sources count as Cached too)"}
res = keys("res")
for m in titles:
    print("\n## %s\n" % titles[m])
    print("No daemon: -. Ratios to tmpfs and pt are in the JSON summary.\n")
    print("| workload | " + " | ".join(FS) + " |")
    print("|---|" + "---|" * len(FS))
    for w in dict.fromkeys(w for w, mm in res if mm == m):
        print("| %s | %s |" % (w, " | ".join(fmt(vals("res", f, w, m), PREC[m]) for f in FS)))
        e = summ["resources"].setdefault(w, {})[m] = {}
        for f in FS:
            v = vals("res", f, w, m)
            e[f] = {"value": summary(v), "ratio_tmpfs": summary(ratio(v, vals("res", "tmpfs", w, m))),
                    "ratio_pt": summary(ratio(v, vals("res", "pt", w, m)))}

print("\n## The physical limit here: memcpy\n")
mw, mr = vals("memcpy", "-", "memcpy-write", "GB/s"), vals("memcpy", "-", "memcpy-read", "GB/s")
def of_limit(w, lim):  # DAX MB/s over the memcpy GB/s of the same round
    d = vals("perf", "dax", w, "MB/s")
    return {k: d[k] / (lim[k] * 1000) for k in d if k in lim}
print("One thread copying 1 MiB at a time between a private buffer and a MAP_SHARED mapping of a"
      " pre-faulted /dev/shm file (tools/bench/memcpy.c, median of 5 passes): into the mapping %s"
      " GB/s, out of it %s GB/s. DAX sequential 1 MiB, 1 job, as a fraction of it: write (warm) %s,"
      " read cold %s, read warm %s.\n" % (
          fmt(mw, 2), fmt(mr, 2), fmt(of_limit("seq-write-1M-1j-warm", mw), 2, "x"),
          fmt(of_limit("seq-read-1M-1j-cold", mr), 2, "x"), fmt(of_limit("seq-read-1M-1j-warm", mr), 2, "x")))
summ["memcpy"] = {"write_GBps": summary(mw), "read_GBps": summary(mr),
                  "dax_seq_write_1M_1j_warm_of_limit": summary(of_limit("seq-write-1M-1j-warm", mw)),
                  "dax_seq_read_1M_1j_warm_of_limit": summary(of_limit("seq-read-1M-1j-warm", mr))}

print("## Targets of the performance issue\n")
print("Met when the median of the per-round ratios reaches the target (3 decimals here, so"
      " that rounding does not hide a miss).\n")
print("| target | measured | |")
print("|---|---|---|")
T = [("DAX seq write 1M, 1 job (warm) >= 0.8x tmpfs", "dax", "seq-write-1M-1j-warm", "tmpfs", None, 0.8),
     ("DAX seq write 1M, 1 job (warm) >= 2.5x pt", "dax", "seq-write-1M-1j-warm", "pt", None, 2.5),
     ("DAX seq read 1M, 1 job (warm) >= 0.8x tmpfs", "dax", "seq-read-1M-1j-warm", "tmpfs", None, 0.8),
     ("DAX seq read 1M, 1 job (warm) >= 2.5x pt", "dax", "seq-read-1M-1j-warm", "pt", None, 2.5),
     ("DAX 4k randread, 1 job >= 1.5x pt", "dax", "rand-read-4k-1j", "pt", None, 1.5),
     ("DAX 4k randwrite, 1 job >= 1.5x pt", "dax", "rand-write-4k-1j", "pt", None, 1.5),
     ("buf warm seq read 1M >= 0.9x tmpfs", "buf", "seq-read-1M-1j-warm", "tmpfs", None, 0.9),
     ("buf cold seq read 1M >= 1.5x pt (cold)", "buf", "seq-read-1M-1j-cold", "pt", None, 1.5),
     ("buf creates, one directory >= 3x pt", "buf", "meta-flat-create", "pt", None, 3),
     ("buf creates, tree >= 3x pt", "buf", "meta-tree-create", "pt", None, 3),
     ("buf unlinks, one directory >= 3x pt", "buf", "meta-flat-unlink", "pt", None, 3),
     ("buf unlinks, tree >= 3x pt", "buf", "meta-tree-unlink", "pt", None, 3),
     ("buf stat, one directory >= 0.8x tmpfs", "buf", "meta-flat-stat", "tmpfs", None, 0.8),
     ("buf stat, tree >= 0.8x tmpfs", "buf", "meta-tree-stat", "tmpfs", None, 0.8),
     ("buf 4k write+fsync >= 2x pt", "buf", "write-fsync-4k", "pt", None, 2),
     ("DAX 4k write+fsync >= 2x pt", "dax", "write-fsync-4k", "pt", None, 2),
     ("DAX seq read 1M (warm), 2 jobs >= 1.6x 1 job", "dax", "seq-read-1M-2j-warm", "dax", "seq-read-1M-1j-warm", 1.6)]
unit = dict(perf)
for label, f, w, rf, rw, goal in T:
    rw = rw or w
    d = ratio(vals("perf", f, w, unit.get(w, "")), vals("perf", rf, rw, unit.get(rw, "")))
    s = summary(d)
    met = "-" if not s else ("met" if s["median"] >= goal else "not met")
    print("| %s | %s | %s |" % (label, fmt(d, 3, "x"), met))
    summ["targets"].append({"target": label, "goal": goal, "ratio": s, "met": met})

checks = [r for r in rows if r["section"] == "check" and r["value"] != "0"]
slow = [r for r in rows if r["section"] == "time" and r["workload"] == "cold" and float(r["value"]) > 5]
print("\nRun time %s s. `git status` lists changed paths: %s. Remount steps over 5 s (not part of"
      " any measurement): %s." % (total, "; ".join("round %s %s %s" % (r["round"], r["fs"], r["value"])
                                                    for r in checks) or "never",
      "; ".join("round %s %s %s %s" % (r["round"], r["fs"], r["metric"], r["value"]) for r in slow) or "none"))
json.dump(summ, open(out_json, "w"), indent=1)
PY
{
  echo
  echo "Samples: $out_csv; summary: $out_json; this report: $out_md"
} | tee -a "$out_md"
if [ -s "$work/fio.err" ]; then echo "fio stderr:" >&2; sort -u "$work/fio.err" | head -20 >&2; fi
# Daemon messages other than mount/unmount notices (and passthrough_ll's harmless note
# about libfuse 3.14's default max_threads).
for f in buf dax pt ptfast; do
  if grep -v -e ' info: ' -e '\[info\]' -e 'Ignoring invalid max threads' "$work/$f.log" >"$work/$f.notes" 2>/dev/null && [ -s "$work/$f.notes" ]; then
    echo "$f daemon log:" >&2; head -20 "$work/$f.notes" >&2
  fi
done
