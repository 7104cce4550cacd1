"""The matmul dispatch: which products run on the handwritten Numba GEMM, which on BLAS.

`kernels.gemm.matmul` asks `uses_numba_gemm` on every call. In order, the answer comes from:

1. TINYGPT_MATMUL=blas or =numba in the environment, for every product;
2. the calibration of this machine (calibrate.py): both paths timed here, per class of
   products (`product_class`), at the first product of a process, and cached;
3. with TINYGPT_CALIBRATE=0, the fixed rule `fixed_rule` below, whose docstring has the
   measurements it was built from (an AMD EPYC with AVX-512).
"""

import contextlib
import math
import os
import sys

import numpy as np

from .target import vector_isa

# OpenBLAS runs a product on one thread when M * N * K is at most this (65536 times its
# GEMM_MULTITHREAD_THRESHOLD of 4); above it, it wakes its worker threads.
BLAS_SINGLE_THREAD_WORK = 65536 * 4
BATCH_MIN_WORK = 2**22  # multiply-adds of a whole batch of small matrices from which the Numba GEMM runs them
RULE_MEASURED = vector_isa() in ("avx512", "avx2")  # instruction sets the rule was measured on; elsewhere BLAS


_forced = None  # "numba" or "blas" while `forced_path` is active (the calibration's own timings)
_calibrated_paths = None  # {class: uses Numba?} once this process has its calibration


def product_class(a_shape, b_shape):
    """The calibration class of a product of 2-D or batched matrices (calibrate.PRODUCT_CLASSES).

    The lines between classes are those of `fixed_rule`: above BLAS_SINGLE_THREAD_WORK
    multiply-adds per matrix (or BATCH_MIN_WORK for a whole batch) OpenBLAS would wake its threads.
    """
    M, K = a_shape[-2:]
    N = b_shape[-1]
    if len(a_shape) == 2 and len(b_shape) == 2:
        return "linear_large" if M * N * K > BLAS_SINGLE_THREAD_WORK else "linear_small"
    batch = math.prod(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    large = M * N * K > BLAS_SINGLE_THREAD_WORK or batch * M * N * K >= BATCH_MIN_WORK
    return "batched_large" if large else "batched_small"


@contextlib.contextmanager
def forced_path(path):
    """Within the block, every product runs on `path` ("numba" or "blas"), as TINYGPT_MATMUL would make it."""
    global _forced
    previous, _forced = _forced, path
    try:
        yield
    finally:
        _forced = previous


def calibration_enabled():
    """False when TINYGPT_CALIBRATE=0 (or "false", "no", "off") is set: then `fixed_rule` decides."""
    return os.environ.get("TINYGPT_CALIBRATE", "1").strip().lower() not in ("0", "false", "no", "off")


def set_calibration(paths):
    """Use {class: uses Numba?} for the rest of the process (`tinygpt tune` after measuring; None: calibrate again)."""
    global _calibrated_paths
    _calibrated_paths = paths


def _calibrated_path(a_shape, b_shape):
    """True/False from this machine's calibration (measuring it at the first call of the process)."""
    if _calibrated_paths is None:
        from .calibrate import calibrate

        set_calibration(calibrate(progress=sys.stderr)["paths"])
    return _calibrated_paths[product_class(a_shape, b_shape)]


def uses_numba_gemm(a_shape, b_shape):
    """True when `matmul` runs the product on the handwritten Numba GEMM, False for NumPy's BLAS.

    TINYGPT_MATMUL=numba|blas first, then this machine's calibration, or `fixed_rule`
    when TINYGPT_CALIBRATE=0 (see the module docstring). Products of a 1-D operand
    always go to BLAS.
    """
    if len(a_shape) < 2 or len(b_shape) < 2:
        return False
    mode = _forced or os.environ.get("TINYGPT_MATMUL")
    if mode in ("numba", "blas"):
        return mode == "numba"
    if calibration_enabled():
        return _calibrated_path(a_shape, b_shape)
    return fixed_rule(a_shape, b_shape)


def fixed_rule(a_shape, b_shape):
    """The rule used without calibration: True for the Numba GEMM, False for NumPy's BLAS.

    Rule: on a CPU for which Numba generates AVX-512 or AVX2 code, the Numba GEMM for
    every product whose matrices have M * N * K above BLAS_SINGLE_THREAD_WORK = 2^18
    multiply-adds, the products OpenBLAS would spread over its threads, and for batches
    of smaller matrices worth BATCH_MIN_WORK = 2^22 multiply-adds in all (the attention
    products of the baby GPT: 48 x 64 x 64 x 32); NumPy's BLAS for the rest, which
    OpenBLAS runs on the calling thread (decoding with the KV cache, tiny models). On
    any other CPU (ARM, where the tile was never measured), BLAS for every product.
    The rule ignores the dtype: in float64, which only the gradient checks use, the
    AVX-512 tile fills all 32 registers and the two paths measured about even. Both
    operands must be at least 2-D (`uses_numba_gemm` checks).

    Why a rule of instruction sets is not enough (issue 15): on an Intel Xeon with
    AVX-512 and 2 vCPUs the same rule sent the linear products to a GEMM reaching
    100-140 GFLOP/s against np.matmul's 200-290, and steps ran at 0.38-0.50x PyTorch's.
    Hence the calibration, which measures instead of assuming.

    Why, measured on the reference machine (a 2-vCPU virtual machine, OpenBLAS 0.3.31,
    float32):

    * Whole training steps (zero_grad, forward, backward, AdamW), alternating runs on a
      quiet machine: baby GPT (4 layers, C=128, B=12, T=64) 19.8-19.9 ms with the
      Numba GEMM on the products above 2^18 against 31.6-34.1 ms with BLAS everywhere;
      2 layers, C=64, B=32, T=32: 5.3-5.6 against 6.9-8.5 ms; 6 layers, C=384, B=8,
      T=256: 440 against 766 ms. Adding the batches above 2^22 changed no step time
      measurably (baby 23.5-24.1 against 23.3-24.2 ms, an earlier version).
    * Keeping OpenBLAS's threads asleep is half of it. Its idle threads spin after each
      multithreaded product and then compete for the two cores with the Numba kernels
      that follow; a rule that sent only the largest products to the Numba GEMM
      measured slower than either extreme (baby GPT 49-54 ms, against 44-47 ms for
      each extreme, before the allocator and thread settings of this package).
    * Product by product, alone (benchmarks/bench_kernels.py, threads pinned): the
      Numba GEMM path is faster than np.matmul on every product of both GPTs, the
      smallest (the baby lm_head's, 6.4 M multiply-adds, about 45 us) included; the
      README has the table.
    * With AVX2 (its 6 x 16 tile, see tuning/target.py), measured by generating AVX2 code on
      the reference machine (`bench_kernels.py --emulate-avx2`; not measured on a real
      AVX2 CPU; the machine's OpenBLAS runs AVX2 kernels anyway): product by product
      the Numba GEMM is slower than np.matmul alone on most linear products (0.71-0.99x
      on 25 of 30, 1.00-1.03x on five) and on two of the twelve attention products
      (all twelve: 0.95-1.54x), but whole training steps are faster with the rule,
      OpenBLAS's spinning threads again: baby GPT 28.1-31.3 ms against 35.2-39.8 ms with
      BLAS everywhere, 6 layers, C=384: 773 against 819 ms. So the rule holds there too, for the steps rather than the
      products. (The AVX-512 tile compiled for AVX2 spilled: 0.57-0.78x np.matmul.)
    * When another process keeps one of the two cores busy, OpenBLAS falls apart (a baby
      block took 154 ms against 12.6 ms with the Numba GEMM; single products 10-750 ms
      instead of 0.1-4 ms) while the Numba kernels slow down about twice: another reason
      to keep the large products off BLAS.
    """
    if not RULE_MEASURED:
        return False
    M, K = a_shape[-2:]
    N = b_shape[-1]
    if M * N * K > BLAS_SINGLE_THREAD_WORK:
        return True
    if len(a_shape) == 2 and len(b_shape) == 2:
        return False
    batch = math.prod(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    return batch * M * N * K >= BATCH_MIN_WORK
