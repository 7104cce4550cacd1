"""Tests for tinygrad_gpt.train: settings are checked, a run leaves the files it
promises, a resumed run retraces the uninterrupted one bit for bit, and a
diverging run keeps its last good checkpoint.

The runs are tiny (one layer, 16 channels, a few iterations) so the file stays
fast; what they check does not depend on the model's size. The `tinygpt`
command's side (exit statuses, one-line messages, signals) is in test_cli.py.
"""

import csv
import dataclasses
import io
import json
import math
import re

import numpy as np
import pytest

from tinygrad_gpt.checkpoint import load_checkpoint
from tinygrad_gpt.data import Batches
from tinygrad_gpt.gpt import GPT, GPTConfig
from tinygrad_gpt.optim import AdamW
from tinygrad_gpt.progress import Progress
from tinygrad_gpt.train import (
    Hooks,
    TrainConfig,
    TrainingDiverged,
    load_config_file,
    load_model,
    train,
)

TINY = dict(n_layer=1, n_embd=16, n_head=2, block_size=8, batch_size=4, eval_iters=1, sample_tokens=0,
            log_interval=100)
TEXT = "the quick brown fox jumps over the lazy dog.\n" * 20  # 900 characters, 29 distinct


def tiny_config(tmp_path, **overrides):
    """A tiny run on TEXT, its output in tmp_path/out."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "input.txt"
    if not data.exists():
        data.write_text(TEXT, encoding="utf-8")
    settings = {**TINY, "data": str(data), "out_dir": str(tmp_path / "out"), **overrides}
    return TrainConfig(**settings)


def quiet():
    return Progress(io.StringIO())


def read_history(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"n_embd": 30, "n_head": 4}, r"n_embd \(30\) must be divisible by n_head \(4\)"),
        ({"n_layer": 0}, "n_layer must be an integer >= 1, got 0"),
        ({"n_head": -2}, "n_head must be an integer >= 1, got -2"),
        ({"block_size": 0}, "block_size must be an integer >= 1"),
        ({"batch_size": -1}, "batch_size must be an integer >= 1"),
        ({"n_layer": 2.0}, r"n_layer must be an integer >= 1, got 2\.0"),
        ({"n_layer": True}, "n_layer must be an integer >= 1, got True"),
        ({"max_iters": -1}, "max_iters must be an integer >= 0"),
        ({"eval_iters": 0}, "eval_iters must be an integer >= 1, got 0"),
        ({"learning_rate": -1e-3}, "learning_rate must be a finite number >= 0, got -0.001"),
        ({"learning_rate": math.nan}, "learning_rate must be a finite number >= 0, got nan"),
        ({"learning_rate": math.inf}, "learning_rate must be a finite number >= 0, got inf"),
        ({"learning_rate": "1e-3"}, "learning_rate must be a finite number >= 0, got '1e-3'"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"dropout must be a number in \[0, 1\), got -0.1"),
        ({"beta2": 1.0}, r"beta2 must be a number in \[0, 1\), got 1.0"),
        ({"bias": "yes"}, "bias must be true or false, got 'yes'"),
        ({"dtype": "float16"}, "dtype must be 'float32' or 'float64', got 'float16'"),
        ({"data": ""}, "data must be a file path or one of pystdlib, adder, sorter"),
        ({"out_dir": ""}, "out_dir must be a directory path, got ''"),
    ],
)
def test_bad_settings_are_refused_in_one_sentence_naming_the_setting(settings, message):
    with pytest.raises((ValueError, TypeError), match=message) as info:
        TrainConfig(**settings)
    assert "\n" not in str(info.value)
    # A number of the wrong type is a TypeError, one out of range a ValueError (validate.py).
    assert isinstance(info.value, TypeError) == (settings in WRONG_TYPES), (settings, type(info.value))


WRONG_TYPES = [{"n_layer": 2.0}, {"n_layer": True}, {"learning_rate": "1e-3"}]


def test_the_model_settings_are_gptconfigs_fields_with_a_baby_gpts_defaults():
    model_fields = [f.name for f in dataclasses.fields(GPTConfig) if f.name != "vocab_size"]
    train_fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert train_fields[: len(model_fields)] == model_fields
    config = TrainConfig()
    assert (config.n_layer, config.n_head, config.n_embd, config.block_size, config.dropout, config.bias) == (
        4, 4, 128, 64, 0.0, False)
    assert config.model_config(vocab_size=7) == GPTConfig(vocab_size=7, n_layer=4, n_head=4, n_embd=128,
                                                          block_size=64, dropout=0.0, bias=False)


def test_an_unknown_setting_is_named_with_the_closest_known_one():
    with pytest.raises(ValueError, match="my.json: unknown key 'n_embed'; did you mean 'n_embd'") as info:
        TrainConfig.from_dict({"n_layer": 2, "n_embed": 64}, source="my.json")
    assert "\n" not in str(info.value)


def test_a_config_file_is_read_as_a_json_object(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"n_layer": 2, "learning_rate": 3e-4}))
    assert load_config_file(path) == {"n_layer": 2, "learning_rate": 3e-4}


@pytest.mark.parametrize(
    "content, error, message",
    [
        (None, FileNotFoundError, "config file .* does not exist"),
        ("directory", OSError, r"config file .* cannot be read \(Is a directory\)"),
        ("{n_layer: 2}", ValueError, "config file .* is not valid JSON"),
        (b"\xff\xfe{}", ValueError, "config file .* is not valid JSON"),
        ("[1, 2]", ValueError, "config file .* must hold a JSON object of settings"),
    ],
    ids=["missing", "directory", "not-json", "not-utf8", "not-an-object"],
)
def test_a_bad_config_file_is_named(tmp_path, content, error, message):
    path = tmp_path / "config.json"
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(error, match=message):
        load_config_file(path)


# ---- a run ---------------------------------------------------------------------


def test_a_run_writes_its_checkpoints_and_history(tmp_path):
    config = tiny_config(tmp_path, max_iters=6, eval_interval=3)
    result = train(config, progress=quiet())
    out = tmp_path / "out"

    arrays, metadata = load_checkpoint(out / "ckpt_last.npz")
    assert metadata["iter_num"] == 6 == result["iter_num"]
    assert metadata["train_config"] == dataclasses.asdict(config)
    # The checkpoint holds exactly the trained weights.
    for name, value in result["model"].state_dict().items():
        assert np.array_equal(arrays[f"model/{name}"], value), name

    rows = read_history(out / "history.csv")
    steps = [row for row in rows if row["loss"]]
    evals = [row for row in rows if row["val"]]
    assert [int(row["iter"]) for row in steps] == [0, 1, 2, 3, 4, 5]
    assert [int(row["iter"]) for row in evals] == [0, 3, 6]
    # The best checkpoint is the evaluation with the lowest val loss.
    best = min(evals, key=lambda row: float(row["val"]))
    _, best_metadata = load_checkpoint(out / "ckpt_best.npz")
    assert best_metadata["iter_num"] == int(best["iter"])
    assert best_metadata["best_val_loss"] == float(best["val"]) == result["best_val_loss"]


def test_bad_data_fails_before_the_output_directory_is_created(tmp_path):
    (tmp_path / "short.txt").write_text("abc")
    config = tiny_config(tmp_path, data=str(tmp_path / "short.txt"))
    with pytest.raises(ValueError, match=r"has \d tokens, fewer than block_size \+ 1 = 9"):
        train(config, progress=quiet())
    assert not (tmp_path / "out").exists()


def test_a_float64_checkpoint_loads_without_rounding(tmp_path):
    # load_model must not pass the weights through float32 parameters on the way.
    result = train(tiny_config(tmp_path, max_iters=1, dtype="float64"), progress=quiet())
    model, _, _ = load_model(tmp_path / "out" / "ckpt_last.npz")
    for name, value in result["model"].state_dict().items():
        loaded = model.state_dict()[name]
        assert loaded.dtype == np.float64 and np.array_equal(loaded, value), name


# ---- resume --------------------------------------------------------------------


def test_a_resumed_run_retraces_the_uninterrupted_one_bit_for_bit(tmp_path):
    # Dropout draws from the library generator and the batches from the data
    # generator, so both states must come back from the checkpoint; the
    # schedule's warmup and decay make the learning rate depend on the
    # iteration. The first run stops at max_iters=3 and the resume raises
    # max_iters: the schedule follows lr_decay_iters, so that changes nothing.
    settings = dict(max_iters=8, eval_interval=3, dropout=0.1, warmup_iters=2, lr_decay_iters=8)
    whole = train(tiny_config(tmp_path / "whole", **settings), progress=quiet())

    train(tiny_config(tmp_path / "parts", **{**settings, "max_iters": 3}), progress=quiet())
    resumed = train(tiny_config(tmp_path / "parts", max_iters=8), resume=True, explicit=("max_iters",),
                    progress=quiet())

    # history.csv holds repr() of each float, so equal text is equal bits: the
    # same losses, learning rates and loss estimates, and iteration 3, where the
    # first run ended, evaluated once.
    history = (tmp_path / "parts" / "out" / "history.csv").read_text()
    assert history == (tmp_path / "whole" / "out" / "history.csv").read_text()
    rows = read_history(tmp_path / "whole" / "out" / "history.csv")
    assert [row["iter"] for row in rows if row["val"]] == ["0", "3", "6", "8"]
    assert len([row for row in rows if row["loss"]]) == 8
    for name, value in whole["model"].state_dict().items():
        assert np.array_equal(resumed["model"].state_dict()[name], value), name
    assert resumed["config"].dropout == 0.1  # the settings not given came from the checkpoint


def test_resuming_a_finished_run_reports_its_final_losses_without_training(tmp_path):
    first = train(tiny_config(tmp_path, max_iters=4), progress=quiet())
    again = train(tiny_config(tmp_path), resume=True, progress=quiet())
    assert again["iter_num"] == 4 and again["median_step_ms"] is None  # no step taken
    assert again["losses"] == first["losses"] and set(first["losses"]) == {"train", "val"}


def test_resuming_past_the_checkpoint_is_refused(tmp_path):
    train(tiny_config(tmp_path, max_iters=4), progress=quiet())
    with pytest.raises(ValueError, match="checkpoint .* is at iteration 4, past max_iters 2"):
        train(tiny_config(tmp_path, max_iters=2), resume=True, explicit=("max_iters",), progress=quiet())


# ---- divergence ----------------------------------------------------------------


def test_a_diverging_run_stops_naming_the_iteration_and_keeps_the_last_good_checkpoint(tmp_path):
    # A learning rate of 1e30 makes every float32 weight about 1e30 after one
    # step, and products of such weights overflow: the loss becomes Inf or NaN.
    # eval_interval=1 saves a checkpoint every iteration, so the test sees that
    # the state of the bad iteration is the one not written.
    config = tiny_config(tmp_path, max_iters=20, eval_interval=1, learning_rate=1e30, warmup_iters=0)
    with pytest.raises(TrainingDiverged) as info:
        train(config, progress=quiet())
    message = str(info.value)
    match = re.fullmatch(r".* became (nan|inf|-inf|NaN or Inf) at iteration (\d+); training stopped and "
                         r"\S+ckpt_last\.npz still holds the last good state, from iteration (\d+) "
                         r"\(try a lower --learning_rate\)", message)
    assert match, message
    bad, kept = int(match.group(2)), int(match.group(3))
    assert kept < bad

    arrays, metadata = load_checkpoint(tmp_path / "out" / "ckpt_last.npz")
    assert metadata["iter_num"] == kept
    assert all(np.isfinite(value).all() for value in arrays.values())
    # history.csv records how it went wrong, up to the bad iteration.
    last = read_history(tmp_path / "out" / "history.csv")[-1]
    assert int(last["iter"]) == bad
    assert not all(math.isfinite(float(last[key])) for key in ("loss", "train", "val") if last[key])


# ---- progress ------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_a_live_progress_line_is_ended_before_anything_else_is_printed():
    terminal = FakeTerminal()
    progress = Progress(terminal)
    progress.step("iter 1/10")
    progress.step("iter 2/10")
    progress.finish()
    progress.finish()  # a second finish adds nothing
    progress.line("done")
    assert terminal.getvalue() == "\r" + "iter 1/10".ljust(100) + "\r" + "iter 2/10".ljust(100) + "\ndone\n"


def test_a_fresh_run_refuses_to_replace_existing_checkpoints(tmp_path):
    train(tiny_config(tmp_path, max_iters=2, eval_interval=2), progress=quiet())
    last = tmp_path / "out" / "ckpt_last.npz"
    before = last.read_bytes()
    with pytest.raises(FileExistsError, match=r"ckpt_last\.npz already exists; continue that run with --resume"):
        train(tiny_config(tmp_path, max_iters=4, eval_interval=2, seed=7), progress=quiet())
    assert last.read_bytes() == before
    result = train(tiny_config(tmp_path, max_iters=4, eval_interval=2, seed=7), progress=quiet(), overwrite=True)
    assert result["iter_num"] == 4 and last.read_bytes() != before


def test_a_loss_curve_png_is_drawn_when_matplotlib_is_installed(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is an optional extra (pip install -e '.[plot]')")
    train(tiny_config(tmp_path, max_iters=4, eval_interval=2), progress=quiet())
    png = tmp_path / "out" / "loss_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- gradient accumulation and the loop's seams -------------------------------------


def losses_in(out_dir):
    return np.array([float(row["loss"]) for row in read_history(out_dir / "history.csv") if row["loss"]])


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-6), ("float64", 1e-12)])
def test_gradient_accumulation_takes_the_step_of_the_whole_batch(tmp_path, dtype, rtol):
    # K=4 cuts each batch of 8 rows (the very rows the K=1 run draws at the same
    # seed) into 4 micro-batches of 2 and adds up the gradients of loss / 4. The
    # result differs from one pass over 8 rows only in the order of the float
    # sums (the mean over 8 rows becomes four means of 2, then their mean), so
    # the losses agree to a few units in the last place: float32's epsilon is
    # 1.2e-7 and we allow about 8 of them; float64's 2.2e-16 with room for the
    # same amplification over 6 AdamW steps.
    settings = dict(max_iters=6, batch_size=8, eval_interval=3, dtype=dtype)
    train(tiny_config(tmp_path / "one", **settings), progress=quiet())
    train(tiny_config(tmp_path / "four", gradient_accumulation_steps=4, **settings), progress=quiet())
    one, four = losses_in(tmp_path / "one" / "out"), losses_in(tmp_path / "four" / "out")
    assert len(one) == len(four) == 6
    np.testing.assert_allclose(four, one, rtol=rtol, atol=0)


def test_batch_size_must_split_into_the_micro_batches():
    with pytest.raises(ValueError, match=r"batch_size \(12\) must be divisible by gradient_accumulation_steps \(5\)"):
        TrainConfig(batch_size=12, gradient_accumulation_steps=5)


class CountingHooks(Hooks):
    """A process that is not the writer (as rank 1 of a data-parallel run) and counts the steps."""

    is_writer = False

    def __init__(self):
        self.steps = 0

    def after_backward(self, model):
        assert all(p.grad is not None for p in model.parameters())  # called with this step's gradients
        self.steps += 1


def test_hooks_see_every_step_and_a_non_writer_writes_nothing(tmp_path):
    hooks = CountingHooks()
    result = train(tiny_config(tmp_path, max_iters=5, eval_interval=2), progress=quiet(), hooks=hooks)
    assert hooks.steps == 5 and result["iter_num"] == 5
    assert not (tmp_path / "out").exists()


def test_a_caller_may_supply_the_batches_model_and_optimizer(tmp_path):
    # What fine-tuning does: its own batches (any object with get/splits/vocab_size/
    # block_size/tokenizer), a model built elsewhere, an optimizer over some parameters.
    config = tiny_config(tmp_path, max_iters=3, eval_interval=3)
    batches = Batches(config.data, config.batch_size, config.block_size)
    model = GPT(config.model_config(batches.vocab_size))
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    optimizer = AdamW([p for name, p in model.named_parameters() if name != "transformer.wpe.weight"], lr=1e-3)
    result = train(config, progress=quiet(), batches=batches, model=model, optimizer=optimizer)
    assert result["model"] is model
    after = dict(model.named_parameters())
    assert np.array_equal(after["transformer.wpe.weight"].data, before["transformer.wpe.weight"])  # not trained
    assert not np.array_equal(after["transformer.h.0.mlp.c_fc.weight"].data, before["transformer.h.0.mlp.c_fc.weight"])


def test_a_checkpoint_from_before_a_model_field_existed_resumes_with_its_default(tmp_path):
    # gelu_approximate joined GPTConfig after checkpoints were written without it: such a
    # checkpoint describes a model with the field's default ("none"), and must resume.
    from tinygrad_gpt.checkpoint import save_checkpoint

    config = tiny_config(tmp_path, max_iters=2, eval_interval=2)
    train(config, progress=quiet())
    last = str(tmp_path / "out" / "ckpt_last.npz")
    arrays, metadata = load_checkpoint(last)
    del metadata["model_config"]["gelu_approximate"], metadata["train_config"]["gelu_approximate"]
    save_checkpoint(last, arrays, metadata)
    result = train(dataclasses.replace(config, max_iters=4), resume=True, explicit=("max_iters",), progress=quiet())
    assert result["iter_num"] == 4 and result["model"].config.gelu_approximate == "none"
