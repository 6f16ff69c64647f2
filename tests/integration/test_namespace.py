"""Namespace operations: create/unlink, mkdir/rmdir, rename, links, readdir, limits."""

import errno
import os
import stat

import pytest

from pmemfuse_helpers import (DT_DIR, DT_LNK, DT_REG, expect_errno, raw_readdir, read_file,
                              write_file)


def test_create_stat_unlink_regular_file(mounted):
    p = mounted / "f"
    fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o640)
    os.close(fd)
    st = os.stat(p)
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640 & ~_umask()
    assert st.st_size == 0
    assert st.st_nlink == 1
    assert "f" in os.listdir(mounted.mnt)
    os.unlink(p)
    expect_errno(errno.ENOENT, os.stat, p)
    assert "f" not in os.listdir(mounted.mnt)


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_lookup_missing_name_gives_enoent(mounted):
    expect_errno(errno.ENOENT, os.stat, mounted / "nope")
    expect_errno(errno.ENOENT, os.open, mounted / "nope", os.O_RDONLY)
    expect_errno(errno.ENOENT, os.unlink, mounted / "nope")
    expect_errno(errno.ENOENT, os.rmdir, mounted / "nope")
    expect_errno(errno.ENOENT, os.rename, mounted / "nope", mounted / "x")
    os.mkdir(mounted / "d")
    expect_errno(errno.ENOENT, os.stat, mounted.path("d", "nope"))


def test_create_existing_name_with_o_excl_gives_eexist(mounted):
    p = mounted / "f"
    os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    expect_errno(errno.EEXIST, os.open, p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.mkdir(mounted / "d")
    expect_errno(errno.EEXIST, os.open, mounted / "d", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    expect_errno(errno.EEXIST, os.mkdir, mounted / "d")
    expect_errno(errno.EEXIST, os.mkdir, p)
    expect_errno(errno.EEXIST, os.symlink, "t", p)


def test_mkdir_rmdir_and_rmdir_nonempty_gives_enotempty(mounted):
    d = mounted / "d"
    os.mkdir(d, 0o755)
    st = os.stat(d)
    assert stat.S_ISDIR(st.st_mode)
    assert st.st_nlink == 2
    assert os.listdir(d) == []
    write_file(os.path.join(d, "child"), b"x")
    expect_errno(errno.ENOTEMPTY, os.rmdir, d)
    os.mkdir(mounted / "d2")
    os.mkdir(mounted.path("d2", "sub"))
    expect_errno(errno.ENOTEMPTY, os.rmdir, mounted / "d2")
    os.unlink(os.path.join(d, "child"))
    os.rmdir(d)
    expect_errno(errno.ENOENT, os.stat, d)
    os.rmdir(mounted.path("d2", "sub"))
    os.rmdir(mounted / "d2")
    assert "d" not in os.listdir(mounted.mnt) and "d2" not in os.listdir(mounted.mnt)


def test_unlink_directory_gives_eisdir_and_rmdir_file_gives_enotdir(mounted):
    os.mkdir(mounted / "d")
    write_file(mounted / "f", b"abc")
    expect_errno(errno.EISDIR, os.unlink, mounted / "d")
    expect_errno(errno.ENOTDIR, os.rmdir, mounted / "f")
    assert os.path.isdir(mounted / "d")
    assert read_file(mounted / "f") == b"abc"


def test_rename_within_directory(mounted):
    write_file(mounted / "a", b"content-a")
    ino = os.stat(mounted / "a").st_ino
    os.rename(mounted / "a", mounted / "b")
    expect_errno(errno.ENOENT, os.stat, mounted / "a")
    assert os.stat(mounted / "b").st_ino == ino
    assert read_file(mounted / "b") == b"content-a"
    assert sorted(n for n in os.listdir(mounted.mnt) if n in ("a", "b")) == ["b"]


def test_rename_across_directories(mounted):
    os.makedirs(mounted.path("src", "deep"))
    os.makedirs(mounted.path("dst"))
    write_file(mounted.path("src", "deep", "f"), b"payload")
    ino = os.stat(mounted.path("src", "deep", "f")).st_ino
    os.rename(mounted.path("src", "deep", "f"), mounted.path("dst", "g"))
    assert os.listdir(mounted.path("src", "deep")) == []
    assert os.listdir(mounted.path("dst")) == ["g"]
    assert os.stat(mounted.path("dst", "g")).st_ino == ino
    assert read_file(mounted.path("dst", "g")) == b"payload"


def test_rename_over_existing_file_replaces_it(mounted):
    write_file(mounted / "a", b"new")
    write_file(mounted / "b", b"old-old-old")
    ino_a = os.stat(mounted / "a").st_ino
    # keep the victim open: it must stay readable through the fd
    fd = os.open(mounted / "b", os.O_RDONLY)
    try:
        os.rename(mounted / "a", mounted / "b")
        st = os.stat(mounted / "b")
        assert st.st_ino == ino_a
        assert read_file(mounted / "b") == b"new"
        assert os.pread(fd, 100, 0) == b"old-old-old"
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)
    expect_errno(errno.ENOENT, os.stat, mounted / "a")
    assert sorted(n for n in os.listdir(mounted.mnt) if n in ("a", "b")) == ["b"]


def test_rename_over_hardlinked_file_decrements_victim_nlink(mounted):
    write_file(mounted / "a", b"A")
    write_file(mounted / "b", b"B")
    os.link(mounted / "b", mounted / "b2")
    assert os.stat(mounted / "b2").st_nlink == 2
    os.rename(mounted / "a", mounted / "b")
    assert os.stat(mounted / "b2").st_nlink == 1
    assert read_file(mounted / "b2") == b"B"
    assert read_file(mounted / "b") == b"A"


def test_rename_type_conflicts(mounted):
    os.mkdir(mounted / "d")
    os.mkdir(mounted / "full")
    write_file(mounted.path("full", "x"), b"")
    write_file(mounted / "f", b"")
    expect_errno(errno.EISDIR, os.rename, mounted / "f", mounted / "d")
    expect_errno(errno.ENOTDIR, os.rename, mounted / "d", mounted / "f")
    expect_errno(errno.ENOTEMPTY, os.rename, mounted / "d", mounted / "full")
    os.mkdir(mounted / "empty")
    os.rename(mounted / "d", mounted / "empty")  # over an empty dir: allowed
    assert "d" not in os.listdir(mounted.mnt)
    assert os.path.isdir(mounted / "empty")


def test_directory_rename_updates_dotdot_and_nlinks(mounted):
    os.mkdir(mounted / "p1")
    os.mkdir(mounted / "p2")
    os.mkdir(mounted.path("p1", "child"))
    write_file(mounted.path("p1", "child", "f"), b"x")
    assert os.stat(mounted / "p1").st_nlink == 3
    assert os.stat(mounted / "p2").st_nlink == 2
    os.rename(mounted.path("p1", "child"), mounted.path("p2", "moved"))
    p2_ino = os.stat(mounted / "p2").st_ino
    moved = mounted.path("p2", "moved")
    assert os.stat(os.path.join(moved, "..")).st_ino == p2_ino
    # readdir's ".." entry comes from the filesystem, not the dcache
    ents = raw_readdir(moved)
    assert ents[".."][0] == p2_ino, f"'..' d_ino {ents['..'][0]} != new parent {p2_ino}"
    assert ents["."][0] == os.stat(moved).st_ino
    assert os.stat(mounted / "p1").st_nlink == 2
    assert os.stat(mounted / "p2").st_nlink == 3
    assert read_file(os.path.join(moved, "f")) == b"x"


def test_directory_rename_dotdot_persists_across_remount(mounted):
    os.mkdir(mounted / "p1")
    os.mkdir(mounted / "p2")
    os.mkdir(mounted.path("p1", "c"))
    os.rename(mounted.path("p1", "c"), mounted.path("p2", "c"))
    mounted.remount()
    p2_ino = os.stat(mounted / "p2").st_ino
    assert raw_readdir(mounted.path("p2", "c"))[".."][0] == p2_ino
    assert os.stat(mounted.path("p2", "c", "..")).st_ino == p2_ino
    assert os.stat(mounted / "p1").st_nlink == 2
    assert os.stat(mounted / "p2").st_nlink == 3


def test_hard_links_share_inode_data_and_count_nlink(mounted):
    a, b, c = mounted / "a", mounted / "b", mounted.path("sub", "c")
    os.mkdir(mounted / "sub")
    write_file(a, b"hello")
    os.link(a, b)
    os.link(a, c)
    sa, sb, sc = os.stat(a), os.stat(b), os.stat(c)
    assert sa.st_ino == sb.st_ino == sc.st_ino
    assert sa.st_nlink == sb.st_nlink == sc.st_nlink == 3
    with open(b, "r+b") as f:
        f.write(b"J")
    assert read_file(a) == b"Jello"
    assert read_file(c) == b"Jello"
    os.unlink(a)
    assert os.stat(b).st_nlink == 2
    os.unlink(c)
    assert os.stat(b).st_nlink == 1
    assert read_file(b) == b"Jello"
    expect_errno(errno.EEXIST, os.link, b, b)


def test_hard_link_counts_survive_remount(mounted):
    write_file(mounted / "a", b"data")
    os.link(mounted / "a", mounted / "b")
    ino = os.stat(mounted / "a").st_ino
    mounted.remount()
    assert os.stat(mounted / "a").st_nlink == 2
    assert os.stat(mounted / "b").st_ino == ino
    assert read_file(mounted / "b") == b"data"


@pytest.mark.parametrize("length", [1, 40, 95, 96, 97, 3000, 4095])
def test_symlink_readlink_roundtrip(mounted, length):
    target = ("t/" * length)[:length]
    if target.endswith("/"):
        target = target[:-1] + "x"
    p = mounted / "link"
    os.symlink(target, p)
    assert os.readlink(p) == target
    st = os.lstat(p)
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_size == length
    mounted.remount()
    assert os.readlink(p) == target
    assert os.lstat(p).st_size == length


def test_symlink_is_followed(mounted):
    os.mkdir(mounted / "d")
    write_file(mounted.path("d", "f"), b"via-link")
    os.symlink("d/f", mounted / "short")
    os.symlink("./" * 1400 + "d/f", mounted / "long")
    assert read_file(mounted / "short") == b"via-link"
    assert read_file(mounted / "long") == b"via-link"
    os.symlink("missing", mounted / "dangling")
    expect_errno(errno.ENOENT, os.stat, mounted / "dangling")
    os.unlink(mounted / "long")
    os.unlink(mounted / "short")
    assert read_file(mounted.path("d", "f")) == b"via-link"


def test_readdir_lists_exactly_created_names_with_dtype(mounted):
    base = mounted / "dir"
    os.mkdir(base)
    files = {f"file{i}" for i in range(50)}
    dirs = {f"dir{i}" for i in range(7)}
    links = {f"lnk{i}" for i in range(5)}
    for n in files:
        write_file(os.path.join(base, n), b"")
    for n in dirs:
        os.mkdir(os.path.join(base, n))
    for n in links:
        os.symlink("target", os.path.join(base, n))
    names = os.listdir(base)
    assert len(names) == len(set(names)), "duplicate names from readdir"
    assert set(names) == files | dirs | links
    with os.scandir(base) as it:
        kinds = {e.name: (e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False),
                          e.is_symlink()) for e in it}
    for n in files:
        assert kinds[n] == (False, True, False), n
    for n in dirs:
        assert kinds[n] == (True, False, False), n
    for n in links:
        assert kinds[n] == (False, False, True), n
    raw = raw_readdir(base)
    assert set(raw) == files | dirs | links | {".", ".."}
    for n in files:
        assert raw[n][1] == DT_REG, n
    for n in dirs:
        assert raw[n][1] == DT_DIR, n
    for n in links:
        assert raw[n][1] == DT_LNK, n
    for n in files | dirs | links:
        assert raw[n][0] == os.lstat(os.path.join(base, n)).st_ino, n
    # removing some names is reflected exactly
    for i in range(0, 50, 2):
        os.unlink(os.path.join(base, f"file{i}"))
    assert set(os.listdir(base)) == (files - {f"file{i}" for i in range(0, 50, 2)}) | dirs | links


def test_directory_nlink_is_two_plus_subdirs(mounted):
    d = mounted / "d"
    os.mkdir(d)
    for i in range(5):
        os.mkdir(os.path.join(d, f"s{i}"))
        write_file(os.path.join(d, f"f{i}"), b"")
    os.symlink("x", os.path.join(d, "l"))
    assert os.stat(d).st_nlink == 2 + 5
    os.rmdir(os.path.join(d, "s0"))
    assert os.stat(d).st_nlink == 2 + 4
    root_subdirs = sum(1 for e in os.scandir(mounted.mnt) if e.is_dir(follow_symlinks=False))
    assert os.stat(mounted.mnt).st_nlink == 2 + root_subdirs
    mounted.remount()
    assert os.stat(d).st_nlink == 2 + 4


def test_name_of_255_bytes_works_and_256_gives_enametoolong(mounted):
    n255 = "a" * 255
    n256 = "b" * 256
    write_file(mounted / n255, b"long name")
    assert n255 in os.listdir(mounted.mnt)
    assert read_file(mounted / n255) == b"long name"
    os.mkdir(mounted / ("d" * 255))
    # multi-byte UTF-8: 85 x 3 bytes = 255 bytes
    n_utf8 = "\u20ac" * 85
    assert len(n_utf8.encode()) == 255
    write_file(mounted / n_utf8, b"euro")
    assert n_utf8 in os.listdir(mounted.mnt)
    expect_errno(errno.ENAMETOOLONG, os.open, mounted / n256,
                 os.O_CREAT | os.O_WRONLY, 0o644)
    expect_errno(errno.ENAMETOOLONG, os.mkdir, mounted / n256)
    expect_errno(errno.ENAMETOOLONG, os.symlink, "t", mounted / n256)
    expect_errno(errno.ENAMETOOLONG, os.rename, mounted / n255, mounted / n256)
    expect_errno(errno.ENAMETOOLONG, os.link, mounted / n255, mounted / n256)
    assert n256 not in os.listdir(mounted.mnt)
    mounted.remount()
    assert read_file(mounted / n255) == b"long name"
    assert read_file(mounted / n_utf8) == b"euro"


def test_inode_numbers_stable_across_remount(mounted):
    paths = ["f", "d", os.path.join("d", "g"), os.path.join("d", "e"),
             os.path.join("d", "e", "h"), "l"]
    write_file(mounted / "f", b"1")
    os.mkdir(mounted / "d")
    write_file(mounted.path("d", "g"), b"2")
    os.mkdir(mounted.path("d", "e"))
    write_file(mounted.path("d", "e", "h"), b"3")
    os.symlink("f", mounted / "l")
    before = {p: os.lstat(mounted / p).st_ino for p in paths}
    before["/"] = os.stat(mounted.mnt).st_ino
    assert len(set(before.values())) == len(before), f"inode numbers not unique: {before}"
    mounted.remount()
    after = {p: os.lstat(mounted / p).st_ino for p in paths}
    after["/"] = os.stat(mounted.mnt).st_ino
    assert after == before


def test_special_names_and_dot_entries(mounted):
    for n in ["with space", "tab\there", "uni-\u00e9\u4e2d", "-dash", ".hidden", "..dots"]:
        write_file(mounted / n, n.encode())
    names = set(os.listdir(mounted.mnt))
    for n in ["with space", "tab\there", "uni-\u00e9\u4e2d", "-dash", ".hidden", "..dots"]:
        assert n in names
        assert read_file(mounted / n) == n.encode()
    assert "." not in names and ".." not in names
    raw = raw_readdir(mounted.mnt)
    assert "." in raw and ".." in raw
    assert raw["."][0] == os.stat(mounted.mnt).st_ino


# --------------------------------------------------------------------------------------
# renameat2 flags, special files
# --------------------------------------------------------------------------------------

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def renameat2(old, new, flags):
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    AT_FDCWD = -100
    r = libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), old)


def test_rename_noreplace_refuses_existing_target(mounted):
    write_file(mounted / "a", b"A")
    write_file(mounted / "b", b"B")
    expect_errno(errno.EEXIST, renameat2, mounted / "a", mounted / "b", RENAME_NOREPLACE)
    assert read_file(mounted / "a") == b"A"
    assert read_file(mounted / "b") == b"B"
    renameat2(mounted / "a", mounted / "c", RENAME_NOREPLACE)
    assert read_file(mounted / "c") == b"A"
    expect_errno(errno.ENOENT, os.stat, mounted / "a")


def test_rename_exchange_swaps_file_and_directory_across_parents(mounted):
    os.mkdir(mounted / "p1")
    os.mkdir(mounted / "p2")
    os.mkdir(mounted.path("p1", "dir"))
    write_file(mounted.path("p1", "dir", "inner"), b"inner")
    write_file(mounted.path("p2", "file"), b"file")
    dir_ino = os.stat(mounted.path("p1", "dir")).st_ino
    file_ino = os.stat(mounted.path("p2", "file")).st_ino
    renameat2(mounted.path("p1", "dir"), mounted.path("p2", "file"), RENAME_EXCHANGE)
    # p1/dir is now the file, p2/file is now the directory
    assert os.stat(mounted.path("p1", "dir")).st_ino == file_ino
    assert read_file(mounted.path("p1", "dir")) == b"file"
    assert os.stat(mounted.path("p2", "file")).st_ino == dir_ino
    assert read_file(mounted.path("p2", "file", "inner")) == b"inner"
    p2_ino = os.stat(mounted / "p2").st_ino
    assert raw_readdir(mounted.path("p2", "file"))[".."][0] == p2_ino
    assert os.stat(mounted / "p1").st_nlink == 2
    assert os.stat(mounted / "p2").st_nlink == 3
    expect_errno(errno.ENOENT, renameat2, mounted / "p1", mounted / "nope", RENAME_EXCHANGE)
    mounted.remount()
    assert raw_readdir(mounted.path("p2", "file"))[".."][0] == p2_ino
    assert os.stat(mounted / "p1").st_nlink == 2
    assert os.stat(mounted / "p2").st_nlink == 3
    assert read_file(mounted.path("p1", "dir")) == b"file"


def test_fifo_and_device_nodes(mounted):
    os.mkfifo(mounted / "fifo", 0o600)
    os.mknod(mounted / "chr", stat.S_IFCHR | 0o644, os.makedev(1, 3))
    os.mknod(mounted / "blk", stat.S_IFBLK | 0o600, os.makedev(259, 70000 & 0xfffff))
    os.mknod(mounted / "reg", stat.S_IFREG | 0o644)
    mounted.remount()
    assert stat.S_ISFIFO(os.lstat(mounted / "fifo").st_mode)
    st = os.lstat(mounted / "chr")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    st = os.lstat(mounted / "blk")
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(259, 70000 & 0xfffff)
    assert stat.S_ISREG(os.lstat(mounted / "reg").st_mode)
    assert os.lstat(mounted / "reg").st_size == 0
