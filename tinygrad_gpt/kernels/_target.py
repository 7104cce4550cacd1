"""What the kernels are compiled for, and the GEMM tile that fits it.

The GEMM micro-kernel (matmul.py) keeps a tile of MR x NC float32 numbers of C in
vector registers for its whole loop over k. How big a tile fits depends on the vector
instructions Numba generates code for:

    AVX-512: 32 registers of 16 floats  -> MR x NC = 4 x 64, 16 registers for the tile
    AVX2:    16 registers of 8 floats   -> MR x NC = 6 x 16, 12 registers for the tile
    other (ARM's NEON, old x86)         -> 6 x 16 as well (24 of NEON's 32 registers of
                                           4 floats; not measured, and `matmul` leaves
                                           the products to BLAS there)

(The 4 x 64 tile compiled for AVX2 needs 32 registers; the compiler spills it to
memory and the GEMM ran at 0.57-0.78x np.matmul's speed.) The narrow AVX2 tile is only
vectorized with LLVM's SLP vectorizer on, which Numba leaves off by default: see
kernels/__init__.py, which turns it on.

Numba compiles for the host CPU unless NUMBA_CPU_NAME / NUMBA_CPU_FEATURES say
otherwise; the features string decides which instructions LLVM may use, so it is what
is read here (an AVX2 NUMBA_CPU_FEATURES is how the AVX2 figures in matmul.py were
measured on the AVX-512 reference machine: `bench_kernels.py --emulate-avx2`). The
host's features come from Numba's own `get_host_cpu_features`, not a public API but
the function its compiler uses, so that NUMBA_ENABLE_AVX=0 is honoured too.
"""

from numba.core import config
from numba.core.codegen import get_host_cpu_features


def vector_isa():
    """"avx512", "avx2" or "other": the widest float vector instructions Numba's generated code may use."""
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    enabled = {name[1:] for name in features.split(",") if name.startswith("+")}
    if "avx512f" in enabled:
        return "avx512"
    if {"avx2", "fma"} <= enabled:
        return "avx2"
    return "other"


TILE_SHAPES = {"avx512": (4, 64), "avx2": (6, 16), "other": (6, 16)}  # (MR, NC) per instruction set
