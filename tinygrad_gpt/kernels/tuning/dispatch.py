"""The matmul dispatch rule: which products run on the handwritten Numba GEMM, which on BLAS.

`kernels.gemm.matmul` asks `uses_numba_gemm` on every call; the measurements behind
the rule are in its docstring. TINYGPT_MATMUL=blas or =numba in the environment
overrides it.
"""

import math
import os

import numpy as np

from .target import vector_isa

# OpenBLAS runs a product on one thread when M * N * K is at most this (65536 times its
# GEMM_MULTITHREAD_THRESHOLD of 4); above it, it wakes its worker threads.
BLAS_SINGLE_THREAD_WORK = 65536 * 4
BATCH_MIN_WORK = 2**22  # multiply-adds of a whole batch of small matrices from which the Numba GEMM runs them
RULE_MEASURED = vector_isa() in ("avx512", "avx2")  # instruction sets the rule was measured on; elsewhere BLAS


def uses_numba_gemm(a_shape, b_shape):
    """The dispatch rule of `matmul`: True when the handwritten Numba GEMM runs, False for NumPy's BLAS.

    Rule: on a CPU for which Numba generates AVX-512 or AVX2 code, the Numba GEMM for
    every product whose matrices have M * N * K above BLAS_SINGLE_THREAD_WORK = 2^18
    multiply-adds, the products OpenBLAS would spread over its threads, and for batches
    of smaller matrices worth BATCH_MIN_WORK = 2^22 multiply-adds in all (the attention
    products of the baby GPT: 48 x 64 x 64 x 32); NumPy's BLAS for the rest, which
    OpenBLAS runs on the calling thread (decoding with the KV cache, tiny models). On
    any other CPU (ARM, where the tile was never measured), BLAS for every product.
    The rule ignores the dtype: in float64, which only the gradient checks use, the
    AVX-512 tile fills all 32 registers and the two paths measured about even. The
    environment variable TINYGPT_MATMUL overrides the rule: "blas" for BLAS
    everywhere, "numba" for the Numba GEMM on every product of 2-D or batched matrices.

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
    if len(a_shape) < 2 or len(b_shape) < 2:
        return False
    mode = os.environ.get("TINYGPT_MATMUL")
    if mode in ("numba", "blas"):
        return mode == "numba"
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
