"""The malloc tuning done at import (tinygrad_gpt/_allocator.py)."""

import platform
import resource

import numpy as np
import pytest

import tinygrad_gpt  # noqa: F401  (importing the package applies the tuning)
from tinygrad_gpt import _allocator


def test_the_users_own_malloc_tuning_is_respected():
    assert not _allocator.user_tuned_malloc({})
    assert _allocator.user_tuned_malloc({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert _allocator.user_tuned_malloc({"MALLOC_TRIM_THRESHOLD_": "65536"})
    assert _allocator.user_tuned_malloc({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=65536"})
    assert not _allocator.user_tuned_malloc({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})


GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC or _allocator.user_tuned_malloc(), reason="needs glibc's malloc with its default tuning")
def test_a_steps_arrays_are_reused_without_fresh_page_faults():
    # Like a training step: 16 MiB of 2 MiB arrays live at once, then all freed. With
    # glibc's defaults the freed memory goes back to the system and every step faults
    # its pages in again (measured: 4066 faults per step, about 8 x 512 pages of 4 KiB);
    # with the tuning the next step reuses them.
    assert _allocator.MALLOC_CONFIGURED
    size = 2 * 2**20 // 8  # float64 elements in 2 MiB

    def step():
        arrays = [np.ones(size) for _ in range(8)]
        return sum(a[0] for a in arrays)

    step()  # the heap grows once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    faults_per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
    assert faults_per_step < 8 * 512 / 10, f"{faults_per_step} page faults per step"
