"""Keep the memory of freed arrays in the process between training steps (glibc's malloc).

Why: every training step allocates and frees hundreds of NumPy arrays of 0.1-2 MB
(activations, gradients, scratch). glibc's malloc hands blocks that large out as fresh
memory mappings and, when they are freed, gives the pages back to the operating system:
it maps big blocks directly (from 128 KiB at first) and trims the top of its heap once
more than twice that is free there. Fresh pages are zero-filled by the kernel on their
first touch, one page fault per 4 KiB, so each step paid again for all of its memory.
Measured on the reference machine (2 vCPUs, baby GPT: 4 layers, C=128, B=12, T=64):
a training step took 41-42 ms with glibc's defaults and 25-26 ms with the settings
below; the 2-layer C=64 config, whose arrays are mostly under 128 KiB, did not change.

What: `configure_malloc`, called by `tune_process()` (process.py), asks glibc (through `mallopt`) to serve blocks of up
to 32 MiB from its heap and to return heap memory to the system only when more than
256 MiB of it is free at the top. Freed blocks are then reused by the next step. The
cost is that memory freed at the end of a step stays with the process until it is needed
again (peak memory is what it was; see the README's memory figure).

Nothing is changed on a system without glibc, or when the user has set glibc's own
malloc tuning variables (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or a malloc
entry in GLIBC_TUNABLES), which then win.
"""

import ctypes
import os
import sys

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 2**20  # the largest value glibc accepts on 64-bit systems
TRIM_THRESHOLD_BYTES = 256 * 2**20


def user_tuned_malloc(environ=os.environ):
    """True when the environment already tunes glibc's malloc (the user's choice is kept)."""
    return ("MALLOC_MMAP_THRESHOLD_" in environ or "MALLOC_TRIM_THRESHOLD_" in environ
            or "glibc.malloc" in environ.get("GLIBC_TUNABLES", ""))


configured = False  # True once glibc has accepted the thresholds in this process


def configure_malloc():
    """Apply the thresholds above; returns True if glibc accepted them, False if nothing was changed."""
    global configured
    if not sys.platform.startswith("linux") or user_tuned_malloc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded into the process
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error
    configured = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return configured
