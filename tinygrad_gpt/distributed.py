"""Data-parallel training over MPI: N processes ("ranks") train one model together.

    mpiexec -n 2 tinygpt train --batch_size 8        # two ranks of 4 rows each

Every rank holds the whole model. Each step, every rank draws the same global
batch (the same seeded generator) and keeps its own rows, computes the gradient
of its rows' mean loss, and the ranks average their gradients, so every rank
applies the same update and the replicas never drift apart:

    grad = (1/N) sum_r grad_r      where grad_r is rank r's gradient of its B/N rows

This is exactly the gradient of the global batch's mean loss, because the shards
have equal sizes (for text every position counts; the synthetic tasks take the
loss on the same positions of every row). Only the order of the float sums
differs from one process, so losses agree to float rounding, not bit for bit.

What happens where:

* `init_world()` reads the launcher's environment. A process not started by
  mpiexec (or started as the only rank) gets `World`, where every collective is
  the identity and mpi4py is never imported. Under `mpiexec -n N` with N > 1 it
  imports mpi4py and returns an `MPIWorld`.
* `DataParallel` is the training step's part: broadcast the parameters from rank
  0 once, average the gradients over one flat contiguous buffer (one Allreduce a
  step, not one per tensor), then clip and step. With `zero_stage=1` the AdamW
  moments are sharded instead (`ZeroAdamW`, ZeRO stage 1).
* Rank 0 alone writes logs, history and checkpoints; losses that are logged are
  averaged over the ranks first, so every rank takes the same decisions (stop,
  diverged, best checkpoint) at the same iteration.
* Dropout: rank r draws its masks from the library generator advanced by r
  PCG64 jumps (2^127 draws each), so ranks use different masks, reproducibly
  from the seed; on one process this is the usual stream.
* Failures: a rank that meets an error calls `World.fail`. When every rank
  fails together (bad flags, a missing file: each rank sees the same thing),
  rank 0 prints the one message and all exit with its status. A rank that fails
  alone (the others are waiting for it in a collective) prints its message and
  aborts the whole job. A rank killed outright is the launcher's to notice:
  MPICH's mpiexec ends the other ranks within a second and says which died.
"""

import os
import sys
import time
import traceback

import numpy as np

from . import kernels, rng
from .optim import Optimizer, clip_grad_norm_

# Variables the launchers set in every rank's environment: MPICH / Intel MPI (PMI),
# Open MPI, MVAPICH. Reading them needs no MPI library, so the single-process path
# and the "mpi4py is missing" message never import one.
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")

# How long a failing rank waits for the others to fail too before it aborts the job.
# Ranks that meet the same bad input do so within milliseconds of each other; the
# wait only has to cover a slow, shared machine, and it bounds how long a job with
# one failed rank lingers (well under the 30 s a fault may take to end the job).
FAIL_TOGETHER_SECONDS = 10.0

INSTALL_HINT = "pip install 'tinygrad_gpt[mpi]' (that is: pip install mpi4py mpich)"


class MPIUnavailable(ValueError):
    """Launched as one of N > 1 ranks, but mpi4py cannot be imported."""


def _first_int(environ, names, default):
    for name in names:
        value = environ.get(name, "")
        if value.strip().isdigit():
            return int(value)
    return default


def launched_size(environ=os.environ):
    """How many ranks the launcher started (1 when not under mpiexec)."""
    return _first_int(environ, _SIZE_VARIABLES, 1)


def launched_rank(environ=os.environ):
    """This process's rank according to the launcher (0 when not under mpiexec)."""
    return _first_int(environ, _RANK_VARIABLES, 0)


def is_main_process(environ=os.environ):
    """True on rank 0 and in a single process; needs no MPI library (for messages printed before it loads)."""
    return launched_rank(environ) == 0


class World:
    """One process: rank 0 of 1. Every collective operation leaves its data as it is.

    `MPIWorld` has the same methods, so the training loop has one path for both.
    """

    rank = 0
    size = 1
    is_main = True

    def broadcast_(self, array):
        """Overwrite `array` in place with rank 0's copy."""
        return array

    def allreduce_sum_(self, array):
        """Replace `array` in place by its elementwise sum over the ranks."""
        return array

    def reduce_scatter_sum(self, flat, shard):
        """shard = this rank's 1/N slice of the sum over ranks of `flat` (len(flat) = N len(shard))."""
        shard[...] = flat
        return shard

    def allgather(self, shard, flat):
        """flat = every rank's shard, concatenated in rank order."""
        flat[...] = shard
        return flat

    def gather_to_main(self, shard, flat):
        """Like allgather, but only rank 0 receives `flat` (other ranks may pass None)."""
        return self.allgather(shard, flat)

    def mean(self, value):
        """The average of a float over the ranks."""
        return float(value)

    def max(self, value):
        """The largest of an integer over the ranks."""
        return int(value)

    def check_same_arguments(self, argv):
        """Raise ValueError on every rank if the ranks were started with different arguments."""

    def fail(self, status, message):
        """Report an error, once for the whole job, and return the exit status to end with."""
        print(message, file=sys.stderr)
        return status


class MPIWorld(World):
    """Rank `rank` of `size` processes started by mpiexec, talking through mpi4py."""

    def __init__(self, MPI):
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_main = self.rank == 0
        # A communicator of its own for agreeing on failures, so a failing rank's
        # barrier can never be matched against a collective of the training step.
        self._fail_comm = self.comm.Dup()

    def broadcast_(self, array):
        self.comm.Bcast(array, root=0)
        return array

    def allreduce_sum_(self, array):
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
        return array

    def reduce_scatter_sum(self, flat, shard):
        self.comm.Reduce_scatter_block(flat, shard, op=self.MPI.SUM)
        return shard

    def allgather(self, shard, flat):
        self.comm.Allgather(shard, flat)
        return flat

    def gather_to_main(self, shard, flat):
        self.comm.Gather(shard, flat, root=0)
        return flat

    def mean(self, value):
        total = self.allreduce_sum_(np.array([value], dtype=np.float64))
        return float(total[0]) / self.size

    def max(self, value):
        return self.comm.allreduce(int(value), op=self.MPI.MAX)

    def check_same_arguments(self, argv):
        everyone = self.comm.allgather(list(argv))
        for rank, other in enumerate(everyone):
            if other != everyone[0]:
                raise ValueError(
                    f"rank {rank} was started with the arguments {' '.join(other) or '(none)'!r} but rank 0 with "
                    f"{' '.join(everyone[0]) or '(none)'!r}; every rank must run the same command"
                )

    def fail(self, status, message):
        """If every rank fails (they meet the same error), rank 0 prints and all return its
        status; a rank failing alone prints its own message and aborts the job."""
        barrier = self._fail_comm.Ibarrier()
        deadline = time.monotonic() + FAIL_TOGETHER_SECONDS
        while not barrier.Test():
            if time.monotonic() > deadline:
                print(f"{message} (on rank {self.rank} of {self.size}; stopping every rank)", file=sys.stderr)
                sys.stderr.flush()
                self.abort(status)
            time.sleep(0.005)
        statuses = self._fail_comm.allgather(status)
        if self.is_main:
            print(message, file=sys.stderr)
        return statuses[0]

    def abort(self, status):
        """End every rank of the job now, with this exit status."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(status)


_world = None


def init_world(environ=os.environ):
    """The world this process runs in (made once per process; MPI is initialised here).

    Raises MPIUnavailable, naming what to install, when launched as one of N > 1
    ranks without mpi4py.
    """
    global _world
    if _world is not None:
        return _world
    size = launched_size(environ)
    if size <= 1:
        _world = World()
        return _world
    try:
        from mpi4py import MPI  # initialises MPI
    except ImportError:
        raise MPIUnavailable(
            f"this process was started as one of {size} MPI ranks, but mpi4py is not installed; "
            f"install it with: {INSTALL_HINT}"
        ) from None
    world = MPIWorld(MPI)
    if world.size != size:  # mpiexec and mpi4py's library are different MPIs: each rank would be alone
        raise MPIUnavailable(
            f"mpiexec started {size} ranks but MPI sees {world.size}: the mpiexec on PATH does not belong to "
            f"the MPI library mpi4py uses ({MPI.Get_library_version().splitlines()[0].strip()}); "
            f"run that library's mpiexec"
        )
    _world = world
    _share_cores(environ)
    _abort_on_uncaught_exceptions(_world)
    return _world


def _share_cores(environ):
    """Run each rank's kernels on cores / (ranks on this machine) threads, so N ranks do
    not oversubscribe the cores; a NUMBA_NUM_THREADS the user set is kept."""
    from . import kernels

    if "NUMBA_NUM_THREADS" in environ or kernels.active() == "reference":  # the reference mode has no Numba
        return
    import numba

    local_ranks = _first_int(environ, _LOCAL_SIZE_VARIABLES, 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, cores // max(local_ranks, 1))))


def _abort_on_uncaught_exceptions(world):
    """A bug on one rank must end the job, not leave the other ranks waiting in a collective forever."""
    def excepthook(kind, value, tb):
        traceback.print_exception(kind, value, tb)
        world.abort(1)

    sys.excepthook = excepthook


def split_dropout_streams(world):
    """Give rank r the library generator advanced by r PCG64 jumps (rank 0 keeps its stream).

    Call after the generator is seeded or restored from a checkpoint. Every rank draws
    the same count of numbers a step (equal shards), so rank r's stream stays rank 0's
    jumped r times: a checkpoint holding rank 0's state resumes every rank exactly.
    """
    if world.rank:
        bit_generator = np.random.PCG64()
        bit_generator.state = rng.get_rng_state()
        rng.set_rng_state(bit_generator.jumped(world.rank).state)


def check_batch_split(batch_size, world_size, accumulation_steps=1):
    """The global batch must split into equal micro-batches: world_size ranks x accumulation_steps each."""
    parts = world_size * accumulation_steps
    if batch_size % parts:
        raise ValueError(
            f"--batch_size {batch_size} must be divisible by the number of ranks times "
            f"--gradient_accumulation_steps, {world_size} x {accumulation_steps} = {parts}"
        )


def shard_rows(world, *arrays):
    """This rank's rows of each (B, ...) array: rows [rank B/N, (rank + 1) B/N)."""
    shards = []
    for array in arrays:
        rows = array.shape[0] // world.size
        shards.append(array[world.rank * rows:(world.rank + 1) * rows])  # (B/N, ...)
    return shards[0] if len(shards) == 1 else tuple(shards)


class FlatLayout:
    """Where each parameter lives in one flat buffer, padded to a multiple of the ranks.

    Packing the gradients into one contiguous array lets one collective call carry
    them all; the padding (zeros) lets the buffer split into N equal shards.
    """

    def __init__(self, params, world_size):
        self.params = list(params)
        self.dtype = self.params[0].data.dtype
        self.offsets = np.cumsum([0] + [p.data.size for p in self.params])  # (P + 1,)
        self.numel = int(self.offsets[-1])
        self.shard_size = -(-self.numel // world_size)  # ceil
        self.padded = self.shard_size * world_size

    def empty(self):
        return np.zeros(self.padded, dtype=self.dtype)  # (padded,)

    def pack_grads(self, flat):
        """Copy every gradient into `flat` (a parameter without one contributes zeros)."""
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            flat[lo:hi] = 0 if p.grad is None else p.grad.reshape(-1)
        return flat

    def pack_params(self, flat):
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            flat[lo:hi] = p.data.reshape(-1)
        return flat

    def unpack_params(self, flat):
        """Write `flat` back into the parameters' own arrays (in place: nothing else holds stale copies)."""
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            p.data[...] = flat[lo:hi].reshape(p.shape)

    def unpack_grads(self, flat):
        """Point every gradient at its slice of `flat` (views: no copy)."""
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            p.grad = flat[lo:hi].reshape(p.shape)


class DataParallel:
    """The distributed part of a training step, for a model and its AdamW optimizer.

    zero_stage 0: every rank keeps the whole optimizer; gradients are averaged with
    one Allreduce over a flat buffer, then clipped, then every rank takes the same
    step. zero_stage 1: the optimizer becomes a `ZeroAdamW` (moments sharded).
    In a single process without ZeRO the step is the plain one: nothing is copied.
    """

    def __init__(self, world, model, optimizer, zero_stage=0):
        if zero_stage not in (0, 1):
            raise ValueError(f"--zero must be 0 (off) or 1 (shard the optimizer state), got {zero_stage!r}")
        self.world, self.model = world, model
        self.params = model.parameters()
        if zero_stage == 1:  # shard the AdamW given (its state too: it may come from a checkpoint)
            sharded = ZeroAdamW(optimizer.param_groups, world)
            sharded.load_state_dict(optimizer.state_dict())
            optimizer = sharded
        self.optimizer = optimizer
        self.zero_stage = zero_stage
        self._layout = FlatLayout(self.params, world.size)
        self._grads = self._layout.empty() if world.size > 1 and zero_stage == 0 else None

    def broadcast_parameters(self):
        """Start every rank from rank 0's parameters (one Bcast over a flat buffer)."""
        if self.world.size > 1:
            flat = self._layout.pack_params(self._layout.empty())
            self.world.broadcast_(flat)
            self._layout.unpack_params(flat)

    def average_gradients(self):
        """Replace every gradient by its average over the ranks."""
        if self.world.size > 1:
            self._layout.pack_grads(self._grads)
            self.world.allreduce_sum_(self._grads)
            self._grads *= self._grads.dtype.type(1 / self.world.size)
            self._layout.unpack_grads(self._grads)

    def step(self, grad_clip):
        """Average (or reduce-scatter) the gradients, clip their global norm to grad_clip
        (0: off), and update the parameters. Returns nothing."""
        if self.zero_stage == 1:
            self.optimizer.step(grad_clip)
            return
        self.average_gradients()
        if grad_clip > 0:
            clip_grad_norm_(self.params, grad_clip)
        self.optimizer.step()


class ZeroAdamW(Optimizer):
    """AdamW with its moments sharded over the ranks: ZeRO stage 1 (Rajbhandari et al.).

    Lay every parameter end to end in one flat vector, padded to N equal shards.
    Rank r owns shard r: it keeps exp_avg and exp_avg_sq for that shard only
    (1/N of AdamW's memory), and a step is

        reduce-scatter:  g_r = (1/N) sum over ranks of the gradient, shard r only
        clip:            ||g|| = sqrt(sum over ranks of ||g_r||^2), one scalar Allreduce
        update:          AdamW on shard r of the parameters (elementwise: as unsharded)
        all-gather:      every rank receives every updated shard

    A shard may cut through a parameter; each piece is updated with its own
    parameter's group settings (weight decay differs between groups).
    `state_dict()` gathers the moments to rank 0 in AdamW's own layout, so a
    checkpoint resumes with or without ZeRO, on any number of ranks.
    """

    def __init__(self, param_groups, world):
        super().__init__(param_groups, {})
        self.world = world
        self._layout = layout = FlatLayout(self._params(), world.size)
        lo, hi = world.rank * layout.shard_size, (world.rank + 1) * layout.shard_size
        self._shard = (lo, hi)
        # (group, start, stop) of each piece of this rank's shard, in flat coordinates.
        self._pieces = []
        i = 0
        for group in self.param_groups:
            for _ in group["params"]:
                start, stop = max(lo, layout.offsets[i]), min(hi, layout.offsets[i + 1])
                if start < stop:
                    self._pieces.append((group, int(start), int(stop)))
                i += 1
        self.exp_avg = np.zeros(layout.shard_size, dtype=layout.dtype)  # (S,)
        self.exp_avg_sq = np.zeros(layout.shard_size, dtype=layout.dtype)  # (S,)
        self.step_count = 0
        self._flat_grads = layout.empty()  # (N S,)
        self._flat_params = layout.empty()  # (N S,)
        self._grad_shard = np.zeros(layout.shard_size, dtype=layout.dtype)  # (S,)

    def step(self, grad_clip=0.0):
        world, layout = self.world, self._layout
        lo, hi = self._shard
        world.reduce_scatter_sum(layout.pack_grads(self._flat_grads), self._grad_shard)
        g = self._grad_shard
        g *= g.dtype.type(1 / world.size)
        if grad_clip > 0:
            # float64, as clip_grad_norm_, and the same scale on every rank.
            total = np.sqrt(world.allreduce_sum_(np.array([np.square(g, dtype=np.float64).sum()]))[0])
            if total > grad_clip:
                g *= g.dtype.type(grad_clip / (total + 1e-6))
        self.step_count += 1
        params = layout.pack_params(self._flat_params)
        for group, start, stop in self._pieces:
            beta1, beta2 = group["betas"]
            a, b = start - lo, stop - lo  # the piece within this shard
            kernels.adamw_step(params[start:stop], g[a:b], self.exp_avg[a:b], self.exp_avg_sq[a:b],
                               group["lr"], beta1, beta2, group["eps"], group["weight_decay"], self.step_count)
        world.allgather(params[lo:hi].copy(), params)
        layout.unpack_params(params)

    def set_lr(self, lr):
        for group in self.param_groups:
            group["lr"] = lr

    def state_dict(self):
        """AdamW's state_dict, assembled on rank 0 (a collective call: every rank must make
        it); other ranks get None."""
        layout = self._layout
        gathered = {}
        for name, shard in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            flat = layout.empty() if self.world.is_main else None
            gathered[name] = self.world.gather_to_main(shard, flat)
        if not self.world.is_main:
            return None
        state = {"step": np.asarray(self.step_count)}
        for i, (a, b) in enumerate(zip(layout.offsets[:-1], layout.offsets[1:])):
            shape = layout.params[i].shape
            state[f"exp_avg.{i}"] = gathered["exp_avg"][a:b].reshape(shape).copy()
            state[f"exp_avg_sq.{i}"] = gathered["exp_avg_sq"][a:b].reshape(shape).copy()
        return state

    def load_state_dict(self, state):
        """Take this rank's shard of a full AdamW state_dict (every rank passes the whole state)."""
        layout = self._layout
        expected = {"step"} | {f"{k}.{i}" for i in range(len(layout.params)) for k in ("exp_avg", "exp_avg_sq")}
        if set(state) != expected:
            raise ValueError(
                f"ZeroAdamW.load_state_dict: state has {len(state)} entries, expected {len(expected)} "
                f"for {len(layout.params)} parameters"
            )
        lo, hi = self._shard
        for name, shard in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            flat = layout.empty()
            for i, p in enumerate(layout.params):
                array = np.asarray(state[f"{name}.{i}"])
                if array.shape != p.shape:
                    raise ValueError(
                        f"ZeroAdamW.load_state_dict: {name}.{i} has shape {array.shape}, parameter has {p.shape}"
                    )
                flat[layout.offsets[i]:layout.offsets[i + 1]] = array.reshape(-1)
            shard[...] = flat[lo:hi]
        self.step_count = int(state["step"])


class ShardedBatches:
    """A rank's view of the training batches: every rank draws the global batch from the
    same generator, then keeps its own rows. Everything else is the wrapped batches'."""

    def __init__(self, batches, world):
        self.batches, self.world = batches, world

    def __getattr__(self, name):  # splits, vocab_size, block_size, tokenizer, task, ...
        return getattr(self.batches, name)

    def get(self, split, generator):
        return shard_rows(self.world, *self.batches.get(split, generator))  # (B/N, T) each


class DataParallelHooks:
    """The training loop's hooks (train.Hooks) for one rank of N.

    `prepare` checks that the batch splits evenly, shards the batches (and with
    zero_stage 1 the optimizer) and starts every rank from rank 0's weights; the
    step's loss and the eval losses are averaged over the ranks, so every rank
    takes the same decisions; `step` averages, clips and updates; a stop signal
    received by any rank stops them all at the same iteration. Only rank 0 writes.
    """

    def __init__(self, world, zero_stage=0):
        self.world, self.zero_stage = world, zero_stage
        self.is_writer = world.is_main
        self.parallel = None

    def prepare(self, config, batches, model, optimizer):
        check_batch_split(config.batch_size, self.world.size, config.gradient_accumulation_steps)
        self.parallel = DataParallel(self.world, model, optimizer, self.zero_stage)
        self.parallel.broadcast_parameters()
        split_dropout_streams(self.world)
        return (ShardedBatches(batches, self.world) if self.world.size > 1 else batches), self.parallel.optimizer

    def step(self, model, optimizer, grad_clip):
        self.parallel.step(grad_clip)

    def reduce_loss(self, loss):
        return self.world.mean(loss)

    def reduce_losses(self, losses):
        return {split: self.world.mean(value) for split, value in losses.items()}

    def stop_signal(self, received):
        """The signal any rank received (the largest number, if several), or None."""
        return self.world.max(received or 0) or None
