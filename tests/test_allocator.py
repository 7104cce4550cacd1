"""Process-wide settings: none at import, all from `tune_process()` (kernels/tuning/)."""

import json
import os
import platform
import resource
import subprocess
import sys

import numpy as np
import pytest

from tinygrad_gpt.kernels.tuning import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Run in a fresh interpreter: what `import tinygrad_gpt` changes, then what tune_process() does.
IMPORT_THEN_TUNE = """
import json, os, sys
import numba.core.config as numba_config

environ_before = dict(os.environ)
slp_before = numba_config.SLP_VECTORIZE
import tinygrad_gpt
from tinygrad_gpt.kernels.tuning import allocator
after_import = {
    "environ_changed": sorted(set(os.environ.items()) ^ set(environ_before.items())),
    "slp_changed": numba_config.SLP_VECTORIZE != slp_before,
    "malloc_configured": allocator.configured,
    "kernels_loaded": "tinygrad_gpt.kernels.fast" in sys.modules,
}
applied = tinygrad_gpt.tune_process()
after_tune = {"applied": applied, "spincount": os.environ.get("GOMP_SPINCOUNT"), "malloc_configured": allocator.configured}
print(json.dumps({"after_import": after_import, "after_tune": after_tune}))
"""


def run_fresh(script, **env_changes):
    env = {key: value for key, value in os.environ.items()
           if key not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(env_changes)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_import_changes_no_process_wide_state_and_tune_process_applies_it():
    result = run_fresh(IMPORT_THEN_TUNE)
    assert result["after_import"] == {
        "environ_changed": [], "slp_changed": False, "malloc_configured": False, "kernels_loaded": False,
    }
    assert result["after_tune"]["spincount"] == "10000"
    assert result["after_tune"]["applied"]["openmp_spin"]
    assert result["after_tune"]["malloc_configured"] == (GLIBC and not allocator.user_tuned_malloc())


def test_import_does_not_import_numba():
    # The fast kernels (and Numba with them) load at the first kernel call, not at import.
    result = run_fresh("import json, sys, tinygrad_gpt; print(json.dumps('numba' in sys.modules))")
    assert result is False


def test_tune_process_keeps_the_users_openmp_choice():
    script = "import json, os, tinygrad_gpt; a = tinygrad_gpt.tune_process(); print(json.dumps([a['openmp_spin'], os.environ.get('GOMP_SPINCOUNT')]))"
    assert run_fresh(script, OMP_WAIT_POLICY="PASSIVE") == [False, None]
    assert run_fresh(script, GOMP_SPINCOUNT="5") == [False, "5"]


def test_the_users_own_malloc_tuning_is_respected():
    assert not allocator.user_tuned_malloc({})
    assert allocator.user_tuned_malloc({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert allocator.user_tuned_malloc({"MALLOC_TRIM_THRESHOLD_": "65536"})
    assert allocator.user_tuned_malloc({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=65536"})
    assert not allocator.user_tuned_malloc({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})


@pytest.mark.skipif(not GLIBC or allocator.user_tuned_malloc(), reason="needs glibc's malloc with its default tuning")
def test_a_steps_arrays_are_reused_without_fresh_page_faults():
    # Like a training step: 16 MiB of 2 MiB arrays live at once, then all freed. With
    # glibc's defaults the freed memory goes back to the system and every step faults
    # its pages in again (measured: 4066 faults per step, about 8 x 512 pages of 4 KiB);
    # with the tuning the next step reuses them.
    assert allocator.configure_malloc()  # what tune_process() does first
    size = 2 * 2**20 // 8  # float64 elements in 2 MiB

    def step():
        arrays = [np.ones(size) for _ in range(8)]
        return sum(a[0] for a in arrays)

    step()  # the heap grows once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    faults_per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
    assert faults_per_step < 8 * 512 / 10, f"{faults_per_step} page faults per step"


AVX2 = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "+avx,+avx2,+fma,+bmi,+bmi2,+f16c,+popcnt,-avx512f"}


def test_on_avx2_the_slp_vectorizer_is_turned_on_by_loading_the_fast_kernels_not_by_import():
    script = (
        "import json, numba.core.config as c, tinygrad_gpt\n"
        "after_import = c.SLP_VECTORIZE\n"
        "tinygrad_gpt.kernels.use('fast')\n"
        "print(json.dumps([after_import, c.SLP_VECTORIZE]))"
    )
    assert run_fresh(script, **AVX2) == [0, 1]
