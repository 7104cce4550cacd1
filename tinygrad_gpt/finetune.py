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

LoRA (`apply_lora`) freezes every weight of the model and wraps the chosen
projections in `nn.LoRALinear`, whose small matrices lora_A and lora_B are all
that train; `merge_lora` folds them back into plain Linear layers, and
`save_adapter` / `load_adapter` store and apply the adapters alone.
"""

import hashlib
import json
import os

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import IGNORE_INDEX
from .nn import Linear, LoRALinear
from .tensor import no_grad

DEFAULT_TEMPLATE = "Q: {prompt}\nA:"
PROMPT_FIELD = "{prompt}"
# The attention and MLP projections of every block (c_proj names both kinds).
DEFAULT_LORA_TARGETS = ("c_attn", "c_proj", "c_fc")
ADAPTER_FORMAT = "tinygrad_gpt-lora-adapter"


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


# ---- LoRA: wrapping, merging, adapters ----------------------------------------


def linear_layer_names(model):
    """The dotted names of the model's Linear layers (the possible LoRA targets)."""
    return [name[:-1] for name, m in model.named_modules() if isinstance(m, (Linear, LoRALinear))]


def _matches(name, target):
    return name == target or name.endswith("." + target)


def apply_lora(model, rank, alpha, targets=DEFAULT_LORA_TARGETS):
    """Freeze the whole model and wrap its Linear layers named by `targets` in LoRALinear.

    A target matches a layer whose dotted name is the target or ends with
    "." + target ("c_proj" matches attn.c_proj and mlp.c_proj of every block).
    Returns the wrapped layers' names. Everything is checked before the
    model changes: an unknown target or a bad rank raises ValueError.
    """
    targets = tuple(targets)
    if not targets:
        raise ValueError("--lora_targets must name at least one layer")
    names = linear_layer_names(model)
    for target in targets:
        if not any(_matches(name, target) for name in names):
            kinds = sorted({name.split(".", 3)[-1] if name.startswith("transformer.h.") else name for name in names})
            raise ValueError(f"unknown LoRA target {target!r}: no Linear layer is named so; choose from {kinds}")
    chosen = [name for name in names if any(_matches(name, t) for t in targets)]
    modules = dict(model.named_modules())
    for name in chosen:  # check every rank first, so a bad one leaves the model untouched
        layer = modules[name + "."]
        if isinstance(layer, LoRALinear):
            raise ValueError(f"layer {name} already has a LoRA adapter")
        largest = min(layer.in_features, layer.out_features)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= largest:
            raise ValueError(f"--lora_rank must be from 1 to {largest} (the smaller side of {name}), got {rank!r}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name + "."] if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha))
    return chosen


def merge_lora(model):
    """Fold every adapter into its weight (W + alpha/r B A), leaving a plain model; returns it.

    The merged model computes the same logits (up to rounding) with no extra
    matmuls, and its state dict has the base model's names, so it loads
    anywhere the base did. Every parameter trains again, as in a fresh model.
    """
    for name, module in list(model.named_modules()):
        for child_name, child in list(module._children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def lora_config(model):
    """{"rank", "alpha", "targets"} of the model's adapters (the layers' names), or None."""
    layers = [(name[:-1], m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not layers:
        return None
    return {"rank": layers[0][1].rank, "alpha": layers[0][1].alpha, "targets": [name for name, _ in layers]}


def lora_state_dict(model):
    """Only the adapters: {name: array} of every lora_A and lora_B."""
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))}


def base_fingerprint(model):
    """SHA-256 of the frozen weights (everything but the adapters), to recognise an adapter's base."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        if not name.endswith((".lora_A", ".lora_B")):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(p.data).data)
    return digest.hexdigest()


def save_adapter(path, model, extra=None):
    """Write the adapters alone (a few KB for a small model) with what is needed to apply them."""
    config = lora_config(model)
    if config is None:
        raise ValueError("the model has no LoRA adapters to save")
    metadata = {"format": ADAPTER_FORMAT, "lora": config, "model_config": model.config.to_dict(),
                "base_sha256": base_fingerprint(model), **(extra or {})}
    save_checkpoint(path, lora_state_dict(model), metadata)


def load_adapter(path, model):
    """Apply the adapter saved at `path` to `model`, its base; returns the adapter's metadata.

    Refuses (CheckpointError) a file that is not an adapter, or a model that is
    not the base the adapter was trained on (different config or weights).
    """
    arrays, metadata = load_checkpoint(path)
    if metadata.get("format") != ADAPTER_FORMAT:
        raise CheckpointError(f"{path} is not a LoRA adapter file")
    if metadata["model_config"] != model.config.to_dict():
        raise CheckpointError(f"adapter {path} was trained for a model of config {metadata['model_config']}, "
                              f"not {model.config.to_dict()}")
    if metadata["base_sha256"] != base_fingerprint(model):
        raise CheckpointError(f"adapter {path} was trained on other base weights than this model's")
    config = metadata["lora"]
    apply_lora(model, config["rank"], config["alpha"], config["targets"])
    adapters = {name: p for name, p in model.named_parameters() if name.endswith((".lora_A", ".lora_B"))}
    if set(arrays) != set(adapters) or any(arrays[k].shape != p.shape for k, p in adapters.items()):
        raise CheckpointError(f"adapter {path} is damaged: its arrays do not match its LoRA config")
    for name, p in adapters.items():
        p.data[...] = arrays[name]
    return metadata


def trainable_parameters(model):
    """The parameters an optimizer should update: those that require grad."""
    return [p for p in model.parameters() if p.requires_grad]


def optimizer_state_bytes(optimizer):
    """Bytes of the optimizer's per-parameter state (AdamW: exp_avg and exp_avg_sq)."""
    return sum(a.nbytes for a in optimizer.state_dict().values())
