"""pmemfuse-stat (tools/stat.cc): the human report agrees with user.pmemfuse.stats
(daemon/control.cc), --json hands the daemon's object through, the journal section counts
commits, sections of features turned off show as "off", and errors are one line with
exit 1 (runtime) or 2 (usage).

Mounts use flush_interval=0, so the counters stay still between the tool's read and ours.
"""

import json
import os
import re

import pytest

from pmemfuse_helpers import MiB, STAT, require, run

STATS = "user.pmemfuse.stats"
NO_TIMER = ("-o", "flush_interval=0")


def xattr_stats(m) -> dict:
    return json.loads(os.getxattr(m.mnt, STATS))


def stat_tool(*args):
    return run([require(STAT), *args], timeout=20)


def report(m) -> dict:
    """Runs pmemfuse-stat MNT and returns {label: value} of its lines (section headers
    included, with an empty value when they have none)."""
    cp = stat_tool(m.mnt)
    assert cp.returncode == 0, cp.stderr
    assert cp.stderr == ""
    lines = {}
    for line in cp.stdout.splitlines():
        label, _, value = line.strip().partition(":")
        lines[label] = value.strip()
    return lines


def human_size(n: int) -> str:
    """tools/stat.cc's human_size."""
    if n < 1024:
        return f"{n} B"
    v, units = n / 1024, ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    u = 0
    while v >= 1024 and u < 5:
        v, u = v / 1024, u + 1
    return f"{v:.1f} {units[u]}"


def same_shape(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_shape(a[k], b[k]) for k in a)
    return type(a) is type(b)


@pytest.mark.mount_opts(*NO_TIMER)
def test_human_report_agrees_with_the_xattr(mounted):
    data = os.urandom(3 * MiB)
    with open(os.path.join(mounted.mnt, "f"), "wb") as f:
        f.write(data)
    r = report(mounted)
    s = xattr_stats(mounted)
    c, sp = s["cache"], s["space"]
    assert c["app_bytes_written"] == 3 * MiB
    assert r["mount"] == mounted.mnt and r["read-only"] == "no"
    assert r["written by apps"] == "3.0 MiB"
    assert r["written to pmem"] == human_size(c["pmem_bytes_written"])
    assert r["dirty"] == human_size(c["dirty_bytes"]) and c["dirty_bytes"] > 0
    assert r["capacity"] == human_size(c["capacity_bytes"])
    hits, misses = c["hits"], c["misses"]
    assert r["hit rate"].endswith(f"({hits} hits, {misses} misses)")
    amp = r["write amplification"]
    assert re.fullmatch(r"[0-9.]+ cache \(pmem/app\), [0-9.]+ device \(media/app\)", amp), amp
    device = float(amp.split(", ")[1].split()[0])
    assert device == pytest.approx(s["media"]["bytes_stored"] / c["app_bytes_written"], abs=0.006)
    used = sp["blocks"] - sp["blocks_free"]
    assert r["blocks used"].startswith(f"{used} of {sp['blocks']} (")
    assert r["inodes used"].startswith(f"{sp['inodes'] - sp['inodes_free']} of {sp['inodes']} (")
    assert r["commits"] == str(s["journal"]["commits"])
    assert r["slots mapped"] == f"{s['dax_windows']['mapped']} of {s['dax_windows']['slots']}"
    for label in ("flush batches", "errors", "bytes stored", "bytes logged", "fallbacks"):
        assert label in r, f"no {label!r} line in {r}"


def test_report_values_are_aligned(mounted):
    cp = stat_tool(mounted.mnt)
    cols = {len(m.group(1)) for m in re.finditer(r"^(.*?: *)\S", cp.stdout, re.M)}
    assert len(cols) == 1, cp.stdout


@pytest.mark.mount_opts(*NO_TIMER)
def test_json_is_the_daemons_object(mounted):
    cp = stat_tool("--json", mounted.mnt)
    assert cp.returncode == 0, cp.stderr
    tool, direct = json.loads(cp.stdout), xattr_stats(mounted)
    assert same_shape(tool, direct)
    assert tool["space"] == direct["space"]
    assert {"cache", "dax_windows", "journal", "writeback", "media", "space"} <= tool.keys()


def test_journal_counts_commits(mounted):
    before = xattr_stats(mounted)["journal"]
    os.mkdir(os.path.join(mounted.mnt, "d"))
    after = xattr_stats(mounted)["journal"]
    assert after["commits"] > before["commits"]
    assert after["bytes_logged"] > before["bytes_logged"]
    assert report(mounted)["commits"] == str(xattr_stats(mounted)["journal"]["commits"])


@pytest.mark.mount_opts("-o", "cache_size=0,dax_window=0")
def test_features_turned_off_show_as_off(mounted):
    s = xattr_stats(mounted)
    assert "cache" not in s and "dax_windows" not in s
    r = report(mounted)
    assert r["cache"] == "off" and r["dax windows"] == "off"
    assert "hit rate" not in r and "slots mapped" not in r
    assert r["commits"] == str(s["journal"]["commits"])
    cp = stat_tool("--json", mounted.mnt)
    assert json.loads(cp.stdout).keys() == s.keys()


def one_line_error(cp, code: int, pattern: str):
    assert cp.returncode == code, (cp.returncode, cp.stderr)
    assert cp.stdout == ""
    assert cp.stderr.count("\n") == 1 and re.search(pattern, cp.stderr), cp.stderr


def test_not_a_pmemfuse_mount(tmp_path):
    one_line_error(stat_tool(str(tmp_path)), 1, rf"{re.escape(str(tmp_path))} is not a pmemfuse mount point")


def test_subdirectory_names_the_mount_point(mounted):
    sub = os.path.join(mounted.mnt, "sub")
    os.mkdir(sub)
    one_line_error(stat_tool(sub), 1, rf"not the root of a pmemfuse mount \(try its mount point, "
                                      rf"{re.escape(mounted.mnt)}\)")


def test_file_and_missing_path(mounted, tmp_path):
    f = os.path.join(mounted.mnt, "f")
    open(f, "w").close()
    one_line_error(stat_tool(f), 1, "is not a directory")
    one_line_error(stat_tool(str(tmp_path / "nope")), 1, "No such file or directory")


def test_usage_errors_exit_2():
    one_line_error(stat_tool(), 2, "MOUNTPOINT is required")
    one_line_error(stat_tool("--frobnicate", "/tmp"), 2, "frobnicate")
    one_line_error(stat_tool("/tmp", "/var"), 2, "pmemfuse-stat")


def test_help_and_version():
    cp = stat_tool("--help")
    assert cp.returncode == 0 and "MOUNTPOINT" in cp.stdout and "--json" in cp.stdout
    cp = stat_tool("--version")
    assert cp.returncode == 0 and cp.stdout.startswith("pmemfuse-stat ")
