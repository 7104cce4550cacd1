"""Tests for the `tinygpt` command: every bad input is one line on stderr with exit
status 2, and no fault (a signal, a kill, a full disk, a diverging loss, a
hostile file) loses work or runs foreign code.

Most cases call `cli.main([...])` in this process, which is what the
`tinygpt` console script runs. Signals, kills, exit statuses and one hostile
file go through the real command, `python -m tinygrad_gpt`, in a subprocess.
Runs are tiny (one layer, 16 channels, a few iterations).
"""

import contextlib
import csv
import errno
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_gpt import checkpoint, cli
from tinygrad_gpt.checkpoint import load_checkpoint, save_checkpoint
from tinygrad_gpt.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
TEXT = "the quick brown fox jumps over the lazy dog.\n" * 20  # 900 characters, 29 distinct
TINY = ["--n_layer", "1", "--n_embd", "16", "--n_head", "2", "--block_size", "8", "--batch_size", "4",
        "--eval_iters", "1", "--sample_tokens", "5"]


def run_main(capsys, *argv):
    """(exit status, stdout, stderr) of `tinygpt argv` run in this process."""
    try:
        status = cli.main(list(argv))
    except SystemExit as stop:  # argparse exits for --help and for usage errors
        status = stop.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *fragments):
    """Exit status 2 and exactly one stderr line, `tinygpt: error: ...`, holding each fragment."""
    assert status == 2, err
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("tinygpt: error: "), err
    for fragment in fragments:
        assert fragment in err, err


def tinygpt(*argv, cwd):
    """Start the real command `python -m tinygrad_gpt argv` in `cwd`."""
    paths = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.Popen([sys.executable, "-m", "tinygrad_gpt", *argv], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process, timeout=120):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished 4-iteration run on TEXT: the directory holding input.txt and out/.

    The run was started in that directory, so its checkpoint names the data
    "input.txt", relative to where it is resumed (as a user's would).
    """
    directory = tmp_path_factory.mktemp("trained")
    (directory / "input.txt").write_text(TEXT, encoding="utf-8")
    argv = ["train", "--data", "input.txt", *TINY, "--max_iters", "4", "--eval_interval", "2", "--log_interval", "100"]
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(argv) == 0
    finally:
        os.chdir(cwd)
    return directory


@pytest.fixture
def run_copy(trained_run, tmp_path, monkeypatch):
    """A private copy of `trained_run`, made the current directory, for tests that change its files."""
    copy = Path(shutil.copytree(trained_run, tmp_path / "run"))
    monkeypatch.chdir(copy)
    return copy


def losses_of(history_csv):
    with open(history_csv, newline="") as f:
        return [(row["iter"], row["loss"], row["lr"]) for row in csv.DictReader(f) if row["loss"]]


# ---- help ----------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["sample", "--help"]])
def test_help_exits_0_and_describes_the_command(capsys, argv):
    status, out, err = run_main(capsys, *argv)
    assert status == 0 and err == ""
    assert out.startswith(f"usage: tinygpt {' '.join(argv[:-1])}".rstrip())
    expected = {"--help": "{train,sample,", "train": "--n_embd N_EMBD, --n-embd N_EMBD", "sample": "--top-p"}
    assert expected[argv[0]] in out


def test_the_module_runs_as_the_tinygpt_command(tmp_path):
    status, out, err = finish(tinygpt("--help", cwd=tmp_path))
    assert status == 0 and err == ""
    assert out.startswith("usage: tinygpt")


def test_no_command_is_a_usage_error(capsys):
    status, _, err = run_main(capsys)
    assert_one_line_error(status, err, "the following arguments are required: {train,sample,")


# ---- bad settings ----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--n_embd", "30", "--n_head", "4"], "n_embd (30) must be divisible by n_head (4)"),
        (["--n_layer", "0"], "n_layer must be an integer >= 1, got 0"),
        (["--batch-size", "-3"], "batch_size must be an integer >= 1, got -3"),
        (["--block_size", "0"], "block_size must be an integer >= 1, got 0"),
        (["--learning_rate", "-0.1"], "learning_rate must be a finite number >= 0, got -0.1"),
        (["--learning_rate", "nan"], "learning_rate must be a finite number >= 0, got nan"),
        (["--dropout", "1"], "dropout must be a number in [0, 1), got 1.0"),
        (["--dropout", "-0.5"], "dropout must be a number in [0, 1), got -0.5"),
        (["--eval_iters", "0"], "eval_iters must be an integer >= 1, got 0"),
        (["--dtype", "float16"], "dtype must be 'float32' or 'float64', got 'float16'"),
        (["--max_iters", "1.5"], "argument --max_iters/--max-iters: invalid int value: '1.5'"),
        (["--bias", "maybe"], "argument --bias: expected true or false, got 'maybe'"),
        (["--n_embd"], "argument --n_embd/--n-embd: expected one argument"),
        (["--bogus", "3"], "unrecognized arguments: --bogus 3"),
        # A prefix of a flag is not taken for it: a typo must not pass silently.
        (["--n_emb", "32"], "unrecognized arguments: --n_emb 32"),
    ],
)
def test_invalid_settings_are_one_line_and_exit_2(capsys, tmp_path, argv, fragment):
    status, out, err = run_main(capsys, "train", "--out_dir", str(tmp_path / "out"), *argv)
    assert_one_line_error(status, err, fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content, fragment",
    [
        ({"n_embed": 32}, "unknown key 'n_embed'; did you mean 'n_embd'?"),
        ({"learning_rate": "fast"}, "learning_rate must be a finite number >= 0, got 'fast'"),
        ({"n_layer": 2.5}, "n_layer must be an integer >= 1, got 2.5"),
        ("{'n_layer': 2}", "is not valid JSON"),
        ([["n_layer", 2]], "must hold a JSON object of settings"),
        (None, "does not exist"),
    ],
)
def test_a_bad_config_file_is_one_line_and_exit_2(capsys, tmp_path, content, fragment):
    path = tmp_path / "config.json"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_text(json.dumps(content))
    status, _, err = run_main(capsys, "train", "--config", str(path), "--out_dir", str(tmp_path / "out"))
    assert_one_line_error(status, err, "config file", fragment)


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"n_layer": 3, "learning_rate": 0.01}))
    args = cli.build_parser().parse_args(["train", "--config", str(path), "--n_layer", "2"])
    config, explicit = cli.train_config(args)
    assert (config.n_layer, config.learning_rate, config.n_head) == (2, 0.01, TrainConfig().n_head)
    assert set(explicit) == {"learning_rate", "n_layer"}


class ConfigAccepted(BaseException):
    """Raised by the stand-in for train(): the command accepted its settings.

    A BaseException, so that main() lets it through like a real success."""


def accept(config, resume, explicit, overwrite=False, **display):
    raise ConfigAccepted(config)


FLAG_TYPES = {"n_layer": int, "n_head": int, "n_embd": int, "block_size": int, "batch_size": int,
              "eval_iters": int, "learning_rate": float, "dropout": float, "bias": cli._bool, "dtype": str}
FLAG_VALUES = st.one_of(
    st.integers(-3, 70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "no", "float64", "float32", "inf", "-0", "1e400", "", "0x10", " 7 "]),
    st.text(max_size=6),
)


@settings(deadline=None, max_examples=50)
@given(flags=st.dictionaries(st.sampled_from(sorted(FLAG_TYPES)), FLAG_VALUES, min_size=1, max_size=4))
def test_random_flag_values_are_accepted_or_refused_in_one_line(flags):
    # Random values for a few flags: the command either takes exactly the values
    # given, or stops with one `tinygpt: error:` line and status 2 naming a flag.
    argv = ["train", *(f"--{name}={value}" for name, value in flags.items())]
    stderr = io.StringIO()
    with mock.patch.object(cli, "train", accept), contextlib.redirect_stderr(stderr):
        try:
            status = cli.main(argv)
        except ConfigAccepted as accepted:
            config = accepted.args[0]
            for name, value in flags.items():
                assert getattr(config, name) == FLAG_TYPES[name](value), name
            return
        except SystemExit as stop:
            status = stop.code
    err = stderr.getvalue()
    assert_one_line_error(status, err)
    assert any(name in err for name in flags), err


# ---- bad data --------------------------------------------------------------------


def missing(path):
    pass


def empty(path):
    path.write_bytes(b"")


def directory(path):
    path.mkdir()


def binary(path):
    path.write_bytes(np.arange(256, dtype=np.uint8).tobytes())


def latin1(path):
    path.write_bytes("café au lait, s'il vous plaît\n".encode("latin-1") * 10)


def too_short(path):
    path.write_text("to be or no")  # 11 characters: the val split has 2 tokens, block_size + 1 is 9


@pytest.mark.parametrize(
    "make, fragment",
    [
        (missing, "does not exist"),
        (empty, "is empty, expected some text to train on"),
        (directory, "is a directory, expected a UTF-8 text file"),
        (binary, "contains NUL bytes, so it looks binary"),
        (latin1, "is not valid UTF-8 (byte 0xe9 at offset 3)"),
        (too_short, "the val split of"),
    ],
)
def test_bad_data_is_one_line_and_exit_2_before_anything_is_written(capsys, tmp_path, make, fragment):
    data = tmp_path / "data.txt"
    make(data)
    status, _, err = run_main(capsys, "train", "--data", str(data), "--out_dir", str(tmp_path / "out"), *TINY)
    assert_one_line_error(status, err, "data.txt", fragment)
    assert not (tmp_path / "out").exists()


def test_a_missing_data_file_through_the_real_command(tmp_path):
    status, out, err = finish(tinygpt("train", "--data", "nowhere.txt", *TINY, cwd=tmp_path))
    assert_one_line_error(status, err, "text file 'nowhere.txt' does not exist")
    assert out == ""


# ---- the output directory --------------------------------------------------------


@pytest.mark.parametrize(
    "out_dir, fragment",
    [("input.txt/out", "(Not a directory)"), ("input.txt", "(File exists)")],
    ids=["under-a-file", "is-a-file"],
)
def test_an_output_directory_that_cannot_be_made_is_one_line(capsys, text_file, out_dir, fragment):
    out = text_file.parent / out_dir
    status, _, err = run_main(capsys, "train", "--data", str(text_file), "--out_dir", str(out), *TINY)
    assert_one_line_error(status, err, f"cannot create the output directory {out}", fragment)
    assert text_file.read_text(encoding="utf-8") == TEXT


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="needs POSIX permissions, which root bypasses")
def test_a_read_only_output_directory_is_one_line(capsys, text_file):
    out = text_file.parent / "out"
    out.mkdir(mode=0o500)
    try:
        status, _, err = run_main(capsys, "train", "--data", str(text_file), "--out_dir", str(out), *TINY)
    finally:
        out.chmod(0o700)
    assert_one_line_error(status, err, f"the output directory {out} is not writable")
    assert os.listdir(out) == []


def test_a_full_disk_keeps_the_previous_checkpoint(capsys, text_file, monkeypatch):
    # The third checkpoint write (the one at iteration 3; iteration 0 wrote
    # ckpt_last and ckpt_best) runs out of space halfway through.
    out = text_file.parent / "out"
    last = out / "ckpt_last.npz"
    real_write = checkpoint._write_npz
    seen = {"writes": 0}

    def write_until_the_disk_is_full(file, entries):
        seen["writes"] += 1
        if seen["writes"] < 3:
            return real_write(file, entries)
        seen["before"] = last.read_bytes()
        file.write(b"PK\x03\x04 half an archive")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "_write_npz", write_until_the_disk_is_full)
    status, _, err = run_main(capsys, "train", "--data", str(text_file), "--out_dir", str(out), *TINY,
                              "--max_iters", "6", "--eval_interval", "3")
    assert_one_line_error(status, err, f"could not write checkpoint '{last}' (No space left on device); "
                                       "any previous file there is unchanged")
    assert last.read_bytes() == seen["before"]
    assert load_checkpoint(last)[1]["iter_num"] == 0
    assert sorted(os.listdir(out)) == ["ckpt_best.npz", "ckpt_last.npz", "history.csv"]  # no temporary file left


# ---- sampling --------------------------------------------------------------------


def test_sampling_continues_the_prompt(capsys, trained_run):
    ckpt = str(trained_run / "out" / "ckpt_best.npz")
    status, out, err = run_main(capsys, "sample", "--ckpt", ckpt, "--prompt", "the ", "--max-new-tokens", "12",
                                "--num-samples", "2")
    assert status == 0 and err == ""
    samples = out.removesuffix("\n").split("\n" + "-" * 40 + "\n")  # TEXT has no "-"
    assert len(samples) == 2
    for sample in samples:
        assert sample.startswith("the ") and len(sample) == 4 + 12  # one character per token
        assert set(sample) <= set(TEXT)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--prompt", "the Zebra"], "the prompt cannot be written in the vocabulary of"),
        (["--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
        (["--top_p", "nan"], "--top-p must be in (0, 1], got nan"),
        (["--temperature", "-1"], "--temperature must be a finite number >= 0 (0 is greedy), got -1.0"),
        (["--temperature", "inf"], "--temperature must be a finite number >= 0 (0 is greedy), got inf"),
        (["--top-k", "0"], "--top-k must be at least 1, got 0"),
        (["--max-new-tokens", "-1"], "--max-new-tokens must be 0 or more, got -1"),
        (["--num-samples", "0"], "--num-samples must be at least 1, got 0"),
        (["--seed", "-1"], "--seed must be 0 or more, got -1"),
        (["--top-k", "two"], "argument --top-k/--top_k: invalid int value: 'two'"),
    ],
)
def test_bad_sampling_settings_are_one_line_and_exit_2(capsys, trained_run, argv, fragment):
    status, out, err = run_main(capsys, "sample", "--ckpt", str(trained_run / "out" / "ckpt_best.npz"), *argv)
    assert_one_line_error(status, err, fragment)
    assert out == ""


def test_a_prompt_outside_the_vocabulary_names_the_characters(capsys, trained_run):
    status, _, err = run_main(capsys, "sample", "--ckpt", str(trained_run / "out" / "ckpt_best.npz"),
                              "--prompt", "the Zebra")
    assert_one_line_error(status, err, "'Z'")
    assert "'e'" not in err  # only the characters it lacks


# ---- bad checkpoints -------------------------------------------------------------


def truncated(path, good):
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])


def corrupted(path, good):
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the weights
    path.write_bytes(bytes(data))


def plain_npz(path, good):
    with open(path, "wb") as f:
        np.savez(f, weight=np.zeros(3))


def text(path, good):
    path.write_text("not a checkpoint\n")


def newer_version(path, good, monkeypatch):
    arrays, metadata = load_checkpoint(good)
    monkeypatch.setattr(checkpoint, "CHECKPOINT_VERSION", checkpoint.CHECKPOINT_VERSION + 1)
    save_checkpoint(path, arrays, metadata)
    monkeypatch.undo()


def no_model_config(path, good):
    arrays, metadata = load_checkpoint(good)
    save_checkpoint(path, arrays, {key: value for key, value in metadata.items() if key != "model_config"})


@pytest.mark.parametrize(
    "make, fragment",
    [
        (None, "does not exist"),
        (truncated, "is truncated or corrupted"),
        (corrupted, "corrupted"),
        (plain_npz, "is not a tinygrad_gpt checkpoint: it has no '__metadata__' entry"),
        (text, "is not a checkpoint (it is not an .npz archive)"),
        (newer_version, "(written by a newer tinygrad_gpt), but this build of tinygrad_gpt reads version"),
        (no_model_config, "has no valid model config"),
    ],
    ids=["missing", "truncated", "corrupted", "plain-npz", "text", "newer-version", "no-model-config"],
)
def test_a_bad_checkpoint_is_one_line_and_exit_2(capsys, trained_run, tmp_path, monkeypatch, make, fragment):
    path = tmp_path / "ckpt.npz"
    good = trained_run / "out" / "ckpt_best.npz"
    if make is newer_version:
        make(path, good, monkeypatch)
    elif make is not None:
        make(path, good)
    status, _, err = run_main(capsys, "sample", "--ckpt", str(path))
    assert_one_line_error(status, err, str(path), fragment)


class OpensMarkerWhenUnpickled:
    """Unpickling this calls open(marker, "w"): code from the file would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled_array_bytes(marker):
    array = np.empty(1, dtype=object)  # (1,)
    array[0] = OpensMarkerWhenUnpickled(marker)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def test_a_hostile_checkpoint_is_refused_without_running_its_code(trained_run, tmp_path):
    marker = tmp_path / "marker"
    payload = pickled_array_bytes(marker)
    # The control: loading the payload the unsafe way does run its code.
    np.load(io.BytesIO(payload), allow_pickle=True)
    assert marker.exists()
    marker.unlink()

    hostile = tmp_path / "hostile.npz"
    shutil.copy(trained_run / "out" / "ckpt_best.npz", hostile)
    with zipfile.ZipFile(hostile, "a") as archive:
        archive.writestr("evil.npy", payload)
    status, out, err = finish(tinygpt("sample", "--ckpt", "hostile.npz", cwd=tmp_path))
    assert_one_line_error(status, err, "hostile.npz", "contains pickled objects", "refused for safety")
    assert not marker.exists()


def test_a_raw_pickle_is_refused_without_running_its_code(capsys, tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps(OpensMarkerWhenUnpickled(marker)))
    status, _, err = run_main(capsys, "sample", "--ckpt", str(path))
    assert_one_line_error(status, err, "is a Python pickle, which is refused because loading one can run code")
    assert not marker.exists()


# ---- resuming on the wrong things ------------------------------------------------


def rewrite_with_other_characters(run):
    (run / "input.txt").write_text(TEXT.upper(), encoding="utf-8")


def drop_optimizer_state(run):
    last = run / "out" / "ckpt_last.npz"
    arrays, metadata = load_checkpoint(last)
    save_checkpoint(last, {k: v for k, v in arrays.items() if not k.startswith("optim/")}, metadata)


def drop_random_state(run):
    last = run / "out" / "ckpt_last.npz"
    arrays, metadata = load_checkpoint(last)
    save_checkpoint(last, arrays, {k: v for k, v in metadata.items() if k != "rng_state"})


def truncate_last(run):
    truncated(run / "out" / "ckpt_last.npz", run / "out" / "ckpt_best.npz")


def remove_last(run):
    (run / "out" / "ckpt_last.npz").unlink()


@pytest.mark.parametrize(
    "change, argv, fragment",
    [
        (None, ["--n_embd", "32", "--n_head", "2"], "cannot resume: n_embd is 32 but checkpoint"),
        (None, ["--bias", "true"], "cannot resume: bias is True but checkpoint"),
        (None, ["--data", "pystdlib"], "the text of pystdlib is not the text this run was trained on"),
        (None, ["--max_iters", "2"], "is at iteration 4, past max_iters 2"),
        (rewrite_with_other_characters, ["--data", "input.txt"], "the text of input.txt is not the text this run was"),
        (drop_optimizer_state, [], "cannot be resumed, its training state is damaged"),
        (drop_random_state, [], "cannot be resumed: it lacks the training state ['rng_state']"),
        (truncate_last, [], "is truncated or corrupted"),
        (remove_last, [], "cannot resume: there is no checkpoint at"),
    ],
)
def test_resuming_on_the_wrong_data_config_or_checkpoint_is_one_line(capsys, run_copy, change, argv, fragment):
    if change is not None:
        change(run_copy)
    before = {name: (run_copy / "out" / name).read_bytes() for name in os.listdir(run_copy / "out")}
    status, _, err = run_main(capsys, "train", "--resume", *argv)
    assert_one_line_error(status, err, fragment)
    after = {name: (run_copy / "out" / name).read_bytes() for name in os.listdir(run_copy / "out")}
    assert after == before  # nothing was written


# ---- faults during training ------------------------------------------------------


def test_a_diverging_loss_exits_1_and_keeps_the_last_good_checkpoint(text_file):
    # A learning rate of 1e30 overflows float32 within a step or two (see test_train.py).
    process = tinygpt("train", "--data", "input.txt", *TINY, "--max_iters", "20", "--eval_interval", "1",
                      "--learning_rate", "1e30", "--warmup_iters", "0", cwd=text_file.parent)
    status, out, err = finish(process)
    assert status == 1, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("tinygpt: error: ") and "(try a lower --learning_rate)" in err
    bad = int(err.split(" at iteration ")[1].split(";")[0])
    kept = int(err.split("state, from iteration ")[1].split(" ")[0])
    arrays, metadata = load_checkpoint(text_file.parent / "out" / "ckpt_last.npz")
    assert metadata["iter_num"] == kept < bad
    assert all(np.isfinite(value).all() for value in arrays.values())


def start_long_run(directory, *argv):
    """Start a run too long to finish and return it once it has logged a training step."""
    process = tinygpt("train", "--data", "input.txt", *TINY, "--max_iters", "100000", "--log_interval", "2",
                      *argv, cwd=directory)
    for line in process.stdout:
        if line.startswith("iter "):
            return process
    pytest.fail(f"the run ended before logging a step: {process.communicate()[1]}")


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_a_checkpoint_and_exits_cleanly(text_file, sig, status):
    process = start_long_run(text_file.parent, "--eval_interval", "1000")
    process.send_signal(sig)
    returncode, _, err = finish(process)
    assert returncode == status, err
    _, metadata = load_checkpoint(text_file.parent / "out" / "ckpt_last.npz")
    iteration = metadata["iter_num"]
    assert iteration >= 2  # past the first logged step: the stop saved a new checkpoint
    assert err == (f"tinygpt: {sig.name} received, so training stopped at iteration {iteration} after saving "
                   f"out/ckpt_last.npz (continue with: tinygpt train --resume --out_dir out)\n")
    assert len(losses_of(text_file.parent / "out" / "history.csv")) == iteration


def test_resume_after_a_kill_retraces_the_uninterrupted_run(text_file):
    # eval_interval=1 writes a checkpoint every iteration, so SIGKILL often
    # lands in the middle of a write: the checkpoint left must still load,
    # and resuming from it must give the very losses of a run never stopped.
    # (No handler runs on SIGKILL: this is a power cut, as far as the run knows.)
    directory = text_file.parent
    process = start_long_run(directory, "--eval_interval", "1", "--dropout", "0.1")
    process.kill()
    finish(process)
    _, metadata = load_checkpoint(directory / "out" / "ckpt_last.npz")
    stop = metadata["iter_num"]
    assert stop >= 1

    total = str(stop + 4)
    status, _, err = finish(tinygpt("train", "--resume", "--max_iters", total, cwd=directory))
    assert status == 0, err
    status, _, err = finish(tinygpt("train", "--data", "input.txt", *TINY, "--max_iters", total, "--log_interval",
                                    "2", "--eval_interval", "1", "--dropout", "0.1", "--out_dir", "whole",
                                    cwd=directory))
    assert status == 0, err
    # Losses and evaluations alike, as repr() strings: bit-identical floats.
    resumed = (directory / "out" / "history.csv").read_text()
    assert resumed == (directory / "whole" / "history.csv").read_text()
    assert len(losses_of(directory / "out" / "history.csv")) == stop + 4


# ---- what a newcomer met (issue 14) ----------------------------------------------


def test_version_is_the_package_version(capsys):
    status, out, _ = run_main(capsys, "--version")
    assert status == 0
    setup_cfg = (REPO / "setup.cfg").read_text()
    version = next(line.split("=")[1].strip() for line in setup_cfg.splitlines() if line.startswith("version"))
    assert out == f"tinygpt {version}\n"


def test_sample_help_lists_each_spelling_once(capsys):
    status, out, _ = run_main(capsys, "sample", "--help")
    assert status == 0
    assert "--temperature TEMPERATURE, --temperature" not in out and "--seed SEED, --seed" not in out
    assert "--max-new-tokens MAX_NEW_TOKENS, --max_new_tokens MAX_NEW_TOKENS" in out  # both spellings, once each


def test_a_name_close_to_a_built_in_corpus_is_suggested(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_main(capsys, "train", "--data", "pystdllib", *TINY)
    assert_one_line_error(status, err, "text file 'pystdllib' does not exist; did you mean the built-in 'pystdlib'?")


def test_resume_with_overwrite_is_refused_and_changes_nothing(capsys, run_copy):
    before = {name: (run_copy / "out" / name).read_bytes() for name in os.listdir(run_copy / "out")}
    status, _, err = run_main(capsys, "train", "--resume", "--overwrite")
    assert_one_line_error(status, err, "--resume continues the run in out and --overwrite replaces it")
    assert {name: (run_copy / "out" / name).read_bytes() for name in os.listdir(run_copy / "out")} == before


def test_resuming_a_finished_run_says_how_to_train_longer(capsys, run_copy):
    status, out, err = run_main(capsys, "train", "--resume")
    assert status == 0, err
    assert "the run already reached max_iters 4, so there is nothing to train" in out
    assert "resume with a larger --max_iters (such as 8)" in out


def test_a_run_resumes_from_another_directory_and_under_another_path(capsys, run_copy, tmp_path, monkeypatch):
    # The run was started in its own directory with --data input.txt (relative). From
    # elsewhere, --resume alone finds the text by the absolute path the checkpoint keeps;
    # the same text under another name is accepted too, by its SHA-256.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(run_copy / "input.txt", elsewhere / "renamed.txt")
    monkeypatch.chdir(elsewhere)
    out_dir = str(run_copy / "out")
    status, out, err = run_main(capsys, "train", "--resume", "--out_dir", out_dir, "--max_iters", "6")
    assert status == 0, err
    assert load_checkpoint(run_copy / "out" / "ckpt_last.npz")[1]["iter_num"] == 6
    status, out, err = run_main(capsys, "train", "--resume", "--out_dir", out_dir, "--max_iters", "8",
                                "--data", "renamed.txt")
    assert status == 0, err
    _, metadata = load_checkpoint(run_copy / "out" / "ckpt_last.npz")
    assert metadata["iter_num"] == 8 and metadata["train_config"]["data"] == str(elsewhere / "renamed.txt")


def test_resuming_when_the_text_has_moved_asks_for_its_new_path(capsys, run_copy, trained_run, tmp_path):
    # The checkpoint of the copy still names the original run's input.txt; make a run whose text then moves.
    (run_copy / "mine.txt").write_text(TEXT, encoding="utf-8")
    assert run_main(capsys, "train", "--data", "mine.txt", "--out_dir", "mine", *TINY, "--max_iters", "2")[0] == 0
    (run_copy / "mine.txt").rename(run_copy / "moved.txt")
    status, _, err = run_main(capsys, "train", "--resume", "--out_dir", "mine", "--max_iters", "4")
    assert_one_line_error(status, err, f"{run_copy / 'mine.txt'}, the text this run was trained on, is gone",
                          "give its new path with --data")
    status, _, err = run_main(capsys, "train", "--resume", "--out_dir", "mine", "--max_iters", "4",
                              "--data", "moved.txt")
    assert status == 0, err


def test_a_task_run_describes_its_real_batches_and_best_split(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = run_main(capsys, "train", "--data", "adder", "--max_iters", "2", "--eval_iters", "1",
                                "--n_layer", "1", "--n_embd", "16", "--n_head", "2")
    assert status == 0, err
    header = next(line for line in out.splitlines() if line.startswith("data adder"))
    assert "block 6)" in header and "2 iters of 12x6 tokens" in header  # the adder's sequences: 6 tokens
    assert "step 2: train loss" in out and ", test loss " in out
    assert "out/ckpt_best.npz (best test loss)" in out


def test_gradient_accumulation_is_a_flag(capsys, text_file, monkeypatch):
    monkeypatch.chdir(text_file.parent)
    status, _, err = run_main(capsys, "train", "--data", "input.txt", *TINY, "--max_iters", "2",
                              "--gradient_accumulation_steps", "2")
    assert status == 0, err
    assert load_checkpoint(text_file.parent / "out" / "ckpt_last.npz")[1]["train_config"][
        "gradient_accumulation_steps"] == 2
    status, _, err = run_main(capsys, "train", "--data", "input.txt", *TINY, "--gradient_accumulation_steps", "3",
                              "--out_dir", "other")
    assert_one_line_error(status, err, "batch_size (4) must be divisible by gradient_accumulation_steps (3)")
