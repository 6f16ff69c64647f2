"""File data: read/write of many sizes, holes, truncate, append, fsync, statfs."""

import hashlib
import mmap
import os
import random
import threading

import pytest

from pmemfuse_helpers import (MiB, free_blocks, read_file, wait_free_blocks, write_file,
                              write_until_error)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


SIZES = [0, 1, 100, 4095, 4096, 4097, 8191, 65536 + 3, MiB + 7, 20 * MiB]


@pytest.mark.parametrize("size", SIZES, ids=[str(s) for s in SIZES])
def test_write_read_roundtrip_sha256(mounted, size):
    data = os.urandom(size)
    p = mounted / f"f{size}"
    write_file(p, data)
    assert os.stat(p).st_size == size
    got = read_file(p)
    assert len(got) == size
    assert sha(got) == sha(data)
    mounted.remount()
    got = read_file(p)
    assert os.stat(p).st_size == size
    assert sha(got) == sha(data)


def test_write_in_odd_chunks_and_read_in_other_chunks(mounted):
    data = os.urandom(3 * MiB + 12345)
    p = mounted / "f"
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    off = 0
    rnd = random.Random(1)
    while off < len(data):
        n = rnd.choice([1, 17, 511, 4096, 4097, 65536, 200000])
        off += os.write(fd, data[off:off + n])
    os.close(fd)
    fd = os.open(p, os.O_RDONLY)
    try:
        off = 0
        while off < len(data):
            n = rnd.choice([3, 4095, 8192, 100000])
            chunk = os.pread(fd, n, off)
            assert chunk == data[off:off + n], f"mismatch at offset {off}"
            off += n
        assert os.pread(fd, 100, len(data)) == b""
    finally:
        os.close(fd)


def test_pwrite_beyond_eof_creates_holes_that_read_as_zeros(mounted):
    p = mounted / "sparse"
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"A" * 10, 0)
        os.pwrite(fd, b"B" * 10, 5 * MiB + 3)
        os.pwrite(fd, b"C" * 5000, 12 * 4096 - 100)  # straddles a block boundary
        size = 5 * MiB + 13
        assert os.fstat(fd).st_size == size
        content = os.pread(fd, size + 10, 0)
    finally:
        os.close(fd)
    expect = bytearray(size)
    expect[0:10] = b"A" * 10
    expect[5 * MiB + 3:5 * MiB + 13] = b"B" * 10
    expect[12 * 4096 - 100:12 * 4096 - 100 + 5000] = b"C" * 5000
    assert len(content) == size
    assert content == bytes(expect)
    mounted.remount()
    assert read_file(p) == bytes(expect)


def test_overwrite_in_the_middle(mounted):
    data = bytearray(os.urandom(5 * 4096 + 77))
    p = mounted / "f"
    write_file(p, bytes(data))
    patch = os.urandom(9000)
    with open(p, "r+b") as f:
        f.seek(3000)
        f.write(patch)
    data[3000:3000 + 9000] = patch
    assert read_file(p) == bytes(data)
    assert os.stat(p).st_size == 5 * 4096 + 77
    mounted.remount()
    assert read_file(p) == bytes(data)


def test_truncate_down_unaligned_then_extend_reads_zeros_past_old_eof(mounted):
    p = mounted / "f"
    data = os.urandom(3 * 4096 + 500)
    write_file(p, data)
    os.truncate(p, 5000)
    assert os.stat(p).st_size == 5000
    assert read_file(p) == data[:5000]
    os.truncate(p, 20000)
    got = read_file(p)
    assert len(got) == 20000
    assert got[:5000] == data[:5000]
    assert got[5000:] == bytes(15000), "stale data visible past the truncation point"
    # extend by writing beyond EOF after another unaligned truncate
    os.truncate(p, 4097)
    fd = os.open(p, os.O_WRONLY)
    os.pwrite(fd, b"Z", 9000)
    os.close(fd)
    got = read_file(p)
    assert len(got) == 9001
    assert got[:4097] == data[:4097]
    assert got[4097:9000] == bytes(9000 - 4097)
    assert got[9000:] == b"Z"
    mounted.remount()
    got2 = read_file(p)
    assert got2 == got


def test_truncate_to_zero_and_ftruncate(mounted):
    p = mounted / "f"
    write_file(p, os.urandom(MiB))
    fd = os.open(p, os.O_RDWR)
    try:
        os.ftruncate(fd, 0)
        assert os.fstat(fd).st_size == 0
        assert os.pread(fd, 10, 0) == b""
        os.pwrite(fd, b"xy", 4096)
        assert os.pread(fd, 5000, 0) == bytes(4096) + b"xy"
    finally:
        os.close(fd)
    # O_TRUNC on open
    write_file(p, b"short")
    assert read_file(p) == b"short"


def test_truncate_up_reads_zeros(mounted):
    p = mounted / "f"
    write_file(p, b"head")
    os.truncate(p, 50 * MiB + 1)
    assert os.stat(p).st_size == 50 * MiB + 1
    fd = os.open(p, os.O_RDONLY)
    try:
        assert os.pread(fd, 4, 0) == b"head"
        assert os.pread(fd, 4096, 4) == bytes(4096)
        assert os.pread(fd, 4096, 25 * MiB) == bytes(4096)
        assert os.pread(fd, 4096, 50 * MiB - 4095) == bytes(4096)
        assert os.pread(fd, 10, 50 * MiB + 1) == b""
    finally:
        os.close(fd)
    mounted.remount()
    assert os.stat(p).st_size == 50 * MiB + 1
    with open(p, "rb") as f:
        f.seek(40 * MiB)
        assert f.read(MiB) == bytes(MiB)


def test_append_mode_writes_at_end(mounted):
    p = mounted / "log"
    write_file(p, b"start\n")
    expect = b"start\n"
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        for i in range(100):
            line = f"line {i} ".encode() * (i % 7 + 1) + b"\n"
            os.write(fd, line)
            expect += line
        # a write through another fd extends the file; append must still go to the end
        fd2 = os.open(p, os.O_WRONLY)
        os.pwrite(fd2, b"EXT", len(expect))
        os.close(fd2)
        expect += b"EXT"
        os.write(fd, b"tail")
        expect += b"tail"
    finally:
        os.close(fd)
    assert read_file(p) == expect
    with open(p, "ab") as f:
        f.write(b"!")
    assert read_file(p) == expect + b"!"


def test_fsync_and_fdatasync_return_success(mounted):
    p = mounted / "f"
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, os.urandom(100000))
        os.fsync(fd)  # raises OSError on failure
        os.fdatasync(fd)
    finally:
        os.close(fd)
    dfd = os.open(mounted.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    assert os.stat(p).st_size == 100000


def test_statfs_reports_4k_blocks_and_plausible_totals(mounted, image):
    sv = os.statvfs(mounted.mnt)
    img_size = os.stat(image).st_size
    assert sv.f_bsize == 4096
    assert sv.f_frsize == 4096
    total = sv.f_blocks * sv.f_frsize
    assert total <= img_size, f"f_blocks*f_frsize {total} > image size {img_size}"
    assert total >= img_size // 2, f"f_blocks*f_frsize {total} much smaller than {img_size}"
    assert 0 < sv.f_bfree <= sv.f_blocks
    assert sv.f_bavail <= sv.f_bfree
    # a fresh filesystem is mostly free
    assert sv.f_bfree * sv.f_frsize >= img_size // 2
    assert sv.f_namemax == 255
    assert sv.f_ffree <= sv.f_files


def test_statfs_free_blocks_drop_after_write_and_return_after_delete(mounted):
    before = free_blocks(mounted.mnt)
    p = mounted / "big"
    size = 10 * MiB
    write_file(p, os.urandom(size))
    fd = os.open(p, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    during = free_blocks(mounted.mnt)
    used = before - during
    need = size // 4096
    assert used >= need, f"only {used} blocks used for a {need}-block file"
    assert used <= need + 64, f"{used} blocks used for a {need}-block file"
    os.unlink(p)
    after = wait_free_blocks(mounted.mnt, before)
    assert abs(after - before) <= 8, f"free blocks {before} -> {after} after delete"
    # and the accounting survives a remount
    mounted.remount()
    assert abs(free_blocks(mounted.mnt) - before) <= 8


def test_many_small_files(mounted):
    rnd = random.Random(7)
    os.mkdir(mounted / "many")
    contents = {}
    for i in range(3000):
        data = rnd.randbytes(rnd.choice([0, 1, 50, 300, 4096, 5000]))
        name = f"f{i:05d}"
        write_file(mounted.path("many", name), data)
        contents[name] = data
    assert set(os.listdir(mounted / "many")) == set(contents)
    for name, data in contents.items():
        assert read_file(mounted.path("many", name)) == data, name
    mounted.remount()
    assert set(os.listdir(mounted / "many")) == set(contents)
    for name, data in contents.items():
        assert read_file(mounted.path("many", name)) == data, name
    for name in contents:
        os.unlink(mounted.path("many", name))
    assert os.listdir(mounted / "many") == []


def test_interleaved_writes_fragmented_files_survive_remount(mounted):
    # Two files grown 4 KiB at a time alternately get many extents each.
    a, b = bytearray(), bytearray()
    fa = os.open(mounted / "a", os.O_CREAT | os.O_WRONLY, 0o644)
    fb = os.open(mounted / "b", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for _ in range(300):
            ca, cb = os.urandom(4096), os.urandom(4096)
            os.write(fa, ca)
            os.fsync(fa)
            os.write(fb, cb)
            os.fsync(fb)
            a += ca
            b += cb
    finally:
        os.close(fa)
        os.close(fb)
    assert read_file(mounted / "a") == bytes(a)
    assert read_file(mounted / "b") == bytes(b)
    mounted.remount()
    assert read_file(mounted / "a") == bytes(a)
    assert read_file(mounted / "b") == bytes(b)
    # punch the middle via truncate and regrow
    os.truncate(mounted / "a", 100 * 4096 + 1)
    assert read_file(mounted / "a") == bytes(a[:100 * 4096 + 1])


def test_concurrent_writers_on_separate_files(mounted):
    errors = []
    datas = {f"t{i}": os.urandom(2 * MiB + i) for i in range(4)}

    def worker(name):
        try:
            p = mounted / name
            fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
            try:
                d = datas[name]
                for off in range(0, len(d), 8192):
                    os.pwrite(fd, d[off:off + 8192], off)
            finally:
                os.close(fd)
        except Exception as e:  # pragma: no cover - reported below
            errors.append((name, e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in datas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for name, d in datas.items():
        assert sha(read_file(mounted / name)) == sha(d), name


def test_mmap_write_and_read_back(mounted):
    p = mounted / "mm"
    size = 3 * 4096 + 100
    write_file(p, bytes(size))
    payload = os.urandom(size)
    with open(p, "r+b") as f:
        with mmap.mmap(f.fileno(), size) as m:
            m[:] = payload
            m.flush()
    assert read_file(p) == payload
    mounted.remount()
    assert read_file(p) == payload
    with open(p, "rb") as f:
        with mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as m:
            assert m[:] == payload


def test_write_until_enospc_then_delete_recovers(mounted):
    # 256 MiB image: fill it, expect ENOSPC (not another error, not a hang), then free.
    before = free_blocks(mounted.mnt)
    p = mounted / "fill"
    chunk = os.urandom(MiB)
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    written, err = write_until_error(fd, chunk, 400)
    assert err is not None, "wrote 400 MiB into a 256 MiB image without ENOSPC"
    assert err.errno == 28, f"expected ENOSPC, got {err!r}"
    assert written > 100 * MiB, f"ENOSPC after only {written} bytes"
    os.unlink(p)
    after = wait_free_blocks(mounted.mnt, before)
    assert abs(after - before) <= 8, f"free blocks {before} -> {after} after delete"
    write_file(mounted / "after", b"still works")
    assert read_file(mounted / "after") == b"still works"
