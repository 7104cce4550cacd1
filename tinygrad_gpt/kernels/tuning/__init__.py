"""The performance machinery of the fast kernels, kept apart from their math.

A reader of kernels/layernorm.py meets the formula and the loop; what makes the loop
fast on a given machine is here, for whoever goes looking:

| module       | what it decides                                                          |
|--------------|--------------------------------------------------------------------------|
| process.py   | `tune_process()`: the process-wide settings (malloc, OpenMP spin)         |
| allocator.py | glibc malloc thresholds, so a step's freed arrays are reused              |
| threads.py   | how idle OpenMP threads wait; when a kernel call is worth a second thread |
| target.py    | what CPU Numba compiles for, the GEMM tile that fits it, the SLP vectorizer |
| dispatch.py  | which products run on the handwritten GEMM and which on BLAS              |
| calibrate.py | timing both paths on this machine, per class of products, and caching it  |
| stack.py     | a Numba intrinsic for arrays on the stack (the GEMM tile in registers)    |
| aligned.py   | arrays that start on a 64-byte cache line                                 |

Only process.py and allocator.py are imported with the package (neither imports
Numba nor changes anything until `tune_process()` is called); the rest is loaded
with the fast kernels.
"""

from .process import tune_process

__all__ = ["tune_process"]
