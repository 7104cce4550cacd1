"""A few data-parallel AdamW steps of a tiny GPT; run by tests/test_distributed.py.

    mpiexec -n 2 python tests/distributed_worker.py OUT.npz --zero 1
    python tests/distributed_worker.py OUT.npz            # the single-process reference

Every rank starts from different weights (rank r scales them by 1 + r) so the
broadcast from rank 0 is tested too. Rank 0 writes OUT.npz: the loss of every step
(averaged over ranks), the final parameters, the optimizer's state_dict, and every
rank's optimizer memory in bytes.
"""

import argparse
import sys

import numpy as np

from tinygrad_gpt import distributed, rng
from tinygrad_gpt.gpt import GPT, GPTConfig
from tinygrad_gpt.optim import configure_optimizer

VOCAB, BLOCK = 11, 8


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--zero", type=int, default=0)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--grad_clip", type=float, default=1.0)
    args = parser.parse_args()

    world = distributed.init_world()
    rng.manual_seed(0)
    config = GPTConfig(block_size=BLOCK, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=16, bias=True)
    model = GPT(config).to(np.dtype(args.dtype))
    for p in model.parameters():
        p.data *= p.dtype.type(1 + world.rank)  # only rank 0's weights should survive the broadcast
    optimizer = configure_optimizer(model, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    parallel = distributed.DataParallel(world, model, optimizer, zero_stage=args.zero)
    parallel.broadcast_parameters()

    data_rng = np.random.default_rng(1)
    losses = []
    for _ in range(args.steps):
        x = data_rng.integers(0, VOCAB, size=(args.batch_size, BLOCK))  # (B, T) the global batch
        y = data_rng.integers(0, VOCAB, size=(args.batch_size, BLOCK))  # (B, T)
        x_shard, y_shard = distributed.shard_rows(world, x, y)  # (B/N, T) each
        _, loss = model(x_shard, y_shard)
        parallel.optimizer.zero_grad()
        loss.backward()
        parallel.step(args.grad_clip)
        losses.append(world.mean(loss.item()))

    state = parallel.optimizer.state_dict()  # collective under ZeRO: every rank calls it
    optimizer = parallel.optimizer  # AdamW keeps a list of per-parameter moments, ZeroAdamW one flat shard each
    moments = [optimizer.exp_avg, optimizer.exp_avg_sq] if args.zero else optimizer.exp_avg + optimizer.exp_avg_sq
    memory = np.array([sum(m.nbytes for m in moments)], dtype=np.int64)
    memory_per_rank = np.zeros(world.size, dtype=np.int64)
    world.allgather(memory, memory_per_rank)
    if world.is_main:
        arrays = {f"param/{name}": p.data for name, p in model.named_parameters()}
        arrays.update({f"optim/{k}": v for k, v in state.items()})
        np.savez(args.out, losses=np.array(losses), memory=memory_per_rank, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
