"""The training loop, as in nanoGPT: AdamW, evaluation, checkpoints, resume.

`train(TrainConfig(...))` runs it. Every `eval_interval` iterations it
estimates the train and val loss over `eval_iters` batches (eval mode, no
graph), saves `ckpt_last.npz` (and `ckpt_best.npz` when val improves) and
writes the loss history to `history.csv`. A checkpoint holds the model,
optimizer state and both random generators' states (see training_state.py),
so `resume=True` continues bit-for-bit as if the run had never stopped.

The pieces around the loop live with their own kind: batches in data.py,
checkpoints in training_state.py, the progress display and Ctrl-C in
progress.py. Given a `stop` flag (progress.StopSignals), a signal saves
`ckpt_last.npz` at the end of the current step and raises
`TrainingInterrupted`. A NaN or Inf loss (or parameter) raises
`TrainingDiverged` without saving, so `ckpt_last.npz` stays the last good
state. Bad settings, data or checkpoints raise a ValueError or TypeError (a
CheckpointError for checkpoints) or an OSError with one sentence naming what
is wrong, before anything is written.
"""

import csv
import dataclasses
import difflib
import json
import math
import os
import signal
import time
from dataclasses import dataclass, fields

import numpy as np

from . import rng
from .data import BUILT_IN, Batches
from .gpt import GPT, GPTConfig
from .optim import clip_grad_norm_, configure_optimizer, cosine_lr
from .progress import Progress
from .tensor import no_grad
from .training_state import load_model  # noqa: F401  (re-exported: `tinygrad_gpt.train.load_model` is the documented entry)
from .training_state import load_training_state, restore_training_state, save_training_state
from .validate import check_int, check_number

# The model's settings are GPTConfig's own fields, all but vocab_size (the data decides it),
# so the two cannot drift apart; only the defaults differ: a baby GPT without biases.
BABY_GPT = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False)
ModelSettings = dataclasses.make_dataclass(
    "ModelSettings",
    [(f.name, f.type, dataclasses.field(default=BABY_GPT.get(f.name, f.default)))
     for f in fields(GPTConfig) if f.name != "vocab_size"],
)


@dataclass
class TrainConfig(ModelSettings):
    """Every knob of a run, with nanoGPT's names: the model's (ModelSettings, from
    GPTConfig) and these. Defaults: a baby GPT on the embedded Python-stdlib corpus."""

    data: str = "pystdlib"  # a UTF-8 text file, or one of: pystdlib, adder, sorter
    tokenizer: str = "char"  # char, bpe (trained on the text), or a directory of vocab.json + merges.txt
    vocab_size: int = 4096  # tokens of the BPE that --tokenizer bpe trains (the model takes the tokenizer's)
    out_dir: str = "out"
    # optimization
    batch_size: int = 12  # rows per optimizer step, over all micro-batches
    gradient_accumulation_steps: int = 1  # micro-batches of batch_size / this rows per step
    max_iters: int = 5000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 5000
    decay_lr: bool = True
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    # evaluation and logging
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    sample_tokens: int = 300  # tokens of text printed at the end (text data)
    seed: int = 1337
    dtype: str = "float32"

    def __post_init__(self):
        positive = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "gradient_accumulation_steps",
                    "eval_interval", "eval_iters", "log_interval")
        for name in positive:
            check_int(name, getattr(self, name), minimum=1)
        for name in ("max_iters", "warmup_iters", "lr_decay_iters", "sample_tokens", "seed"):
            check_int(name, getattr(self, name), minimum=0)
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
            check_number(name, getattr(self, name), minimum=0)
        for name in ("beta1", "beta2"):
            check_number(name, getattr(self, name), minimum=0, below=1)
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be divisible by gradient_accumulation_steps "
                f"({self.gradient_accumulation_steps}): each micro-batch has batch_size / steps rows"
            )
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"data must be a file path or one of {', '.join(BUILT_IN)}, got {self.data!r}")
        if not isinstance(self.tokenizer, str) or not self.tokenizer:
            raise ValueError(f"tokenizer must be 'char', 'bpe' or a directory of BPE files, got {self.tokenizer!r}")
        check_int("vocab_size", self.vocab_size, minimum=257)  # the 256 bytes and <|endoftext|>
        if not isinstance(self.out_dir, str) or not self.out_dir:
            raise ValueError(f"out_dir must be a directory path, got {self.out_dir!r}")
        self.model_config()  # validates n_embd % n_head, dropout, bias

    def model_config(self, vocab_size=1):
        return GPTConfig(vocab_size=vocab_size, **{f.name: getattr(self, f.name) for f in fields(ModelSettings)})

    @classmethod
    def from_dict(cls, d, source=None):
        """Build from a dict. An unknown key is named, with the closest known one;
        errors start with `source`, where `d` came from, when it is given."""
        prefix = f"{source}: " if source else ""
        known = [f.name for f in fields(cls)]
        for key in d:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"{prefix}unknown key {key!r}{hint}")
        try:
            return cls(**d)
        except (ValueError, TypeError) as error:
            raise type(error)(f"{prefix}{error}") from None


def load_config_file(path):
    """A JSON object of TrainConfig fields (nanoGPT uses Python files; JSON runs no code)."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except OSError as error:  # a directory, no permission
        raise OSError(f"config file {path} cannot be read ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"config file {path} is not valid JSON: {error}") from None
    if not isinstance(d, dict):
        raise ValueError(f"config file {path} must hold a JSON object of settings")
    return d


class TrainingInterrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after saving a checkpoint in `out_dir`."""

    def __init__(self, message, signal_number, out_dir):
        super().__init__(message)
        self.signal_number = signal_number
        self.out_dir = out_dir


class TrainingDiverged(RuntimeError):
    """The loss or a parameter became NaN or Inf; the last good checkpoint was kept."""


class Hooks:
    """Where other ways of training plug into the loop; these defaults do nothing.

    Data-parallel training (distributed.DataParallelHooks), for instance, gives
    each rank its rows of the batch in `prepare`, averages the losses over ranks
    in `reduce_loss` and `reduce_losses`, the gradients in `step`, agrees on a
    stop signal in `stop_signal`, and lets only rank 0 be the writer of
    checkpoints and history.
    """

    is_writer = True  # whether this process writes checkpoints and history.csv

    def prepare(self, config, batches, model, optimizer):
        """The (batches, optimizer) to train with, once the weights and states are set or restored."""
        return batches, optimizer

    def after_backward(self, model):
        """Called with the gradients of one optimizer step, before they are clipped."""

    def step(self, model, optimizer, grad_clip):
        """Clip the gradients' global norm to grad_clip (0: off) and take the optimizer step."""
        self.after_backward(model)
        if grad_clip > 0:
            clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()

    def reduce_loss(self, loss):
        """The training loss of one step to record and check."""
        return loss

    def reduce_losses(self, losses):
        """The eval losses ({split: mean loss}) to act on."""
        return losses

    def stop_signal(self, received):
        """The signal number to stop for (or None), given the one this process received."""
        return received


def train(config, resume=False, progress=None, stop=None, explicit=(), overwrite=False,
          batches=None, model=None, optimizer=None, hooks=None):
    """Run training; returns a dict with the model, the final losses and paths.

    With `resume`, continue from `config.out_dir`/ckpt_last.npz: settings
    come from the checkpoint, except those named in `explicit` (the ones the
    user set), which override it; a model or data setting must agree with it.
    Without `resume`, an out_dir that already holds a checkpoint is refused
    unless `overwrite` is set, so a forgotten --resume loses no work.
    Everything is checked before the output directory is touched.

    `progress` shows the log (default: progress.Progress() on stdout); `stop`
    is checked between steps: once its `received` is a signal number the run
    saves and raises TrainingInterrupted. `batches` (see data.Batches for what
    they must offer), `model` and `optimizer` replace the ones the config
    would build; `hooks` is a Hooks.

    Raises ValueError or TypeError (CheckpointError for a bad checkpoint),
    OSError (CheckpointWriteError when a checkpoint cannot be written; the
    previous one is then intact), TrainingDiverged, or TrainingInterrupted.
    """
    progress, hooks = progress or Progress(), hooks or Hooks()
    config, batches, model, optimizer, saved = _build_run(config, resume, explicit, overwrite, batches, model,
                                                          optimizer)
    last_path, best_path = _checkpoint_paths(config.out_dir)
    if hooks.is_writer:
        _prepare_out_dir(config.out_dir)
        if config.tokenizer == "bpe" and not saved:  # a tokenizer trained for this run, reusable with --tokenizer DIR
            tokenizer_dir = os.path.join(config.out_dir, "tokenizer")
            batches.tokenizer.save(tokenizer_dir)
            progress.line(f"BPE tokenizer of {batches.tokenizer.vocab_size} tokens trained, saved in {tokenizer_dir}")
    data_rng = np.random.default_rng(config.seed)
    iter_num, best_val_loss, history = 0, float("inf"), []
    if saved:
        iter_num, best_val_loss, history = restore_training_state(last_path, *saved, model, optimizer, data_rng)
        progress.line(f"resuming from {last_path} at iteration {iter_num}")
        if iter_num >= config.max_iters:
            progress.line(f"the run already reached max_iters {config.max_iters}, so there is nothing to train; "
                          f"to train longer, resume with a larger --max_iters (such as {2 * config.max_iters})")
    batches, optimizer = hooks.prepare(config, batches, model, optimizer)
    start_iter, saved_iter = iter_num, (iter_num if saved else None)  # saved_iter: what ckpt_last.npz holds
    progress.line(_describe_run(config, batches, model))

    def diverged(what):
        save()  # keep the record of how it went wrong, but not the broken weights
        raise TrainingDiverged(
            f"{what} at iteration {iter_num}; training stopped and {last_path} still holds the last good "
            f"state, from iteration {saved_iter} (try a lower --learning_rate)"
        )

    def save(*paths):
        """The one place that writes: the checkpoints at `paths`, then history.csv."""
        nonlocal saved_iter
        for name, p in model.named_parameters() if paths else ():
            if not np.isfinite(p.data).all():
                diverged(f"parameter {name} became NaN or Inf")
        # Asked of every process: a sharded optimizer (ZeRO-1) gathers its state to the writer here.
        optimizer_state = optimizer.state_dict() if paths else None
        if not hooks.is_writer:
            return
        for path in paths:
            save_training_state(path, model, optimizer_state, dataclasses.asdict(config), batches, iter_num,
                                best_val_loss, history, data_rng)
        saved_iter = iter_num if last_path in paths else saved_iter
        write_history(config.out_dir, history)

    eval_split, step_times = batches.splits[-1], []
    # A resumed run has already evaluated (and saved) the iteration it starts from.
    last_eval = max((row["iter"] for row in history if row.get("eval")), default=None)
    # NumPy's overflow warnings are silenced: a diverging run is reported once, clearly, by diverged().
    # Leaving `progress` ends its live line, however the loop ends.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), progress:
        while True:
            due = iter_num % config.eval_interval == 0 or iter_num == config.max_iters
            if due and iter_num != last_eval:
                losses = hooks.reduce_losses(estimate_loss(model, batches, config.eval_iters, config.seed + iter_num))
                last_eval = iter_num
                history.append({"iter": iter_num, "eval": True, **losses})
                for split, value in losses.items():
                    if not math.isfinite(value):
                        diverged(f"the {split} loss estimate became {value}")
                improved = losses[eval_split] < best_val_loss
                best_val_loss = min(best_val_loss, losses[eval_split])
                progress.line(f"step {iter_num}: train loss {losses['train']:.4f}, {eval_split} loss "
                              f"{losses[eval_split]:.4f}" + (" (best so far)" if improved else ""))
                save(*((last_path, best_path) if improved else (last_path,)))
            received = hooks.stop_signal(stop.received if stop is not None else None)
            if received is not None:
                save(last_path)
                raise TrainingInterrupted(
                    f"{signal.Signals(received).name} received, so training stopped at iteration {iter_num} "
                    f"after saving {last_path}", received, config.out_dir)
            if iter_num >= config.max_iters:
                break

            lr = cosine_lr(iter_num, config.learning_rate, config.min_lr, config.warmup_iters,
                           config.lr_decay_iters) if config.decay_lr else config.learning_rate
            optimizer.set_lr(lr)
            t0 = time.perf_counter()
            loss_value = hooks.reduce_loss(
                compute_grads(model, *batches.get("train", data_rng), config.gradient_accumulation_steps))
            history.append({"iter": iter_num, "loss": loss_value, "lr": lr})
            if not math.isfinite(loss_value):
                diverged(f"the loss became {loss_value}")
            hooks.step(model, optimizer, config.grad_clip)
            step_times.append(time.perf_counter() - t0)
            iter_num += 1
            if iter_num % config.log_interval == 0 or iter_num == config.max_iters:
                progress.step(_describe_step(config, batches, iter_num, loss_value, lr, step_times))

    if hooks.is_writer:
        plot_history(config.out_dir, history)
    final = next(row for row in reversed(history) if row.get("eval"))  # iteration max_iters is always evaluated
    return {
        "config": config,
        "model": model,
        "batches": batches,
        "start_iter": start_iter,
        "iter_num": iter_num,
        "losses": {split: final[split] for split in batches.splits},
        "best_val_loss": best_val_loss,
        "ckpt_last": last_path,
        "ckpt_best": best_path,
        "median_step_ms": float(np.median(step_times)) * 1000 if step_times else None,
    }


def compute_grads(model, x, y, accumulation_steps=1):
    """Forward and backward for one optimizer step; returns its loss.

    The (B, T) batch is cut into `accumulation_steps` micro-batches of B / steps
    rows, and each micro-batch's mean loss is scaled by 1 / steps before its
    backward, so the gradients add up to those of the mean loss over the whole
    batch (as nanoGPT's gradient accumulation; with ignored targets, exactly so
    when every micro-batch has as many counted targets). Only one micro-batch's
    graph is alive at a time: that is the memory it saves.
    """
    model.train()
    model.zero_grad()
    loss_value = 0.0
    for x_micro, y_micro in zip(np.split(x, accumulation_steps), np.split(y, accumulation_steps)):  # (B / K, T)
        _, loss = model(x_micro, y_micro)
        (loss * (1.0 / accumulation_steps)).backward()
        loss_value += loss.item() / accumulation_steps
    return loss_value


def estimate_loss(model, batches, eval_iters, seed):
    """Mean loss over `eval_iters` batches of each split, in eval mode, without a graph.

    The batches come from their own generator seeded by `seed`, so evaluating
    does not move the training data stream (resume stays exact).
    """
    was_training = model.training
    model.eval()
    out = {}
    with no_grad():
        for split in batches.splits:
            generator = np.random.default_rng(seed)
            losses = [model(*batches.get(split, generator))[1].item() for _ in range(eval_iters)]
            out[split] = float(np.mean(losses))
    model.train(was_training)
    return out


def task_accuracy(model, task, split="test"):
    """Exact-match accuracy of the model's greedy answers on a synthetic task's problems."""

    def greedy_answers(prompts):  # (N, P) -> (N, answer_length)
        return model.generate(prompts, task.answer_length, temperature=0)[:, prompts.shape[1]:]

    return task.score(greedy_answers, split=split)


def write_history(out_dir, history):
    """history.csv: one row per training iteration and per evaluation."""
    path = os.path.join(out_dir, "history.csv")
    columns = ["iter", "loss", "lr", "train", "val", "test"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: v for k, v in row.items() if k in columns})


def plot_history(out_dir, history):
    """loss_curve.png, when matplotlib is installed (an optional extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steps = [(r["iter"], r["loss"]) for r in history if "loss" in r]
    evals = [r for r in history if r.get("eval")]
    fig, ax = plt.subplots(figsize=(7, 4))
    if steps:
        ax.plot(*zip(*steps), lw=0.6, alpha=0.5, label="train (per step)")
    for split in ("train", "val", "test"):
        points = [(r["iter"], r[split]) for r in evals if split in r]
        if points:
            ax.plot(*zip(*points), marker="o", label=f"{split} (estimate)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss")
    ax.legend()
    path = os.path.join(out_dir, "loss_curve.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---- the checks and lines around the loop ----------------------------------------


def _checkpoint_paths(out_dir):
    return os.path.join(out_dir, "ckpt_last.npz"), os.path.join(out_dir, "ckpt_best.npz")


def _build_run(config, resume, explicit, overwrite, batches, model, optimizer):
    """The run's settings, batches, model, optimizer and (when resuming) the checkpoint's
    (metadata, arrays), all checked; nothing is written yet."""
    last_path, best_path = _checkpoint_paths(config.out_dir)
    if resume and overwrite:
        raise ValueError(f"--resume continues the run in {config.out_dir} and --overwrite replaces it; give one of them")
    saved_meta, saved_arrays, tokenizer = load_training_state(last_path) if resume else (None, None, None)
    if resume:
        config = _resumed_config(config, explicit, saved_meta, last_path)
    else:
        _refuse_to_replace(last_path, best_path, overwrite)
    if batches is None:
        if saved_meta:
            _check_resumed_data(last_path, saved_meta, config)
        saved_sha = saved_meta.get("data_sha256") if saved_meta else None
        batches = Batches(config.data, config.batch_size, config.block_size, tokenizer,
                          text_sha256=saved_sha, tokenizer_kind=config.tokenizer, vocab_size=config.vocab_size)
        config = dataclasses.replace(config, data=batches.source)  # as an absolute path: resumable from anywhere
    rng.manual_seed(config.seed)  # the model's initial weights and the dropout masks
    if model is None:
        # The batches' block size: a task's sequences have their own length, whatever --block_size says.
        model_config = dataclasses.replace(config.model_config(batches.vocab_size), block_size=batches.block_size)
        model = GPT(model_config).to(np.dtype(config.dtype))
    if saved_meta:
        _check_resume(last_path, saved_meta, config, model.config)
    if optimizer is None:
        optimizer = configure_optimizer(model, config.learning_rate, (config.beta1, config.beta2), config.weight_decay)
    return config, batches, model, optimizer, (saved_meta, saved_arrays) if resume else None


def _resumed_config(config, explicit, metadata, path):
    """The checkpoint's settings, with the ones the user gave (`explicit`) on top."""
    given = {name: getattr(config, name) for name in explicit}
    return TrainConfig.from_dict({**metadata["train_config"], **given, "out_dir": config.out_dir},
                                 source=f"checkpoint {path}")


def _refuse_to_replace(last_path, best_path, overwrite):
    existing = [p for p in (last_path, best_path) if os.path.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} already exists; continue that run with --resume, "
                              f"start over with --overwrite, or choose another --out_dir")


def _check_resumed_data(path, metadata, config):
    """A resumed task (or a text from a checkpoint older than data_sha256) keeps its name;
    a text is recognised by its SHA-256 instead, under any path (data.Batches), and
    without --data it is read from the absolute path the checkpoint stores."""
    saved_data = metadata["train_config"].get("data")
    if metadata.get("data_sha256") is None and config.data != saved_data:
        raise ValueError(f"cannot resume: data is {config.data!r} but checkpoint {path} was trained on {saved_data!r}")
    if config.data == saved_data and config.data not in BUILT_IN and not os.path.exists(saved_data):
        raise FileNotFoundError(f"cannot resume: {saved_data}, the text this run was trained on, is gone; "
                                f"give its new path with --data")


def _check_resume(path, metadata, config, model_config):
    """The model being resumed must be the checkpoint's, and not already past max_iters."""
    saved_model = GPTConfig.from_dict(metadata["model_config"]).to_dict()  # fields added since: their defaults
    for name, value in model_config.to_dict().items():
        if saved_model[name] != value:
            raise ValueError(
                f"cannot resume: {name} is {value!r} but checkpoint {path} was trained with {saved_model[name]!r}"
            )
    if metadata["iter_num"] > config.max_iters:
        raise ValueError(
            f"cannot resume: checkpoint {path} is at iteration {metadata['iter_num']}, past max_iters "
            f"{config.max_iters}; give a larger --max_iters"
        )


def _prepare_out_dir(out_dir):
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the output directory {out_dir} ({error.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise PermissionError(f"the output directory {out_dir} is not writable")


def _describe_run(config, batches, model):
    c = model.config
    return (f"data {config.data}: vocab {batches.vocab_size} | model {model.get_num_params() / 1e6:.2f}M params "
            f"({c.n_layer} layers, {c.n_head} heads, {c.n_embd} embd, block {c.block_size}) "
            f"| {config.max_iters} iters of {config.batch_size}x{batches.block_size} tokens")


def _describe_step(config, batches, iter_num, loss_value, lr, step_times):
    recent = float(np.median(step_times[-config.log_interval:]))  # seconds per step, robust to a slow one
    eta = int(recent * (config.max_iters - iter_num))
    eta_text = f"{eta // 3600}h{eta // 60 % 60:02d}m" if eta >= 3600 else f"{eta // 60}m{eta % 60:02d}s"
    tokens_per_iter = config.batch_size * batches.block_size
    return (f"iter {iter_num}/{config.max_iters} | loss {loss_value:.4f} | lr {lr:.2e} | "
            f"{recent * 1000:.1f} ms/iter | {tokens_per_iter / recent:,.0f} tok/s | ETA {eta_text}")
