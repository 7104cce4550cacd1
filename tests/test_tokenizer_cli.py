"""Tests for `tinygpt train --tokenizer bpe|char|DIR --vocab_size N` and sampling with the checkpoint's tokenizer.

The end-to-end case runs the real command, `python -m tinygrad_gpt`, in a subprocess;
bad input is checked through `cli.main` in this process. Runs are tiny (one layer, 16
channels, two iterations).
"""

import os
import subprocess
import sys
from pathlib import Path

from tinygrad_gpt import cli
from tinygrad_gpt.tokenizers import BPETokenizer, tokenizer_from_dict
from tinygrad_gpt.train import load_model

REPO = Path(__file__).resolve().parents[1]
TEXT = "the quick brown fox jumps over the lazy dog, then naps. café, 日本.\n" * 40
TINY = ["--n_layer", "1", "--n_embd", "16", "--n_head", "2", "--block_size", "8", "--batch_size", "4",
        "--eval_iters", "1", "--eval_interval", "1", "--max_iters", "2", "--sample_tokens", "5"]  # fmt: skip


def tinygpt(*argv, cwd):
    """(exit status, stdout, stderr) of the real command `python -m tinygrad_gpt argv` run in `cwd`."""
    paths = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run([sys.executable, "-m", "tinygrad_gpt", *argv], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=600)  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def run_main(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_train_with_a_trained_bpe_then_sample_with_the_checkpoints_tokenizer(tmp_path):
    (tmp_path / "input.txt").write_text(TEXT, encoding="utf-8")
    status, out, err = tinygpt("train", "--data", "input.txt", "--tokenizer", "bpe", "--vocab_size", "300",
                               "--out_dir", "run", *TINY, cwd=tmp_path)  # fmt: skip
    assert status == 0, err
    assert "vocab 300" in out and "saved in run/tokenizer" in out

    model, metadata, _ = load_model(tmp_path / "run" / "ckpt_last.npz")
    tokenizer = tokenizer_from_dict(metadata["tokenizer"])
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == model.config.vocab_size == 300
    assert tokenizer.eot_token == 299
    # The saved files are the checkpoint's tokenizer.
    saved = BPETokenizer.from_files(
        tmp_path / "run" / "tokenizer" / "vocab.json", tmp_path / "run" / "tokenizer" / "merges.txt"
    )
    assert saved == tokenizer == BPETokenizer.train(TEXT, vocab_size=300)

    # tinygpt sample needs nothing but the checkpoint; the prompt goes through the BPE.
    status, out, err = tinygpt("sample", "--ckpt", "run/ckpt_best.npz", "--prompt", "the café",
                               "--max-new-tokens", "6", cwd=tmp_path)  # fmt: skip
    assert status == 0, err
    assert out.startswith("the café")


def test_train_with_a_saved_tokenizer_directory(tmp_path, capsys):
    (tmp_path / "input.txt").write_text(TEXT, encoding="utf-8")
    tokenizer = BPETokenizer.train(TEXT, vocab_size=280)
    tokenizer.save(tmp_path / "tok")
    status, out, err = run_main(capsys, "train", "--data", str(tmp_path / "input.txt"), "--tokenizer",
                                str(tmp_path / "tok"), "--out_dir", str(tmp_path / "run"), *TINY)  # fmt: skip
    assert status == 0, err
    _, metadata, _ = load_model(tmp_path / "run" / "ckpt_last.npz")
    assert tokenizer_from_dict(metadata["tokenizer"]) == tokenizer
    assert not (tmp_path / "run" / "tokenizer").exists()  # nothing was trained, so nothing is saved


def test_char_stays_the_default(tmp_path, capsys):
    (tmp_path / "input.txt").write_text(TEXT, encoding="utf-8")
    status, _, err = run_main(capsys, "train", "--data", str(tmp_path / "input.txt"), "--out_dir",
                              str(tmp_path / "run"), *TINY)  # fmt: skip
    assert status == 0, err
    _, metadata, _ = load_model(tmp_path / "run" / "ckpt_last.npz")
    assert metadata["tokenizer"]["type"] == "char"


def assert_one_line_error(status, err, fragment):
    assert status == 2 and err.count("\n") == 1 and err.startswith("tinygpt: error: ") and "Traceback" not in err
    assert fragment in err, err


def test_bad_tokenizer_settings_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "input.txt").write_text(TEXT, encoding="utf-8")
    common = ["--data", str(tmp_path / "input.txt"), "--out_dir", str(tmp_path / "run"), *TINY]
    status, _, err = run_main(capsys, "train", "--tokenizer", str(tmp_path / "nowhere"), *common)
    assert_one_line_error(status, err, "'char', 'bpe' or a directory holding vocab.json and merges.txt")
    status, _, err = run_main(capsys, "train", "--tokenizer", "bpe", "--vocab_size", "100", *common)
    assert_one_line_error(status, err, "vocab_size")
    status, _, err = run_main(capsys, "train", "--data", "adder", "--tokenizer", "bpe", "--out_dir",
                              str(tmp_path / "run"), *TINY)  # fmt: skip
    assert_one_line_error(status, err, "the adder task has its own digit tokens")
    assert not (tmp_path / "run").exists()  # nothing was written
