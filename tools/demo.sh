#!/usr/bin/env bash
# tools/demo.sh [IMAGE] [MOUNTPOINT]: installs what is missing, builds, formats a 1 GiB
# image (default /dev/shm/pmemfuse.img), mounts it (default /mnt/pmemfuse), copies
# /usr/include in, proves it survives a remount, and leaves it mounted.
set -euo pipefail
cd "$(dirname "$0")/.."
img=${1:-/dev/shm/pmemfuse.img}
mnt=${2:-/mnt/pmemfuse}
tools/deps.sh
tools/build.sh build
b=build
if grep -qs " $mnt fuse" /proc/mounts; then fusermount3 -u "$mnt"; sleep 1; fi
$b/tools/mkfs.pmemfuse -f --size 1G "$img"
mkdir -p "$mnt"
$b/daemon/pmemfuse "$img" "$mnt"
echo "== copying /usr/include"
cp -a /usr/include "$mnt/"
diff -r --no-dereference /usr/include "$mnt/include" && echo "identical"
df -h "$mnt"
echo "== unmount, check, remount"
fusermount3 -u "$mnt"
$b/tools/fsck.pmemfuse "$img"   # waits for the daemon to let go of the image
$b/daemon/pmemfuse "$img" "$mnt"
diff -r --no-dereference /usr/include "$mnt/include" && echo "still identical after remount"
echo "pmemfuse is mounted on $mnt; unmount with: fusermount3 -u $mnt"
