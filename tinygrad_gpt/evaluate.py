"""Measure what a model knows: log-likelihoods, multiple-choice accuracy, exact match, perplexity.

The scores quoted for language models (MMLU, HellaSwag, ARC, WinoGrande) are
multiple-choice accuracies computed from one primitive,

    loglikelihood(context, continuation) = sum_i log p(continuation token i | context, tokens < i),

which this file computes the way EleutherAI's lm-evaluation-harness does, so our
numbers are comparable with the ones it reports:

* Tokenization. The context and the continuation are encoded *together* and split at
  the context's own token length (a BPE merges across the seam, so encoding the two
  apart would give other tokens). Trailing whitespace of the context first moves to
  the front of the continuation ("Answer: " + "A" is scored as "Answer:" + " A"), as
  BPE vocabularies hold " A" as one token.
* An empty context is conditioned on the end-of-text token, where the tokenizer has
  one. The char tokenizer has none (`eot_token` None): then the first continuation
  token has nothing to be predicted from, and scoring it is refused with a ValueError
  rather than silently dropping it (dropping would make choices incomparable).
* A context + continuation longer than block_size + 1 keeps its rightmost tokens: the
  model reads the last block_size tokens before the final one.

A multiple-choice example runs its context through the model once; the keys and values
it leaves in a `KVCache` are copied into a batch with one row per choice, and only the
choices' tokens are run after them (`use_cache=False` scores each choice from scratch,
the baseline of benchmarks/bench_eval.py). Choices whose window would pass block_size are
scored from scratch with their own window, so the result never depends on the cache.

Metrics follow the harness: `acc` picks the choice with the largest summed
log-likelihood, `acc_norm` the largest log-likelihood per character of the choice
(as written in the task, leading space included), each with the standard error of the
mean, sqrt(sample variance / n).
"""

import json
import math
import sys
import time

import numpy as np

from .gpt import KVCache
from .tasks import MultipleChoice, Perplexity
from .tensor import no_grad


def _log_softmax(logits):
    """log-probabilities in float64 of logits (..., V): scores are sums of many terms."""
    logits = logits.astype(np.float64)  # (..., V)
    shifted = logits - logits.max(axis=-1, keepdims=True)  # (..., V)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # (..., V)


class Evaluator:
    """Scores text with a (model, tokenizer) pair; the model is put in eval mode."""

    def __init__(self, model, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.block_size = model.config.block_size
        self.eot_token = getattr(tokenizer, "eot_token", None)

    # ---- tokenization ---------------------------------------------------------

    def encode_pair(self, context, continuation):
        """(context ids, continuation ids) as lm-evaluation-harness splits them.

        Trailing whitespace moves from the context to the continuation; the two are
        encoded together and split at the context's token length; an empty context
        becomes the end-of-text token.
        """
        stripped = context.rstrip()
        continuation = context[len(stripped):] + continuation
        context = stripped
        if not continuation:
            raise ValueError("loglikelihood: the continuation is empty; there is nothing to score")
        if context == "":
            if self.eot_token is None:
                raise ValueError(
                    "loglikelihood: the context is empty and this tokenizer has no end-of-text token to "
                    "condition on, so the continuation's first token cannot be scored; give a context"
                )
            return np.array([self.eot_token], dtype=np.int64), self.tokenizer.encode(continuation)
        whole = self.tokenizer.encode(context + continuation)  # (Lc + Ln,)
        n_context = len(self.tokenizer.encode(context))
        return whole[:n_context], whole[n_context:]

    # ---- the primitive --------------------------------------------------------

    def loglikelihood(self, context, continuation):
        """(summed log-probability of `continuation` given `context`, whether it is the greedy one)."""
        return self.loglikelihood_choices([context], [continuation], use_cache=False)[0]

    def loglikelihood_choices(self, contexts, continuations, use_cache=True):
        """[(log-likelihood, is_greedy)] of each (context, continuation) pair.

        Pairs whose context tokens are the same share one pass over the context when
        `use_cache` is true (a multiple-choice question's choices); otherwise every
        pair runs from scratch.
        """
        pairs = [self.encode_pair(c, x) for c, x in zip(contexts, continuations)]
        results = [None] * len(pairs)
        groups = {}
        for i, (ctx, _) in enumerate(pairs):
            groups.setdefault(tuple(ctx.tolist()) if use_cache else i, []).append(i)
        with no_grad():
            for members in groups.values():
                ctx = pairs[members[0]][0]
                fits = [i for i in members if len(ctx) + len(pairs[i][1]) - 1 <= self.block_size]
                if use_cache and fits:
                    for i, result in zip(fits, self._score_after_shared_context(ctx, [pairs[i][1] for i in fits])):
                        results[i] = result
                for i in members:
                    if results[i] is None:
                        results[i] = self._score_from_scratch(*pairs[i])
        return results

    def _score_from_scratch(self, ctx, cont):
        """One forward over the rightmost block_size + 1 tokens of ctx + cont (less the last)."""
        if len(cont) > self.block_size:
            raise ValueError(
                f"loglikelihood: the continuation has {len(cont)} tokens, more than block_size "
                f"{self.block_size}; the model cannot score it in one window"
            )
        window = np.concatenate([ctx, cont])[-(self.block_size + 1):]  # (T + 1,)
        logp = _log_softmax(self._all_logits(window[None, :-1])[0])  # (T, V)
        return _sum_and_greedy(logp[-len(cont):], cont)

    def _score_after_shared_context(self, ctx, conts):
        """Score several continuations of one context, running the context once.

        The context's last position predicts every continuation's first token. Its
        keys and values, copied into one cache row per continuation, are then the
        prefix of a batch of the continuations' tokens (but their last), right-padded:
        causal attention means a padded position is never read by a real one.
        """
        cache = KVCache(self.model.config, 1, self.model.lm_head.weight.dtype)
        logits, _ = self.model(ctx[None, :], kv_cache=cache)  # (1, 1, V)
        first = _log_softmax(logits.data[0, -1])  # (V,)
        longest = max(len(c) for c in conts)
        rest = np.zeros((len(conts), longest - 1, first.shape[-1]))  # (N, Lmax - 1, V)
        if longest > 1:
            batch = KVCache(self.model.config, len(conts), cache.keys[0].dtype)
            for layer in range(len(cache.keys)):
                batch.keys[layer][:, :, : len(ctx)] = cache.keys[layer][:, :, : len(ctx)]  # (N, nh, Lc, hs)
                batch.values[layer][:, :, : len(ctx)] = cache.values[layer][:, :, : len(ctx)]
            batch.length = len(ctx)
            inputs = np.zeros((len(conts), longest - 1), dtype=np.int64)  # (N, Lmax - 1), padded with id 0
            for row, cont in enumerate(conts):
                inputs[row, : len(cont) - 1] = cont[:-1]
            rest = _log_softmax(self._all_logits(inputs, batch))  # (N, Lmax - 1, V)
        return [
            _sum_and_greedy(np.concatenate([first[None], rest[row, : len(cont) - 1]]), cont)
            for row, cont in enumerate(conts)
        ]

    def _all_logits(self, idx, kv_cache=None):
        """Logits at every position (B, T, V). GPT.forward returns them all only when it
        computes a loss, so placeholder targets ask for them and the loss is dropped."""
        logits, _ = self.model(idx, targets=np.zeros_like(idx), kv_cache=kv_cache)  # (B, T, V)
        return logits.data

    # ---- generation and perplexity --------------------------------------------

    def greedy_until(self, context, until=(), max_new_tokens=32):
        """The greedy continuation of `context`, cut before the first stop string of `until`."""
        ids = self.tokenizer.encode(context) if context else None
        if ids is None or len(ids) == 0:
            if self.eot_token is None:
                raise ValueError("generate: the context is empty and this tokenizer has no end-of-text token")
            ids = np.array([self.eot_token], dtype=np.int64)
        out = self.model.generate(ids[None, -self.block_size:], max_new_tokens, temperature=0)  # (1, T + n)
        text = self.tokenizer.decode(out[0, min(len(ids), self.block_size):])
        for stop in until:
            if stop and stop in text:
                text = text[: text.index(stop)]
        return text

    def perplexity(self, text, stride=None, max_tokens=None, batch_size=16):
        """Token perplexity and bits per byte of `text`, by a sliding window.

        Each window holds up to block_size tokens and moves by `stride` (default
        block_size // 2); a window scores only the tokens no earlier window scored, each
        with at least block_size - stride tokens of context (the first ones less).
        Without an end-of-text token the first token has no prediction and is not scored.
        `max_tokens` scores only the text's first that many tokens. Windows of equal
        length go through the model `batch_size` at a time.
        Returns a dict: nll (nats), tokens, bytes of the scored text, ppl, bits_per_byte.
        """
        stride = stride or max(self.block_size // 2, 1)
        if not 1 <= stride <= self.block_size:
            raise ValueError(f"perplexity: stride must be in [1, block_size={self.block_size}], got {stride}")
        ids = self.tokenizer.encode(text)  # (N,)
        if self.eot_token is not None:  # then the text's first token is predicted from it
            ids = np.concatenate([[self.eot_token], ids]).astype(np.int64)  # (N + 1,)
        ids = ids[: max_tokens + 1] if max_tokens else ids
        if len(ids) < 2:
            raise ValueError("perplexity: the text must have at least two tokens")
        # (begin, end) of each window; it scores its last end - (previous end) tokens.
        windows, scored_until = [], 1
        while scored_until < len(ids):
            # The first window scores block_size tokens, each later one the next `stride`.
            end = min(len(ids), self.block_size + 1 if scored_until == 1 else scored_until + stride)
            windows.append((max(end - self.block_size - 1, 0), end, end - scored_until))
            scored_until = end
        nll = 0.0
        with no_grad():
            for start in range(0, len(windows), batch_size):
                group = windows[start : start + batch_size]
                for length in sorted({e - b for b, e, _ in group}):
                    same = [w for w in group if w[1] - w[0] == length]
                    batch = np.stack([ids[b:e] for b, e, _ in same])  # (n, length)
                    logp = _log_softmax(self._all_logits(batch[:, :-1]))  # (n, length - 1, V)
                    for row, (_, _, n_new) in enumerate(same):
                        positions = np.arange(length - 1 - n_new, length - 1)  # (n_new,) predicting the new tokens
                        nll -= float(logp[row, positions, batch[row, positions + 1]].sum())
        tokens = len(ids) - 1
        n_bytes = len(self.tokenizer.decode(ids[1:]).encode("utf-8"))
        return {"nll": nll, "tokens": tokens, "bytes": n_bytes, "ppl": math.exp(nll / tokens),
                "bits_per_byte": nll / math.log(2) / n_bytes}


def _sum_and_greedy(logp, tokens):
    """(sum of logp[i, tokens[i]], whether every token is the argmax of its row); logp (L, V)."""
    picked = logp[np.arange(len(tokens)), tokens]  # (L,)
    return float(picked.sum()), bool(np.all(logp.argmax(axis=-1) == tokens))


def mean_and_stderr(values):
    """Mean and standard error of the mean, sqrt(sample variance / n); stderr None for n < 2."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), None
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


# ---- tasks ----------------------------------------------------------------------


def few_shot_prefix(task, example, num_fewshot, generator):
    """The description and `num_fewshot` solved examples before an example's context.

    Shots come from the task's train split, drawn without replacement by `generator`;
    a task without one draws from its own examples, never the example itself. Shots
    are separated by a blank line, as in lm-evaluation-harness.
    """
    if num_fewshot == 0:
        return example.description
    pool = task.train if task.train else [e for e in task.examples if e is not example]
    if len(pool) < num_fewshot:
        raise ValueError(f"task {task.name}: --num_fewshot {num_fewshot} needs that many examples to draw "
                         f"from, it has {len(pool)}")
    picks = generator.choice(len(pool), size=num_fewshot, replace=False)
    return example.description + "".join(pool[i].solved() + "\n\n" for i in picks)


def evaluate_task(evaluator, task, num_fewshot=0, limit=None, seed=1234, progress=None, use_cache=True):
    """Score `task` (a tasks.Task); returns a dict: name, shots, metrics, chance, examples."""
    examples = task.examples[:limit] if limit else task.examples
    generator = np.random.default_rng(seed)
    started, records = time.monotonic(), []
    kind = type(examples[0]) if examples else None
    if kind is Perplexity:
        return _evaluate_perplexity(evaluator, task, examples, limit)
    for number, example in enumerate(examples, 1):
        prefix = few_shot_prefix(task, example, num_fewshot, generator)
        if isinstance(example, MultipleChoice):
            scores = evaluator.loglikelihood_choices([prefix + c for c in example.contexts], example.choices,
                                                     use_cache=use_cache)
            lls = np.array([s for s, _ in scores])  # (N,)
            lengths = np.array([len(c) for c in example.choices], dtype=np.float64)  # (N,) characters
            pred, pred_norm = int(lls.argmax()), int((lls / lengths).argmax())
            records.append({"choices": example.choices, "label": example.label, "loglikelihoods": lls.tolist(),
                            "is_greedy": [g for _, g in scores], "pred": pred, "pred_norm": pred_norm,
                            "acc": float(pred == example.label), "acc_norm": float(pred_norm == example.label)})
        else:
            answer = evaluator.greedy_until(prefix + example.context, example.until, example.max_new_tokens)
            records.append({"target": example.target, "generated": answer,
                            "exact_match": float(answer.strip() == example.target.strip())})
        if progress is not None:
            progress(task.name, number, len(examples), time.monotonic() - started)
    metric_names = ("acc", "acc_norm") if kind is MultipleChoice else ("exact_match",)
    if kind is MultipleChoice and not task.report_acc_norm:
        metric_names = ("acc",)
    metrics = {}
    for name in metric_names:
        value, stderr = mean_and_stderr([r[name] for r in records])
        metrics[name] = {"value": value, "stderr": stderr}
    return {"task": task.name, "shots": num_fewshot, "metrics": metrics, "chance": task.chance(examples),
            "examples": records}


def _evaluate_perplexity(evaluator, task, examples, limit):
    (example,) = examples  # --limit N scores the first N windows of block_size tokens
    result = evaluator.perplexity(example.text, example.stride, limit and limit * evaluator.block_size)
    uniform = math.log(evaluator.tokenizer.vocab_size)  # nats per token of a uniform guess
    chance = {"ppl": float(evaluator.tokenizer.vocab_size),
              "bits_per_byte": uniform * result["tokens"] / math.log(2) / result["bytes"]}
    metrics = {name: {"value": result[name], "stderr": None} for name in ("ppl", "bits_per_byte")}
    return {"task": task.name, "shots": 0, "metrics": metrics, "chance": chance, "examples": [result]}


def check_encodable(task, tokenizer):
    """Refuse, naming them, the characters of a task that `tokenizer` cannot encode."""
    chars = getattr(tokenizer, "chars", None)
    if chars is None:
        return
    missing = sorted(set().union(*(set(t) for e in task.examples + task.train for t in e.texts())) - set(chars))
    if missing:
        shown = ", ".join(repr(c) for c in missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise ValueError(f"task {task.name} has {len(missing)} character(s) the checkpoint's vocabulary of "
                         f"{tokenizer.vocab_size} characters cannot encode: {shown}")


def evaluate(model, tokenizer, tasks, num_fewshot=0, limit=None, seed=1234, progress=None):
    """Score every task of `tasks` (tasks.Task objects); returns the list of result dicts."""
    for task in tasks:
        check_encodable(task, tokenizer)
    evaluator = Evaluator(model, tokenizer)
    return [evaluate_task(evaluator, task, num_fewshot, limit, seed, progress) for task in tasks]


# ---- reporting ------------------------------------------------------------------


def results_table(results):
    """The table of a model report: task | shots | metric | value | ± stderr | chance."""
    rows = [("task", "shots", "metric", "value", "± stderr", "chance")]
    for result in results:
        for name, metric in result["metrics"].items():
            chance = result["chance"][name] if isinstance(result["chance"], dict) else result["chance"]
            rows.append((result["task"], str(result["shots"]), name, f"{metric['value']:.4f}",
                         "" if metric["stderr"] is None else f"{metric['stderr']:.4f}",
                         "" if chance is None else f"{chance:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_report(path, results, source):
    """Write the results, with every example's per-choice log-likelihoods, as JSON."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"model": source, "results": results}, f, indent=1)
        f.write("\n")


class ProgressLine:
    """`task 120/500  ETA 0m42s` on one live line of a terminal; silent elsewhere."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()

    def __call__(self, name, done, total, elapsed):
        if not self.live:
            return
        eta = elapsed / done * (total - done)
        self.stream.write(f"\r{name} {done}/{total}  ETA {int(eta) // 60}m{int(eta) % 60:02d}s".ljust(60))
        if done == total:
            self.stream.write("\r" + " " * 60 + "\r")
        self.stream.flush()
