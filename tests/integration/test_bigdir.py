"""A directory with 200,000 entries: create, lookup, readdir, remount, delete."""

import errno
import os
import random
import stat
import time

import pytest

from pmemfuse_helpers import expect_errno, free_blocks, wait_free_blocks

N = 200_000


def name(i: int) -> str:
    # varied lengths (7..56 bytes) so entries of different sizes share the blocks
    return f"e{i:06d}" + "x" * (i * 7919 % 50)


@pytest.mark.slow
@pytest.mark.image_size("1G")
@pytest.mark.timeout_s(480)
def test_directory_with_200k_entries_create_lookup_readdir_delete(mounted):
    d = mounted / "big"
    os.mkdir(d)
    base = free_blocks(mounted.mnt)
    t0 = time.monotonic()
    mode = stat.S_IFREG | 0o644
    for i in range(N):
        os.mknod(os.path.join(d, name(i)), mode)
    t_create = time.monotonic() - t0

    rnd = random.Random(5)
    sample = rnd.sample(range(N), 2000)
    inos = {}
    for i in sample:
        st = os.stat(os.path.join(d, name(i)))
        assert stat.S_ISREG(st.st_mode)
        inos[i] = st.st_ino
    assert len(set(inos.values())) == len(inos), "duplicate inode numbers"
    expect_errno(errno.ENOENT, os.stat, os.path.join(d, "e999999"))
    expect_errno(errno.EEXIST, os.mknod, os.path.join(d, name(12345)), mode)

    expected = {name(i) for i in range(N)}
    listed = os.listdir(d)
    assert len(listed) == N, f"readdir returned {len(listed)} names, expected {N}"
    assert set(listed) == expected

    mounted.remount()
    listed = os.listdir(d)
    assert len(listed) == N, f"after remount readdir returned {len(listed)} names"
    assert set(listed) == expected
    for i in sample[:500]:
        assert os.stat(os.path.join(d, name(i))).st_ino == inos[i]

    t1 = time.monotonic()
    order = list(range(N))
    rnd.shuffle(order)
    for i in order:
        os.unlink(os.path.join(d, name(i)))
    t_delete = time.monotonic() - t1
    assert os.listdir(d) == []
    with os.scandir(d) as it:
        assert list(it) == []
    os.rmdir(d)
    # Inode-table chunks (2 MiB per 8176 inodes) may stay allocated once grown; anything
    # beyond that is leaked directory or data space.
    chunk_slack = (N // 8176 + 2) * 512
    after = wait_free_blocks(mounted.mnt, base, tolerance=chunk_slack + 16, timeout=30)
    assert after >= base - chunk_slack - 16, (
        f"free blocks {base} -> {after} after deleting all {N} entries")
    print(f"create {N}: {t_create:.1f}s, delete: {t_delete:.1f}s")
