"""keep_freed_memory: batch after batch of features reuses memory instead of faulting fresh pages in."""

from __future__ import annotations

import resource
import sys

import numpy as np
import pytest

from ast_audio import ASTFeatureExtractor, keep_freed_memory


def page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_repeated_batches_stop_faulting_pages_in():
    clips = list(np.random.default_rng(0).standard_normal((8, 160000), dtype=np.float32) * 0.1)
    extractor = ASTFeatureExtractor()
    assert keep_freed_memory()
    for _ in range(3):
        extractor(clips, sampling_rate=16000, return_tensors="pt")
    per_call = []
    for _ in range(3):  # the quietest of three windows: other threads' faults (torch's pools) land in some
        before = page_faults()
        for _ in range(5):
            extractor(clips, sampling_rate=16000, return_tensors="pt")
        per_call.append((page_faults() - before) / 5)
    # Without it: about 2000 faults a call (the 4 MB output and each block's 4 MB spectrum, faulted in anew).
    assert min(per_call) < 200, per_call


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_return_freed_memory_gives_large_blocks_back():
    """After keep_freed_memory (the batch commands), freed 4 MB blocks stay resident; with return_freed_memory
    (the server) they go back to the system. Run in a child so this process's allocator is left alone."""
    import subprocess

    code = """
import sys, numpy as np
from ast_audio.allocator import keep_freed_memory, return_freed_memory
def rss():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')) / 1024
(keep_freed_memory if sys.argv[1] == 'keep' else return_freed_memory)()
before = rss()
blocks = [np.ones(2**19) for _ in range(8)]  # 8 blocks of 4 MB, touched (below the 64 MB trim threshold)
del blocks
print(rss() - before)
"""
    kept = float(subprocess.run([sys.executable, "-c", code, "keep"], capture_output=True, text=True).stdout)
    returned = float(subprocess.run([sys.executable, "-c", code, "return"], capture_output=True, text=True).stdout)
    assert kept > 16 and returned < 8, (kept, returned)
