"""A language model only predicts the next token: pretrain one, then fine-tune it to answer.

    python examples/post_training.py            # about 5 minutes on 2 cores (see the notes on timing)

1. Pretraining. A small char-level GPT reads text in which 3-letter words and
   their reversals appear in free form, one sentence per line ("The reverse
   of abc is cba.", "Quick fact: abc reversed gives cba.", "What is abc
   reversed? It is cba.", ...). It learns to reverse a word, and to continue
   this kind of text.
2. Before. Asked "Q: What is abc reversed?\nA:", a format it never saw, it
   does what it was trained to do: it continues the text, and rarely with just
   " cba" and the end of the line. Exact match on held-out questions is low.
3. Fine-tuning on question/answer pairs ({"prompt": "What is abc reversed?",
   "completion": " cba"}), with the loss on the answers only: once with every
   weight trained, once with LoRA adapters (a few percent of the weights).
   The held-out questions are not among the fine-tuning pairs: the model
   answers them with what it learned in pretraining, and fine-tuning only
   taught it to answer in the form asked, then stop (the end token of a char
   model is the newline).

Prints a table (exact match, trainable parameters, optimizer memory, wall
time) and writes OUT_DIR/completion_loss.png when matplotlib is installed.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from tinygrad_gpt.cli import exit_status  # noqa: E402
from tinygrad_gpt.finetune import (  # noqa: E402
    DEFAULT_TEMPLATE,
    FINETUNE_DEFAULTS,
    FinetuneConfig,
    finetune,
    format_prompt,
    greedy_completions,
    load_sft_data,
)
from tinygrad_gpt.progress import Progress, StopSignals  # noqa: E402
from tinygrad_gpt.train import TrainConfig, train  # noqa: E402
from tinygrad_gpt.training_state import load_model  # noqa: E402

# The family of computations: reversing a 3-letter word over LETTERS, and the ways the text says it.
LETTERS = "abcdefgh"
PHRASES = (
    "{w} reversed is {r}.",
    "The reverse of {w} is {r}.",
    "As a word, {w} backwards is {r}.",
    "Quick fact: {w} reversed gives {r}.",
    "What is {w} reversed? It is {r}.",
)
QUESTION = "What is {w} reversed?"
N_TUNING, N_HELD_OUT = 200, 100  # questions to fine-tune on, and others held out
PRETRAIN_LINES = 20_000

PRETRAIN = dict(n_layer=2, n_head=4, n_embd=64, block_size=32, dropout=0.0, bias=False, batch_size=32,
                max_iters=1200, lr_decay_iters=1200, learning_rate=3e-3, min_lr=3e-4, warmup_iters=50,
                weight_decay=0.1, eval_interval=400, eval_iters=5, log_interval=50, sample_tokens=0)
FINETUNE = {**FINETUNE_DEFAULTS, "max_iters": 150, "lr_decay_iters": 150, "learning_rate": 1e-3, "min_lr": 1e-4,
            "warmup_iters": 10, "batch_size": 32, "eval_interval": 50, "eval_iters": 4, "log_interval": 25}
LORA = dict(lora_rank=2, lora_alpha=4.0)
LORA_LEARNING_RATE = 4e-3  # adapters start at zero and are few: they take a larger step


def write_data(out_dir, seed):
    """The pretraining text and the fine-tuning / held-out JSONL files; returns their paths."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list(LETTERS), 3)) for _ in range(PRETRAIN_LINES)]
    lines = [PHRASES[rng.integers(len(PHRASES))].format(w=w, r=w[::-1]) for w in words]
    all_words = [a + b + c for a in LETTERS for b in LETTERS for c in LETTERS]
    order = rng.permutation(len(all_words))
    held_out = [all_words[i] for i in order[:N_HELD_OUT]]
    tuning = [all_words[i] for i in order[N_HELD_OUT : N_HELD_OUT + N_TUNING]]
    paths = {name: os.path.join(out_dir, name) for name in ("pretrain.txt", "tuning.jsonl", "held_out.jsonl")}
    os.makedirs(out_dir, exist_ok=True)
    with open(paths["pretrain.txt"], "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    for name, chosen in (("tuning.jsonl", tuning), ("held_out.jsonl", held_out)):
        with open(paths[name], "w", encoding="utf-8") as f:
            for w in chosen:
                f.write(json.dumps({"prompt": QUESTION.format(w=w), "completion": f" {w[::-1]}"}) + "\n")
    return paths, len(tuning), len(held_out)


def before_fine_tuning(model, tokenizer, paths, block_size):
    """Held-out exact match of the pretrained model, and what it writes for two questions."""
    data = load_sft_data(paths["tuning.jsonl"], tokenizer, block_size, 1, val_data=paths["held_out.jsonl"])
    examples = data.examples["val"]
    prompts = [format_prompt(DEFAULT_TEMPLATE, p) for p, _ in examples]
    answers = greedy_completions(model, tokenizer, prompts, 12, data.end_id)
    score = float(np.mean([answer == c for answer, (_, c) in zip(answers, examples)]))
    return score, list(zip(prompts, answers))[:2]


def run_finetune(name, base_ckpt, paths, out_dir, progress, stop, overwrite, **lora):
    settings = FinetuneConfig(init_from=base_ckpt, data=paths["tuning.jsonl"], val_data=paths["held_out.jsonl"],
                              eval_examples=10_000, **lora)
    rate = {"learning_rate": LORA_LEARNING_RATE, "min_lr": LORA_LEARNING_RATE / 10} if lora else {}
    config = TrainConfig(**{**FINETUNE, **rate, "out_dir": os.path.join(out_dir, name)})
    progress.line(f"\n== fine-tuning: {name}")
    start = time.perf_counter()
    result = finetune(settings, config, overwrite=overwrite, progress=progress, stop=stop)
    result["seconds"] = time.perf_counter() - start
    return result


def plot(out_dir, results):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, result in results.items():
        history = result["history"]
        ax.plot([r["iter"] for r in history if "loss" in r], [r["loss"] for r in history if "loss" in r],
                lw=0.8, alpha=0.6, label=f"{name}: train (per step)")
        evals = [r for r in history if r.get("eval")]
        ax.plot([r["iter"] for r in evals], [r["val"] for r in evals], marker="o", label=f"{name}: held-out")
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("completion loss (cross-entropy)")
    ax.set_yscale("log")
    ax.legend()
    path = os.path.join(out_dir, "completion_loss.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default="out-post-training")
    parser.add_argument("--overwrite", action="store_true", help="replace the checkpoints already in --out_dir")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--reuse_base", action="store_true",
                        help="take the finished pretraining run in OUT_DIR/base instead of pretraining again")
    args = parser.parse_args()
    paths, n_tuning, n_held_out = write_data(args.out_dir, args.seed)
    progress = Progress()
    progress.line(f"{PRETRAIN_LINES:,} sentences reversing 3-letter words over {LETTERS!r}, in {len(PHRASES)} "
                  f"phrasings; fine-tuning on {n_tuning} questions, {n_held_out} others held out")
    with StopSignals() as stop:
        progress.line("\n== pretraining on free-form text")
        start = time.perf_counter()
        base_config = TrainConfig(**PRETRAIN, data=paths["pretrain.txt"], out_dir=os.path.join(args.out_dir, "base"),
                                  seed=args.seed)
        pretrained = train(base_config, resume=args.reuse_base, overwrite=args.overwrite and not args.reuse_base,
                           progress=progress, stop=stop)
        pretrain_seconds = time.perf_counter() - start
        model, tokenizer = pretrained["model"], pretrained["batches"].tokenizer
        before, shown = before_fine_tuning(model, tokenizer, paths, model.config.block_size)
        progress.line("\nthe pretrained model, asked in the fine-tuning format, continues the text:")
        for prompt, answer in shown:
            progress.line(f"  {prompt!r} -> {answer!r}")
        base = pretrained["ckpt_last"]
        results = {"full": run_finetune("full", base, paths, args.out_dir, progress, stop, args.overwrite),
                   "lora": run_finetune("lora", base, paths, args.out_dir, progress, stop, args.overwrite, **LORA)}
    total = sum(p.numel() for p in results["full"]["model"].parameters())
    print(f"\npretraining: {pretrain_seconds:.0f} s; held-out exact match over {n_held_out} questions "
          f"(greedy: the answer, then the end of the line):\n")
    print(f"| model | held-out exact match | trainable parameters | optimizer state | fine-tuning time |")
    print(f"|---|---:|---:|---:|---:|")
    print(f"| pretrained only (before) | {before:.1%} | - | - | - |")
    for name, label in (("full", "full fine-tuning"), ("lora", f"LoRA rank {LORA['lora_rank']}")):
        r = results[name]
        print(f"| {label} | {r['exact_match']:.1%} | {r['trainable_params']:,} ({r['trainable_params'] / total:.1%}) "
              f"| {r['optimizer_bytes'] / 1024:,.0f} KiB | {r['seconds']:.0f} s |")
    for name in results:  # read back from the checkpoint: the history of the run
        results[name]["history"] = history_of(results[name])
    figure = plot(args.out_dir, results)
    if figure:
        print(f"\ncompletion loss of both: {figure}")
    full, lora = results["full"]["exact_match"], results["lora"]["exact_match"]
    lora_share = results["lora"]["trainable_params"] / total
    checks = [("before < 20%", before < 0.2), ("full >= 90%", full >= 0.9),
              ("LoRA within 5 points of full", lora >= full - 0.05), ("LoRA trains <= 5% of the parameters", lora_share <= 0.05)]
    print("\n" + "; ".join(f"{text}: {'yes' if ok else 'NO'}" for text, ok in checks))
    print(f"adapter alone: {results['lora']['adapter']} ({os.path.getsize(results['lora']['adapter']) / 1024:.0f} KiB)")
    return 0


def history_of(result):
    return load_model(result["ckpt_last"])[1]["history"]


if __name__ == "__main__":
    sys.exit(exit_status(main, prog="post_training.py",
                         resume_command="python examples/post_training.py --out_dir {out_dir} --overwrite"))
