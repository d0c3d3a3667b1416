"""Readers for /proc/PID: CPU time (utime+stime) and memory (VmRSS, VmHWM)."""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` so far (resolution 1/CLK_TCK, i.e. 10 ms)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields from #3 (state) on
    utime, stime = int(fields[11]), int(fields[12])  # #14 and #15
    return (utime + stime) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    """A `kB` value of /proc/PID/status, e.g. VmRSS or VmHWM."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss_mb(pid: int) -> float:
    return status_kb(pid, "VmRSS") / 1024


def hwm_mb(pid: int) -> float:
    return status_kb(pid, "VmHWM") / 1024


def system_busy_s() -> float:
    """CPU seconds all CPUs have spent busy since boot (/proc/stat: all but idle, iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def self_cpu_s() -> float:
    """CPU seconds of this process (all its threads)."""
    t = os.times()
    return t.user + t.system
