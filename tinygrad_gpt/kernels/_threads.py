"""When a parallel kernel is worth waking its threads.

Every call of a `parallel=True` kernel hands work to Numba's worker threads, which
spin for about 0.1 ms after a call and then sleep (see __init__.py). Measured on the
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
