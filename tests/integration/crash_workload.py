"""Metadata-heavy random workload for the crash tests (run as a separate process, which the
test SIGKILLs together with the daemon).

usage: crash_workload.py ROOT SEED MAX_SECONDS

Runs random creates, writes, mkdirs, renames, unlinks, rmdirs, symlinks, hard links,
truncates and xattr sets under ROOT until killed, until MAX_SECONDS pass, or until the
filesystem goes away (ENOTCONN). Errors a random workload naturally causes (ENOENT,
EEXIST, ...) are ignored; any other error is printed as
"ERR <CLOCK_MONOTONIC ns> <errno name> <op> <path>" so the test can tell errors before
the kill (bugs) from errors caused by it.
"""

import errno
import os
import random
import sys
import time

EXPECTED = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR,
            errno.EINVAL, errno.ENODATA, errno.EXDEV, errno.EPERM}
GONE = {errno.ENOTCONN, errno.ECONNABORTED}


def main():
    root, seed, max_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rnd = random.Random(seed)
    deadline = time.monotonic() + max_s
    os.makedirs(os.path.join(root, "w"), exist_ok=True)

    def rdir():
        depth = rnd.choice([0, 1, 1, 2])
        parts = ["w"]
        if depth >= 1:
            parts.append(f"d{rnd.randrange(6)}")
        if depth >= 2:
            parts.append(f"e{rnd.randrange(4)}")
        return os.path.join(root, *parts)

    def rpath():
        kind = rnd.choice("fffffdl")
        if kind == "d":
            return os.path.join(rdir(), f"{'d' if rnd.random() < .5 else 'e'}{rnd.randrange(6)}")
        return os.path.join(rdir(), f"{kind}{rnd.randrange(25)}")

    def op_create(p):
        fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            os.write(fd, rnd.randbytes(rnd.choice([0, 10, 100, 4096, 5000, 20000])))
            if rnd.random() < 0.1:
                os.fsync(fd)
        finally:
            os.close(fd)

    def op_append(p):
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, rnd.randbytes(rnd.randrange(1, 9000)))
        finally:
            os.close(fd)

    def op_symlink(p):
        # Targets never resolve ("zz" is never created), so no operation can follow a
        # symlink out of the mount.
        n = rnd.choice([5, 60, 95, 200, 3000])
        os.symlink(("zz/" * 1000)[:n], p)

    def op_setxattr(p):
        # at most ~2.8 KiB in total per inode: fits one xattr block on any design
        k = rnd.randrange(4)
        size = rnd.choice([1, 10, 30, 300, 2500]) if k == 0 else rnd.choice([1, 10, 30, 100])
        os.setxattr(p, f"user.k{k}", rnd.randbytes(size))

    def op_removexattr(p):
        os.removexattr(p, f"user.k{rnd.randrange(4)}")

    ops = [
        (12, "create", lambda: op_create(rpath())),
        (4, "append", lambda: op_append(rpath())),
        (6, "mkdir", lambda: os.mkdir(rpath())),
        (8, "rename", lambda: os.rename(rpath(), rpath())),
        (8, "unlink", lambda: os.unlink(rpath())),
        (4, "rmdir", lambda: os.rmdir(rpath())),
        (4, "symlink", lambda: op_symlink(rpath())),
        (3, "link", lambda: os.link(rpath(), rpath())),
        (4, "truncate", lambda: os.truncate(rpath(), rnd.choice([0, 1, 4095, 4097, 30000]))),
        (5, "setxattr", lambda: op_setxattr(rpath())),
        (2, "removexattr", lambda: op_removexattr(rpath())),
        (2, "chmod", lambda: os.chmod(rpath(), rnd.choice([0o600, 0o755, 0o644]))),
        (2, "utime", lambda: os.utime(rpath(), ns=(rnd.randrange(1 << 60), rnd.randrange(1 << 60)))),
    ]
    names = [o[1] for o in ops]
    weights = [o[0] for o in ops]
    fns = {o[1]: o[2] for o in ops}
    nops = 0
    while time.monotonic() < deadline:
        name = rnd.choices(names, weights)[0]
        try:
            fns[name]()
            nops += 1
        except OSError as e:
            if e.errno in GONE:
                break
            if e.errno not in EXPECTED:
                print(f"ERR {time.monotonic_ns()} {errno.errorcode.get(e.errno, e.errno)} "
                      f"{name} {e.filename}", flush=True)
    print(f"OPS {nops}", flush=True)


if __name__ == "__main__":
    main()
