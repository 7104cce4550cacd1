"""Smoke tests of the example scripts: each runs end to end for a few iterations.

The full runs (2000 iterations of Shakespeare, 3000 of the adder) are measured
in the README with their commands; here we check that a learner's first
`python examples/...` works: exit status 0, the promised files, the report line.
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def run_example(name, *args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "examples" / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def small_text(tmp_path):
    # Real text when the data folder is beside the checkout; otherwise a stand-in
    # long enough for block_size 64 in both splits.
    if SHAKESPEARE.exists():
        return SHAKESPEARE
    path = tmp_path / "small.txt"
    path.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40, encoding="utf-8")
    return path


def test_train_shakespeare_char_then_sample(tmp_path, small_text):
    done = run_example("train_shakespeare_char.py", str(small_text), "--max_iters", "3", "--out_dir", "out",
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.search(r"val loss \d+\.\d{4} at iteration 3, wall time \d+ s", done.stdout), done.stdout
    assert (tmp_path / "out" / "ckpt_best.npz").exists() and (tmp_path / "out" / "history.csv").exists()

    sample = run_example("sample.py", "--ckpt", "out/ckpt_best.npz", "--prompt", "First", "--max-new-tokens", "20",
                         cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("First") and len(sample.stdout.rstrip("\n")) == len("First") + 20


def test_adder_reports_its_held_out_exact_match(tmp_path):
    done = run_example("adder.py", "--max_iters", "3", "--out_dir", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.search(r"exact match on 1000 held-out problems: \d+\.\d\d% \(\d+ wrong\)", done.stdout), done.stdout


def test_examples_refuse_bad_input_in_one_line(tmp_path):
    done = run_example("sample.py", "--ckpt", "missing.npz", cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "missing.npz" in done.stderr


# ---- the examples behave like the command (issue 14) ---------------------------------


def start_example(name, *args, cwd):
    """Start an example too long to finish; return it once it has logged a training step."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, str(REPO / "examples" / name), *args], cwd=cwd, env=env,
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in process.stdout:
        if line.startswith("iter "):
            return process
    pytest.fail(f"the example ended before logging a step: {process.communicate()[1]}")


@pytest.mark.parametrize(
    "name, args, sig, status",
    [("adder.py", [], signal.SIGINT, 130), ("train_shakespeare_char.py", ["DATA"], signal.SIGTERM, 143)],
    ids=["adder-SIGINT", "shakespeare-SIGTERM"],
)
def test_a_signal_stops_an_example_in_one_line_that_says_how_to_resume(tmp_path, small_text, name, args, sig,
                                                                       status):
    args = [str(small_text) if arg == "DATA" else arg for arg in args]
    process = start_example(name, *args, "--max_iters", "100000", "--out_dir", "out", cwd=tmp_path)
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    assert process.returncode == status, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    resume = f"python {REPO / 'examples' / name} --resume --out_dir out"
    assert err.startswith(f"{name}: {sig.name} received, so training stopped at iteration ")
    assert err.endswith(f"(continue with: {resume})\n"), err

    # The command it names works (with a nearer goal than 100000 iterations).
    stopped = int(err.split(" at iteration ")[1].split(" ")[0])
    done = run_example(name, "--resume", "--out_dir", "out", "--max_iters", str(stopped + 2), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"resuming from out/ckpt_last.npz at iteration {stopped}" in done.stdout
    assert f"for iterations {stopped}-{stopped + 2} (resumed; earlier sessions not counted)" in done.stdout


def test_the_adder_refuses_to_replace_a_run_and_its_advice_works(tmp_path):
    assert run_example("adder.py", "--max_iters", "2", "--out_dir", "out", cwd=tmp_path).returncode == 0
    again = run_example("adder.py", "--max_iters", "2", "--out_dir", "out", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert again.stderr.startswith("adder.py: error: out/ckpt_last.npz already exists; continue that run with "
                                   "--resume, start over with --overwrite")
    resumed = run_example("adder.py", "--resume", "--out_dir", "out", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "the run already reached max_iters 2" in resumed.stdout
    assert run_example("adder.py", "--max_iters", "2", "--out_dir", "out", "--overwrite", cwd=tmp_path).returncode == 0
