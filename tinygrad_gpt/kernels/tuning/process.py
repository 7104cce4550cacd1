"""`tune_process()`: the process-wide settings that make a training process fast.

Importing tinygrad_gpt changes nothing outside the package: no environment variable,
no allocator setting, no Numba configuration. The settings below pay for a whole
training process, and they reach beyond this package (every array of the process,
every OpenMP loop in it), so they are applied only when a program asks for them by
calling this function first: the `tinygpt` command, the examples and the benchmarks do.

    import tinygrad_gpt
    tinygrad_gpt.tune_process()   # before the first kernel call

What it sets, each only where the user has not set it already (their choice wins):

* glibc's malloc keeps freed memory for the next step (allocator.py): a baby-GPT step
  41-42 ms with glibc's defaults, 25-26 ms with this.
* idle OpenMP threads spin for GOMP_SPINCOUNT = 10000 rounds, about 0.1 ms, then
  sleep (threads.py explains why, with measurements). It must be set before Numba
  starts its thread pool, at the first parallel kernel call; later it has no effect.

One setting is not here because it belongs to compiling the kernels, not to the
process: when Numba compiles for AVX2 without AVX-512, loading the fast kernels
turns on Numba's SLP vectorizer, which the 6 x 16 GEMM tile needs (target.py).
Nothing else in this function imports Numba, so it is safe in reference mode.
"""

import os

from . import allocator

OPENMP_SPIN_ROUNDS = "10000"


def tune_process():
    """Apply the process-wide settings above; returns {setting: applied?} (False where the user's choice was kept).

    Call it once at the start of a program, before the first kernel call; calling it
    again changes nothing more.
    """
    applied = {"malloc": allocator.configure_malloc()}
    applied["openmp_spin"] = "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ
    if applied["openmp_spin"]:
        os.environ["GOMP_SPINCOUNT"] = OPENMP_SPIN_ROUNDS
    return applied
