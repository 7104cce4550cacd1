"""The Shakespeare baby run, ours against a PyTorch twin trained the same way, same run.

    python benchmarks/bench_shakespeare.py path/to/tinyshakespeare.txt [--seeds 1337 1]

Both train nanoGPT's CPU baby GPT (examples/train_shakespeare_char.py's
config) from the same initial weights on the same batch sequence, with the
same schedule, clipping and AdamW, in float32, evaluating every 250 steps as
nanoGPT does. We report wall time, the val loss nanoGPT would print (mean of
20 random batches) and the exact val loss over the whole val split (all
non-overlapping windows), which is free of the 20-batch estimate's noise
(its standard deviation is about 0.01 here).
"""

import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "examples"))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from train_shakespeare_char import BABY_GPT  # noqa: E402

import tinygrad_gpt  # noqa: E402
from tinygrad_gpt.data import TextDataset, load_text  # noqa: E402
from tinygrad_gpt.tensor import no_grad  # noqa: E402
from tinygrad_gpt.progress import Progress  # noqa: E402
from tinygrad_gpt.train import TrainConfig, train  # noqa: E402
from machine import print_header  # noqa: E402  (benchmarks/machine.py, next to this script)

try:
    import torch

    from torch_twin import configure_torch_optimizer, twin_of
except ImportError:
    torch = None


def full_split_loss(loss_fn, ids, block_size, batch=64):
    """Mean loss over every non-overlapping window of a split."""
    n = (len(ids) - 1) // block_size
    x = ids[: n * block_size].reshape(n, block_size)  # (n, T)
    y = ids[1 : n * block_size + 1].reshape(n, block_size)  # (n, T)
    total = sum(loss_fn(x[i : i + batch], y[i : i + batch]) * len(x[i : i + batch]) for i in range(0, n, batch))
    return total / n


def run_ours(path, seed, out_dir):
    config = TrainConfig(**BABY_GPT, data=path, out_dir=out_dir, seed=seed, sample_tokens=0)
    start = time.perf_counter()
    result = train(config, progress=Progress(open(os.devnull, "w")), overwrite=True)
    wall = time.perf_counter() - start
    model, dataset = result["model"], result["batches"].dataset
    model.eval()
    with no_grad():
        full = full_split_loss(lambda x, y: model(x, y)[1].item(), dataset.ids("val"), config.block_size)
    return wall, result["losses"]["val"], full


def run_torch(path, seed):
    """nanoGPT's loop on the twin: same init, batches, schedule and evaluation as ours."""
    import tinygrad_gpt
    from tinygrad_gpt.gpt import GPT
    from tinygrad_gpt.optim import cosine_lr

    cfg = TrainConfig(**BABY_GPT, data=path, seed=seed)
    dataset = TextDataset(load_text(path))
    tinygrad_gpt.manual_seed(seed)
    twin = twin_of(GPT(cfg.model_config(dataset.vocab_size)))
    optimizer = configure_torch_optimizer(twin, cfg.learning_rate, (cfg.beta1, cfg.beta2), cfg.weight_decay)
    data_rng = np.random.default_rng(seed)

    def loss_of(x, y):
        return twin(torch.from_numpy(x), torch.from_numpy(y))[1]

    def estimate(split, it):
        gen = np.random.default_rng(seed + it)
        with torch.no_grad():
            return float(np.mean([loss_of(*dataset.get_batch(split, cfg.batch_size, cfg.block_size, gen)).item()
                                  for _ in range(cfg.eval_iters)]))

    start = time.perf_counter()
    for it in range(cfg.max_iters + 1):
        if it % cfg.eval_interval == 0 or it == cfg.max_iters:
            twin.eval()
            estimate("train", it)  # nanoGPT estimates both splits; keep its cost
            val = estimate("val", it)
            twin.train()
        if it == cfg.max_iters:
            break
        lr = cosine_lr(it, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_of(*dataset.get_batch("train", cfg.batch_size, cfg.block_size, data_rng))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(twin.parameters(), cfg.grad_clip)
        optimizer.step()
    wall = time.perf_counter() - start
    twin.eval()
    with torch.no_grad():
        full = full_split_loss(lambda x, y: loss_of(x, y).item(), dataset.ids("val"), cfg.block_size)
    return wall, val, full


def main():
    tinygrad_gpt.tune_process()  # as a training program does, before any kernel runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="path to tinyshakespeare.txt")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    parser.add_argument("--out_dir", default="out-bench-shakespeare")
    parser.add_argument("--ours-only", action="store_true")
    args = parser.parse_args()
    print_header()  # machine.py: CPU, vector ISA, cores, library versions
    if torch is not None:
        torch.set_num_threads(os.cpu_count())
    print("| seed | framework | wall s | val loss (20-batch estimate) | val loss (whole split) |")
    print("|---|---|---|---|---|")
    walls = {"ours": [], "PyTorch": []}
    for seed in args.seeds:
        runs = [("ours", lambda: run_ours(args.data, seed, args.out_dir))]
        if torch is not None and not args.ours_only:
            runs.append(("PyTorch", lambda: run_torch(args.data, seed)))
        for name, run in runs:
            wall, estimate, full = run()
            walls[name].append(wall)
            print(f"| {seed} | {name} | {wall:.0f} | {estimate:.4f} | {full:.4f} |", flush=True)
    if walls["PyTorch"]:
        print(f"\nwall time ours / PyTorch: {sum(walls['ours']) / sum(walls['PyTorch']):.2f}")


if __name__ == "__main__":
    main()
