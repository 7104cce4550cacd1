"""The header every benchmark prints first: which machine and which libraries its figures belong to.

    from machine import print_header   # benchmarks/ is on sys.path when a script there runs
    print_header()

Speed is a property of the CPU as much as of the code (issue 15: the same code ran at
1.14-1.79x PyTorch on an AMD EPYC and 0.38-0.50x on an Intel Xeon), so a figure without
its machine is not worth quoting. The header gives the CPU model, the vector instructions
Numba compiles the kernels for, the core count, the versions of NumPy and its BLAS,
Numba and PyTorch, and where the matmul dispatch comes from (kernels/tuning/dispatch.py).
It never starts a calibration or a thread pool, and imports neither PyTorch nor, in
reference mode, Numba.
"""

import importlib.metadata
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a clone

from tinygrad_gpt.kernels.tuning.calibrate import CACHE_FILE, blas_version, cache_directory, cpu_model  # noqa: E402


def _version(distribution):
    """The installed version of a distribution, without importing it (PyTorch takes seconds to import)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def blas_description():
    """NumPy's BLAS: from threadpoolctl when installed (library, version, threads, kernel architecture), else NumPy's build."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return f"{blas_version()} (threadpoolctl not installed: NumPy's build configuration)"
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return "; ".join(f"{p.get('internal_api')} {p.get('version')}, {p.get('num_threads')} threads, "
                     f"{p.get('architecture')} kernels" for p in pools) or blas_version()


def numba_target():
    """The vector instructions Numba compiles for ("avx512", "avx2", "other"), or why there are none."""
    if os.environ.get("TINYGPT_KERNELS") == "reference":
        return "none (TINYGPT_KERNELS=reference: plain NumPy)"
    from tinygrad_gpt.kernels.tuning.target import vector_isa

    return vector_isa()


def dispatch_source():
    """Where `matmul` takes its path from in this process, without measuring anything."""
    if os.environ.get("TINYGPT_KERNELS") == "reference":
        return "np.matmul (reference kernels)"
    if os.environ.get("TINYGPT_MATMUL") in ("numba", "blas"):
        return f"TINYGPT_MATMUL={os.environ['TINYGPT_MATMUL']}"
    from tinygrad_gpt.kernels.tuning import calibrate, dispatch

    if not dispatch.calibration_enabled():
        return "the fixed rule (TINYGPT_CALIBRATE=0)"
    path = os.path.join(cache_directory(), CACHE_FILE)
    entry = calibrate.read_cache(path, calibrate.machine_key())
    if entry is None:
        return "calibration (none cached yet: measured at the first product)"
    chosen = ", ".join(f"{name} {'numba' if numba else 'blas'}" for name, numba in entry["paths"].items())
    return f"calibration cached in {path}: {chosen}"


def print_header():
    """Print the machine header (a few lines) to stdout."""
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.machine()}, "
          f"Python {platform.python_version()}")
    print(f"kernels: Numba compiles for {numba_target()}; numpy {np.__version__}, BLAS {blas_description()}")
    print(f"versions: numba {_version('numba')}, torch {_version('torch')}")
    print(f"matmul dispatch: {dispatch_source()}")
    sys.stdout.flush()
