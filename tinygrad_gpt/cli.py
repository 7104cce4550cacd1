"""The `tinygpt` command (also `python -m tinygrad_gpt`).

    tinygpt train                      # a baby GPT on the embedded corpus, ~3 minutes
    tinygpt train --data input.txt --max_iters 2000 --out_dir out-mine
    tinygpt train --resume --out_dir out-mine
    tinygpt sample --ckpt out/ckpt_best.npz --prompt "def " --max-new-tokens 200

Exit status:

    0    done.
    1    training diverged (a NaN or Inf loss): out_dir/ckpt_last.npz still
         holds the last good state.
    2    bad input: an invalid flag or setting, or a data file, checkpoint or
         output directory that cannot be used (also a full disk). One line,
         `tinygpt: error: ...`, on stderr; never a traceback.
    130  Ctrl-C (SIGINT) during training; 143 for SIGTERM (128 + the signal
         number, the shell's convention). The first signal finishes the
         current step, saves out_dir/ckpt_last.npz and exits with one line on
         stderr; `tinygpt train --resume --out_dir DIR` continues the run
         exactly. A second signal stops at once, keeping the checkpoints
         already written.
"""

import argparse
import dataclasses
import math
import signal
import sys

import numpy as np

from .finetune import BASE_MODEL_FIELDS, FINETUNE_DEFAULTS, FinetuneConfig, finetune
from .tokenizers import CharTokenizer, tokenizer_from_dict
from .train import TrainConfig, TrainingDiverged, TrainingInterrupted, load_config_file, load_model, train


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: `tinygpt: error: ...`."""

    def error(self, message):
        self.exit(2, f"tinygpt: error: {message} (see {self.prog} --help)\n")


def _bool(text):
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_HELP = {
    "data": "a UTF-8 text file, or pystdlib (Python's own source, no download), adder or sorter",
    "out_dir": "where checkpoints, history.csv and loss_curve.png go",
    "grad_clip": "clip the global gradient norm to this (0: off)",
    "eval_iters": "batches per loss estimate",
    "sample_tokens": "tokens of text to print when training ends",
    "dtype": "float32 or float64",
}


def _add_option(parser, name, **kwargs):
    """--name and --name-with-dashes both work (nanoGPT spells them with underscores)."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*spellings, dest=name, default=argparse.SUPPRESS, **kwargs)


def build_parser():
    # allow_abbrev=False: a misspelt flag is an error, not silently taken for a longer one.
    parser = _ArgumentParser(prog="tinygpt", allow_abbrev=False,
                             description="Train and sample a small GPT written from scratch on NumPy.")
    commands = parser.add_subparsers(dest="command", metavar="{train,sample}")
    commands.required = True

    train_parser = commands.add_parser("train", allow_abbrev=False,
                                       help="train a GPT (no arguments: a baby GPT on Python's stdlib source)")
    train_parser.add_argument("--config", help="a JSON file of settings; flags override it")
    train_parser.add_argument("--resume", action="store_true", help="continue from OUT_DIR/ckpt_last.npz")
    train_parser.add_argument("--overwrite", action="store_true",
                              help="start a new run even if OUT_DIR already holds checkpoints (they are replaced)")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        default = getattr(defaults, f.name)
        kind = _bool if isinstance(default, bool) else type(default)
        help_text = _HELP.get(f.name, "")
        _add_option(train_parser, f.name, type=kind, metavar=f.name.upper(),
                    help=f"{help_text} (default: {default})".strip())

    sample_parser = commands.add_parser("sample", allow_abbrev=False, help="write text with a trained checkpoint")
    sample_parser.add_argument("--ckpt", default="out/ckpt_best.npz",
                               help="checkpoint file (default: out/ckpt_best.npz)")
    sample_parser.add_argument("--prompt", default="", help="text to continue (default: a newline)")
    for name, kind, default, help_text in [
        ("max_new_tokens", int, 300, "tokens to generate"),
        ("temperature", float, 0.8, "0 is greedy; higher is more random"),
        ("top_k", int, None, "sample only from the k likeliest tokens"),
        ("top_p", float, None, "sample only from the smallest set with this total probability"),
        ("seed", int, 1337, "random seed"),
        ("num_samples", int, 1, "how many samples to write"),
    ]:
        sample_parser.add_argument(f"--{name.replace('_', '-')}", f"--{name}", dest=name, type=kind,
                                   default=default, help=f"{help_text} (default: {default})")
    sample_parser.add_argument("--no-cache", dest="use_cache", action="store_false",
                               help="recompute the whole context each step, as nanoGPT (slower)")

    # ---- tinygpt finetune: supervised fine-tuning, in full or with LoRA (finetune.py)
    finetune_parser = commands.add_parser(
        "finetune", allow_abbrev=False,
        help="fine-tune a checkpoint or GPT-2 directory on prompt/completion pairs (JSONL), in full or with LoRA")
    finetune_parser.add_argument("--resume", action="store_true", help="continue the run in OUT_DIR")
    finetune_parser.add_argument("--overwrite", action="store_true",
                                 help="start a new run even if OUT_DIR already holds checkpoints (they are replaced)")
    finetune_parser.add_argument("--truncate", action="store_true", default=argparse.SUPPRESS,
                                 help="cut the start of prompts too long for block_size (default: refuse them)")
    finetune_parser.add_argument("--merge", action="store_true", default=argparse.SUPPRESS,
                                 help="with LoRA, also write OUT_DIR/ckpt_merged.npz, the adapters folded into the weights")
    finetune_help = {
        "init_from": "a checkpoint (.npz) or a Hugging Face GPT-2 directory",
        "data": 'JSONL, one {"prompt": ..., "completion": ...} per line',
        "val_data": "held-out JSONL, instead of holding out val_fraction of --data",
        "val_fraction": "the share of --data held out when there is no --val_data",
        "template": "how a prompt is shown to the model; the completion follows it, then the end token "
                    "(eot_token; the newline for char models). In a shell, write a newline as $'Q: {prompt}\\nA:'",
        "lora_rank": "train LoRA adapters of this rank instead of every weight",
        "lora_alpha": "LoRA scale numerator: the update is (alpha / rank) B A (none: the rank)",
        "lora_targets": "comma-separated Linear layers to adapt, by name or name suffix",
        "eval_examples": "held-out examples scored by greedy exact match at every evaluation",
    }
    for f in dataclasses.fields(FinetuneConfig):
        if f.name in ("truncate", "merge"):
            continue
        kind = {"lora_rank": int, "lora_alpha": float, "val_fraction": float, "eval_examples": int}.get(f.name, str)
        default = {"init_from": "required", "data": "required"}.get(f.name, repr(f.default))
        _add_option(finetune_parser, f.name, type=kind, metavar=f.name.upper(),
                    help=f"{finetune_help.get(f.name, '')} (default: {default})".strip())
    train_defaults = TrainConfig(**FINETUNE_DEFAULTS)
    for f in dataclasses.fields(TrainConfig):
        if f.name in BASE_MODEL_FIELDS or f.name in ("data", "sample_tokens"):
            continue  # the model is the base's; the data is --data
        default = getattr(train_defaults, f.name)
        kind = _bool if isinstance(default, bool) else type(default)
        _add_option(finetune_parser, f.name, type=kind, metavar=f.name.upper(),
                    help=f"{_HELP.get(f.name, '')} (default: {default})".strip())
    return parser


def run_finetune(args):
    """tinygpt finetune: build the settings from the flags and run finetune.finetune."""
    given = vars(args)
    train_names = [f.name for f in dataclasses.fields(TrainConfig) if f.name in given]
    if "max_iters" in given and "lr_decay_iters" not in given:
        given["lr_decay_iters"] = given["max_iters"]  # the schedule ends with the run, as in nanoGPT's configs
        train_names.append("lr_decay_iters")
    train_settings = TrainConfig(**{**FINETUNE_DEFAULTS, **{k: given[k] for k in train_names}})
    settings = None
    if not args.resume:
        settings = FinetuneConfig(**{f.name: given[f.name] for f in dataclasses.fields(FinetuneConfig) if f.name in given})
    with StopSignals() as stop:
        result = finetune(settings, train_settings, resume=args.resume, explicit=tuple(train_names),
                          overwrite=args.overwrite, progress=Progress(), stop=stop)
    print(f"\nheld-out exact match {result['exact_match']:.1%} | trainable parameters "
          f"{result['trainable_params']:,} | optimizer state {result['optimizer_bytes'] / 1e6:.3f} MB")
    print(f"checkpoints: {result['ckpt_last']} (last), {result['ckpt_best']} (best held-out loss)")
    for name in ("adapter", "merged"):
        if result[name]:
            print(f"{name}: {result[name]}")
    return 0


def train_config(args):
    """The TrainConfig the parsed `train` arguments ask for, and the names of the settings given."""
    settings = {}
    if args.config:
        settings = load_config_file(args.config)
        TrainConfig.from_dict(settings, source=f"config file {args.config}")  # so its errors name the file
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    config = TrainConfig.from_dict({**settings, **flags})
    return config, tuple(settings) + tuple(flags)


def run_train(args):
    config, explicit = train_config(args)
    result = train(config, resume=args.resume, explicit=explicit, overwrite=args.overwrite)
    config, model, batches = result["config"], result["model"], result["batches"]  # resumed: the checkpoint's
    if batches.tokenizer is not None and config.sample_tokens > 0:
        print(f"\nsample ({config.sample_tokens} tokens, temperature 0.8):")
        start = np.array([[batches.tokenizer.encode("\n")[0] if "\n" in batches.tokenizer.chars else 0]])
        out = model.generate(start, config.sample_tokens, temperature=0.8, top_k=None,
                             generator=np.random.default_rng(config.seed))
        print(batches.tokenizer.decode(out[0]))
    elif batches.tokenizer is None:
        task = batches.task
        accuracy = task.score(lambda prompts: greedy_answers(model, prompts, task.answer_length))
        print(f"\nexact-match accuracy on {len(task.problems('test'))} held-out problems: {accuracy:.2%}")
    print(f"\ncheckpoints: {result['ckpt_last']} (last), {result['ckpt_best']} (best val)")
    return 0


def greedy_answers(model, prompts, answer_length):
    """The model's greedy answer tokens (N, answer_length) for task prompts (N, P)."""
    return model.generate(prompts, answer_length, temperature=0)[:, prompts.shape[1]:]


def _check_sample_args(args):
    """Refuse impossible sampling settings by their flag names, before loading anything."""
    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be 0 or more, got {args.max_new_tokens}")
    if not 0 <= args.temperature < math.inf:
        raise ValueError(f"--temperature must be a finite number >= 0 (0 is greedy), got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.seed < 0:
        raise ValueError(f"--seed must be 0 or more, got {args.seed}")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be at least 1, got {args.num_samples}")


def run_sample(args):
    _check_sample_args(args)
    model, metadata, _ = load_model(args.ckpt)
    if metadata.get("tokenizer"):
        tokenizer = tokenizer_from_dict(metadata["tokenizer"])
    else:  # a synthetic task: its tokens are the digits 0 .. vocab_size-1
        tokenizer = CharTokenizer("0123456789"[: model.config.vocab_size])
    prompt = args.prompt or ("\n" if "\n" in tokenizer.chars else tokenizer.chars[0])
    try:
        ids = tokenizer.encode(prompt)
    except ValueError as error:
        raise ValueError(f"the prompt cannot be written in the vocabulary of {args.ckpt}: {error}") from None
    generator = np.random.default_rng(args.seed)
    for i in range(args.num_samples):
        out = model.generate(ids[None, :], args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                             top_p=args.top_p, generator=generator, use_cache=args.use_cache)
        if i:
            print("-" * 40)
        print(tokenizer.decode(out[0]))
    return 0


def main(argv=None):
    """Run the command; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)  # a usage error exits here with status 2
    try:
        return run_train(args) if args.command == "train" else run_sample(args)
    except TrainingInterrupted as stop:
        print(f"tinygpt: {stop}", file=sys.stderr)
        return 128 + stop.signal_number
    except TrainingDiverged as error:
        print(f"tinygpt: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tinygpt: interrupted; the checkpoints already written are intact", file=sys.stderr)
        return 128 + signal.SIGINT
    except MemoryError as error:
        print(f"tinygpt: error: out of memory ({error}); try a smaller model, batch_size or block_size",
              file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as error:  # CheckpointError is a ValueError
        print(f"tinygpt: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
