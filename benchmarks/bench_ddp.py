"""Data-parallel benchmark: 1 process x 2 threads against 2 MPI ranks x 1 thread, same run.

    python benchmarks/bench_ddp.py              # 3 rounds of 30 timed steps each (~3 minutes)
    python benchmarks/bench_ddp.py --quick      # 1 round of 10 steps

One step is what training does: zero_grad, forward and backward of this rank's
rows of the global batch, then `DataParallel.step` (gradient average, clip, AdamW),
plus the loss averaged over ranks. The model is the baby GPT (4 layers, 4 heads,
128 channels, block 64, global batch 12, float32). Each configuration runs in a
fresh process (or mpiexec job), in alternating rounds so the machine's drift hits
all alike; we report the median step, steps/s, tokens/s, the ratio to the
single-process baseline, and the time per step spent in MPI collectives (the
gradient Allreduce, or ZeRO's reduce-scatter + all-gather, and the loss average).
That time includes waiting for the slower rank, so on a shared machine it also
measures load imbalance.

Then the cost model of the README, with this run's figures: a ring allreduce of G
gradient bytes moves 2(N-1)/N x G over each link per step; with a fixed global
batch the compute per rank is T1 / N, so communication dominates once
N - 1 > T1 x bandwidth / (2 G) (ignoring latency and any overlap, which this
implementation does not do).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BABY = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=96, batch_size=12)
GPT2_SMALL = dict(params=124_439_808, tokens_per_step=491_520)  # nanoGPT's GPT-2 recipe: 12 x 1024 x 40 accumulation
BANDWIDTHS_GBIT = (1, 10, 100)


def worker(steps, zero, warmup=3):
    """Time `steps` training steps on this rank; rank 0 prints one JSON line."""
    import numba

    from tinygrad_gpt import distributed, rng
    from tinygrad_gpt.gpt import GPT, GPTConfig
    from tinygrad_gpt.kernels.tuning import tune_process
    from tinygrad_gpt.optim import configure_optimizer

    tune_process()  # the settings the tinygpt command runs with
    world = distributed.init_world()
    comm_seconds = [0.0]
    for name in ("allreduce_sum_", "reduce_scatter_sum", "allgather"):  # time every collective of a step
        method = getattr(world, name)

        def timed(*args, _method=method):
            t0 = time.perf_counter()
            out = _method(*args)
            comm_seconds[0] += time.perf_counter() - t0
            return out

        setattr(world, name, timed)
    rng.manual_seed(0)
    config = GPTConfig(**{k: v for k, v in BABY.items() if k != "batch_size"}, bias=False)
    model = GPT(config)
    optimizer = configure_optimizer(model, 1e-3, (0.9, 0.99), 0.1)
    parallel = distributed.DataParallel(world, model, optimizer, zero_stage=zero)
    parallel.broadcast_parameters()
    data = np.random.default_rng(0)
    step_times, comm_times = [], []
    for i in range(warmup + steps):
        x = data.integers(0, config.vocab_size, (BABY["batch_size"], config.block_size))  # (B, T) global batch
        x_shard, y_shard = distributed.shard_rows(world, x, np.roll(x, -1, axis=1))  # (B/N, T) each
        comm_seconds[0] = 0.0
        t0 = time.perf_counter()
        parallel.optimizer.zero_grad()
        _, loss = model(x_shard, y_shard)
        loss.backward()
        parallel.step(1.0)
        world.mean(loss.item())
        if i >= warmup:
            step_times.append(time.perf_counter() - t0)
            comm_times.append(comm_seconds[0])
    if world.is_main:
        grad_bytes = sum(p.data.nbytes for p in model.parameters())
        print(json.dumps({"step_s": float(np.median(step_times)), "comm_s": float(np.median(comm_times)),
                          "threads": numba.get_num_threads(), "ranks": world.size, "grad_bytes": grad_bytes,
                          "params": model.get_num_params()}))


def mpiexec():
    for prefix in (sys.prefix, sys.base_prefix):
        candidate = Path(prefix) / "bin" / "mpiexec"
        if candidate.exists():
            return str(candidate)
    return "mpiexec"


def run(ranks, threads, zero, steps):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_COMM_WORLD"))}
    env.update(NUMBA_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    command = [sys.executable, __file__, "--worker", "--steps", str(steps), "--zero", str(zero)]
    if ranks > 1:
        command = [mpiexec(), "-n", str(ranks)] + command
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def header():
    import numba

    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    try:
        import mpi4py
        from mpi4py import MPI

        mpi = f"mpi4py {mpi4py.__version__}, {MPI.Get_library_version().splitlines()[0].strip()}"
    except ImportError:
        mpi = "mpi4py not installed"
    print(f"machine: {cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}")
    print(f"numpy {np.__version__}, numba {numba.__version__}, {mpi}")
    print("(timings on a shared machine drift; compare the ratios, measured in alternating rounds)\n")


def cost_model(baseline):
    """Where communication overtakes compute, from this run's single-process step."""
    tokens = BABY["batch_size"] * BABY["block_size"]
    flops = 6 * baseline["params"] * tokens / baseline["step_s"]  # achieved FLOP/s, 6 N per token (no attention)
    print(f"\ncost model (ring allreduce: 2(N-1)/N x G bytes per link per step; compute T1/N per rank;"
          f" communication dominates once N - 1 > T1 x bandwidth / (2 G))")
    print(f"  this machine achieves {flops / 1e9:.1f} GFLOP/s (6 x params x tokens / step time, one process)")
    models = [("baby", baseline["grad_bytes"], baseline["step_s"]),
              ("GPT-2 small", 4 * GPT2_SMALL["params"], 6 * GPT2_SMALL["params"] * GPT2_SMALL["tokens_per_step"] / flops)]
    for name, grad_bytes, t1 in models:
        crossings = ", ".join(f"{gbit} Gbit/s: N > {1 + t1 * gbit * 1e9 / 8 / (2 * grad_bytes):,.0f}"
                              for gbit in BANDWIDTHS_GBIT)
        print(f"  {name:12s} G = {grad_bytes / 1e6:.1f} MB, T1 = {t1:,.3g} s per global step -> {crossings}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--zero", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1 round of 10 steps")
    args = parser.parse_args()
    if args.worker:
        return worker(args.steps, args.zero)
    if args.quick:
        args.rounds, args.steps = 1, 10
    header()
    configs = [("1 process x 2 threads", 1, 2, 0), ("2 ranks x 1 thread", 2, 1, 0),
               ("2 ranks x 1 thread, --zero 1", 2, 1, 1)]
    results = {name: [] for name, *_ in configs}
    for _ in range(args.rounds):
        for name, ranks, threads, zero in configs:
            results[name].append(run(ranks, threads, zero, args.steps))
    tokens = BABY["batch_size"] * BABY["block_size"]
    print(f"baby GPT, global batch {BABY['batch_size']} x {BABY['block_size']} tokens, float32, "
          f"{args.rounds} round(s) x {args.steps} steps, medians")
    print(f"{'configuration':32s} {'ms/step':>8s} {'steps/s':>8s} {'tokens/s':>9s} {'vs 1 proc':>9s} "
          f"{'MPI ms/step':>11s} {'MPI share':>9s}")
    baseline = None
    for name, *_ in configs:
        step = float(np.median([r["step_s"] for r in results[name]]))
        comm = float(np.median([r["comm_s"] for r in results[name]]))
        baseline = baseline or step
        print(f"{name:32s} {step * 1e3:8.1f} {1 / step:8.1f} {tokens / step:9,.0f} {baseline / step:8.2f}x "
              f"{comm * 1e3:11.2f} {comm / step:8.1%}")
    first = results[configs[0][0]][0]
    cost_model({**first, "step_s": baseline})
    return 0


if __name__ == "__main__":
    sys.exit(main())
