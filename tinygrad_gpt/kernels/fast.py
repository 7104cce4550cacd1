"""The fast kernels: Numba-compiled versions of every function in reference.py.

Same names, signatures and results (to rounding) as the references; the tests hold
each to its reference in float32 and float64 (tests/test_kernels.py). Importing this
module imports Numba; `kernels.use("fast")` (the default) does that at the first
kernel call, not at `import tinygrad_gpt`.

| module          | kernels                                                        |
|-----------------|----------------------------------------------------------------|
| gemm            | matmul (the dispatcher the ops call), gemm, bmm                |
| softmax         | softmax_forward (optional causal mask), softmax_backward       |
| layernorm       | layernorm_forward, layernorm_backward                          |
| gelu            | gelu_forward, gelu_backward ("none" = erf, "tanh")             |
| cross_entropy   | cross_entropy_forward, cross_entropy_backward (ignore_index)   |
| embedding       | embedding_backward (deterministic scatter-add)                 |
| adamw           | adamw_step (in place)                                          |
| attention       | attention_forward, attention_backward (fused per head)         |

Threads. Numba's parallel loops run on an OpenMP thread pool (GNU libgomp), and NumPy's
matmul on OpenBLAS's own pool. By default both keep idle threads spinning for a long
time after each call (libgomp about 5 ms here), and on a machine with few cores the two
pools then take turns at the CPU in scheduler time slices: measured on 2 cores, a
0.4 ms np.matmul followed by a 1 ms Numba kernel took 8 ms instead of 1.4 ms.
Putting idle OpenMP threads to sleep at once (OMP_WAIT_POLICY=PASSIVE) avoids that,
but then every parallel kernel call must wake the sleeping thread: about 45 us on the
reference machine (a 2-vCPU virtual machine).

This package sets the middle way, unless the user has set OMP_WAIT_POLICY or
GOMP_SPINCOUNT: idle OpenMP threads spin for GOMP_SPINCOUNT = 10000 rounds (about 0.1 ms
of CPU here) and then sleep. The kernels of a training step follow each other closely
enough to find the thread still awake, and on CPUs with AVX-512 or AVX2 BLAS never
competes with them, because `matmul` sends every product that OpenBLAS would run on
several threads to the Numba GEMM (see `uses_numba_gemm`). Measured whole training
steps, alternating runs on a quiet machine: baby GPT (4 layers, C=128) 22.9-23.8 ms
against 25.3-26.3 ms with PASSIVE; 2 layers, C=64: 6.4-7.7 against 7.3-7.8 ms. Kernel
calls too small to gain from a second thread run on one (see _threads.py). The variables
must be set before Numba starts its thread pool, which is why this is the first thing
the package does.

The SLP vectorizer. LLVM has two auto-vectorizers: the loop vectorizer, which Numba runs,
and the SLP vectorizer, which packs independent scalar operations of straight-line code
into vector ones. Numba turned SLP off by default in 2023 (numba#8852) after LLVM
miscompiled code with it. The GEMM tile for AVX2 (6 x 16, see _target.py) is such
straight-line code once LLVM has unrolled its short loops, and without SLP it compiles to
scalar FMAs: 3-12 instead of about 125 GFLOP/s on one core. So when Numba compiles for
AVX2 without AVX-512, and the user has not set NUMBA_SLP_VECTORIZE, this package sets
Numba's `config.SLP_VECTORIZE = 1` (the attribute rather than the environment variable:
a changed NUMBA_* variable makes Numba re-read all its settings at the next compilation,
undoing ones the user made in code). The kernel tests pass with it, compiled for AVX2 (CI
runs them that way). It applies to the user's own Numba functions compiled in the same
process too, and Numba's on-disk cache does not record it: after changing it, delete the
cache (`tinygrad_gpt/kernels/__pycache__`). With AVX-512 nothing needs it and it stays off.

Thread placement. A sleeping worker thread is sometimes woken on the core of the main
thread, and the two then share one core until the scheduler moves one. With spinning
threads that is worse than with sleeping ones: the thread that waits at the end of a
parallel loop spins on the core the other one needs. A training step keeps the worker
awake (so it stays on its core), but calls separated by pauses, as in a benchmark of
one kernel, let it fall asleep and wake in the wrong place: measured, a baby-GPT-sized
product then took 0.65 ms instead of 0.09-0.15 ms, call after call. Pinning the
threads (OMP_PROC_BIND=true in the environment before the first kernel call) removes
that, which is why benchmarks/bench_kernels.py pins. This package does not pin by
default, because pinning every process's main thread to core 0 would pile up several
processes on one core; in whole training steps pinning measured the same (22.9-23.2 ms).
"""

import os

if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from . import _target  # noqa: E402

if _target.vector_isa() == "avx2" and "NUMBA_SLP_VECTORIZE" not in os.environ:
    from numba.core import config

    config.SLP_VECTORIZE = 1

from .adamw import adamw_step  # noqa: E402
from .attention import attention_backward, attention_forward  # noqa: E402
from .cross_entropy import cross_entropy_backward, cross_entropy_forward  # noqa: E402
from .embedding import embedding_backward  # noqa: E402
from .gelu import gelu_backward, gelu_forward  # noqa: E402
from .gemm import bmm, gemm, matmul, uses_numba_gemm  # noqa: E402
from .layernorm import layernorm_backward, layernorm_forward  # noqa: E402
from .softmax import softmax_backward, softmax_forward  # noqa: E402
