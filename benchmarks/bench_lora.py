"""Fine-tuning at GPT-2 scale: steps/s and peak memory, full fine-tuning against LoRA.

    python benchmarks/bench_lora.py                        # GPT-2 124M shape, random weights
    python benchmarks/bench_lora.py --init_from gpt2-dir   # a Hugging Face GPT-2 directory

Each measurement runs in a fresh process (peak memory is that process's
maximum resident set size), in alternating rounds (full, LoRA, full, LoRA,
...), and LoRA is reported as a ratio to full fine-tuning measured in the
same run, because the absolute times of a shared machine drift. A step is
forward, backward, gradient clipping and AdamW on one (batch, block) batch
of random tokens; the first step of each process (Numba compiling, buffers
being allocated) is not timed.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def header():
    import numba
    import numpy

    return (f"CPU: {cpu_model()} | cores: {os.cpu_count()} | Python {platform.python_version()} | "
            f"NumPy {numpy.__version__} | Numba {numba.__version__}")


def measure(args):
    """One process: build the model, fine-tune it for args.steps steps, print a JSON result."""
    import numpy as np

    from tinygrad_gpt import rng
    from tinygrad_gpt.finetune import configure_finetune_optimizer
    from tinygrad_gpt.gpt import GPT, GPTConfig
    from tinygrad_gpt.lora import apply_lora, optimizer_state_bytes, trainable_parameters
    from tinygrad_gpt.optim import clip_grad_norm_
    from tinygrad_gpt.train import TrainConfig

    rng.manual_seed(0)
    if args.init_from:
        from tinygrad_gpt.pretrained import load_pretrained

        model, _ = load_pretrained(args.init_from)
    else:
        model = GPT(GPTConfig())  # GPT-2 small: 12 layers, 12 heads, 768 wide, 124M parameters
    if args.mode == "lora":
        apply_lora(model, args.rank, 2.0 * args.rank)
    optimizer = configure_finetune_optimizer(model, TrainConfig(learning_rate=1e-4, weight_decay=0.0))
    gen = np.random.default_rng(0)
    V = model.config.vocab_size
    times = []
    for step in range(args.steps + 1):
        x = gen.integers(0, V, (args.batch_size, args.block))  # (B, T)
        y = gen.integers(0, V, (args.batch_size, args.block))  # (B, T)
        t0 = time.perf_counter()
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step:  # the first step compiles and allocates
            times.append(time.perf_counter() - t0)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    print(json.dumps({"mode": args.mode, "steps_per_s": 1 / float(np.median(times)),
                      "peak_mb": peak_kib / 1024, "trainable": sum(p.numel() for p in trainable_parameters(model)),
                      "total": sum(p.numel() for p in model.parameters()),
                      "optimizer_mb": optimizer_state_bytes(optimizer) / 2**20}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init_from", help="a Hugging Face GPT-2 directory (default: random weights, 124M shape)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--block", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", choices=["full", "lora"], help=argparse.SUPPRESS)  # set in the child processes
    args = parser.parse_args()
    if args.mode:
        return measure(args)
    print(header())
    print(f"model: {args.init_from or 'GPT-2 124M shape, random weights'} | batch {args.batch_size} x "
          f"{args.block} tokens | LoRA rank {args.rank} on attention and MLP projections | "
          f"{args.steps} timed steps per process, {args.rounds} alternating rounds\n")
    runs = {"full": [], "lora": []}
    for round_index in range(args.rounds):
        for mode in ("full", "lora"):
            command = [sys.executable, __file__, "--mode", mode] + [
                f"--{k}={v}" for k, v in vars(args).items() if k != "mode" and v is not None]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(out.strip().splitlines()[-1]))
            r = runs[mode][-1]
            print(f"round {round_index + 1} {mode:4s}: {r['steps_per_s']:.3f} steps/s, peak {r['peak_mb']:,.0f} MB")
    print("\n| | full fine-tuning | LoRA | LoRA / full |")
    print("|---|---:|---:|---:|")
    best = {mode: max(rs, key=lambda r: r["steps_per_s"]) for mode, rs in runs.items()}
    rows = [("steps/s (best round)", "steps_per_s", "{:.3f}"), ("peak memory, MB", "peak_mb", "{:,.0f}"),
            ("optimizer state, MB", "optimizer_mb", "{:,.1f}"), ("trainable parameters", "trainable", "{:,}")]
    for label, key, fmt in rows:
        f, lo = best["full"][key], best["lora"][key]
        print(f"| {label} | {fmt.format(f)} | {fmt.format(lo)} | {lo / f:.3f} |")
    print(f"\nparameters in the model: {best['full']['total']:,}")


if __name__ == "__main__":
    main()
