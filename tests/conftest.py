"""Shared test settings: one fixed, CI-friendly hypothesis profile for the whole suite."""

import os

from hypothesis import HealthCheck, settings

# The suite runs the fixed matmul dispatch rule, not this machine's calibration
# (kernels/tuning/calibrate.py): which path runs a product must not depend on timings,
# or two subprocesses of one test (a run and its resumed twin) could round differently.
# tests/test_calibration.py checks the calibrated rule with injected timings.
os.environ.setdefault("TINYGPT_CALIBRATE", "0")

# deadline=None: the first call of a Numba kernel compiles it, which would trip
# hypothesis' per-example deadline. derandomize=True: CI draws the same examples
# every run, so a failure reproduces. TINYGPT_HYPOTHESIS_EXAMPLES raises the
# example count for a longer local search.
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=int(os.environ.get("TINYGPT_HYPOTHESIS_EXAMPLES", "15")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci")
