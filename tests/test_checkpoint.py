"""Tests for tinygrad_gpt.checkpoint: exact round trips, atomic writes, and refusing
every damaged, foreign or unsafe file with a CheckpointError that names it.

Arrays are compared by dtype, shape and raw bytes (not with a tolerance): a
checkpoint stores bytes, so anything short of bit-identical is a bug.
"""

import errno
import functools
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_gpt.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    METADATA_KEY,
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointWriteError,
    load_checkpoint,
    save_checkpoint,
)

CHECKPOINT_MODULE_FILE = Path(__file__).resolve().parents[1] / "tinygrad_gpt" / "checkpoint.py"

NESTED_METADATA = {
    "config": {"n_layer": 2, "n_head": 4, "dropout": 0.1, "bias": True},
    "step": 1200,
    "losses": [4.17, 2.5, None],
    "tokenizer": {"kind": "char", "vocab": ["\n", " ", "a", "é", "字"]},
    "note": "",
}


def sample_arrays():
    """Arrays covering the dtypes, shapes and memory layouts a checkpoint must keep exactly."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((3, 5)).astype(np.float32)  # (3, 5)
    return {
        "transformer.wte.weight": weight,
        "transformer.wte.weight_t": weight.T,  # (5, 3) Fortran-ordered view
        "specials": np.array([np.nan, np.inf, -np.inf, -0.0], dtype=np.float64),  # (4,)
        "step": np.array(7, dtype=np.int64),  # 0-d
        "scalar64": np.array(2.5),  # 0-d float64
        "empty": np.zeros((0, 4), dtype=np.float32),  # (0, 4)
        "ids": np.arange(24, dtype=np.int64).reshape(2, 3, 4),  # (2, 3, 4)
        "mask": np.array([[True, False]]),  # (1, 2)
        "big_endian": np.arange(3, dtype=">f8"),  # (3,)
        "complex": np.array([1 + 2j, -3j], dtype=np.complex64),  # (2,)
        "chars": np.array(["a", "bc", "字"]),  # (3,) <U2
        "raw": np.array([b"x\x00", b"yz"]),  # (2,) |S2
        # Names np.savez would take as its own keyword arguments.
        "file": np.ones(2, dtype=np.uint8),
        "allow_pickle": np.zeros(1, dtype=np.int8),
    }


def assert_same_arrays(actual, expected):
    assert sorted(actual) == sorted(expected)
    for name, want in expected.items():
        got = actual[name]
        assert type(got) is np.ndarray, name  # a real in-memory array, not a memmap
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes(), name


def npy_bytes(array, allow_pickle=False):
    """One array as the bytes of a .npy file."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def json_bytes_array(document):
    return np.frombuffer(json.dumps(document).encode("utf-8"), dtype=np.uint8)  # (N,)


def rewrite_entries(path, replace=(), drop=(), compression=zipfile.ZIP_STORED):
    """Rebuild the zip at ``path`` with valid CRCs: entries in ``replace`` (name -> bytes)
    get new contents or are added, entries in ``drop`` are left out."""
    replace = dict(replace)
    with zipfile.ZipFile(path) as zf:
        entries = {name: zf.read(name) for name in zf.namelist() if name not in drop}
    entries.update(replace)
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


def read_envelope(path):
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(npz[METADATA_KEY].tobytes().decode("utf-8"))


def write_envelope(path, envelope):
    rewrite_entries(path, {METADATA_KEY + ".npy": npy_bytes(json_bytes_array(envelope))})


# ------------------------------------------------------------------- round trips


def test_round_trip_keeps_every_array_bit_exact_and_the_metadata(tmp_path):
    path = tmp_path / "model.ckpt"
    arrays = sample_arrays()
    save_checkpoint(path, arrays, NESTED_METADATA)
    loaded_arrays, loaded_metadata = load_checkpoint(path)
    assert_same_arrays(loaded_arrays, arrays)
    assert loaded_metadata == NESTED_METADATA


def test_metadata_comes_back_as_json_gives_it():
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "m.ckpt")
        save_checkpoint(path, {}, {"betas": (0.9, 0.95), 3: "three", "best": float("inf")})
        arrays, metadata = load_checkpoint(path)
    assert arrays == {}
    assert metadata == {"betas": [0.9, 0.95], "3": "three", "best": float("inf")}


array_names = st.text(min_size=1, max_size=12).filter(
    lambda name: "\0" not in name and "\\" not in name and name != METADATA_KEY
)
any_array = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int64, np.bool_, np.uint8]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)


@settings(deadline=None, max_examples=25)
@given(arrays=st.dictionaries(array_names, any_array, max_size=4))
def test_round_trip_of_drawn_arrays_and_names(arrays):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "m.ckpt")
        save_checkpoint(path, arrays, {"n": len(arrays)})
        loaded_arrays, metadata = load_checkpoint(path)
    assert_same_arrays(loaded_arrays, arrays)
    assert metadata == {"n": len(arrays)}


def test_file_is_a_plain_npz_with_the_envelope(tmp_path):
    path = tmp_path / "model.ckpt"
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}  # (2, 3)
    save_checkpoint(path, arrays, {"step": 3})
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(["w", METADATA_KEY])
        assert np.array_equal(npz["w"], arrays["w"])
    envelope = read_envelope(path)
    assert envelope["format"] == CHECKPOINT_FORMAT
    assert envelope["version"] == CHECKPOINT_VERSION == 1
    assert len(envelope["sha256"]) == 64
    assert envelope["metadata"] == {"step": 3}


def test_loaded_arrays_do_not_depend_on_the_file(tmp_path):
    path = tmp_path / "model.ckpt"
    arrays = {"w": np.arange(10, dtype=np.float64)}  # (10,)
    save_checkpoint(path, arrays, {})
    loaded, _ = load_checkpoint(path)
    save_checkpoint(path, {"w": np.zeros(10)}, {})  # replace the file underneath
    os.remove(path)
    assert_same_arrays(loaded, arrays)


def test_save_replaces_an_existing_checkpoint(tmp_path):
    path = tmp_path / "model.ckpt"
    save_checkpoint(path, {"w": np.zeros(3)}, {"step": 1})
    save_checkpoint(path, {"w": np.ones(3)}, {"step": 2})
    arrays, metadata = load_checkpoint(path)
    assert metadata == {"step": 2} and np.array_equal(arrays["w"], np.ones(3))
    assert os.listdir(tmp_path) == ["model.ckpt"]


def test_a_deflate_compressed_checkpoint_also_loads(tmp_path):
    # np.savez_compressed writes deflated entries; the loader accepts them.
    path = tmp_path / "model.ckpt"
    arrays = {"w": np.zeros((50, 50), dtype=np.float32)}  # (50, 50)
    save_checkpoint(path, arrays, {"a": 1})
    rewrite_entries(path, compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as zf:
        assert {info.compress_type for info in zf.infolist()} == {zipfile.ZIP_DEFLATED}
    loaded, metadata = load_checkpoint(path)
    assert_same_arrays(loaded, arrays)
    assert metadata == {"a": 1}


def test_the_order_of_entries_in_the_archive_does_not_matter(tmp_path):
    # Re-zipping a checkpoint (by hand, or by another tool) may reorder its
    # entries; the checksum is over the arrays sorted by name, so it still holds.
    path = tmp_path / "model.ckpt"
    arrays = {"b": np.ones(2), "a": np.zeros(3), "c": np.arange(4)}
    save_checkpoint(path, arrays, {"step": 1})
    with zipfile.ZipFile(path) as zf:
        entries = [(name, zf.read(name)) for name in zf.namelist()]
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in reversed(entries):
            zf.writestr(name, data)
    loaded, metadata = load_checkpoint(path)
    assert_same_arrays(loaded, arrays)
    assert metadata == {"step": 1}


@pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")
def test_saved_file_mode_follows_the_umask_like_np_save(tmp_path):
    old_umask = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "model.ckpt", {}, {})
    finally:
        os.umask(old_umask)
    assert (tmp_path / "model.ckpt").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------ bad input to save


class NotJson:
    pass


circular = {}
circular["self"] = circular


@pytest.mark.parametrize(
    "arrays, metadata, error, message",
    [
        ([np.zeros(2)], {}, TypeError, "arrays must be a dict"),
        ({1: np.zeros(2)}, {}, TypeError, "array names must be str"),
        ({METADATA_KEY: np.zeros(2)}, {}, ValueError, "reserved"),
        ({"": np.zeros(2)}, {}, ValueError, "non-empty"),
        ({"a\0b": np.zeros(2)}, {}, ValueError, "NUL"),
        ({"a\\b": np.zeros(2)}, {}, ValueError, "backslashes"),
        ({"\udc80": np.zeros(2)}, {}, ValueError, "UTF-8"),
        ({"w": [1.0, 2.0]}, {}, TypeError, r"arrays\['w'\] must be a numpy.ndarray, got list"),
        ({"w": np.float32(1.0)}, {}, TypeError, "got float32"),
        ({"w": np.array([NotJson()], dtype=object)}, {}, ValueError, "dtype object"),
        ({"w": np.zeros(2, dtype=[("a", "f4")])}, {}, ValueError, "dtype"),
        ({}, [("step", 1)], TypeError, "metadata must be a dict, got list"),
        ({}, {"obj": NotJson()}, TypeError, "metadata must be JSON-serializable"),
        ({}, {"ids": {1, 2}}, TypeError, "metadata must be JSON-serializable"),
        ({}, circular, ValueError, "metadata must be JSON-serializable"),
    ],
)
def test_bad_input_to_save_is_refused_before_touching_disk(tmp_path, arrays, metadata, error, message):
    with pytest.raises(error, match=message):
        save_checkpoint(tmp_path / "model.ckpt", arrays, metadata)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------- failed writes


def fill_disk_on_second_array(monkeypatch):
    """Let the first entry be written, then write part of the next and fail as a full disk would."""
    real_write_array = np.lib.format.write_array
    calls = []

    def write_array(fp, array, *args, **kwargs):
        calls.append(array)
        if len(calls) == 1:
            return real_write_array(fp, array, *args, **kwargs)
        fp.write(b"\x00" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", write_array)


def fail_call(monkeypatch, module, name):
    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module, name, fail)


@pytest.mark.parametrize(
    "break_disk",
    [
        fill_disk_on_second_array,
        lambda monkeypatch: fail_call(monkeypatch, os, "fsync"),
        lambda monkeypatch: fail_call(monkeypatch, os, "replace"),
    ],
    ids=["during-write", "at-fsync", "at-rename"],
)
def test_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temp_file(
    tmp_path, monkeypatch, break_disk
):
    path = tmp_path / "model.ckpt"
    old_arrays = {"w": np.arange(1000, dtype=np.float32), "b": np.ones(3)}
    save_checkpoint(path, old_arrays, {"step": 1})
    old_bytes = path.read_bytes()

    break_disk(monkeypatch)
    with pytest.raises(CheckpointWriteError, match="could not write checkpoint") as info:
        save_checkpoint(path, {"w": np.zeros(1000, dtype=np.float32), "b": np.zeros(3)}, {"step": 2})
    monkeypatch.undo()

    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert str(path) in str(info.value)
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["model.ckpt"]
    arrays, metadata = load_checkpoint(path)
    assert_same_arrays(arrays, old_arrays)
    assert metadata == {"step": 1}


def test_an_interrupt_mid_write_is_not_wrapped_and_leaves_no_temp_file(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "model.ckpt", {"w": np.zeros(3)}, {})
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")
def test_sigkill_during_saves_always_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "model.ckpt"
    n = 1_000_000  # 8 MB per save, so each write lasts a few milliseconds
    # The child loads checkpoint.py on its own (it imports only numpy), so it
    # starts fast and does not depend on the rest of the package.
    child_script = textwrap.dedent(
        f"""
        import importlib.util
        import numpy as np
        spec = importlib.util.spec_from_file_location("checkpoint", {str(CHECKPOINT_MODULE_FILE)!r})
        checkpoint = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(checkpoint)
        step = 0
        while True:
            step += 1
            checkpoint.save_checkpoint(
                {str(path)!r}, {{"w": np.full({n}, step, dtype=np.int64)}}, {{"step": step}}
            )
        """
    )
    rng = np.random.default_rng(0)
    for attempt in range(6):
        # Two of three attempts aim the kill into a write; the others kill at a
        # random moment (hashing, syncing the directory, between saves).
        aim_into_write = attempt % 3 != 2
        if path.exists():
            path.unlink()
        files_before = set(os.listdir(tmp_path))  # temp files of earlier kills stay

        def new_temp_files():
            return set(os.listdir(tmp_path)) - files_before - {"model.ckpt"}

        child = subprocess.Popen([sys.executable, "-c", child_script])
        try:
            deadline = time.monotonic() + 30.0

            def wait_until(condition, what):
                while not condition():
                    assert child.poll() is None, "the saving child process died on its own"
                    assert time.monotonic() < deadline, f"the child never {what}"
                    time.sleep(0.0005)

            wait_until(path.exists, "wrote a checkpoint")
            time.sleep(rng.uniform(0.0, 0.1))  # let it overwrite the file a few times
            while aim_into_write:
                wait_until(new_temp_files, "started another save")
                time.sleep(rng.uniform(0.0, 0.015))  # anywhere in the write, fsync, rename
                # Freeze the child and look: a temp file still there means it is
                # certainly mid-save. If the rename beat us, let it run on and retry.
                child.send_signal(signal.SIGSTOP)
                os.waitpid(child.pid, os.WUNTRACED)  # returns once it has stopped
                if new_temp_files():
                    break
                child.send_signal(signal.SIGCONT)
            child.send_signal(signal.SIGKILL)
            child.wait()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        if aim_into_write:
            assert new_temp_files()  # SIGKILL allows no clean-up: the write was cut off
        arrays, metadata = load_checkpoint(path)
        assert metadata["step"] >= 1
        assert np.array_equal(arrays["w"], np.full(n, metadata["step"], dtype=np.int64))


def test_missing_output_directory_is_named(tmp_path):
    directory = tmp_path / "no_such_dir"
    with pytest.raises(CheckpointWriteError, match="does not exist") as info:
        save_checkpoint(directory / "model.ckpt", {"w": np.zeros(2)}, {})
    assert repr(str(directory)) in str(info.value)
    assert info.value.errno == errno.ENOENT
    assert os.listdir(tmp_path) == []


def test_output_directory_that_is_a_file_is_named(tmp_path):
    not_a_dir = tmp_path / "notes.txt"
    not_a_dir.write_text("hello")
    with pytest.raises(CheckpointWriteError, match="is not a directory") as info:
        save_checkpoint(not_a_dir / "model.ckpt", {"w": np.zeros(2)}, {})
    assert repr(str(not_a_dir)) in str(info.value)
    assert not_a_dir.read_text() == "hello"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="needs POSIX permissions, and root ignores them",
)
def test_unwritable_output_directory_is_named(tmp_path):
    directory = tmp_path / "read_only"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        with pytest.raises(CheckpointWriteError, match="is not writable") as info:
            save_checkpoint(directory / "model.ckpt", {"w": np.zeros(2)}, {})
        assert repr(str(directory)) in str(info.value)
    finally:
        directory.chmod(0o700)
    assert os.listdir(directory) == []


def test_permission_denied_names_the_directory_even_when_run_as_root(tmp_path, monkeypatch):
    # Root ignores directory permissions, so the test above skips in many CI
    # containers; here the file system's refusal is simulated instead.
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(CheckpointWriteError, match="is not writable") as info:
        save_checkpoint(tmp_path / "model.ckpt", {"w": np.zeros(2)}, {})
    monkeypatch.undo()
    assert repr(str(tmp_path)) in str(info.value)
    assert info.value.errno == errno.EACCES


def test_saving_onto_a_directory_fails_cleanly(tmp_path):
    target = tmp_path / "model.ckpt"
    target.mkdir()
    with pytest.raises(CheckpointWriteError, match="could not write checkpoint"):
        save_checkpoint(target, {"w": np.zeros(2)}, {})
    assert target.is_dir() and os.listdir(target) == []
    assert os.listdir(tmp_path) == ["model.ckpt"]


# ------------------------------------------------------- files that are refused


class WritesMarkerWhenUnpickled:
    """Unpickling this calls open(marker, "w"): code from the file would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_object_array(marker):
    array = np.empty(1, dtype=object)  # (1,)
    array[0] = WritesMarkerWhenUnpickled(marker)
    return array


def test_the_hostile_payload_really_runs_code_when_unpickled(tmp_path):
    # The control for the refusal tests below: without it, a payload that never
    # worked would make them pass for the wrong reason.
    marker = tmp_path / "control_marker"
    np.savez(tmp_path / "control.npz", evil=hostile_object_array(marker))
    with np.load(tmp_path / "control.npz", allow_pickle=True) as npz:
        npz["evil"]
    assert marker.exists()


@pytest.mark.parametrize("entry", ["evil.npy", METADATA_KEY + ".npy"])
def test_pickled_object_array_inside_a_checkpoint_is_refused_unrun(tmp_path, entry):
    path = tmp_path / "model.ckpt"
    marker = tmp_path / "marker"
    save_checkpoint(path, {"w": np.zeros(3)}, {})
    rewrite_entries(path, {entry: npy_bytes(hostile_object_array(marker), allow_pickle=True)})
    with pytest.raises(CheckpointError, match="contains pickled objects.*refused for safety") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_plain_npz_with_an_object_array_is_refused_unrun(tmp_path):
    path = tmp_path / "evil.npz"
    marker = tmp_path / "marker"
    np.savez(path, evil=hostile_object_array(marker))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "protocol, message",
    [(pickle.HIGHEST_PROTOCOL, "is a Python pickle"), (0, "not an .npz archive")],
)
def test_raw_pickle_file_is_refused_unrun(tmp_path, protocol, message):
    path = tmp_path / "model.pkl"
    marker = tmp_path / "marker"
    path.write_bytes(pickle.dumps(WritesMarkerWhenUnpickled(marker), protocol=protocol))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    assert not marker.exists()


def make_missing(path):
    pass


def make_directory(path):
    path.mkdir()


def make_empty(path):
    path.write_bytes(b"")


def make_text(path):
    path.write_text("step,loss\n1,4.2\n")


def make_npy(path):
    path.write_bytes(npy_bytes(np.zeros(3)))


def make_npz_without_metadata(path):
    with open(path, "wb") as file:
        np.savez(file, w=np.zeros(3))


def make_npz_with_a_text_entry(path):
    save_checkpoint(path, {"w": np.zeros(3)}, {})
    rewrite_entries(path, {"README.txt": b"hello"})


@pytest.mark.parametrize(
    "make, message",
    [
        (make_missing, "does not exist"),
        (make_directory, "is a directory"),
        (make_empty, "is empty"),
        (make_text, "is not a checkpoint"),
        (make_npy, "single .npy array"),
        (make_npz_without_metadata, "is not a tinygrad_gpt checkpoint: it has no '__metadata__'"),
        (make_npz_with_a_text_entry, "'README.txt' is not a .npy array"),
    ],
)
def test_files_that_are_not_checkpoints_are_refused_by_name(tmp_path, make, message):
    path = tmp_path / "model.ckpt"
    make(path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_a_missing_file_is_also_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_checkpoint(tmp_path / "nope.ckpt")
    assert isinstance(info.value, CheckpointNotFoundError)
    assert info.value.errno == errno.ENOENT


def valid_envelope(path):
    save_checkpoint(path, {"w": np.arange(4.0)}, {"step": 5})
    return read_envelope(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "other-format"}, "not a tinygrad_gpt checkpoint: .* names format 'other-format'"),
        ({"version": 2}, r"version 2 \(written by a newer tinygrad_gpt\), but .* reads version 1 only"),
        ({"version": 0}, r"version 0 \(written by an older tinygrad_gpt\), but .* reads version 1 only"),
        ({"version": "1"}, "format version '1', but"),
        ({"version": True}, "format version True, but"),
        ({"sha256": None}, "lacks a 'sha256' string"),
        ({"metadata": [1, 2]}, "or a 'metadata' dict"),
    ],
)
def test_wrong_envelope_is_refused(tmp_path, change, message):
    path = tmp_path / "model.ckpt"
    write_envelope(path, {**valid_envelope(path), **change})
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "metadata_entry, message",
    [
        (np.frombuffer(b"{not json", dtype=np.uint8), "metadata that is not valid JSON"),
        (np.frombuffer(b"\xff\xfe{}", dtype=np.uint8), "metadata that is not valid JSON"),
        (np.frombuffer(b"[" * 100_000, dtype=np.uint8), "metadata that is not valid JSON"),
        (np.frombuffer(b'"just a string"', dtype=np.uint8), "its metadata names format None"),
        (np.zeros(3, dtype=np.float32), "not a 1-D uint8 byte array"),
    ],
    ids=["not-json", "not-utf8", "too-deep", "not-an-object", "not-bytes"],
)
def test_unreadable_metadata_is_refused(tmp_path, metadata_entry, message):
    path = tmp_path / "model.ckpt"
    save_checkpoint(path, {"w": np.zeros(2)}, {})
    rewrite_entries(path, {METADATA_KEY + ".npy": npy_bytes(metadata_entry)})
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "edit",
    [
        {"replace": {"w.npy": npy_bytes(np.array([0, 1, 2, 4], dtype=np.int64))}},
        {"replace": {"w.npy": npy_bytes(np.arange(4, dtype=np.int64).view(np.float64))}},
        {"replace": {"w.npy": npy_bytes(np.arange(4, dtype=np.int64).reshape(2, 2))}},
        {"replace": {"s.npy": npy_bytes(np.array([7], dtype=np.int64))}},
        {"drop": ["b.npy"]},
        {"replace": {"c.npy": npy_bytes(np.ones(2))}, "drop": ["b.npy"]},
    ],
    ids=[
        "one-value", "same-bytes-other-dtype", "same-bytes-other-shape", "0d-became-1d",
        "array-removed", "array-renamed",
    ],
)
def test_edited_arrays_with_valid_zip_crcs_fail_the_checksum(tmp_path, edit):
    path = tmp_path / "model.ckpt"
    arrays = {"w": np.arange(4, dtype=np.int64), "b": np.ones(2), "s": np.array(7, dtype=np.int64)}
    save_checkpoint(path, arrays, {})
    rewrite_entries(path, **edit)
    with pytest.raises(CheckpointError, match="is corrupted: checksum mismatch"):
        load_checkpoint(path)


def test_a_header_claiming_more_data_than_stored_is_refused_before_allocating(tmp_path):
    # 10**12 float64 would be 8 TB: NumPy would try to allocate it before
    # noticing that the entry holds 16 bytes.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
    )
    path = tmp_path / "model.ckpt"
    save_checkpoint(path, {"w": np.zeros(2)}, {})
    rewrite_entries(path, {"w.npy": header.getvalue() + bytes(16)})
    with pytest.raises(CheckpointError, match=r"array 'w' of shape \(1000000000000,\) .* needs"):
        load_checkpoint(path)


def test_an_entry_with_another_compression_method_is_refused(tmp_path):
    path = tmp_path / "model.ckpt"
    save_checkpoint(path, {"w": np.zeros(2)}, {})
    rewrite_entries(path, compression=zipfile.ZIP_BZIP2)
    with pytest.raises(CheckpointError, match="unsupported compression method"):
        load_checkpoint(path)


# -------------------------------------------------- truncation and corruption


@functools.cache
def reference_checkpoint():
    """A small checkpoint's bytes, with the arrays and metadata it holds."""
    arrays = {
        "transformer.wte.weight": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),  # (3, 4)
        "step": np.array(9, dtype=np.int64),  # 0-d
        "empty": np.zeros((0, 2)),  # (0, 2)
    }
    metadata = {"config": {"n_layer": 1}, "loss": 2.25}
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "ref.ckpt")
        save_checkpoint(path, arrays, metadata)
        with open(path, "rb") as file:
            return file.read(), arrays, metadata


def load_bytes(data, directory):
    path = os.path.join(directory, "damaged.ckpt")
    with open(path, "wb") as file:
        file.write(data)
    return load_checkpoint(path)


def test_truncation_at_every_length_is_a_checkpoint_error(tmp_path):
    data, _, _ = reference_checkpoint()
    for length in range(len(data)):
        with pytest.raises(CheckpointError, match="damaged.ckpt"):
            load_bytes(data[:length], tmp_path)


def assert_intact_or_refused(data, directory):
    """Damage may land in bytes nothing reads (a timestamp); then the load must
    give back exactly what was saved. Otherwise it must be a CheckpointError."""
    _, arrays, metadata = reference_checkpoint()
    try:
        loaded_arrays, loaded_metadata = load_bytes(data, directory)
    except CheckpointError:
        return False
    assert_same_arrays(loaded_arrays, arrays)
    assert loaded_metadata == metadata
    return True


def entry_content_positions(data):
    """Byte positions of every zip entry's stored content (.npy header and data)."""
    positions = set()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            # A local file header is 30 fixed bytes ending in the lengths of the
            # name and of the extra field that come before the content.
            name_length, extra_length = struct.unpack(
                "<HH", data[info.header_offset + 26 : info.header_offset + 30]
            )
            start = info.header_offset + 30 + name_length + extra_length
            positions.update(range(start, start + info.compress_size))
    return positions


def test_flipping_any_single_byte_is_caught_or_harmless(tmp_path):
    data, _, _ = reference_checkpoint()
    harmless = set()
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        if assert_intact_or_refused(bytes(damaged), tmp_path):
            harmless.add(position)
    # Some zip bookkeeping is never checked by Python's zipfile (timestamps, the
    # local copies of sizes and CRC), so a flip there changes nothing. But every
    # byte of every entry's content, arrays and metadata alike, is protected.
    content = entry_content_positions(data)
    assert len(content) > len(data) // 2
    assert not harmless & content


@settings(deadline=None, max_examples=25)
@given(
    damage=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=8,
    )
)
def test_random_byte_corruption_is_caught_or_harmless(damage):
    data, _, _ = reference_checkpoint()
    damaged = bytearray(data)
    for position, value in damage:
        damaged[position % len(data)] = value
    with tempfile.TemporaryDirectory() as directory:
        assert_intact_or_refused(bytes(damaged), directory)
