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
LLVM's SLP vectorizer, which Numba leaves off by default: kernels/__init__.py turns it
on for AVX2 targets alone.

What Numba compiles for is read from its compiler itself: the features string in the
key of its on-disk cache, set from the host CPU or from NUMBA_CPU_NAME /
NUMBA_CPU_FEATURES (an AVX2 NUMBA_CPU_FEATURES is how the AVX2 figures in gemm.py were
measured on the AVX-512 reference machine: `bench_kernels.py --emulate-avx2`). Reading
the compiler's own string keeps the tile consistent with the code it is compiled into.
"""

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
