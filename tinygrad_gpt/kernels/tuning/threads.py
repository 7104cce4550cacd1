"""Threads: how idle OpenMP threads wait, and when a parallel kernel is worth waking them.

Numba's parallel loops run on an OpenMP thread pool (GNU libgomp), and NumPy's
matmul on OpenBLAS's own pool. By default both keep idle threads spinning for a long
time after each call (libgomp about 5 ms here), and on a machine with few cores the two
pools then take turns at the CPU in scheduler time slices: measured on 2 cores, a
0.4 ms np.matmul followed by a 1 ms Numba kernel took 8 ms instead of 1.4 ms.
Putting idle OpenMP threads to sleep at once (OMP_WAIT_POLICY=PASSIVE) avoids that,
but then every parallel kernel call must wake the sleeping thread: about 45 us on the
reference machine (a 2-vCPU virtual machine).

`tune_process()` (process.py) sets the middle way, unless the user has set OMP_WAIT_POLICY or
GOMP_SPINCOUNT: idle OpenMP threads spin for GOMP_SPINCOUNT = 10000 rounds (about 0.1 ms
of CPU here) and then sleep. The kernels of a training step follow each other closely
enough to find the thread still awake, and on CPUs with AVX-512 or AVX2 BLAS never
competes with them, because `matmul` sends every product that OpenBLAS would run on
several threads to the Numba GEMM (see `uses_numba_gemm`). Measured whole training
steps, alternating runs on a quiet machine: baby GPT (4 layers, C=128) 22.9-23.8 ms
against 25.3-26.3 ms with PASSIVE; 2 layers, C=64: 6.4-7.7 against 7.3-7.8 ms. Kernel
calls too small to gain from a second thread run on one (below). The variables
must be set before Numba starts its thread pool, so tune_process() is called before the
first kernel call.

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

When a call is worth its threads. Every call of a `parallel=True` kernel hands work to Numba's worker threads, which
spin for about 0.1 ms after a call and then sleep (see above). Measured on the
reference machine, a 2-vCPU virtual machine: waking a sleeping thread costs about
45 us per call (1.3 us when it is still spinning). A kernel that takes t on one
thread then takes at best t / 2 + 45 us on two when the thread has gone to sleep.
Measured at the baby GPT shape with sleeping threads, one thread against two (float32):

    layer norm fwd 25 / 59 us, bwd 47 / 72;  cross-entropy fwd 52 / 73, bwd 24 / 61;
    softmax bwd 30 / 61;  embedding bwd 48 / 81        -> one thread is faster
    GELU fwd 135 / 117;  AdamW 179 / 166                -> about even
    softmax fwd 172 / 135;  attention fwd 617 / 470     -> two threads are faster

So the wrappers run a call on the calling thread alone when its estimated
single-thread time is under PARALLEL_MIN_US. Each wrapper estimates that time from its
size and the kernel's measured single-thread cost per element (float32, reference
machine); the estimate only needs to be right within a factor of two near the line.
The line is 150 us rather than the break-even 90 us because most kernels above split
their work unevenly or are memory-bound; the GEMM, whose tasks are equal tiles, passes
its own lower line (gemm.py).
"""

import numba

PARALLEL_MIN_US = 150.0  # below this single-thread time, waking the other threads does not pay


class threads_for:
    """Context manager: the enclosed kernel call runs on one thread if its estimate serial_us < parallel_min_us.

    A class rather than a generator-based context manager because it wraps every kernel
    call, down to ones of 20 us: this costs about 0.3 us a call, the generator version 3.
    """

    __slots__ = ("_restore",)

    def __init__(self, serial_us, parallel_min_us=PARALLEL_MIN_US):
        self._restore = numba.get_num_threads() if serial_us < parallel_min_us else 1  # threads to restore on exit

    def __enter__(self):
        if self._restore > 1:
            numba.set_num_threads(1)

    def __exit__(self, *exc_info):
        if self._restore > 1:
            numba.set_num_threads(self._restore)
