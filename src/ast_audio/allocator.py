"""Keep freed memory in the process for reuse, instead of handing it back to the system (glibc)."""

from __future__ import annotations

import sys

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit systems.
_MAX_MMAP_THRESHOLD = 32 * 2**20


def keep_freed_memory(threshold_bytes: int = _MAX_MMAP_THRESHOLD) -> bool:
    """Let the process keep and reuse freed blocks of up to `threshold_bytes` rather than return them.

    By default glibc maps large blocks (features, spectra, model inputs: a few MB each) fresh from the
    system and gives them back when freed, and the next batch faults every page in again: about 2000 page
    faults for one batch of 8 ten-second clips, a third of feature extraction's time on a virtual machine.
    This raises the mmap and trim thresholds (process-wide; the resident size then stays at its peak).
    The `ast-audio` command calls it; call it in a long-running job of your own. Returns False where it does
    not apply (not Linux with glibc).
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    threshold = min(int(threshold_bytes), _MAX_MMAP_THRESHOLD)
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * threshold))


def return_freed_memory(threshold_bytes: int = 128 * 2**10) -> bool:
    """Map blocks above `threshold_bytes` fresh from the system and give them back when freed, at a fixed
    threshold (glibc otherwise raises it to the largest block freed, and a long-running server whose threads
    free buffers of many sizes then fragments its heaps: its resident size crept up by about 50 MB per 1000
    requests; at a fixed 128 KB it stayed between 331 and 439 MB over 10,000, the same median in both halves).
    `ast-audio serve` calls it.
    Returns False where it does not apply (not Linux with glibc)."""
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)))


def _mallopt():
    """glibc's mallopt, or None where there is none (not Linux, or another C library)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # here, not at module level: 4 ms that `ast-audio --help` does not need

    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
