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
    before = page_faults()
    for _ in range(5):
        extractor(clips, sampling_rate=16000, return_tensors="pt")
    # Without it: about 2000 faults a call (the 4 MB output and each block's 4 MB spectrum, faulted in anew).
    assert (page_faults() - before) / 5 < 200
