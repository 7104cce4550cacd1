"""Smoke tests of the example scripts: each runs end to end for a few iterations.

The full runs (2000 iterations of Shakespeare, 3000 of the adder) are measured
in the README with their commands; here we check that a learner's first
`python examples/...` works: exit status 0, the promised files, the report line.
"""

import os
import re
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
