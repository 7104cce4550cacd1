"""What the kernels are compiled for: whether Numba generates AVX-512 code on this machine.

The GEMM micro-kernel (matmul.py) keeps a 4 x 64 float32 tile in 16 of AVX-512's 32
vector registers. Compiled for a CPU without AVX-512 (AVX2: 16 registers of 8 floats,
most laptops; NEON on ARM: 32 registers of 4 floats) the same tile needs 32 or 64
registers, and the compiler spills it to memory. The dispatch rule of `matmul` asks
this module whether the tile fits.

Numba compiles for the host CPU unless NUMBA_CPU_NAME / NUMBA_CPU_FEATURES say
otherwise; the features string is what decides which instructions LLVM may use, so it
is what is read here (setting NUMBA_CPU_FEATURES to an AVX2 list is how the AVX2
figures in matmul.py were measured on the AVX-512 reference machine). The host's
features are taken from Numba's own `get_host_cpu_features`, not a public API but the
function its compiler uses, so that NUMBA_ENABLE_AVX=0 is honoured too.
"""

from numba.core import config
from numba.core.codegen import get_host_cpu_features


def compiles_for_avx512():
    """True when Numba's generated code may use AVX-512 (the features it compiles for include avx512f)."""
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return "+avx512f" in features.split(",")
