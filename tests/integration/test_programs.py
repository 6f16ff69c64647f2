"""Real programs on a pmemfuse mount: tar, git, sqlite3, make/gcc, rsync.

Each test drives an ordinary tool through a full workflow on the mount and checks the
result with the tool's own verifier (git fsck, PRAGMA integrity_check, diff -r, rsync
--itemize-changes) plus a metadata snapshot; the `mounted` fixture then unmounts and runs
fsck.pmemfuse on the image.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time

import pytest

from pmemfuse_helpers import diff_snapshots, read_file, run, snapshot, write_file


def need(tool, package=None):
    """Make sure TOOL is on PATH, installing PACKAGE with apt-get if it is not."""
    if shutil.which(tool):
        return shutil.which(tool)
    cp = run(["apt-get", "install", "-y", package or tool], timeout=600)
    if not shutil.which(tool):
        pytest.fail(f"{tool} missing and `apt-get install -y {package or tool}` failed:\n"
                    f"{cp.stdout[-2000:]}\n{cp.stderr[-2000:]}")
    return shutil.which(tool)


def sh(cmd, cwd, timeout=120, env=None, check=True):
    cp = run(["sh", "-c", cmd], cwd=cwd, timeout=timeout, env=env)
    if check:
        assert cp.returncode == 0, (f"`{cmd}` in {cwd} exited {cp.returncode}\n"
                                    f"stdout: {cp.stdout[-3000:]}\nstderr: {cp.stderr[-3000:]}")
    return cp


# --------------------------------------------------------------------------------------
# tar
# --------------------------------------------------------------------------------------

SOURCE_TREE = "/usr/include"


@pytest.fixture(scope="module")
def include_tar():
    """A pax tarball of /usr/include (nanosecond mtimes, owners, modes, symlinks)."""
    need("tar")
    d = tempfile.mkdtemp(prefix="pmemfuse-it-tar-", dir="/tmp")
    tar = os.path.join(d, "include.tar")
    cp = run(["tar", "--format=posix", "-C", os.path.dirname(SOURCE_TREE), "-cf", tar,
              os.path.basename(SOURCE_TREE)], timeout=300)
    assert cp.returncode == 0, cp.stderr
    yield tar
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.image_size("512M")
@pytest.mark.timeout_s(300)
def test_tar_extract_large_tree(mounted, include_tar):
    t0 = time.monotonic()
    cp = run(["tar", "-xpf", include_tar, "-C", mounted.mnt], timeout=240)
    assert cp.returncode == 0, cp.stderr
    dst = mounted / os.path.basename(SOURCE_TREE)
    cp = run(["diff", "-r", "--no-dereference", SOURCE_TREE, dst], timeout=240)
    assert cp.returncode == 0, f"diff -r found differences:\n{cp.stdout[-3000:]}{cp.stderr}"
    want = snapshot(SOURCE_TREE, with_ino=False)
    got = snapshot(dst, with_ino=False)
    assert len(got) == len(want)
    d = diff_snapshots(want, got)
    assert not d, "tree differs from the source (mode/owner/mtime/size/data):\n" + "\n".join(d)
    # a second extraction over the existing tree (tar unlinks and recreates files)
    cp = run(["tar", "-xpf", include_tar, "-C", mounted.mnt], timeout=240)
    assert cp.returncode == 0, cp.stderr
    d = diff_snapshots(want, snapshot(dst, with_ino=False))
    assert not d, "differs after re-extracting over the tree:\n" + "\n".join(d)
    mounted.remount()
    d = diff_snapshots(want, snapshot(dst, with_ino=False))
    assert not d, "differs after remount:\n" + "\n".join(d)
    # and tar can read it back: list the mount's tree, archive it, compare listings
    cp = run(["tar", "--format=posix", "-C", mounted.mnt, "-cf", "-",
              os.path.basename(SOURCE_TREE)], timeout=240, stdout=subprocess.PIPE, text=False)
    assert cp.returncode == 0, cp.stderr
    assert len(cp.stdout) > 10 * 1024 * 1024
    shutil.rmtree(dst)
    assert os.listdir(mounted.mnt) == []
    assert time.monotonic() - t0 < 200


# --------------------------------------------------------------------------------------
# git
# --------------------------------------------------------------------------------------

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent", "LC_ALL": "C",
}


def git(cwd, *args, check=True, timeout=120):
    env = dict(os.environ, **GIT_ENV)
    cp = run(["git", "-c", "init.defaultBranch=main", "-c", "safe.directory=*",
              "-c", "gc.auto=0", *args], cwd=cwd, timeout=timeout, env=env)
    if check:
        assert cp.returncode == 0, f"git {' '.join(args)} failed:\n{cp.stdout}\n{cp.stderr}"
    return cp.stdout


def test_git_workflow(mounted):
    need("git")
    repo = mounted / "repo"
    os.mkdir(repo)
    git(repo, "init", "-q")
    for i in range(300):
        sub = os.path.join(repo, f"dir{i % 10}")
        os.makedirs(sub, exist_ok=True)
        write_file(os.path.join(sub, f"file{i}.txt"), (f"line {i}\n" * (i + 1)).encode())
    write_file(os.path.join(repo, "big.bin"), os.urandom(3 * 1024 * 1024))
    os.symlink("dir0/file0.txt", os.path.join(repo, "link"))
    os.chmod(os.path.join(repo, "dir1", "file1.txt"), 0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    git(repo, "checkout", "-q", "-b", "feature")
    write_file(os.path.join(repo, "dir3", "file3.txt"), b"changed on feature\n")
    os.unlink(os.path.join(repo, "dir4", "file4.txt"))
    os.rename(os.path.join(repo, "dir5"), os.path.join(repo, "dir5-renamed"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "feature work")
    git(repo, "checkout", "-q", "main")
    assert read_file(os.path.join(repo, "dir3", "file3.txt")) == b"line 3\n" * 4
    assert os.path.isdir(os.path.join(repo, "dir5"))
    assert not os.path.exists(os.path.join(repo, "dir5-renamed"))
    write_file(os.path.join(repo, "main.txt"), b"on main\n")
    git(repo, "add", "main.txt")
    git(repo, "commit", "-q", "-m", "main work")
    git(repo, "merge", "-q", "--no-edit", "feature")
    assert read_file(os.path.join(repo, "dir3", "file3.txt")) == b"changed on feature\n"
    assert read_file(os.path.join(repo, "main.txt")) == b"on main\n"
    assert os.readlink(os.path.join(repo, "link")) == "dir0/file0.txt"
    assert os.stat(os.path.join(repo, "dir1", "file1.txt")).st_mode & 0o111
    assert git(repo, "status", "--porcelain") == ""
    log = git(repo, "log", "--format=%s").splitlines()
    assert log == ["Merge branch 'feature'", "main work", "feature work", "initial"]
    git(repo, "fsck", "--full", "--strict")
    git(repo, "gc", "-q", "--aggressive", "--prune=now")
    git(repo, "fsck", "--full", "--strict")
    # a local clone hard-links the object files
    git(mounted.mnt, "clone", "-q", "repo", "clone")
    clone = mounted / "clone"
    git(clone, "fsck", "--full")
    assert git(clone, "log", "--format=%s").splitlines() == log
    assert read_file(os.path.join(clone, "big.bin")) == read_file(os.path.join(repo, "big.bin"))
    mounted.remount()
    git(repo, "fsck", "--full", "--strict")
    assert git(repo, "status", "--porcelain") == ""
    assert git(clone, "status", "--porcelain") == ""
    git(repo, "checkout", "-q", "HEAD~1")
    assert not os.path.exists(os.path.join(repo, "dir5-renamed"))
    assert git(repo, "status", "--porcelain") == ""


# --------------------------------------------------------------------------------------
# sqlite3
# --------------------------------------------------------------------------------------

def sqlite(db, sql, timeout=120):
    cp = run(["sqlite3", "-batch", "-bail", db], input=sql, timeout=timeout)
    assert cp.returncode == 0, f"sqlite3 failed ({cp.returncode}):\n{cp.stderr}\n{sql[:500]}"
    return cp.stdout.strip()


def _sqlite_workload(db, mode):
    setup = f"PRAGMA journal_mode={mode};\n"
    assert sqlite(db, setup + "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB);"
                  "CREATE INDEX tk ON t(k);").splitlines()[0].lower() == mode.lower()
    batch = ("BEGIN;\n"
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000)\n"
             "INSERT INTO t(k, v) SELECT hex(randomblob(8)), randomblob(abs(random() % 300))"
             " FROM c;\n"
             "COMMIT;\n")
    # 100 transactions of 1,000 rows, in two sessions
    sqlite(db, "PRAGMA synchronous=FULL;\n" + batch * 50)
    sqlite(db, "PRAGMA synchronous=FULL;\n" + batch * 50)
    sql = ("BEGIN; UPDATE t SET v = zeroblob(500) WHERE id % 7 = 0; COMMIT;\n"
           "BEGIN; DELETE FROM t WHERE id % 10 = 3; COMMIT;\n"
           "BEGIN; DELETE FROM t; ROLLBACK;\n"
           "SELECT count(*) FROM t;\n"
           "PRAGMA integrity_check;\n")
    assert sqlite(db, sql).splitlines() == ["90000", "ok"]
    assert sqlite(db, "VACUUM; PRAGMA integrity_check; SELECT count(*), "
                      "sum(length(v)) > 0 FROM t;").splitlines() == ["ok", "90000|1"]


def test_sqlite_rollback_journal(mounted):
    need("sqlite3")
    db = mounted / "rb.db"
    _sqlite_workload(db, "delete")
    assert not os.path.exists(db + "-journal")
    mounted.remount()
    assert sqlite(db, "PRAGMA integrity_check; SELECT count(*) FROM t;").splitlines() == \
        ["ok", "90000"]
    assert sqlite(db, "PRAGMA journal_mode;") == "delete"


def test_sqlite_wal_mode(mounted):
    need("sqlite3")
    db = mounted / "wal.db"
    _sqlite_workload(db, "wal")
    # a reader in another process while a writer holds a write transaction
    writer = subprocess.Popen(["sqlite3", "-batch", db], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        writer.stdin.write("BEGIN; INSERT INTO t(k, v) VALUES ('pending', x'00');\n"
                           "SELECT 'inserted';\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "inserted"
        assert sqlite(db, "SELECT count(*) FROM t;") == "90000"  # not visible yet
        writer.stdin.write("COMMIT;\n")
        writer.stdin.close()
        assert writer.wait(timeout=60) == 0, writer.stderr.read()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert sqlite(db, "SELECT count(*) FROM t;") == "90001"
    mounted.remount()  # the WAL is replayed by the next open
    assert sqlite(db, "PRAGMA integrity_check; SELECT count(*) FROM t;").splitlines() == \
        ["ok", "90001"]
    assert sqlite(db, "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode;"
                      ).splitlines()[-1] == "wal"
    assert sqlite(db, "PRAGMA integrity_check;") == "ok"


# --------------------------------------------------------------------------------------
# make + gcc
# --------------------------------------------------------------------------------------

MAKEFILE = """\
CC = gcc
CFLAGS = -O2 -Wall -Werror
OBJS = main.o util.o

prog: $(OBJS)
\t$(CC) -o $@ $(OBJS)

%.o: %.c util.h
\t$(CC) $(CFLAGS) -c -o $@ $<

clean:
\trm -f prog $(OBJS)
"""

UTIL_H = "#pragma once\nunsigned long checksum(const char *s);\n#define GREETING \"{}\"\n"
UTIL_C = """\
#include "util.h"
unsigned long checksum(const char *s) {
    unsigned long h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    return h;
}
"""
MAIN_C = """\
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "util.h"
int main(int argc, char **argv) {
    /* write a file next to the binary, read it back */
    FILE *f = fopen("out.txt", "w");
    if (!f) return 2;
    for (int i = 0; i < 10000; i++) fprintf(f, "%d\\n", i);
    fclose(f);
    f = fopen("out.txt", "r");
    long sum = 0; int v;
    while (fscanf(f, "%d", &v) == 1) sum += v;
    fclose(f);
    printf("%s %s %lu %ld\\n", GREETING, argc > 1 ? argv[1] : "none", checksum("pmemfuse"), sum);
    return 0;
}
"""


def test_make_and_gcc_build_and_run(mounted):
    need("gcc")
    need("make")
    src = mounted / "src"
    os.mkdir(src)
    for name, text in (("Makefile", MAKEFILE), ("util.h", UTIL_H.format("hello")),
                       ("util.c", UTIL_C), ("main.c", MAIN_C)):
        write_file(os.path.join(src, name), text.encode())
    sh("make -j2", cwd=src)
    prog = os.path.join(src, "prog")
    assert os.stat(prog).st_mode & stat.S_IXUSR
    expected_sum = sum(range(10000))
    h = 5381
    for c in b"pmemfuse":
        h = (h * 33 + c) % (1 << 64)
    out = run([prog, "arg"], cwd=src, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"hello arg {h} {expected_sum}\n"
    # make decides by mtimes: nothing to do now, a header change rebuilds everything
    cp = sh("make", cwd=src)
    assert "Nothing to be done" in cp.stdout or "up to date" in cp.stdout, cp.stdout
    time.sleep(0.05)
    write_file(os.path.join(src, "util.h"), (UTIL_H.format("bye")).encode())
    cp = sh("make", cwd=src)
    assert "main.o" in cp.stdout and "util.o" in cp.stdout, cp.stdout
    assert run([prog, "x"], cwd=src, timeout=30).stdout == f"bye x {h} {expected_sum}\n"
    mounted.remount()
    assert run([prog, "y"], cwd=src, timeout=30).stdout == f"bye y {h} {expected_sum}\n"
    cp = sh("make", cwd=src)
    assert "Nothing to be done" in cp.stdout or "up to date" in cp.stdout, cp.stdout
    sh("make clean", cwd=src)
    assert sorted(os.listdir(src)) == ["Makefile", "main.c", "out.txt", "util.c", "util.h"]


# --------------------------------------------------------------------------------------
# rsync
# --------------------------------------------------------------------------------------

RSYNC_SRC = "/usr/include/linux"


def itemize(src, dst):
    cp = run(["rsync", "-a", "--dry-run", "--itemize-changes", src + "/", dst + "/"],
             timeout=120)
    assert cp.returncode == 0, cp.stderr
    return [ln for ln in cp.stdout.splitlines() if ln.strip()]


def test_rsync_tree_in_and_verify(mounted):
    need("rsync")
    dst = mounted / "linux"
    cp = run(["rsync", "-a", RSYNC_SRC + "/", dst + "/"], timeout=180)
    assert cp.returncode == 0, cp.stderr
    assert itemize(RSYNC_SRC, dst) == []
    cp = run(["diff", "-r", "--no-dereference", RSYNC_SRC, dst], timeout=120)
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr
    d = diff_snapshots(snapshot(RSYNC_SRC, with_ino=False), snapshot(dst, with_ino=False))
    assert not d, "\n".join(d)
    # change a few files on the mount: rsync must notice exactly those and repair them
    changed = sorted(n for n in os.listdir(dst) if n.endswith(".h"))[:3]
    for n in changed:
        with open(os.path.join(dst, n), "ab") as f:
            f.write(b"/* local change */\n")
    got = itemize(RSYNC_SRC, dst)
    assert sorted(ln.split(None, 1)[1] for ln in got) == changed, got
    cp = run(["rsync", "-a", "--inplace", RSYNC_SRC + "/", dst + "/"], timeout=180)
    assert cp.returncode == 0, cp.stderr
    mounted.remount()
    assert itemize(RSYNC_SRC, dst) == []
    cp = run(["diff", "-r", "--no-dereference", RSYNC_SRC, dst], timeout=120)
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr
