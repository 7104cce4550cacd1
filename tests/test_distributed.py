"""Tests for distributed.py: data-parallel steps on 2 MPI ranks equal one process's.

The multi-process tests start `mpiexec -n 2` (MPICH, from the `mpi` extra) on
tests/distributed_worker.py or on the real `tinygpt` command, and skip with the
reason when mpi4py or mpiexec is absent. Every subprocess runs in its own session
under a timeout, and the whole job is killed when the timeout passes, so a hang
fails the test instead of stalling the suite.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygrad_gpt import distributed, rng
from tinygrad_gpt.distributed import FlatLayout, World, ZeroAdamW
from tinygrad_gpt.gpt import GPT, GPTConfig
from tinygrad_gpt.optim import configure_optimizer
from tinygrad_gpt.tensor import Tensor

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "distributed_worker.py"
TIMEOUT = 300  # seconds for one multi-process job on a busy 2-core machine

# Variables that would make a child process think it is already a rank of some job.
_LAUNCHER_VARIABLES = distributed._SIZE_VARIABLES + distributed._RANK_VARIABLES + ("PMI_FD", "PMI_PORT")


def _child_env(**extra):
    paths = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARIABLES}
    # Harmless for MPICH; lets Open MPI's mpiexec, should it be the one found, run as root in CI containers.
    env.update(PYTHONPATH=os.pathsep.join(paths), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.update(extra)
    return env


def find_mpiexec():
    """The mpiexec of the MPI library mpi4py uses: the mpich wheel installs it beside the
    interpreter (in a venv, beside the base interpreter); otherwise the one on PATH."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (pip install 'tinygrad_gpt[mpi]')")
    for prefix in (sys.prefix, sys.base_prefix):
        candidate = Path(prefix) / "bin" / "mpiexec"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if found is None:
        pytest.skip("no mpiexec found (pip install mpich)")
    return found


def run_job(argv, cwd, timeout=TIMEOUT, env=None):
    """(exit status, stdout, stderr) of a command; on timeout the whole process group is killed."""
    process = subprocess.Popen(argv, cwd=cwd, env=env or _child_env(), text=True, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{' '.join(argv)} did not finish in {timeout} s:\n{out}\n{err}")
    return process.returncode, out, err


def mpi_run(n, argv, cwd, timeout=TIMEOUT, env=None):
    return run_job([find_mpiexec(), "-n", str(n), *argv], cwd, timeout, env)


def worker(tmp_path, name, ranks, *flags):
    """Run distributed_worker.py on `ranks` ranks (0: no mpiexec at all) and load what rank 0 saved."""
    out = tmp_path / f"{name}.npz"
    argv = [sys.executable, str(WORKER), str(out), *flags]
    status, _, err = mpi_run(ranks, argv, tmp_path) if ranks else run_job(argv, tmp_path)
    assert status == 0, err
    return dict(np.load(out))


def assert_same_training(actual, expected, rtol, atol):
    np.testing.assert_allclose(actual["losses"], expected["losses"], rtol=rtol, atol=atol)
    keys = [k for k in expected if k.startswith(("param/", "optim/"))]
    assert keys and set(keys) == {k for k in actual if k.startswith(("param/", "optim/"))}
    for key in keys:
        np.testing.assert_allclose(actual[key], expected[key], rtol=rtol, atol=atol, err_msg=key)


# ---- two ranks against one process (the worker) ------------------------------------------------------


@pytest.mark.parametrize("zero", ["0", "1"])
def test_two_ranks_take_the_steps_of_one_process_in_float64(tmp_path, zero):
    # float64: the ranks sum the batch's gradient in a different order than one process
    # (two half-batch sums, then one more addition), which moves each value by a few
    # ulps (1e-16 relative); six AdamW steps amplify that to about 1e-12 here.
    expected = worker(tmp_path, "single", 0, "--dtype", "float64")
    actual = worker(tmp_path, f"ranks{zero}", 2, "--dtype", "float64", "--zero", zero)
    assert_same_training(actual, expected, rtol=1e-9, atol=1e-12)


def test_two_ranks_match_one_process_losses_in_float32(tmp_path):
    # float32 rounds each partial sum to 6e-8 relative; the losses of six steps stay
    # within a few ulps of each other (parameters are not compared: the key half of
    # c_attn.bias has a mathematically zero gradient, pure rounding noise that AdamW
    # scales up to full-size steps, so it differs between summation orders).
    expected = worker(tmp_path, "single", 0)
    actual = worker(tmp_path, "ranks", 2)
    np.testing.assert_allclose(actual["losses"], expected["losses"], rtol=1e-5)


def test_zero_1_takes_the_same_steps_and_halves_the_optimizer_memory(tmp_path):
    plain = worker(tmp_path, "plain", 2)
    sharded = worker(tmp_path, "zero", 2, "--zero", "1")
    # Same averaged gradients, same elementwise AdamW: only the float64 sum of the
    # gradient norm for clipping is added up in another order (two shards), so float32
    # results agree to a few ulps.
    assert_same_training(sharded, plain, rtol=1e-5, atol=1e-7)
    numel = sum(v.size for k, v in plain.items() if k.startswith("param/"))
    assert list(plain["memory"]) == [2 * 4 * numel] * 2  # exp_avg + exp_avg_sq, float32, every rank
    shard = -(-numel // 2)
    assert list(sharded["memory"]) == [2 * 4 * shard] * 2  # half each


# ---- pieces, in one process ----------------------------------------------------------------------


def tiny_model(dtype=np.float64):
    rng.manual_seed(0)
    return GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8, bias=True)).to(np.dtype(dtype))


def test_flat_layout_round_trips_parameters_and_pads_to_equal_shards():
    model = tiny_model()
    params = model.parameters()
    layout = FlatLayout(params, world_size=3)
    assert layout.numel == sum(p.data.size for p in params)
    assert layout.padded % 3 == 0 and layout.padded - layout.numel < 3
    before = [p.data.copy() for p in params]
    flat = layout.pack_params(layout.empty())
    for p in params:
        p.data[...] = 0
    layout.unpack_params(flat)
    for p, old in zip(params, before):
        np.testing.assert_array_equal(p.data, old)
    assert not flat[layout.numel:].any()  # the padding is zeros


def test_a_parameter_without_a_gradient_contributes_zeros():
    layout = FlatLayout([Tensor(np.ones(3), requires_grad=True), Tensor(np.ones(2), requires_grad=True)], 1)
    layout.params[0].grad = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(layout.pack_grads(np.full(5, 9.0)), [1, 2, 3, 0, 0])


def test_zero_adamw_on_one_rank_is_adamw_bit_for_bit():
    # One rank owns the whole flat vector, so ZeroAdamW runs the same kernel on the same
    # elements in the same order as AdamW: equality is exact.
    reference, sharded = tiny_model(np.float32), tiny_model(np.float32)
    opt_a = configure_optimizer(reference, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    opt_b = ZeroAdamW(configure_optimizer(sharded, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1).param_groups,
                      World())
    data = np.random.default_rng(0)
    for _ in range(3):
        x = data.integers(0, 11, size=(4, 8))  # (B, T)
        for model, opt in ((reference, opt_a), (sharded, opt_b)):
            opt.zero_grad()
            model(x, x)[1].backward()
            opt.step()
    for (name, a), (_, b) in zip(reference.named_parameters(), sharded.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)
    state_a, state_b = opt_a.state_dict(), opt_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)


def test_zero_adamw_loads_an_adamw_state_dict():
    model = tiny_model()
    adamw = configure_optimizer(model, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    for i, (m, v) in enumerate(zip(adamw.exp_avg, adamw.exp_avg_sq)):
        m[...], v[...] = i, 2 * i
    adamw.step_count = 7
    sharded = ZeroAdamW(adamw.param_groups, World())
    sharded.load_state_dict(adamw.state_dict())
    assert sharded.step_count == 7
    for key, value in adamw.state_dict().items():
        np.testing.assert_array_equal(sharded.state_dict()[key], value)
    with pytest.raises(ValueError, match="expected"):
        sharded.load_state_dict({"step": np.asarray(1)})


@pytest.mark.parametrize("batch_size, ranks, steps, ok", [(8, 2, 2, True), (12, 2, 3, True), (8, 3, 1, False),
                                                          (12, 2, 4, False)])
def test_the_batch_must_split_into_equal_micro_batches(batch_size, ranks, steps, ok):
    if ok:
        distributed.check_batch_split(batch_size, ranks, steps)
    else:
        with pytest.raises(ValueError, match=rf"--batch_size {batch_size} .* {ranks} x {steps} = {ranks * steps}"):
            distributed.check_batch_split(batch_size, ranks, steps)


def test_each_rank_gets_its_own_equal_block_of_rows():
    x = np.arange(12).reshape(6, 2)  # (B, T)

    class Rank1Of3(World):
        rank, size, is_main = 1, 3, False

    np.testing.assert_array_equal(distributed.shard_rows(Rank1Of3(), x), x[2:4])


def test_launch_environment_is_read_without_mpi():
    assert distributed.launched_size({}) == 1 and distributed.launched_rank({}) == 0
    assert distributed.launched_size({"PMI_SIZE": "4", "PMI_RANK": "3"}) == 4
    assert distributed.launched_rank({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}) == 1
    assert not distributed.is_main_process({"PMI_RANK": "1"})


def test_rank_r_draws_dropout_from_the_stream_jumped_r_times():
    class Rank2(World):
        rank = 2

    rng.manual_seed(5)
    expected = np.random.Generator(np.random.PCG64(5).jumped(2)).random(4)
    distributed.split_dropout_streams(Rank2())
    np.testing.assert_array_equal(rng.get_generator().random(4), expected)
    rng.manual_seed(5)
    distributed.split_dropout_streams(World())  # rank 0 keeps the stream
    np.testing.assert_array_equal(rng.get_generator().random(4), np.random.default_rng(5).random(4))


def test_without_mpi4py_a_rank_of_two_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None\n"  # import mpi4py now raises ImportError
            "from tinygrad_gpt import distributed\n"
            "try:\n    distributed.init_world()\n"
            "except distributed.MPIUnavailable as error:\n    print(error)\n")
    status, out, err = run_job([sys.executable, "-c", code], tmp_path, env=_child_env(PMI_SIZE="2", PMI_RANK="0"))
    assert status == 0, err
    assert "one of 2 MPI ranks" in out and "pip install 'tinygrad_gpt[mpi]'" in out


# ---- the real command: mpiexec -n 2 tinygpt train ------------------------------------------------------

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 20  # 900 characters, 29 distinct
TINY = ["--n_layer", "1", "--n_embd", "16", "--n_head", "2", "--block_size", "8", "--eval_iters", "2",
        "--eval_interval", "3", "--sample_tokens", "0", "--learning_rate", "1e-2", "--log_interval", "1"]
TINYGPT = [sys.executable, "-m", "tinygrad_gpt"]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def history(out_dir):
    """history.csv as a (rows, 4) float array: iter, step loss, train and val estimates (NaN where empty)."""
    lines = (Path(out_dir) / "history.csv").read_text().splitlines()
    columns = lines[0].split(",")
    rows = [dict(zip(columns, line.split(","))) for line in lines[1:]]
    return np.array([[float(row[c]) if row[c] else np.nan for c in ("iter", "loss", "train", "val")] for row in rows])


def train_run(tmp_path, name, ranks, *flags, data):
    """Train in tmp_path/name with `ranks` MPI ranks (0: one plain process); (status, stdout, stderr)."""
    argv = [*TINYGPT, "train", "--data", str(data), "--out_dir", str(tmp_path / name), *TINY, *flags]
    return mpi_run(ranks, argv, tmp_path) if ranks else run_job(argv, tmp_path)


# float32 tolerance for whole runs: a loss is a mean over 64 tokens that two ranks (or two
# micro-batches) add up as two halves, so it moves by a few float32 ulps (6e-8 relative);
# six AdamW steps at lr 1e-2 carry such differences forward without blowing them up
# (observed: 1e-7). 1e-5 leaves room for other machines' summation orders and SIMD widths.
RUN_RTOL = 1e-5


def test_two_ranks_train_like_one_process_and_like_gradient_accumulation(tmp_path, text_file):
    runs = {"single": (0, []), "accumulated": (0, ["--gradient_accumulation_steps", "2"]),
            "ranks": (2, []), "ranks_zero": (2, ["--zero", "1", "--gradient_accumulation_steps", "2"])}
    outputs = {}
    for name, (ranks, flags) in runs.items():
        status, outputs[name], err = train_run(tmp_path, name, ranks, "--batch_size", "8", "--max_iters", "6",
                                               *flags, data=text_file)
        assert status == 0, err
    expected = history(tmp_path / "single")
    assert len(expected) == 6 + 3  # six steps, three evaluations
    for name in ("accumulated", "ranks", "ranks_zero"):
        np.testing.assert_allclose(history(tmp_path / name), expected, rtol=RUN_RTOL, err_msg=name)
    for name in ("ranks", "ranks_zero"):  # rank 0 alone logs: every line once
        assert outputs[name].count("step 3: train loss") == 1, outputs[name]
        assert outputs[name].count("iter 6/6") == 1, outputs[name]


def test_a_run_resumes_on_any_number_of_ranks(tmp_path, text_file):
    common = ["--batch_size", "8", "--seed", "7"]
    assert train_run(tmp_path, "straight", 0, *common, "--max_iters", "6", data=text_file)[0] == 0
    # three steps on 2 ranks, then three more in one process; and the other way round, with ZeRO-1
    for name, first, second in (("two_then_one", 2, 0), ("one_then_two", 0, 2)):
        status, _, err = train_run(tmp_path, name, first, *common, "--max_iters", "3", data=text_file)
        assert status == 0, err
        status, out, err = train_run(tmp_path, name, second, "--resume", "--max_iters", "6", "--zero", "1",
                                     data=text_file)
        assert status == 0, err
        assert "resuming from" in out
        np.testing.assert_allclose(history(tmp_path / name), history(tmp_path / "straight"), rtol=RUN_RTOL,
                                   err_msg=name)


def assert_one_line_error(status, err, *fragments):
    assert status == 2, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("tinygpt: error: "), err
    for fragment in fragments:
        assert fragment in err, err


def test_a_batch_that_does_not_split_over_the_ranks_is_one_line_from_the_job(tmp_path, text_file):
    status, _, err = train_run(tmp_path, "out", 2, "--batch_size", "6", "--gradient_accumulation_steps", "2",
                               data=text_file)
    assert_one_line_error(status, err, "--batch_size 6", "2 x 2 = 4")
    assert not (tmp_path / "out" / "ckpt_last.npz").exists()


def test_a_missing_data_file_seen_by_every_rank_is_one_line(tmp_path):
    status, _, err = train_run(tmp_path, "out", 2, data=tmp_path / "missing.txt")
    assert_one_line_error(status, err, "missing.txt")


def test_ranks_started_with_different_flags_are_one_line(tmp_path, text_file):
    base = [*TINYGPT, "train", "--data", str(text_file), "--out_dir", str(tmp_path / "out"), *TINY]
    mpiexec = find_mpiexec()
    status, _, err = run_job([mpiexec, "-n", "1", *base, "--batch_size", "8", ":",
                              "-n", "1", *base, "--batch_size", "16"], tmp_path)
    assert_one_line_error(status, err, "rank 1", "--batch_size 16", "--batch_size 8", "same command")


def test_without_mpi4py_every_rank_stops_with_one_line_naming_the_install(tmp_path, text_file):
    code = ("import sys; sys.modules['mpi4py'] = None\n"  # import mpi4py now raises ImportError
            "from tinygrad_gpt.cli import main\nsys.exit(main())")
    status, _, err = mpi_run(2, [sys.executable, "-c", code, "train", "--data", str(text_file), *TINY], tmp_path)
    assert_one_line_error(status, err, "2 MPI ranks", "pip install 'tinygrad_gpt[mpi]'")


def test_a_rank_failing_alone_ends_the_job_with_its_message(tmp_path):
    code = ("import sys, numpy as np\nfrom tinygrad_gpt import distributed\n"
            "world = distributed.init_world()\n"
            "if world.rank == 1:\n    sys.exit(world.fail(2, 'tinygpt: error: the disk of rank 1 is full'))\n"
            "world.allreduce_sum_(np.zeros(3))  # rank 0 waits here for a rank that never comes\n")
    status, _, err = mpi_run(2, [sys.executable, "-c", code], tmp_path, timeout=120)
    assert status == 2, err
    assert err.count("the disk of rank 1 is full") == 1 and "on rank 1 of 2" in err, err


def _descendants_with_rank(root_pid, rank):
    """Pids under root_pid (by parent links in /proc) whose environment says PMI_RANK=rank."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found = []
    for pid in parents:
        ancestor = pid
        while ancestor in parents and ancestor != root_pid:
            ancestor = parents[ancestor]
        if ancestor == root_pid and pid != root_pid:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"PMI_RANK={rank}".encode() in environ and b"PMI_SIZE=2" in environ:
                found.append(pid)
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_rank_killed_with_sigkill_ends_the_job_and_the_last_checkpoint_loads(tmp_path, text_file):
    import time

    from tinygrad_gpt.training_state import load_model

    out = tmp_path / "out"
    argv = [find_mpiexec(), "-n", "2", *TINYGPT, "train", "--data", str(text_file), "--out_dir", str(out), *TINY,
            "--batch_size", "8", "--max_iters", "100000", "--eval_interval", "2"]
    job = subprocess.Popen(argv, cwd=tmp_path, env=_child_env(), text=True, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "ckpt_last.npz").exists() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.2)
        assert (out / "ckpt_last.npz").exists(), job.communicate(timeout=10)
        victims = _descendants_with_rank(job.pid, 1)
        assert len(victims) == 1, victims
        os.kill(victims[0], signal.SIGKILL)
        killed_at = time.monotonic()
        out_text, err = job.communicate(timeout=60)
        assert time.monotonic() - killed_at < 30, "the job outlived its killed rank by 30 s"
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.communicate()
    assert job.returncode != 0
    # The launcher names what happened (MPICH's mpiexec on stdout: "BAD TERMINATION ... Killed (signal 9)").
    assert "signal 9" in out_text + err, out_text + err
    model, metadata, _ = load_model(str(out / "ckpt_last.npz"))
    assert metadata["iter_num"] % 2 == 0 and model.get_num_params() > 0


def test_ctrl_c_stops_every_rank_at_the_same_step_with_one_message(tmp_path, text_file):
    import time

    from tinygrad_gpt.training_state import load_model

    out = tmp_path / "out"
    argv = [find_mpiexec(), "-n", "2", *TINYGPT, "train", "--data", str(text_file), "--out_dir", str(out), *TINY,
            "--batch_size", "8", "--max_iters", "100000", "--eval_interval", "50"]
    job = subprocess.Popen(argv, cwd=tmp_path, env=_child_env(), text=True, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "ckpt_last.npz").exists() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.2)
        job.send_signal(signal.SIGINT)  # mpiexec passes it on to every rank
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.communicate()
    assert job.returncode == 130, err
    lines = [line for line in err.splitlines() if line.startswith("tinygpt:")]
    assert len(lines) == 1 and "SIGINT received" in lines[0], err
    _, metadata, _ = load_model(str(out / "ckpt_last.npz"))
    assert f"stopped at iteration {metadata['iter_num']} " in lines[0]


def test_each_rank_runs_on_its_share_of_the_cores(tmp_path):
    code = ("import os, numba\nfrom tinygrad_gpt import distributed\nworld = distributed.init_world()\n"
            "print(world.rank, numba.get_num_threads(), len(os.sched_getaffinity(0)), flush=True)\n")
    env = {k: v for k, v in _child_env().items() if k != "NUMBA_NUM_THREADS"}
    status, out, err = mpi_run(2, [sys.executable, "-c", code], tmp_path, env=env)
    assert status == 0, err
    rows = sorted(tuple(map(int, line.split())) for line in out.splitlines())
    assert [rank for rank, *_ in rows] == [0, 1]
    for _, threads, cores in rows:
        assert threads == max(1, cores // 2)
