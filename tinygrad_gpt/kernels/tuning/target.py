"""What the kernels are compiled for, and the GEMM tile that fits it.

The GEMM micro-kernel (gemm.py) keeps a tile of MR x NC float32 numbers of C in
vector registers for its whole loop over k. How big a tile fits depends on the vector
instructions Numba generates code for:

    AVX-512: 32 registers of 16 floats  -> MR x NC = 4 x 64, 16 registers for the tile
    AVX2:    16 registers of 8 floats   -> MR x NC = 6 x 16, 12 registers for the tile
    other (ARM's NEON, old x86)         -> 4 x 64, as before this module existed: never
                                           measured, and `matmul` leaves the products
                                           to BLAS there

The 4 x 64 tile compiled for AVX2 needs 32 registers; the compiler spills it to memory
and the GEMM ran at 0.57-0.78x np.matmul's speed. The 6 x 16 tile is vectorized only by
LLVM's SLP vectorizer, which Numba leaves off by default: `configure_numba` below turns
it on for AVX2 targets alone, when the fast kernels are loaded.

What Numba compiles for is read from its compiler itself: the features string in the
key of its on-disk cache, set from the host CPU or from NUMBA_CPU_NAME /
NUMBA_CPU_FEATURES (an AVX2 NUMBA_CPU_FEATURES is how the AVX2 figures in gemm.py were
measured on the AVX-512 reference machine: `bench_kernels.py --emulate-avx2`). Reading
the compiler's own string keeps the tile consistent with the code it is compiled into.

The SLP vectorizer. LLVM has two auto-vectorizers: the loop vectorizer, which Numba runs,
and the SLP vectorizer, which packs independent scalar operations of straight-line code
into vector ones. Numba turned SLP off by default in 2023 (numba#8852) after LLVM
miscompiled code with it. The GEMM tile for AVX2 (6 x 16, see tuning/target.py) is such
straight-line code once LLVM has unrolled its short loops, and without SLP it compiles to
scalar FMAs: 3-12 instead of about 125 GFLOP/s on one core. So when Numba compiles for
AVX2 without AVX-512, and the user has not set NUMBA_SLP_VECTORIZE, loading the fast
kernels (fast.py) sets Numba's `config.SLP_VECTORIZE = 1` (the attribute rather than the environment variable:
a changed NUMBA_* variable makes Numba re-read all its settings at the next compilation,
undoing ones the user made in code). The kernel tests pass with it, compiled for AVX2 (CI
runs them that way). It applies to the user's own Numba functions compiled in the same
process too, and Numba's on-disk cache does not record it: after changing it, delete the
cache (`tinygrad_gpt/kernels/__pycache__`). With AVX-512 nothing needs it and it stays off.

"""

import os

from numba.core import config
from numba.core.registry import cpu_target


def compiled_features():
    """The CPU features Numba's compiler generates code for, as LLVM spells them ("+avx2,-avx512f,...")."""
    return cpu_target.target_context.codegen().magic_tuple()[2]


def vector_isa(features=None):
    """"avx512", "avx2" or "other": the widest float vector instructions in `features` (default: Numba's)."""
    features = compiled_features() if features is None else features
    enabled = {name[1:] for name in features.split(",") if name.startswith("+")}
    if "avx512f" in enabled:
        return "avx512"
    if {"avx2", "fma"} <= enabled:
        return "avx2"
    return "other"


TILE_SHAPES = {"avx512": (4, 64), "avx2": (6, 16), "other": (4, 64)}  # (MR, NC) per instruction set


def configure_numba():
    """Turn on Numba's SLP vectorizer when compiling for AVX2 without AVX-512, unless NUMBA_SLP_VECTORIZE is set.

    Called by fast.py as the fast kernels are loaded, before any of them compiles (see
    the module docstring for why, and why as an attribute). Returns True if it changed it.
    """
    if vector_isa() != "avx2" or "NUMBA_SLP_VECTORIZE" in os.environ:
        return False
    config.SLP_VECTORIZE = 1
    return True
