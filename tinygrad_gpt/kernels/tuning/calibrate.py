"""Calibration: which path runs each class of products, decided by timing both on this machine.

`uses_numba_gemm` (dispatch.py) sorts every product into one of the classes of
PRODUCT_CLASSES and asks this module which path wins for that class here. The answer
comes from a measurement made once per machine and kept in a small JSON file:

    $XDG_CACHE_HOME/tinygrad_gpt/calibration.json   (default ~/.cache/tinygrad_gpt/)

keyed by everything that changes the answer: the CPU model, the CPU features Numba
compiles for, and the versions of Python, NumPy, its BLAS and Numba. A different key
(a new machine, an upgraded NumPy) means a new calibration. `tinygpt tune` redoes it.

Why a whole-step measurement and not products alone. On a machine with few cores
OpenBLAS's idle threads spin after a multithreaded product and compete with the Numba
kernels that follow it (see dispatch.py and threads.py): a product that BLAS wins on
its own can still make the step slower. So each candidate is timed inside a short
sequence shaped like a piece of a training step, the product followed by a parallel
Numba kernel (GELU of the product's output, as in an MLP), and the sequence, not the
product, is what is compared. The two candidates are timed in alternating rounds and
the median round counts, so a burst of load from another process hits both.

The decision rule (`choose_paths`): the Numba GEMM for a class only when its sequence
was faster than BLAS's by more than DECISION_MARGIN; otherwise BLAS, so that a near
tie, and any class where the Numba path cannot win, goes to BLAS.

TINYGPT_CALIBRATE=0 turns all of this off: no measurement, no cache read, and the
fixed rule of dispatch.py decides (deterministic; the test suite runs this way).
TINYGPT_MATMUL=blas|numba still overrides both. A cache directory that cannot be
written is not an error: the calibration is then kept in memory for the process, and
a note says so once on stderr.
"""

import json
import os
import platform
import statistics
import sys
import time

import numpy as np

CACHE_FILE = "calibration.json"
FORMAT_VERSION = 1  # bump when the classes or the measurement change: old files are then ignored
DECISION_MARGIN = 0.03  # the Numba GEMM must beat BLAS by more than this fraction of the sequence time
ROUNDS = 5  # alternating rounds per class; the median round decides
ROUND_SECONDS = 0.04  # length of one round of one candidate

# The classes of products a GPT step makes, each with a representative product (the
# baby GPT's: B=12, T=64, C=128, nh=4) that the calibration times. `product_class`
# in dispatch.py maps a product to its class.
PRODUCT_CLASSES = {
    "linear_large": ((768, 128), (128, 512)),  # a linear layer of a training step (M*N*K > 2^18)
    "linear_small": ((4, 128), (128, 512)),  # decoding a few rows with the KV cache
    "batched_large": ((48, 64, 32), (48, 32, 64)),  # the attention products of a training step
    "batched_small": ((48, 1, 32), (48, 32, 64)),  # attention while decoding one position
}


def cache_directory():
    """Where calibrations are kept: $XDG_CACHE_HOME/tinygrad_gpt, or ~/.cache/tinygrad_gpt."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tinygrad_gpt")


def cpu_model():
    """The CPU's model as the OS reports it, with family and model numbers ("AMD EPYC (family 25, model 17)")."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                name, _, value = line.partition(":")
                if not name.strip():
                    break  # the end of the first processor's block
                fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    return f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def blas_version():
    """NumPy's BLAS library and version ("scipy-openblas 0.3.27"), from NumPy's build configuration."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '?')}"
    except (TypeError, KeyError):  # NumPy < 1.26 has no mode="dicts"
        return "unknown"


def machine_key():
    """Everything the calibration depends on, as a dict of strings (equal dicts: the cached answer holds)."""
    import numba

    from .target import compiled_features

    return {
        "format": str(FORMAT_VERSION),
        "cpu": cpu_model(),
        "features": compiled_features(),
        "threads": str(numba.config.NUMBA_NUM_THREADS),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_version(),
        "numba": numba.__version__,
    }


def choose_paths(timings, margin=DECISION_MARGIN):
    """{class: True for the Numba GEMM} from timings {class: {"numba": seconds, "blas": seconds}}.

    The rule of the module docstring: the Numba GEMM only where it was faster by more
    than `margin`; every tie and every loss goes to BLAS.
    """
    return {name: t["numba"] < (1.0 - margin) * t["blas"] for name, t in timings.items()}


def _sequence_seconds(run_once):
    """Seconds per call of run_once, over a round of about ROUND_SECONDS."""
    run_once()
    calls = 0
    start = time.perf_counter()
    while True:
        run_once()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= ROUND_SECONDS:
            return elapsed / calls


def measure(classes=PRODUCT_CLASSES, rounds=ROUNDS):
    """Time each class's product, then a Numba GELU of its output, on each path: {class: {path: seconds}}."""
    from .. import gemm, gelu
    from . import dispatch

    rng = np.random.default_rng(0)
    timings = {}
    for name, (a_shape, b_shape) in classes.items():
        a = rng.standard_normal(a_shape, dtype=np.float32)  # a_shape
        b = rng.standard_normal(b_shape, dtype=np.float32) * np.float32(0.1)  # b_shape

        def step_piece():
            gelu.gelu_forward(gemm.matmul(a, b))  # (..., M, N): the product, then a Numba kernel on it

        rounds_of = {"numba": [], "blas": []}
        for round_number in range(rounds):
            for path in ("numba", "blas") if round_number % 2 == 0 else ("blas", "numba"):  # neither always first
                with dispatch.forced_path(path):
                    rounds_of[path].append(_sequence_seconds(step_piece))
        timings[name] = {path: statistics.median(seconds) for path, seconds in rounds_of.items()}
    return timings


def read_cache(path, key):
    """The cached entry for `key` from the JSON file at path, or None if missing, unreadable or for another key."""
    try:
        with open(path, encoding="utf-8") as f:
            entry = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key or set(entry.get("paths", {})) != set(PRODUCT_CLASSES):
        return None
    return entry


def _write_cache(path, entry):
    """Write entry as JSON at path through a temporary file (never a half-written cache); False if impossible."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        staging = f"{path}.{os.getpid()}.tmp"
        with open(staging, "w", encoding="utf-8") as f:
            json.dump(entry, f, indent=1, sort_keys=True)
        os.replace(staging, path)
        return True
    except OSError:
        return False


def calibrate(directory=None, force=False, progress=sys.stderr):
    """The calibration entry for this machine: read from the cache, or measured (and cached) if none fits.

    Returns {"key": machine_key(), "timings": {...}, "paths": {class: uses Numba?},
    "file": the cache path, or None when it could not be written}. force=True measures
    even when a cached entry fits (`tinygpt tune`). Progress goes to `progress` (a
    file, or None for silence).
    """
    path = os.path.join(directory or cache_directory(), CACHE_FILE)
    key = machine_key()
    entry = None if force else read_cache(path, key)
    if entry is not None:
        entry["file"] = path
        return entry
    if progress is not None:
        print("tinygrad_gpt: timing the matmul paths on this CPU (once, a few seconds)...", end="", file=progress, flush=True)
    timings = measure()
    entry = {"key": key, "timings": timings, "paths": choose_paths(timings)}
    written = _write_cache(path, entry)
    if progress is not None:
        where = f"saved to {path}" if written else f"kept in memory: {os.path.dirname(path)} is not writable"
        print(f" done, {where}", file=progress, flush=True)
    entry["file"] = path if written else None
    return entry
