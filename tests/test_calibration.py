"""The calibrated matmul dispatch (kernels/tuning/calibrate.py, dispatch.py): its logic, with injected timings.

No test here times anything: the measurement is replaced by fixed timings, and what is
checked is what the dispatcher does with them (the decision rule, the cache, its key,
the fallbacks). benchmarks/bench_kernels.py and bench_train.py check the outcome.
"""

import json
import os

import numpy as np
import pytest

from tinygrad_gpt.kernels.tuning import calibrate, dispatch

CLASSES = tuple(calibrate.PRODUCT_CLASSES)


def timings(numba_ms, blas_ms):
    """Injected timings: every class with the same numba and blas seconds."""
    return {name: {"numba": numba_ms * 1e-3, "blas": blas_ms * 1e-3} for name in CLASSES}


@pytest.fixture
def fresh_dispatch(monkeypatch, tmp_path):
    """No calibration in memory, the cache in tmp_path, no TINYGPT_MATMUL; the measurement injected per test."""
    monkeypatch.setattr(dispatch, "_calibrated_paths", None)
    monkeypatch.delenv("TINYGPT_MATMUL", raising=False)
    monkeypatch.delenv("TINYGPT_CALIBRATE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def inject(monkeypatch, measured):
    """Make calibrate.measure return `measured` and count its calls."""
    calls = []

    def fake_measure(*args, **kwargs):
        calls.append(1)
        return measured

    monkeypatch.setattr(calibrate, "measure", fake_measure)
    return calls


def test_the_numba_gemm_only_where_it_wins_by_more_than_the_margin():
    measured = {
        "linear_large": {"numba": 0.5, "blas": 1.0},  # clearly faster: Numba
        "linear_small": {"numba": 1.0, "blas": 0.5},  # slower: BLAS
        "batched_large": {"numba": 0.99, "blas": 1.0},  # 1% faster, inside the 3% margin: BLAS
        "batched_small": {"numba": 1.0, "blas": 1.0},  # a tie: BLAS
    }
    assert calibrate.choose_paths(measured) == {
        "linear_large": True, "linear_small": False, "batched_large": False, "batched_small": False}
    assert calibrate.choose_paths(measured, margin=0.0)["batched_large"]


@pytest.mark.parametrize("a_shape, b_shape, expected", [
    ((768, 128), (128, 384), "linear_large"),  # the baby GPT's qkv projection
    ((64, 64), (64, 64), "linear_small"),  # 2^18: OpenBLAS stays on one thread
    ((1, 128), (128, 384), "linear_small"),  # decoding
    ((48, 64, 32), (48, 32, 64), "batched_large"),  # attention of a training step, 2^22.6 in all
    ((12, 4, 64, 32), (1, 4, 32, 64), "batched_large"),  # broadcast batch dims count
    ((64, 32, 32), (64, 32, 32), "batched_small"),  # a batch of 2^21
    ((48, 1, 32), (48, 32, 64), "batched_small"),  # attention while decoding
])
def test_product_classes_follow_the_lines_of_the_fixed_rule(a_shape, b_shape, expected):
    assert dispatch.product_class(a_shape, b_shape) == expected


def test_calibration_decides_and_is_measured_once_then_cached(fresh_dispatch, monkeypatch):
    calls = inject(monkeypatch, timings(numba_ms=2.0, blas_ms=1.0))  # BLAS wins everything
    assert not dispatch.uses_numba_gemm((768, 128), (128, 384))  # the fixed rule would say Numba here
    assert not dispatch.uses_numba_gemm((48, 64, 32), (48, 32, 64))
    assert len(calls) == 1  # one measurement per process
    path = fresh_dispatch / "tinygrad_gpt" / calibrate.CACHE_FILE
    assert json.loads(path.read_text())["paths"] == {name: False for name in CLASSES}

    monkeypatch.setattr(dispatch, "_calibrated_paths", None)  # a new process: reads the cache
    assert not dispatch.uses_numba_gemm((768, 128), (128, 384))
    assert len(calls) == 1


def test_a_cache_for_another_machine_is_measured_again(fresh_dispatch, monkeypatch):
    inject(monkeypatch, timings(numba_ms=1.0, blas_ms=2.0))
    entry = calibrate.calibrate(progress=None)
    assert entry["paths"] == {name: True for name in CLASSES}
    calls = inject(monkeypatch, timings(numba_ms=2.0, blas_ms=1.0))
    assert calibrate.calibrate(progress=None)["paths"] == entry["paths"]  # same machine: the cache
    monkeypatch.setattr(calibrate, "blas_version", lambda: "another BLAS 9.9")
    assert calibrate.calibrate(progress=None)["paths"] == {name: False for name in CLASSES}  # new key: measured
    assert len(calls) == 1


@pytest.mark.parametrize("content", ["{not json", json.dumps([1, 2]), json.dumps({"key": "x"})])
def test_a_damaged_cache_file_is_measured_again(fresh_dispatch, monkeypatch, content):
    path = fresh_dispatch / "tinygrad_gpt" / calibrate.CACHE_FILE
    path.parent.mkdir()
    path.write_text(content)
    calls = inject(monkeypatch, timings(numba_ms=1.0, blas_ms=2.0))
    assert calibrate.calibrate(progress=None)["paths"] == {name: True for name in CLASSES}
    assert len(calls) == 1


def test_force_measures_even_with_a_fitting_cache(fresh_dispatch, monkeypatch):
    calls = inject(monkeypatch, timings(numba_ms=1.0, blas_ms=2.0))
    calibrate.calibrate(progress=None)
    calibrate.calibrate(progress=None, force=True)
    assert len(calls) == 2


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write any directory")
def test_an_unwritable_cache_directory_calibrates_in_memory_and_says_so(fresh_dispatch, monkeypatch, capsys):
    locked = fresh_dispatch / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.setenv("XDG_CACHE_HOME", str(locked))
    inject(monkeypatch, timings(numba_ms=1.0, blas_ms=2.0))
    assert dispatch.uses_numba_gemm((768, 128), (128, 384))
    assert dispatch.uses_numba_gemm((1, 128), (128, 384))
    assert capsys.readouterr().err.count("not writable") == 1  # said once


def test_a_cache_path_that_is_a_file_calibrates_in_memory(fresh_dispatch, monkeypatch):
    blocker = fresh_dispatch / "a_file"
    blocker.write_text("")
    inject(monkeypatch, timings(numba_ms=1.0, blas_ms=2.0))
    entry = calibrate.calibrate(directory=str(blocker / "tinygrad_gpt"), progress=None)  # cannot be a directory
    assert entry["file"] is None
    assert entry["paths"] == {name: True for name in CLASSES}


def test_calibrate_off_is_the_fixed_rule_without_measuring(fresh_dispatch, monkeypatch):
    calls = inject(monkeypatch, timings(numba_ms=2.0, blas_ms=1.0))
    monkeypatch.setenv("TINYGPT_CALIBRATE", "0")
    for shapes in [((768, 128), (128, 384)), ((1, 128), (128, 384)), ((48, 64, 32), (48, 32, 64))]:
        assert dispatch.uses_numba_gemm(*shapes) == dispatch.fixed_rule(*shapes)
    assert calls == []
    assert not (fresh_dispatch / "tinygrad_gpt").exists()


@pytest.mark.parametrize("mode, expected", [("numba", True), ("blas", False)])
def test_tinygpt_matmul_overrides_the_calibration(fresh_dispatch, monkeypatch, mode, expected):
    calls = inject(monkeypatch, timings(numba_ms=1.0, blas_ms=1.0))
    monkeypatch.setenv("TINYGPT_MATMUL", mode)
    assert dispatch.uses_numba_gemm((768, 128), (128, 384)) is expected
    assert dispatch.uses_numba_gemm((1, 128), (128, 384)) is expected
    assert calls == []


def test_a_one_dimensional_operand_is_blas_without_calibrating(fresh_dispatch, monkeypatch):
    calls = inject(monkeypatch, timings(numba_ms=1.0, blas_ms=2.0))
    assert not dispatch.uses_numba_gemm((5,), (5, 300))
    assert calls == []


def test_the_result_equals_np_matmul_on_either_calibrated_path(fresh_dispatch, monkeypatch):
    from tinygrad_gpt.kernels import fast

    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((96, 70)), rng.standard_normal((70, 130))  # float64: tight tolerance
    for numba_ms in (1.0, 3.0):
        monkeypatch.setattr(dispatch, "_calibrated_paths", None)
        inject(monkeypatch, timings(numba_ms=numba_ms, blas_ms=2.0))
        calibrate.calibrate(progress=None, force=True)
        np.testing.assert_allclose(fast.matmul(a, b), np.matmul(a, b), rtol=1e-12, atol=1e-12)


def test_tinygpt_tune_measures_caches_and_prints_the_table(fresh_dispatch, monkeypatch, capsys):
    from tinygrad_gpt import cli

    inject(monkeypatch, timings(numba_ms=1.0, blas_ms=2.0))
    assert cli.main(["tune"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}" in out for name in CLASSES) and "numba" in out
    assert (fresh_dispatch / "tinygrad_gpt" / calibrate.CACHE_FILE).exists()
    assert dispatch._calibrated_paths == {name: True for name in CLASSES}


def test_tinygpt_tune_refuses_the_reference_kernels(monkeypatch, capsys):
    from tinygrad_gpt import cli

    monkeypatch.setenv("TINYGPT_KERNELS", "reference")
    assert cli.main(["tune"]) == 2
    assert "TINYGPT_KERNELS=reference" in capsys.readouterr().err
