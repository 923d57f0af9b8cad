"""This process's resident memory, read from Linux's ``/proc/self/status``, for the memory benchmarks.

``reset_peak`` sets the high-water mark ``VmHWM`` to the current resident size (``/proc/self/clear_refs``), so
``rss_kib("VmHWM")`` after some work is the peak of that work alone.
"""

from __future__ import annotations


def rss_kib(field: str) -> int:
    """``field`` (``VmRSS``: resident now, ``VmHWM``: the peak since the last reset) in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    """Set ``VmHWM`` to the current resident size."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
