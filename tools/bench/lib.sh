# shellcheck shell=bash disable=SC2154,SC2034
# tools/bench/lib.sh: pieces shared by the benchmark scripts (cache.sh, dax.sh, peers.sh).
# Sourced, not run, from the repository root, after `set -euo pipefail`.
#
# The sourcing script sets `work` (a scratch directory) and fills, per mount name F:
#   dir[F]   mount point           kind[F]  pmemfuse | passthrough | tmpfs
#   img[F]   image (pmemfuse)      opts[F]  -o options for the daemon ("" for none)
#   pid[F]   daemon pid, set by mount_fs and cleared by umount_fs
#   src[F]   source directory of a passthrough mount (default: $ptsrc)
# and, for passthrough mounts, `pt` (the passthrough_ll binary, see build_passthrough).
# Samples go to "$out_csv" as round,section,fs,workload,metric,value.
#
# Sourced with the script's arguments still in "$@", it records them in $cmdline.
# The build directory is $PMEMFUSE_BUILD (absolute, or relative to the repository root),
# default build/; results go under its bench/ folder.

me=${0##*/}
cmdline="$(printf '%q ' "$0" "$@")" cmdline=${cmdline% }
b=${PMEMFUSE_BUILD:-build}
declare -A dir img opts pid kind src

# [--quick] [ROUNDS], the arguments of every script; -h prints the script's opening comment
# (its path is in $self).
quick=0 rounds=3
parse_args() {  # "$@"
  while (($#)); do
    case $1 in
      --quick) quick=1 rounds=1 ;;
      -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$self" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) [[ $1 =~ ^[1-9][0-9]*$ ]] || die "bad argument '$1'"; rounds=$1 ;;
    esac
    shift
  done
}

log() { echo "[$me $(date +%T)] $*" >&2; }
die() { echo "$me: $*" >&2; exit 1; }

need_tools() {  # tool...
  local t
  for t in "$@"; do command -v "$t" >/dev/null || die "needs $t"; done
}
need_root() { [ "$(id -u)" = 0 ] || die "needs root (mounts, drop_caches)"; }
# A fresh clone runs as it is: missing packages are installed (tools/deps.sh, quick when
# nothing is missing) and a missing build is made.
need_build() {
  tools/deps.sh >&2 || die "tools/deps.sh could not install what the benchmarks need"
  if [ ! -x "$b/daemon/pmemfuse" ] || [ ! -x "$b/tools/mkfs.pmemfuse" ]; then
    log "no build in $b: building it (tools/build.sh)"
    tools/build.sh "$b" >&2 || die "the build failed"
  fi
}

# Who ran what, where: the first lines of every report. --no-optional-locks: a diff would
# otherwise refresh the index of a tree that others may be using.
describe_run() {  # cmdline
  echo "- command: \`$1\` (in $(pwd)$([ "$b" = build ] || echo ", PMEMFUSE_BUILD=$b"))"
  echo "- date: $(date -Is); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git --no-optional-locks diff --quiet HEAD 2>/dev/null || echo ' plus uncommitted changes')"
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(fio --version), libfuse $(pkg-config --modversion fuse3)"
}

# passthrough_ll from the libfuse examples, built once into $b/bench; sets pt.
build_passthrough() {
  local ex=/usr/share/doc/libfuse3-dev/examples tmp
  pt=$b/bench/passthrough_ll
  [ -x "$pt" ] && return 0
  mkdir -p "$b/bench"
  tmp=$(mktemp -d "$b/bench/passthrough_ll.build.XXXXXX")
  if [ -f $ex/passthrough_ll.c ]; then cp $ex/passthrough_ll.c "$tmp/"
  elif [ -f $ex/passthrough_ll.c.gz ]; then gunzip -c $ex/passthrough_ll.c.gz >"$tmp/passthrough_ll.c"
  else die "no $ex/passthrough_ll.c(.gz) (apt-get install libfuse3-dev)"; fi
  cp $ex/passthrough_helpers.h "$tmp/" 2>/dev/null || true
  # shellcheck disable=SC2046
  cc -O2 -o "$tmp/passthrough_ll" "$tmp/passthrough_ll.c" $(pkg-config --cflags --libs fuse3)
  mv "$tmp/passthrough_ll" "$pt"  # only a complete binary gets the name
  rm -rf "$tmp"
}

# --- python helpers, written into $work ---------------------------------------------------
write_py_helpers() {
  cat >"$work/fio.py" <<'PY'
# fio.py RW < fio json: MB/s (1e6 bytes) and IOPS of the read or write side.
import json, sys
t = sys.stdin.read()
j = json.loads(t[t.index("{"):])["jobs"][0]
side = j["read" if "read" in sys.argv[1] else "write"]
print("%.1f %.0f" % (side["bw_bytes"] / 1e6, side["iops"]))
PY

  cat >"$work/stats.py" <<'PY'
# stats.py BEFORE AFTER KEY...: after - before for each dotted key ("-" when absent).
import json, sys
b, a = (json.load(open(p)) for p in sys.argv[1:3])
def get(d, k):
    for part in k.split("."):
        if not isinstance(d, dict) or part not in d: return None
        d = d[part]
    return d
out = []
for k in sys.argv[3:]:
    x, y = get(b, k), get(a, k)
    out.append("-" if x is None or y is None else str(y - x))
print(" ".join(out))
PY
}

# --- mounts ------------------------------------------------------------------------------
# The images live in /dev/shm. Writing zeros over the whole file first allocates and zeroes
# every page, so no measurement pays first-touch page faults on /dev/shm, which cost several
# times a copy (fallocate alone would leave the zeroing to the first touch).
make_image() {  # image MiB
  dd if=/dev/zero of="$1" bs=1M count="$2" status=none
  "$b/tools/mkfs.pmemfuse" -q -f "$1"
}
# drop_caches also reaches tmpfs pages that no process maps: they stay in memory, but from
# then on (kernel 6.18) a process that maps them takes one fault per 4 KiB page instead of
# mapping 16 around the fault (fault-around), so a fresh daemon's mapping and every DAX
# window cost 16 times the faults. Real pmem is not page cache at all. A helper that keeps
# every page of the images mapped for the whole run leaves them out of drop_caches' reach.
holder_pid=""
hold_images() {  # image...: maps and touches every page; release_images ends it
  python3 - "$work/held" "$@" <<'PY' &
import mmap, sys, time
maps = []
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    for off in range(0, len(m), 4096): m[off]
    maps.append(m)
open(sys.argv[1], "w").close()
while True: time.sleep(3600)
PY
  holder_pid=$!
  while [ ! -e "$work/held" ]; do
    kill -0 $holder_pid 2>/dev/null || die "the helper that keeps the images mapped failed"
    sleep 0.05
  done
}
release_images() {
  [ -n "$holder_pid" ] || return 0
  kill "$holder_pid" 2>/dev/null; wait "$holder_pid" 2>/dev/null
  holder_pid=""
}
wait_mounted() {  # dir pid
  for _ in $(seq 200); do
    mountpoint -q "$1" && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  echo "$me: mount of $1 failed (see $work/*.log)" >&2
  cat "$work"/*.log >&2 || true
  exit 1
}
mount_fs() {  # fs
  local f=$1 o=()
  [ -n "${opts[$f]:-}" ] && o=(-o "${opts[$f]}")
  case ${kind[$f]} in
    pmemfuse)
      "$b/daemon/pmemfuse" -f "${o[@]}" "${img[$f]}" "${dir[$f]}" >>"$work/$f.log" 2>&1 &
      pid[$f]=$!; wait_mounted "${dir[$f]}" "${pid[$f]}" ;;
    passthrough)
      "$pt" -f "${o[@]}" -o source="${src[$f]:-$ptsrc}" "${dir[$f]}" >>"$work/$f.log" 2>&1 &
      pid[$f]=$!; wait_mounted "${dir[$f]}" "${pid[$f]}" ;;
  esac
}
watch_slow() {  # pid what: returns when pid has ended; past 10 s, shows its kernel stacks once
  local n=0 t
  while kill -0 "$1" 2>/dev/null; do
    sleep 0.05
    if ((++n == 200)); then
      echo "$me: $2 takes more than 10 s ($(date +%T)); threads of pid $1:" >&2
      for t in /proc/"$1"/task/*; do
        echo "  $(cat "$t/comm" "$t/wchan" 2>/dev/null | tr '\n' ' '): $(tr '\n' ' ' <"$t/stack" 2>/dev/null | cut -c1-400)" >&2
      done
    fi
  done
}
um_fuser_s=0 um_exit_s=0
umount_fs() {  # fs: unmounts a FUSE mount and waits for its daemon (which writes back first)
  local f=$1 rc=0 fp t0=$EPOCHREALTIME t1
  [ "${kind[$f]}" = tmpfs ] && { um_fuser_s=0 um_exit_s=0; return 0; }
  fusermount3 -u "${dir[$f]}" &
  fp=$!
  watch_slow $fp "fusermount3 -u ${dir[$f]}"
  wait $fp
  t1=$EPOCHREALTIME
  watch_slow "${pid[$f]}" "exit of the $f daemon after unmount"
  wait "${pid[$f]}" || rc=$?
  [ $rc = 0 ] || echo "$me: WARNING: $f daemon ${pid[$f]} exited with status $rc" >&2
  pid[$f]=""
  um_fuser_s=$(secs "$t0" "$t1") um_exit_s=$(secs "$t1" "$EPOCHREALTIME")
}
# For the EXIT trap: unmounts the FUSE mounts among fs... (lazily if a plain unmount fails)
# and waits up to 10 s for each daemon before a SIGTERM, so no daemon outlives the script.
unmount_all() {  # fs...
  local f p
  for f in "$@"; do
    mountpoint -q "${dir[$f]}" 2>/dev/null && { fusermount3 -u "${dir[$f]}" || fusermount3 -uz "${dir[$f]}"; }
    p=${pid[$f]:-}
    if [ -n "$p" ]; then
      for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$p" 2>/dev/null && kill "$p"
      wait "$p" 2>/dev/null
    fi
  done
}
check_mode() {  # fs file: a pmemfuse file must be on the data path its column says (dax: DAX)
  local want=0 got
  [ "${kind[$1]}" = pmemfuse ] || return 0
  [ "$1" = dax ] && want=1
  got=$(getfattr --only-values -n user.pmemfuse.dax_effective "$2" 2>/dev/null || echo '?')
  [ "$got" = $want ] || die "$2: dax_effective is '$got', want $want"
}
drop_caches() { echo 3 >/proc/sys/vm/drop_caches; }
cold() {  # round fs: empty the kernel page cache and, for FUSE mounts, restart the daemon
  local t1 t2 t3
  umount_fs "$2"; t1=$EPOCHREALTIME
  drop_caches; t2=$EPOCHREALTIME
  [ "${kind[$2]}" = tmpfs ] || mount_fs "$2"
  t3=$EPOCHREALTIME
  csv "$1 time $2 cold fusermount_s $um_fuser_s"
  csv "$1 time $2 cold daemon_exit_s $um_exit_s"
  csv "$1 time $2 cold drop_caches_s $(secs "$t1" "$t2")"
  csv "$1 time $2 cold mount_s $(secs "$t2" "$t3")"
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
stats() { getfattr --only-values -n user.pmemfuse.stats "$1" 2>/dev/null; }
sync_pm() { setfattr -n user.pmemfuse.sync -v 1 "$1"; }

csv() { echo "${*// /,}" >>"$out_csv"; }  # round,section,fs,workload,metric,value

# fio with the caching left to us: no fallocate, no invalidation of the page cache at open.
fio_common=(--ioengine=psync --numjobs=1 --fallocate=none --invalidate=0 --end_fsync=0
  --output-format=json)
