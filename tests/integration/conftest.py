"""pytest fixtures for the pmemfuse integration tests; helpers live in pmemfuse_helpers."""

from __future__ import annotations

import threading

import pytest

from pmemfuse_helpers import (DEFAULT_IMAGE_SIZE, DEFAULT_TEST_TIMEOUT, Mount,
                              cleanup_leftovers, fsck_check, mkfs, new_image_path,
                              remove_quietly)


# --------------------------------------------------------------------------------------
# pytest configuration
# --------------------------------------------------------------------------------------

MARKERS = [
    "slow: long-running test (still run by default)",
    "image_size(size): size passed to mkfs --size for the `image` fixture",
    "mkfs_args(*args): extra mkfs arguments for the `image` fixture",
    "mount_opts(*args): extra daemon arguments for the `mounted` fixture",
    "timeout_s(seconds): per-test watchdog timeout in seconds (default 180)",
]


def pytest_configure(config):
    # Also in pytest.ini; repeated here so they are known under any rootdir/ini choice.
    for m in MARKERS:
        config.addinivalue_line("markers", m)


def pytest_sessionfinish(session, exitstatus):
    cleanup_leftovers()


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def _session_safety_net():
    yield
    cleanup_leftovers()


@pytest.fixture(autouse=True)
def _watchdog(request):
    """Kill our daemons if the test runs longer than its timeout (default 180 s)."""
    marker = request.node.get_closest_marker("timeout_s")
    limit = float(marker.args[0]) if marker else DEFAULT_TEST_TIMEOUT
    fired = threading.Event()

    def fire():
        fired.set()
        cleanup_leftovers()

    timer = threading.Timer(limit, fire)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()
    if fired.is_set():
        pytest.fail(f"test exceeded its {limit:.0f}s watchdog; daemons were killed",
                    pytrace=False)


@pytest.fixture
def image_factory():
    """make(size='256M', *mkfs_args) -> path of a freshly formatted image in /dev/shm.
    make(None) -> just a fresh path (nothing created). All removed at teardown."""
    paths = []

    def make(size: str | None = DEFAULT_IMAGE_SIZE, *mkfs_args, format: bool = True):
        p = new_image_path()
        paths.append(p)
        if format and size is not None:
            mkfs(p, size, *mkfs_args)
        return p

    yield make
    for p in paths:
        remove_quietly(p)


@pytest.fixture
def image(request, image_factory):
    """A formatted image (size from @pytest.mark.image_size, default 256M)."""
    size_m = request.node.get_closest_marker("image_size")
    args_m = request.node.get_closest_marker("mkfs_args")
    size = size_m.args[0] if size_m else DEFAULT_IMAGE_SIZE
    args = args_m.args if args_m else ()
    return image_factory(size, *args)


@pytest.fixture
def mount_factory():
    """make(image, args=(), start=True) -> Mount; all closed at teardown."""
    mounts = []

    def make(image, args=(), start=True, mnt=None):
        m = Mount(image, mnt=mnt, args=args)
        mounts.append(m)
        if start:
            m.start()
        return m

    try:
        yield make
    finally:
        for m in reversed(mounts):
            m.close()


@pytest.fixture
def mounted(request, image, mount_factory):
    """A Mount of a fresh image (daemon args from @pytest.mark.mount_opts).

    After a passing test it also checks the end state: the daemon must unmount cleanly
    (exit 0) and `fsck.pmemfuse -f -n` must find the image clean, so every test doubles
    as a consistency check of whatever it did."""
    opts_m = request.node.get_closest_marker("mount_opts")
    args = opts_m.args if opts_m else ()
    m = mount_factory(image, args=args)
    yield m
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.passed:
        return  # the test already failed (or did not run); plain cleanup only
    if m.alive():
        m.unmount()
    if m.last_returncode is not None and m.last_returncode != 0:
        return  # the test ended on a crash on purpose; nothing to check
    rc, out = fsck_check(image)
    assert rc == 0, f"post-test fsck.pmemfuse -f -n {image} exited {rc}:\n{out}"


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
