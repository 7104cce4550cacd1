"""The training loop, as in nanoGPT: batches, AdamW, evaluation, checkpoints, resume.

`train(TrainConfig(...))` runs it. Every `eval_interval` iterations it
estimates the train and val loss over `eval_iters` batches (eval mode, no
graph), saves `ckpt_last.npz` (and `ckpt_best.npz` when val improves) and
writes the loss history to `history.csv`. A checkpoint holds the model,
optimizer state and both random generators' states, so `resume=True`
continues bit-for-bit as if the run had never stopped.

Ctrl-C (SIGINT) or SIGTERM saves `ckpt_last.npz` at the end of the current
step and raises `TrainingInterrupted`. A NaN or Inf loss (or parameter) raises
`TrainingDiverged` without saving, so `ckpt_last.npz` stays the last good
state. Bad settings, data or checkpoints raise a ValueError (a CheckpointError
for checkpoints) or an OSError with one sentence naming what is wrong, before
anything is written.
"""

import csv
import dataclasses
import difflib
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, fields

import numpy as np

from . import rng
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import AdderTask, SorterTask, TextDataset, load_text, pystdlib_corpus
from .gpt import GPT, GPTConfig
from .optim import clip_grad_norm_, configure_optimizer, cosine_lr
from .tensor import no_grad
from .tokenizers import CharTokenizer

MODEL_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias")


@dataclass
class TrainConfig:
    """Every knob of a run, with nanoGPT's names. Defaults: a baby GPT on the
    embedded Python-stdlib corpus: 5000 iterations, about 3 minutes on 2 cores."""

    data: str = "pystdlib"  # a UTF-8 text file, or one of: pystdlib, adder, sorter
    out_dir: str = "out"
    # model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = False
    # optimization
    batch_size: int = 12
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
        positive = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "eval_interval",
                    "eval_iters", "log_interval")
        for name in positive:
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("max_iters", "warmup_iters", "lr_decay_iters", "sample_tokens", "seed"):
            _check_int(name, getattr(self, name), minimum=0)
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"data must be a file path or one of pystdlib, adder, sorter, got {self.data!r}")
        if not isinstance(self.out_dir, str) or not self.out_dir:
            raise ValueError(f"out_dir must be a directory path, got {self.out_dir!r}")
        self.model_config()  # validates n_embd % n_head, dropout, bias

    def model_config(self, vocab_size=1):
        return GPTConfig(vocab_size=vocab_size, **{k: getattr(self, k) for k in MODEL_FIELDS})

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
        except ValueError as error:
            raise ValueError(f"{prefix}{error}") from None


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


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


# ---- data ---------------------------------------------------------------------


class Batches:
    """One interface over text corpora and the synthetic tasks: `get(split, rng) -> (x, y)`."""

    def __init__(self, config, tokenizer=None):
        self.kind = config.data if config.data in ("pystdlib", "adder", "sorter") else "text"
        if self.kind in ("adder", "sorter"):
            self.task = AdderTask() if self.kind == "adder" else SorterTask()
            self.splits = self.task.splits
            self.vocab_size, self.block_size = self.task.vocab_size, self.task.block_size
            self.tokenizer = None
        else:
            text = pystdlib_corpus() if self.kind == "pystdlib" else load_text(config.data)
            if tokenizer is not None:
                data_vocab = "".join(sorted(set(text)))
                if data_vocab != tokenizer.chars:
                    raise ValueError(
                        f"the characters of {config.data} ({len(data_vocab)} distinct) are not the vocabulary "
                        f"of the checkpoint ({tokenizer.vocab_size} characters); resume on the text it was trained on"
                    )
            self.dataset = TextDataset(text, tokenizer)
            self.tokenizer = self.dataset.tokenizer
            self.splits, self.vocab_size = self.dataset.splits, self.dataset.vocab_size
            self.block_size = config.block_size
            for split in self.splits:  # fail now, not at the first batch
                n = len(self.dataset.ids(split))
                if n < config.block_size + 1:
                    raise ValueError(
                        f"the {split} split of {config.data} has {n} tokens, fewer than "
                        f"block_size + 1 = {config.block_size + 1}; use more text or a smaller --block_size"
                    )
        self.batch_size = config.batch_size

    @property
    def eval_split(self):
        return self.splits[1]

    def get(self, split, generator):
        if self.kind in ("adder", "sorter"):
            return self.task.get_batch(split, self.batch_size, generator)
        return self.dataset.get_batch(split, self.batch_size, self.block_size, generator)


# ---- progress -----------------------------------------------------------------


class Progress:
    """Log lines: a live single line on a terminal, plain lines otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self._live_line = False

    def step(self, text):
        if self.live:
            self.stream.write("\r" + text.ljust(100)[:150])
            self._live_line = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def line(self, text):
        self.finish()
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self):
        """End a live line, so whatever is printed next starts on a line of its own."""
        if self._live_line:
            self.stream.write("\n")
            self.stream.flush()
            self._live_line = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finish()


def _format_seconds(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


# ---- the run ------------------------------------------------------------------


class TrainingInterrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, message, signal_number):
        super().__init__(message)
        self.signal_number = signal_number


class TrainingDiverged(RuntimeError):
    """The loss or a parameter became NaN or Inf; the last good checkpoint was kept."""


class _StopSignals:
    """Turn the first SIGINT/SIGTERM into a flag the loop checks between steps, so a
    checkpoint is never written halfway through a step. A second signal stops at once."""

    def __init__(self):
        self.received = None

    def __enter__(self):
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _checkpoint_paths(out_dir):
    return os.path.join(out_dir, "ckpt_last.npz"), os.path.join(out_dir, "ckpt_best.npz")


def save_training_state(path, model, optimizer, config, batches, iter_num, best_val_loss, history, data_rng):
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    metadata = {
        "model_config": model.config.to_dict(),
        "train_config": dataclasses.asdict(config),
        "tokenizer": batches.tokenizer.to_dict() if batches.tokenizer else None,
        "task": batches.kind if batches.kind in ("adder", "sorter") else None,
        "iter_num": iter_num,
        "best_val_loss": best_val_loss,
        "rng_state": rng.get_rng_state(),
        "data_rng_state": data_rng.bit_generator.state,
        "history": history,
    }
    save_checkpoint(path, arrays, metadata)


def load_model(path):
    """(model, metadata, arrays) from a checkpoint written by training, with clear errors."""
    arrays, metadata = load_checkpoint(path)
    try:
        config = GPTConfig.from_dict(metadata["model_config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} has no valid model config ({error})") from None
    weights = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    dtype = next(iter(weights.values())).dtype if weights else np.dtype(np.float32)
    if dtype not in (np.float32, np.float64):
        raise CheckpointError(f"checkpoint {path} holds {dtype} weights, expected float32 or float64")
    # Convert the model first: loading float64 weights into float32 parameters would round them.
    model = GPT(config).to(dtype)
    try:
        model.load_state_dict(weights)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} does not match its model config: {error}") from None
    return model, metadata, arrays


# What `train` writes in a checkpoint's metadata besides the model config, and needs to resume.
_TRAINING_STATE = ("train_config", "tokenizer", "iter_num", "best_val_loss", "rng_state", "data_rng_state", "history")


def _load_training_state(path):
    """(metadata, arrays, tokenizer or None) of the checkpoint a run resumes from."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"cannot resume: there is no checkpoint at {path}")
    _, metadata, arrays = load_model(path)  # checks the format, the checksum and the weights' shapes
    missing = [key for key in _TRAINING_STATE if key not in metadata]
    if missing:
        raise CheckpointError(f"checkpoint {path} cannot be resumed: it lacks the training state {missing}")
    if not isinstance(metadata["train_config"], dict) or type(metadata["iter_num"]) is not int:
        raise CheckpointError(f"checkpoint {path} cannot be resumed: its train_config or iter_num is damaged")
    tokenizer = None
    if metadata["tokenizer"] is not None:
        try:
            tokenizer = CharTokenizer.from_dict(metadata["tokenizer"])
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {path} has an invalid tokenizer ({error})") from None
    return metadata, arrays, tokenizer


def _check_resume(path, metadata, config, model_config):
    """The model being resumed must be the checkpoint's, and not already past max_iters."""
    saved_model = metadata["model_config"]
    for name, value in model_config.to_dict().items():
        if saved_model.get(name) != value:
            raise ValueError(
                f"cannot resume: {name} is {value!r} but checkpoint {path} was trained with {saved_model.get(name)!r}"
            )
    if metadata["iter_num"] > config.max_iters:
        raise ValueError(
            f"cannot resume: checkpoint {path} is at iteration {metadata['iter_num']}, past max_iters "
            f"{config.max_iters}; give a larger --max_iters"
        )


def train(config, resume=False, progress=None, explicit=(), overwrite=False):
    """Run training; returns a dict with the model, the final losses and paths.

    With `resume`, continue from `config.out_dir`/ckpt_last.npz: settings
    come from the checkpoint, except those named in `explicit` (the ones the
    user set), which override it; a model or data setting must agree with it.
    Without `resume`, an out_dir that already holds a checkpoint is refused
    unless `overwrite` is set, so a forgotten --resume loses no work.
    Everything is checked before the output directory is touched.

    Raises ValueError (CheckpointError for a bad checkpoint), OSError
    (CheckpointWriteError when a checkpoint cannot be written; the previous
    one is then intact), TrainingDiverged, or TrainingInterrupted.
    """
    progress = progress or Progress()
    last_path, best_path = _checkpoint_paths(config.out_dir)
    saved_meta, saved_arrays, tokenizer = None, None, None
    if not resume and not overwrite:
        existing = [p for p in (last_path, best_path) if os.path.exists(p)]
        if existing:
            raise FileExistsError(
                f"{existing[0]} already exists; continue that run with --resume, "
                f"start over with --overwrite, or choose another --out_dir"
            )
    if resume:
        saved_meta, saved_arrays, tokenizer = _load_training_state(last_path)
        config = TrainConfig.from_dict(
            {**saved_meta["train_config"], **{k: getattr(config, k) for k in explicit}, "out_dir": config.out_dir},
            source=f"checkpoint {last_path}",
        )
        saved_data = saved_meta["train_config"].get("data")
        if config.data != saved_data:
            raise ValueError(
                f"cannot resume: data is {config.data!r} but checkpoint {last_path} was trained on {saved_data!r}"
            )

    batches = Batches(config, tokenizer)
    model_config = config.model_config(batches.vocab_size)
    if batches.block_size > model_config.block_size:
        model_config = dataclasses.replace(model_config, block_size=batches.block_size)
    if saved_meta:
        _check_resume(last_path, saved_meta, config, model_config)
    _prepare_out_dir(config.out_dir)
    rng.manual_seed(config.seed)
    model = GPT(model_config).to(np.dtype(config.dtype))
    optimizer = configure_optimizer(model, config.learning_rate, (config.beta1, config.beta2), config.weight_decay)
    data_rng = np.random.default_rng(config.seed)
    iter_num, best_val_loss, history = 0, float("inf"), []
    if saved_meta:
        try:
            model.load_state_dict({k[6:]: v for k, v in saved_arrays.items() if k.startswith("model/")})
            optimizer.load_state_dict({k[6:]: v for k, v in saved_arrays.items() if k.startswith("optim/")})
            rng.set_rng_state(saved_meta["rng_state"])
            data_rng.bit_generator.state = saved_meta["data_rng_state"]
            iter_num, best_val_loss = saved_meta["iter_num"], float(saved_meta["best_val_loss"])
            history = list(saved_meta["history"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"checkpoint {last_path} cannot be resumed, its training state is damaged ({error})"
            ) from None
        progress.line(f"resuming from {last_path} at iteration {iter_num}")

    progress.line(
        f"data {config.data}: vocab {batches.vocab_size} | model {model.get_num_params() / 1e6:.2f}M params "
        f"({config.n_layer} layers, {config.n_head} heads, {config.n_embd} embd, block {model_config.block_size}) "
        f"| {config.max_iters} iters of {config.batch_size}x{batches.block_size} tokens"
    )

    saved_iter = iter_num if saved_meta else None  # the iteration ckpt_last.npz holds

    def diverged(what):
        write_history(config.out_dir, history)  # keep the record of how it went wrong
        raise TrainingDiverged(
            f"{what} at iteration {iter_num}; training stopped and {last_path} still holds the last good "
            f"state, from iteration {saved_iter} (try a lower --learning_rate)"
        )

    def save(path):
        nonlocal saved_iter
        for name, p in model.named_parameters():
            if not np.isfinite(p.data).all():
                diverged(f"parameter {name} became NaN or Inf")
        save_training_state(path, model, optimizer, config, batches, iter_num, best_val_loss, history, data_rng)
        if path == last_path:
            saved_iter = iter_num

    tokens_per_iter = config.batch_size * batches.block_size
    step_times = []
    # A resumed run has already evaluated (and saved) the iteration it starts from.
    last_eval = max((row["iter"] for row in history if row.get("eval")), default=None)
    # NumPy's overflow warnings are silenced: a diverging run is reported once, clearly, by diverged().
    # Leaving `progress` ends its live line, however the loop ends.
    with _StopSignals() as stop, np.errstate(over="ignore", invalid="ignore", divide="ignore"), progress:
        while True:
            due = iter_num % config.eval_interval == 0 or iter_num == config.max_iters
            if due and iter_num != last_eval:
                losses = estimate_loss(model, batches, config.eval_iters, seed=config.seed + iter_num)
                last_eval = iter_num
                history.append({"iter": iter_num, "eval": True, **losses})
                for split, value in losses.items():
                    if not math.isfinite(value):
                        diverged(f"the {split} loss estimate became {value}")
                improved = losses[batches.eval_split] < best_val_loss
                if improved:
                    best_val_loss = losses[batches.eval_split]
                progress.line(
                    f"step {iter_num}: train loss {losses['train']:.4f}, "
                    f"{batches.eval_split} loss {losses[batches.eval_split]:.4f}"
                    + (" (best so far)" if improved else "")
                )
                save(last_path)
                if improved:
                    save(best_path)
                write_history(config.out_dir, history)
            if stop.received is not None:
                save(last_path)
                write_history(config.out_dir, history)
                name = signal.Signals(stop.received).name
                raise TrainingInterrupted(
                    f"{name} received, so training stopped at iteration {iter_num} after saving {last_path} "
                    f"(continue with: tinygpt train --resume --out_dir {config.out_dir})",
                    stop.received,
                )
            if iter_num >= config.max_iters:
                break

            lr = cosine_lr(iter_num, config.learning_rate, config.min_lr, config.warmup_iters,
                           config.lr_decay_iters) if config.decay_lr else config.learning_rate
            optimizer.set_lr(lr)
            t0 = time.perf_counter()
            x, y = batches.get("train", data_rng)
            model.train()
            _, loss = model(x, y)
            loss_value = loss.item()
            history.append({"iter": iter_num, "loss": loss_value, "lr": lr})
            if not math.isfinite(loss_value):
                diverged(f"the loss became {loss_value}")
            optimizer.zero_grad()
            loss.backward()
            if config.grad_clip > 0:
                clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            dt = time.perf_counter() - t0
            step_times.append(dt)
            iter_num += 1
            if iter_num % config.log_interval == 0 or iter_num == config.max_iters:
                recent = float(np.median(step_times[-config.log_interval:]))
                eta = recent * (config.max_iters - iter_num)
                progress.step(
                    f"iter {iter_num}/{config.max_iters} | loss {loss_value:.4f} | lr {lr:.2e} | "
                    f"{recent * 1000:.1f} ms/iter | {tokens_per_iter / recent:,.0f} tok/s | ETA {_format_seconds(eta)}"
                )

    plot_history(config.out_dir, history)
    final = next(row for row in reversed(history) if row.get("eval"))  # iteration max_iters is always evaluated
    result = {
        "config": config,
        "model": model,
        "batches": batches,
        "iter_num": iter_num,
        "losses": {split: final[split] for split in batches.splits},
        "best_val_loss": best_val_loss,
        "ckpt_last": last_path,
        "ckpt_best": best_path,
        "median_step_ms": float(np.median(step_times)) * 1000 if step_times else None,
    }
    return result


def _prepare_out_dir(out_dir):
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the output directory {out_dir} ({error.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise PermissionError(f"the output directory {out_dir} is not writable")


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
