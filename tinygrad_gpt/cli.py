"""The `tinygpt` command (also `python -m tinygrad_gpt`).

    tinygpt train                      # a baby GPT on the embedded corpus
    tinygpt train --data input.txt --max_iters 2000 --out_dir out-mine
    tinygpt train --resume --out_dir out-mine
    tinygpt sample --ckpt out/ckpt_best.npz --prompt "def " --max-new-tokens 200
    tinygpt sample --init_from gpt2/ --prompt "Hello"    # a Hugging Face GPT-2 directory
    tinygpt train --init_from gpt2/ --data input.txt --block_size 256   # fine-tune it
    tinygpt export --ckpt out/ckpt_best.npz --out my-gpt2/   # ... and back to one
    tinygpt serve --ckpt out/ckpt_best.npz --port 8000   # OpenAI-style API and a page at /
    tinygpt eval --ckpt out/ckpt_best.npz --task nextline --task perplexity --report results.json
    tinygpt finetune --init_from out/ckpt_best.npz --data pairs.jsonl --lora_rank 8   # answers, not text
    tinygpt --version
    mpiexec -n 2 tinygpt train --batch_size 8   # data parallel on 2 MPI ranks (see distributed.py)

Exit status:

    0    done (also when Ctrl-C stops `tinygpt serve`).
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
import importlib.metadata
import math
import os
import shlex
import signal
import sys

import numpy as np

from . import distributed
from .kernels.tuning import tune_process
from .finetune import BASE_MODEL_FIELDS, FINETUNE_DEFAULTS, FinetuneConfig, finetune
from .lora import merge_lora
from .progress import Progress, StopSignals
from .tokenizers import CharTokenizer, tokenizer_from_dict
from .train import TrainConfig, TrainingDiverged, TrainingInterrupted, load_config_file, task_accuracy, train
from .training_state import load_model, load_model_and_tokenizer


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: `tinygpt: error: ...`."""

    def error(self, message):
        # Under mpiexec every rank parses the same arguments (main checks), so rank 0 alone says what is wrong.
        self.exit(2, f"tinygpt: error: {message} (see {self.prog} --help)\n" if distributed.is_main_process() else None)


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
    "batch_size": "rows per optimizer step",
    "gradient_accumulation_steps": "split each step's batch into this many micro-batches (saves memory, same step)",
    "eval_iters": "batches per loss estimate",
    "sample_tokens": "tokens of text to print when training ends",
    "dtype": "float32 or float64",
    "tokenizer": "char, bpe (GPT-2's byte-level BPE, trained on the text), or a directory of vocab.json + merges.txt",
    "vocab_size": "tokens of the BPE that --tokenizer bpe trains",
}


def _add_option(parser, name, **kwargs):
    """--name and --name-with-dashes both work (nanoGPT spells them with underscores)."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*spellings, dest=name, default=argparse.SUPPRESS, **kwargs)


def _add_model_source(parser):
    """--ckpt CKPT or --init_from HF_DIR, one of the two: the model a command works with."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--ckpt", help="checkpoint file (default: out/ckpt_best.npz)")
    source.add_argument("--init_from", "--init-from", dest="init_from", metavar="HF_DIR",
                        help="a Hugging Face GPT-2 directory (config.json, model.safetensors, tokenizer files) "
                             "instead of a checkpoint")


def build_parser():
    # allow_abbrev=False: a misspelt flag is an error, not silently taken for a longer one.
    parser = _ArgumentParser(prog="tinygpt", allow_abbrev=False,
                             description="Train and sample a small GPT written from scratch on NumPy.")
    parser.add_argument("--version", action="version", version=f"tinygpt {_version()}")
    commands = parser.add_subparsers(dest="command")
    commands.required = True

    train_parser = commands.add_parser("train", allow_abbrev=False,
                                       help="train a GPT (no arguments: a baby GPT on Python's stdlib source)")
    train_parser.add_argument("--config", help="a JSON file of settings; flags override it")
    train_parser.add_argument("--resume", action="store_true", help="continue from OUT_DIR/ckpt_last.npz")
    train_parser.add_argument("--overwrite", action="store_true",
                              help="start a new run even if OUT_DIR already holds checkpoints (they are replaced)")
    train_parser.add_argument("--init_from", "--init-from", dest="init_from", metavar="HF_DIR",
                              help="fine-tune the GPT-2 of a Hugging Face directory (its shape and tokenizer; "
                                   "--block_size crops its positions) instead of a new model")
    train_parser.add_argument("--zero", type=int, choices=(0, 1), default=0,
                              help="1: shard the AdamW state over the MPI ranks (ZeRO stage 1; default: 0, off)")
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
    sample_parser.add_argument("--init_from", "--init-from", dest="init_from", metavar="DIR",
                               help="sample from a Hugging Face GPT-2 directory (config.json, model.safetensors, "
                                    "vocab.json, merges.txt) instead of --ckpt")
    sample_parser.add_argument("--prompt", default="", help="text to continue (default: a newline)")
    for name, kind, default, help_text in [
        ("max_new_tokens", int, 300, "tokens to generate"),
        ("temperature", float, 0.8, "0 is greedy; higher is more random"),
        ("top_k", int, None, "sample only from the k likeliest tokens"),
        ("top_p", float, None, "sample only from the smallest set with this total probability"),
        ("seed", int, 1337, "random seed"),
        ("num_samples", int, 1, "how many samples to write"),
    ]:
        spellings = dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}"])  # one, for a name without _
        sample_parser.add_argument(*spellings, dest=name, type=kind, default=default,
                                   help=f"{help_text} (default: {default})")
    sample_parser.add_argument("--no-cache", dest="use_cache", action="store_false",
                               help="recompute the whole context each step, as nanoGPT (slower)")

    export_parser = commands.add_parser("export", allow_abbrev=False,
                                        help="write a checkpoint as a Hugging Face GPT-2 directory")
    export_parser.add_argument("--ckpt", default="out/ckpt_best.npz",
                               help="checkpoint file (default: out/ckpt_best.npz)")
    export_parser.add_argument("--out", required=True, metavar="DIR",
                               help="the directory to create (new or empty): config.json, model.safetensors, "
                                    "and vocab.json + merges.txt for a BPE tokenizer")
    serve_parser = commands.add_parser("serve", allow_abbrev=False,
                                       help="serve a model: OpenAI-compatible completions API and a page at /")
    _add_model_source(serve_parser)
    serve_parser.add_argument("--host", default="127.0.0.1",
                              help="address to listen on; anything but 127.0.0.1 is reachable by others "
                                   "and has no authentication (default: 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one "
                                                                    "(default: 8000)")

    eval_parser = commands.add_parser("eval", allow_abbrev=False,
                                      help="score a model on tasks (multiple choice, exact match, perplexity)")
    _add_model_source(eval_parser)
    eval_parser.add_argument("--task", action="append", required=True, metavar="NAME_OR_FILE",
                             help="nextline[:FILE], adder, sorter, perplexity[:FILE], or a task .jsonl file "
                                  "(repeat for several)")
    for name, kind, default, help_text in [
        ("num_fewshot", int, 0, "solved examples before each question"),
        ("limit", int, None, "score only the first N examples of each task (perplexity: N blocks of tokens)"),
        ("seed", int, 1234, "seed of the few-shot draws"),
        ("stride", int, None, "perplexity: tokens the window moves by (default: half a block)"),
    ]:
        eval_parser.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest=name, type=kind,
                                 default=default, help=f"{help_text} (default: {default})")
    eval_parser.add_argument("--report", metavar="OUT_JSON",
                             help="write every example's per-choice log-likelihoods here as JSON")

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
    tune_parser = commands.add_parser("tune", allow_abbrev=False,
                                      help="time the matmul paths on this CPU again and cache which one wins")
    tune_parser.add_argument("--cache_dir", "--cache-dir", dest="cache_dir", default=None,
                             help="where to keep the calibration (default: $XDG_CACHE_HOME/tinygrad_gpt "
                                  "or ~/.cache/tinygrad_gpt)")
    commands.metavar = "{" + ",".join(commands.choices) + "}"  # every command, in the order added
    return parser


def _version():
    """The installed package's version (setup.cfg), or a note that it is not installed."""
    try:
        return importlib.metadata.version("tinygrad_gpt")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout without `pip install -e .`
        return "(version unknown: the package is not installed)"


def train_config(args):
    """The TrainConfig the parsed `train` arguments ask for, and the names of the settings given."""
    settings = {}
    if args.config:
        settings = load_config_file(args.config)
        TrainConfig.from_dict(settings, source=f"config file {args.config}")  # so its errors name the file
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    config = TrainConfig.from_dict({**settings, **flags})
    return config, tuple(settings) + tuple(flags)


# The model settings that --init_from takes from the directory instead.
PRETRAINED_SHAPE = ("n_layer", "n_head", "n_embd", "bias", "gelu_approximate")


def _fine_tuning_run(config, explicit, directory):
    """(config, model, batches) to fine-tune the GPT-2 of `directory`, nanoGPT's init_from.

    The model's shape comes from the directory and is written into the config, so the
    run's checkpoints rebuild it, and `--resume` alone continues it.
    """
    from .data import Batches
    from .pretrained import load_pretrained  # here: only --init_from needs it (and safetensors)

    given = [name for name in PRETRAINED_SHAPE if name in explicit]
    if given:
        raise ValueError(f"--{given[0]} cannot be set with --init_from: the model's shape comes from {directory}")
    model, tokenizer = load_pretrained(directory, dropout=config.dropout)
    if tokenizer is None:
        raise ValueError(f"{directory} has no tokenizer (vocab.json and merges.txt) to turn the training text into tokens")
    if config.block_size > model.config.block_size:
        raise ValueError(f"--block_size {config.block_size} is longer than the {model.config.block_size} positions "
                         f"of {directory}")
    batches = Batches(config.data, config.batch_size, config.block_size, tokenizer)
    if batches.tokenizer is None:
        raise ValueError(f"--init_from fine-tunes on text, but {config.data} is a synthetic task of digits")
    model.crop_block_size(config.block_size).to(np.dtype(config.dtype)).train()
    shape = {name: getattr(model.config, name) for name in PRETRAINED_SHAPE}
    return dataclasses.replace(config, data=batches.source, **shape), model, batches


def run_train(args):
    config, explicit = train_config(args)
    world = distributed.init_world()
    # Under mpiexec -n N, data parallel over the N ranks (see distributed.py).
    hooks = distributed.DataParallelHooks(world, zero_stage=args.zero) if world.size > 1 or args.zero else None
    model = batches = None
    if args.init_from and args.resume:
        raise ValueError("--resume continues from OUT_DIR/ckpt_last.npz, which already holds the fine-tuned "
                         "model; give --resume without --init_from")
    if args.init_from:
        config, model, batches = _fine_tuning_run(config, explicit, args.init_from)
    with StopSignals() as stop:
        result = train(config, resume=args.resume, explicit=explicit, overwrite=args.overwrite, progress=Progress(),
                       stop=stop, model=model, batches=batches, hooks=hooks)
    if not world.is_main:  # rank 0 alone samples and reports
        return 0
    config, model, batches = result["config"], result["model"], result["batches"]  # resumed: the checkpoint's
    if batches.tokenizer is not None and config.sample_tokens > 0:
        print(f"\nsample ({config.sample_tokens} tokens, temperature 0.8):")
        chars = getattr(batches.tokenizer, "chars", "\n")  # a BPE tokenizer can write every character
        start = np.array([[batches.tokenizer.encode("\n")[0] if "\n" in chars else 0]])
        out = model.generate(start, config.sample_tokens, temperature=0.8, top_k=None,
                             generator=np.random.default_rng(config.seed))
        print(batches.tokenizer.decode(out[0]))
    elif batches.tokenizer is None:
        accuracy = task_accuracy(model, batches.task)
        print(f"\nexact-match accuracy on {len(batches.task.problems('test'))} held-out problems: {accuracy:.2%}")
    print(f"\ncheckpoints: {result['ckpt_last']} (last), {result['ckpt_best']} (best {batches.splits[-1]} loss)")
    return 0


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


def _pretrained_pair(directory):
    """(model, tokenizer) of a Hugging Face GPT-2 directory, refusing one without a tokenizer."""
    from .pretrained import load_pretrained  # here: only --init_from needs it (and safetensors)

    model, tokenizer = load_pretrained(directory)
    if tokenizer is None:
        raise ValueError(f"{directory} has no tokenizer: sampling needs its vocab.json and merges.txt")
    return model, tokenizer


def run_sample(args):
    _check_sample_args(args)
    if args.init_from:
        model, tokenizer = _pretrained_pair(args.init_from)
    else:
        model, tokenizer, _ = load_model_and_tokenizer(args.ckpt)
    chars = getattr(tokenizer, "chars", "\n")  # a BPE tokenizer can write every character
    prompt = args.prompt or ("\n" if "\n" in chars else chars[0])
    try:
        ids = tokenizer.encode(prompt)
    except ValueError as error:
        source = args.init_from or args.ckpt
        raise ValueError(f"the prompt cannot be written in the vocabulary of {source}: {error}") from None
    generator = np.random.default_rng(args.seed)
    for i in range(args.num_samples):
        out = model.generate(ids[None, :], args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                             top_p=args.top_p, generator=generator, use_cache=args.use_cache)
        if i:
            print("-" * 40)
        print(tokenizer.decode(out[0]))
    return 0


def run_export(args):
    from .pretrained import export_pretrained  # here: only export needs it (and safetensors)

    model, metadata, _ = load_model(args.ckpt)
    tokenizer = tokenizer_from_dict(metadata["tokenizer"]) if metadata.get("tokenizer") else None
    files = export_pretrained(merge_lora(model), tokenizer, args.out)  # a LoRA fine-tune is exported merged
    print(f"wrote {args.out}: {', '.join(files)}")
    kind = tokenizer.to_dict()["type"] if tokenizer is not None else None
    if kind == "char":
        print(f"note: {args.ckpt} has a character tokenizer, not GPT-2's: transformers loads the weights, "
              f"but their ids are characters, kept for tinygpt in {args.out}/tinygpt_tokenizer.json")
    elif kind is None:
        print(f"note: {args.ckpt} is a synthetic task's model with no tokenizer, not GPT-2's: its ids are digits")
    return 0


def run_serve(args):
    from .serve import CompletionServer, DEFAULT_TEMPLATE, load_checkpoint_for_serving

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.init_from:
        from .pretrained import load_pretrained

        model, tokenizer = load_pretrained(args.init_from)
        if tokenizer is None:
            raise ValueError(f"--init_from {args.init_from} has no tokenizer files to turn text into tokens")
        template, source = DEFAULT_TEMPLATE, args.init_from
    else:
        source = args.ckpt or "out/ckpt_best.npz"
        model, tokenizer, template = load_checkpoint_for_serving(source)
    name = os.path.splitext(os.path.basename(os.path.normpath(source)))[0]
    try:
        server = CompletionServer(model, tokenizer, model_name=name, template=template, host=args.host, port=args.port)
    except OSError as error:
        raise OSError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from None
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"tinygpt: warning: listening on {args.host}: whoever reaches it can use the model (no authentication)",
              file=sys.stderr)
    print(f"tinygpt: serving {name} at {server.url} (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("tinygpt: server stopped", file=sys.stderr)
    finally:
        server.close()
    return 0


def run_eval(args):
    from .evaluate import ProgressLine, evaluate, results_table, write_report
    from .tasks import load_task

    for name, minimum in (("num_fewshot", 0), ("limit", 1), ("seed", 0), ("stride", 1)):
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise ValueError(f"--{name} must be at least {minimum}, got {value}")
    tasks = [load_task(name, stride=args.stride) for name in args.task]  # bad task files fail before loading
    if args.init_from:
        from .pretrained import load_pretrained

        model, tokenizer = load_pretrained(args.init_from)
        source = args.init_from
    else:
        source = args.ckpt or "out/ckpt_best.npz"
        model, tokenizer, _ = load_model_and_tokenizer(source)
    if tokenizer is None:
        raise ValueError(f"{source} has no tokenizer, so its model cannot read task text")
    results = evaluate(model, tokenizer, tasks, args.num_fewshot, args.limit, args.seed, progress=ProgressLine())
    print(results_table(results))
    if args.report:
        write_report(args.report, results, source)
        print(f"\nper-example log-likelihoods: {args.report}")
    return 0


def run_tune(args):
    """Measure which matmul path wins each class of products here, cache it, and print the table."""
    from .kernels import ENV_VARIABLE
    from .kernels.tuning import calibrate, dispatch

    if os.environ.get(ENV_VARIABLE, "fast") == "reference":
        raise ValueError(f"{ENV_VARIABLE}=reference: the plain-NumPy kernels have no paths to tune; unset it")
    entry = calibrate.calibrate(directory=args.cache_dir, force=True)
    dispatch.set_calibration(entry["paths"])
    print(f"{'products':14s} {'numba ms':>9s} {'blas ms':>9s}  path   (each: the product, then a Numba GELU)")
    for name, seconds in entry["timings"].items():
        path = "numba" if entry["paths"][name] else "blas"
        print(f"{name:14s} {seconds['numba'] * 1e3:9.3f} {seconds['blas'] * 1e3:9.3f}  {path}")
    print(f"cache: {entry['file'] or 'not written (directory not writable); used for this process only'}")
    return 0


# What each subcommand runs; `main` dispatches on the name argparse parsed.
COMMANDS = {"train": run_train, "sample": run_sample, "export": run_export, "serve": run_serve, "eval": run_eval,
            "finetune": run_finetune, "tune": run_tune}


def main(argv=None):
    """Run the command; returns the exit status (see the module docstring)."""
    tune_process()  # the process-wide settings for speed, before any kernel runs
    try:
        world = distributed.init_world()  # under mpiexec -n N > 1: MPI starts here
    except distributed.MPIUnavailable as error:  # no way to talk to the other ranks: rank 0 alone says it
        if distributed.is_main_process():
            print(f"tinygpt: error: {error}", file=sys.stderr)
        return 2
    if not world.is_main:
        sys.stdout = open(os.devnull, "w")  # rank 0 alone prints the log, the samples and --help
    try:
        world.check_same_arguments(sys.argv[1:] if argv is None else argv)
    except ValueError as error:
        return world.fail(2, f"tinygpt: error: {error}")
    args = build_parser().parse_args(argv)  # a usage error exits here with status 2
    if args.command == "finetune":
        return exit_status(lambda: run_finetune(args), resume_command="tinygpt finetune --resume --out_dir {out_dir}")
    return exit_status(lambda: COMMANDS[args.command](args))


def exit_status(run, prog="tinygpt", resume_command="tinygpt train --resume --out_dir {out_dir}"):
    """Call `run()` and return its status; what it raises becomes one line on
    stderr and the status of the module docstring. The example scripts use it
    too, with their own name and the command that resumes them. Under mpiexec
    the line is printed once for all ranks (distributed.World.fail)."""
    fail = distributed.init_world().fail  # (status, message) -> status
    try:
        return run()
    except TrainingInterrupted as stop:
        resume = resume_command.format(out_dir=shlex.quote(stop.out_dir))
        return fail(128 + stop.signal_number, f"{prog}: {stop} (continue with: {resume})")
    except TrainingDiverged as error:
        return fail(1, f"{prog}: error: {error}")
    except KeyboardInterrupt:
        return fail(128 + signal.SIGINT, f"{prog}: interrupted; the checkpoints already written are intact")
    except MemoryError as error:
        return fail(2, f"{prog}: error: out of memory ({error}); try a smaller model, batch_size or block_size")
    except (ValueError, TypeError, OSError) as error:  # CheckpointError is a ValueError
        return fail(2, f"{prog}: error: {error}")


if __name__ == "__main__":
    sys.exit(main())
