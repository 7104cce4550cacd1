"""Supervised fine-tuning (SFT) on prompt/completion pairs, and LoRA adapters.

A pretrained language model only continues text. Fine-tuning shows it pairs

    {"prompt": "What is 12 plus 7?", "completion": " 19"}

formatted by a template ("Q: {prompt}\\nA:" by default), so that it learns to
answer a question in that form and then stop. Each example is one sequence

    template(prompt) + completion + end token

and the model is trained on it as in pretraining (predict token t+1 from the
tokens up to t), except that only the completion's tokens and the end token
count in the loss: a target whose position predicts a prompt token, or a
padding position, is `IGNORE_INDEX` (-1), which `GPT.forward` skips. The model
is not asked to predict the questions, only the answers.

The end token is the tokenizer's `eot_token` (GPT-2's <|endoftext|>). A
character tokenizer has none, so for it the end token is the newline: a char
model pretrained on text with one sentence per line already knows that a line
ends there. A completion of a char model therefore cannot contain a newline.

Fine-tuning trains either every weight or, with LoRA (lora.py), only small
adapters; either way the training loop is train.py's, fed these batches.
"""

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from . import rng
from .checkpoint import save_checkpoint
from .data import IGNORE_INDEX
from .gpt import GPTConfig
from .lora import (
    DEFAULT_LORA_TARGETS,
    apply_lora,
    lora_config,
    merge_lora,
    optimizer_state_bytes,
    save_adapter,
    trainable_parameters,
)
from .optim import AdamW
from .progress import Progress
from .tokenizers import tokenizer_from_dict
from .train import Hooks, TrainConfig, train
from .training_state import load_model, load_training_state
from .validate import check_int, check_number

DEFAULT_TEMPLATE = "Q: {prompt}\nA:"
PROMPT_FIELD = "{prompt}"


# ---- reading the data ---------------------------------------------------------


def read_jsonl(path):
    """The examples of a JSONL file: a list of (prompt, completion, line number).

    Every non-blank line must be a JSON object with string fields "prompt" and
    "completion" (other fields are ignored); the completion must be non-empty.
    Raises FileNotFoundError, or ValueError naming the file and line.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"fine-tuning data {path} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"fine-tuning data {path} is a directory, expected a JSONL file")
    examples = []
    try:
        with open(path, encoding="utf-8-sig") as f:
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                examples.append((*_parse_example(path, line_number, line), line_number))
    except UnicodeDecodeError as error:
        raise ValueError(f"fine-tuning data {path} is not valid UTF-8 ({error.reason} at byte {error.start})") from None
    if not examples:
        raise ValueError(f"fine-tuning data {path} holds no examples, expected one JSON object per line")
    return examples


def _parse_example(path, line_number, line):
    where = f"{path} line {line_number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where} is not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be a JSON object with \"prompt\" and \"completion\", got {type(record).__name__}")
    for field in ("prompt", "completion"):
        if field not in record:
            raise ValueError(f"{where} has no \"{field}\" field; each line needs \"prompt\" and \"completion\"")
        if not isinstance(record[field], str):
            raise ValueError(f"{where}: \"{field}\" must be a string, got {type(record[field]).__name__}")
    if record["completion"] == "":
        raise ValueError(f"{where} has an empty completion; there would be nothing to learn from it")
    return record["prompt"], record["completion"]


def check_template(template):
    """A template is text with exactly one "{prompt}" where the prompt goes."""
    if not isinstance(template, str) or template.count(PROMPT_FIELD) != 1:
        raise ValueError(f"--template must contain {PROMPT_FIELD} exactly once, got {template!r}")
    return template


def format_prompt(template, prompt):
    """The template with the prompt in place (plain replacement: braces in prompts are safe)."""
    return template.replace(PROMPT_FIELD, prompt)


def end_token(tokenizer):
    """The id that ends a completion: eot_token, or for a char tokenizer the newline."""
    eot = getattr(tokenizer, "eot_token", None)
    if eot is not None:
        return int(eot)
    chars = getattr(tokenizer, "chars", None)
    if chars is not None and "\n" in chars:
        return chars.index("\n")
    raise ValueError(
        "the tokenizer has no end token: it has no eot_token and no newline character, so a completion "
        "could not be taught to stop; pretrain a char model on text with newlines"
    )


# ---- the dataset --------------------------------------------------------------


class SFTDataset:
    """Encoded prompt/completion pairs served as right-padded batches.

    `SFTDataset(splits, tokenizer, block_size, batch_size, template, truncate)`
    with `splits` a dict {"train": examples, "val": examples}, examples as
    `read_jsonl` returns them and `sources` naming their files for errors.
    An example is `template(prompt) + completion + end`; x is it without its
    last token, y without its first, so x must fit in block_size. Longer
    examples are refused, or with `truncate` lose the start of their prompt
    (the completion is what is learned, so it is kept whole; an example whose
    completion alone is too long is refused either way).

    `get(split, rng) -> (x, y)`, both int64 (batch_size, T), T the longest
    example drawn: x is padded on the right with the end token and y with
    IGNORE_INDEX, so padding takes no loss and, attention being causal,
    changes nothing at the real positions.
    """

    def __init__(self, splits, tokenizer, block_size, batch_size, template=DEFAULT_TEMPLATE, truncate=False,
                 sources=None):
        check_template(template)
        self.tokenizer, self.template = tokenizer, template
        self.block_size, self.batch_size = block_size, batch_size
        self.end_id = end_token(tokenizer)
        self.splits = tuple(splits)
        sources = sources or {}
        # Per split: a list of int64 sequences and how many of their tokens are prompt.
        self.sequences, self.prompt_lengths, self.examples = {}, {}, {}
        unencodable = _unencodable_chars(tokenizer, template, splits)
        if unencodable:
            shown = ", ".join(repr(c) for c in unencodable[:10]) + (" ..." if len(unencodable) > 10 else "")
            raise ValueError(
                f"the tokenizer of the model cannot encode {len(unencodable)} character(s) of the fine-tuning "
                f"data: {shown}; remove them or fine-tune a model whose vocabulary has them"
            )
        for split, examples in splits.items():
            source = sources.get(split, split)
            encoded = [self._encode(source, *example, truncate=truncate) for example in examples]
            self.sequences[split] = [seq for seq, _ in encoded]
            self.prompt_lengths[split] = np.array([n for _, n in encoded], dtype=np.int64)  # (N,)
            self.examples[split] = [(prompt, completion) for prompt, completion, _ in examples]

    @property
    def vocab_size(self):
        return self.tokenizer.vocab_size

    @property
    def eval_split(self):
        return self.splits[1]

    def _encode(self, source, prompt, completion, line_number, truncate):
        where = f"{source} line {line_number}"
        prompt_ids = self.tokenizer.encode(format_prompt(self.template, prompt))  # (P,)
        completion_ids = self.tokenizer.encode(completion)  # (C,)
        if self.end_id in completion_ids:
            raise ValueError(
                f"{where}: the completion contains the end token {self.tokenizer.decode([self.end_id])!r}, "
                f"so the model would learn to stop in the middle of it"
            )
        answer = np.append(completion_ids, self.end_id)  # (C + 1,)
        # x = seq[:-1] must fit in block_size, so seq may have block_size + 1 tokens.
        excess = len(prompt_ids) + len(answer) - (self.block_size + 1)
        if excess > 0:
            if not truncate or len(answer) > self.block_size:
                what = "its completion alone" if len(answer) > self.block_size else "prompt plus completion"
                hint = "" if truncate else " (or pass --truncate to cut the start of long prompts)"
                raise ValueError(
                    f"{where}: {what} is {len(prompt_ids) + len(answer) - 1} tokens, longer than block_size "
                    f"{self.block_size}; shorten it{hint}"
                )
            prompt_ids = prompt_ids[excess:]
        return np.concatenate([prompt_ids, answer]), len(prompt_ids)

    def __len__(self):
        return len(self.sequences[self.splits[0]])

    def get(self, split, generator):
        """A batch of `batch_size` examples of `split`, drawn with replacement from `generator`."""
        if split not in self.sequences:
            raise ValueError(f"split must be one of {self.splits}, got {split!r}")
        index = generator.integers(0, len(self.sequences[split]), size=self.batch_size)  # (B,)
        return self.batch(split, index)

    def batch(self, split, index):
        """The right-padded (x, y) of the examples `index` (B,) of `split`."""
        rows = [self.sequences[split][i] for i in index]
        T = max(len(seq) for seq in rows) - 1
        x = np.full((len(rows), T), self.end_id, dtype=np.int64)  # (B, T)
        y = np.full((len(rows), T), IGNORE_INDEX, dtype=np.int64)  # (B, T)
        for b, (seq, n_prompt) in enumerate(zip(rows, self.prompt_lengths[split][index])):
            x[b, : len(seq) - 1] = seq[:-1]
            # y[t] predicts seq[t + 1]; the first completion token is seq[n_prompt], at t = n_prompt - 1.
            y[b, n_prompt - 1 : len(seq) - 1] = seq[n_prompt:]
        return x, y


def _unencodable_chars(tokenizer, template, splits):
    """The characters of the data a char tokenizer lacks (other tokenizers encode any text)."""
    chars = getattr(tokenizer, "chars", None)
    if chars is None:
        return []
    text = format_prompt(template, "") + "".join(p + c for examples in splits.values() for p, c, _ in examples)
    return sorted(set(text) - set(chars))


def load_sft_data(data, tokenizer, block_size, batch_size, template=DEFAULT_TEMPLATE, truncate=False,
                  val_data=None, val_fraction=0.1, seed=1337):
    """An SFTDataset from JSONL files: `val_data`, or else a seeded `val_fraction` of `data`."""
    train = read_jsonl(data)
    if val_data is not None:
        val, sources = read_jsonl(val_data), {"train": data, "val": val_data}
    else:
        if len(train) < 2:
            raise ValueError(f"fine-tuning data {data} has {len(train)} example; a held-out split needs at least 2")
        order = np.random.default_rng(seed).permutation(len(train))  # (N,)
        n_val = min(max(1, round(val_fraction * len(train))), len(train) - 1)
        val, train = [train[i] for i in sorted(order[:n_val])], [train[i] for i in sorted(order[n_val:])]
        sources = {"train": data, "val": data}
    return SFTDataset({"train": train, "val": val}, tokenizer, block_size, batch_size, template, truncate, sources)


# ---- scoring ------------------------------------------------------------------


def greedy_completions(model, tokenizer, prompts, max_new_tokens, end_id):
    """The greedy completion of each prompt (a list of str), cut before the first end token.

    Prompts of the same token length are decoded together as one batch.
    """
    encoded = [tokenizer.encode(p) for p in prompts]
    out = [None] * len(prompts)
    by_length = {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    for length, group in by_length.items():
        idx = np.stack([encoded[i] for i in group])  # (G, P)
        generated = model.generate(idx, max_new_tokens, temperature=0)[:, length:]  # (G, max_new_tokens)
        for i, row in zip(group, generated):
            stop = np.flatnonzero(row == end_id)
            out[i] = tokenizer.decode(row[: stop[0]] if len(stop) else row)
    return out


def exact_match(model, dataset, split="val", max_examples=None):
    """Fraction of the examples of `split` whose greedy completion is exactly the reference.

    A completion counts only if the model writes the reference and then the
    end token, so generating one token past the longest reference decides it.
    """
    examples = dataset.examples[split][:max_examples]
    prompts = [format_prompt(dataset.template, p) for p, _ in examples]
    longest = max(len(dataset.tokenizer.encode(c)) for _, c in examples)
    answers = greedy_completions(model, dataset.tokenizer, prompts, longest + 1, dataset.end_id)
    return float(np.mean([a == c for a, (_, c) in zip(answers, examples)]))


# ---- the run ------------------------------------------------------------------


@dataclass
class FinetuneConfig:
    """What fine-tuning adds to the training settings (a TrainConfig): the base model,
    the data, the template, and LoRA. `lora_rank` None fine-tunes every weight."""

    init_from: str = None  # a checkpoint (.npz) or a Hugging Face GPT-2 directory
    data: str = None  # JSONL, one {"prompt": ..., "completion": ...} per line
    val_data: str = None  # held-out JSONL; by default val_fraction of data is held out
    val_fraction: float = 0.1
    template: str = DEFAULT_TEMPLATE
    truncate: bool = False  # cut the start of prompts that do not fit, instead of refusing them
    lora_rank: int = None
    lora_alpha: float = None  # default: the rank (alpha / rank = 1)
    lora_targets: str = ",".join(DEFAULT_LORA_TARGETS)
    merge: bool = False  # also write the merged model, ckpt_merged.npz (LoRA runs)
    eval_examples: int = 200  # held-out examples scored by exact match at every evaluation

    def __post_init__(self):
        for name in ("init_from", "data"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"--{name} is required: give {_REQUIRED[name]}")
        check_template(self.template)
        check_number("val_fraction", self.val_fraction, minimum=0, below=1)
        check_int("eval_examples", self.eval_examples, minimum=1)
        if self.lora_rank is not None:
            check_int("lora_rank", self.lora_rank, minimum=1)
            check_number("lora_alpha", self.lora_alpha if self.lora_alpha is not None else 1.0, minimum=1e-12)
        elif self.lora_alpha is not None:
            raise ValueError("--lora_alpha needs --lora_rank (without a rank every weight is fine-tuned)")

    def targets(self):
        return tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())


_REQUIRED = {"init_from": "the checkpoint or Hugging Face directory to start from",
             "data": "a JSONL file of prompt/completion pairs"}

# Fine-tuning moves a trained model a little: fewer steps, a smaller rate, little decay.
FINETUNE_DEFAULTS = dict(out_dir="out-finetune", max_iters=300, lr_decay_iters=300, learning_rate=3e-4, min_lr=3e-5,
                         warmup_iters=20, weight_decay=0.0, batch_size=16, eval_interval=100, eval_iters=10,
                         log_interval=10, sample_tokens=0)
SETTINGS_FILE = "finetune.json"
# The model settings of a TrainConfig, which fine-tuning takes from the base model.
BASE_MODEL_FIELDS = [f.name for f in dataclasses.fields(GPTConfig) if f.name != "vocab_size"]


def load_base(init_from):
    """(model, tokenizer) from a training checkpoint or a Hugging Face GPT-2 directory."""
    if os.path.isdir(init_from):
        from .pretrained import load_pretrained  # only when asked: the HF reader is optional

        model, tokenizer = load_pretrained(init_from)
    else:
        model, metadata, _ = load_model(init_from)
        tokenizer = tokenizer_from_dict(metadata["tokenizer"]) if metadata.get("tokenizer") else None
    if tokenizer is None:
        raise ValueError(f"--init_from {init_from} has no text tokenizer (a synthetic task's model); "
                         f"fine-tuning needs one to encode the prompts")
    return merge_lora(model), tokenizer  # a fine-tuned base starts from its merged weights


def configure_finetune_optimizer(model, train_config):
    """AdamW over the trainable parameters only, decaying the 2-D ones (as configure_optimizer)."""
    params = trainable_parameters(model)
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": train_config.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return AdamW([g for g in groups if g["params"]], lr=train_config.learning_rate,
                 betas=(train_config.beta1, train_config.beta2))


class ExactMatchHooks(Hooks):
    """At every evaluation, also score greedy completions of held-out prompts (exact match)."""

    def __init__(self, model, dataset, eval_examples, progress):
        self.model, self.dataset, self.eval_examples, self.progress = model, dataset, eval_examples, progress
        self.last_score = None

    def reduce_losses(self, losses):
        score = exact_match(self.model, self.dataset, self.dataset.eval_split, self.eval_examples)
        n = min(self.eval_examples, len(self.dataset.examples[self.dataset.eval_split]))
        self.progress.line(f"held-out exact match: {score:.1%} of {n} greedy completions")
        self.last_score = score
        return {**losses, "exact_match": score}


def finetune(settings, train_config, resume=False, explicit=(), overwrite=False, progress=None, stop=None):
    """Fine-tune `settings.init_from` on `settings.data` with train.py's loop; returns its result
    dict plus "adapter" and "merged" (paths or None), "trainable_params" and "optimizer_bytes".

    With `resume`, the settings come from out_dir/finetune.json and the weights
    from out_dir/ckpt_last.npz (the base is not read again). Everything is
    checked before anything is written.
    """
    progress = progress or Progress()
    out_dir = train_config.out_dir
    settings_path = os.path.join(out_dir, SETTINGS_FILE)
    last_path = os.path.join(out_dir, "ckpt_last.npz")
    if resume:
        settings, data_sha256 = _read_settings(settings_path)
        train_config = TrainConfig.from_dict(
            {**load_training_state(last_path)[0]["train_config"], **{k: getattr(train_config, k) for k in explicit},
             "out_dir": out_dir}, source=f"checkpoint {last_path}")
        model, metadata, _ = load_model(last_path)  # with its adapters, if it has them
        tokenizer = tokenizer_from_dict(metadata["tokenizer"])
    else:
        existing = [p for p in (last_path, os.path.join(out_dir, "ckpt_best.npz")) if os.path.exists(p)]
        if existing and not overwrite:
            raise FileExistsError(f"{existing[0]} already exists; continue that run with --resume, "
                                  f"start over with --overwrite, or choose another --out_dir")
        model, tokenizer = load_base(settings.init_from)
    dataset = load_sft_data(settings.data, tokenizer, model.config.block_size, train_config.batch_size,
                            settings.template, settings.truncate, settings.val_data, settings.val_fraction,
                            train_config.seed)
    if resume and _data_sha256(dataset) != data_sha256:
        raise ValueError(f"cannot resume: the data {settings.data} is not what the run in {out_dir} was "
                         f"fine-tuned on (it has changed since)")
    if not resume:
        if settings.lora_rank is not None:
            alpha = settings.lora_alpha if settings.lora_alpha is not None else settings.lora_rank
            rng.manual_seed(train_config.seed)  # lora_A's random start, the same for the same seed
            apply_lora(model, settings.lora_rank, alpha, settings.targets())
        if "dtype" in explicit:
            model.to(np.dtype(train_config.dtype))
    # The model's own settings, so the checkpoint describes the model it holds.
    train_config = dataclasses.replace(train_config, **{k: getattr(model.config, k) for k in BASE_MODEL_FIELDS},
                                       dtype=str(model.lm_head.weight.dtype), data=os.path.abspath(settings.data))
    optimizer = configure_finetune_optimizer(model, train_config)
    if not resume:
        _write_settings(settings_path, settings, dataset)
    trainable = sum(p.numel() for p in trainable_parameters(model))
    progress.line(f"fine-tuning {trainable:,} of {sum(p.numel() for p in model.parameters()):,} parameters "
                  f"({'LoRA rank ' + str(settings.lora_rank) if lora_config(model) else 'all weights'}) on "
                  f"{len(dataset)} examples, {len(dataset.examples['val'])} held out")
    hooks = ExactMatchHooks(model, dataset, settings.eval_examples, progress)
    result = train(train_config, resume=resume, explicit=explicit, overwrite=overwrite, progress=progress, stop=stop,
                   batches=dataset, model=model, optimizer=optimizer, hooks=hooks)
    result.update(adapter=None, merged=None, trainable_params=trainable, exact_match=hooks.last_score,
                  optimizer_bytes=optimizer_state_bytes(optimizer), dataset=dataset)
    if lora_config(model):
        result["adapter"] = os.path.join(out_dir, "adapter.npz")
        save_adapter(result["adapter"], model, extra={"tokenizer": tokenizer.to_dict(), "template": settings.template})
        if settings.merge:  # the returned model is then the merged one
            result["merged"] = os.path.join(out_dir, "ckpt_merged.npz")
            save_model(result["merged"], merge_lora(model), tokenizer)
    return result


def save_model(path, model, tokenizer):
    """A checkpoint of the weights alone (no training state): what `load_model` and `tinygpt sample` read."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    save_checkpoint(path, arrays, {"model_config": model.config.to_dict(), "tokenizer": tokenizer.to_dict(),
                                   "lora": lora_config(model)})


def _data_sha256(dataset):
    digest = hashlib.sha256()
    for split in dataset.splits:
        for seq in dataset.sequences[split]:
            digest.update(seq.tobytes())
    return digest.hexdigest()


def _write_settings(path, settings, dataset):
    """out_dir/finetune.json: the settings a resumed run needs, and a digest of its encoded data."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    record = {**dataclasses.asdict(settings), "data": os.path.abspath(settings.data),
              "val_data": os.path.abspath(settings.val_data) if settings.val_data else None,
              "data_sha256": _data_sha256(dataset)}
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    os.replace(temporary, path)  # atomic: a crash leaves the old file or the new one


def _read_settings(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"cannot resume: there is no fine-tuning run in {os.path.dirname(path)} "
                                f"({os.path.basename(path)} is missing)")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        data_sha256 = record.pop("data_sha256")
        return FinetuneConfig(**record), data_sha256
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"cannot resume: {path} is damaged ({error})") from None
