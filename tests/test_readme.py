"""The README's commands work when followed in order.

Every command in the README's shell blocks is either run here, in order, in one scratch
directory holding an `input.txt` (and the `pairs.jsonl` the fine-tuning commands name), or
listed in NOT_RUN with the test that covers it instead. A command added to the README
that is neither makes the first test fail, so the README cannot drift from the code.

The commands run as written, made cheap only by flags added at the end (argparse keeps
the last value of a repeated flag): a tiny model, a few iterations, a few tokens.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# What is not run here, and why (the command's start -> where it is tested instead).
NOT_RUN = {
    "python examples/": "training examples take minutes; tests/test_examples.py runs each on a few iterations",
    "tinygpt sample --init_from gpt2/": "needs a downloaded GPT-2; tests/test_pretrained.py samples a random one",
    "tinygpt train --init_from gpt2/": "needs a downloaded GPT-2; tests/test_pretrained.py fine-tunes a random one",
    "mpiexec ": "tests/test_distributed.py runs tinygpt train under mpiexec",
    "tinygpt serve ": "a server runs until stopped; tests/test_serve.py talks to a real one",
}

TINY_MODEL = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--batch_size", "4"]
FEW_ITERS = ["--max_iters", "4", "--eval_interval", "2", "--eval_iters", "1", "--log_interval", "1"]
TEXT = "ROMEO:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\nQ: speak\nA: hear me\n" * 40
PAIRS = [{"prompt": "speak", "completion": " hear me"}, {"prompt": "hear", "completion": " speak"}] * 10


def readme_commands():
    """The commands of the README's ```bash blocks that start a program of this project."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            command = line.split("  #")[0].strip()  # drop the comment after a command
            starts = ("tinygpt ", "python examples/", "mpiexec ", "TINYGPT_")
            if command.startswith(starts):
                commands.append(command)
    return commands


def not_run_reason(command):
    return next((why for start, why in NOT_RUN.items() if command.startswith(start)), None)


def cheap(argv):
    """argv with flags added that make it quick; the command itself unchanged."""
    if argv[:2] == ["tinygpt", "train"] or argv[:2] == ["tinygpt", "finetune"]:
        if "--resume" in argv:
            return argv + ["--max_iters", "6"]
        task = "--data" in argv and argv[argv.index("--data") + 1] in ("adder", "sorter")
        if argv[1] == "finetune":  # the model is the one it starts from
            return argv + FEW_ITERS
        return argv + TINY_MODEL + ([] if task else ["--block_size", "32"]) + FEW_ITERS + ["--sample_tokens", "5"]
    if argv[:2] == ["tinygpt", "sample"]:
        return argv + ["--max-new-tokens", "5"]
    if argv[:2] == ["tinygpt", "eval"]:
        return argv + ["--limit", "2"]
    return argv


def test_every_readme_command_is_run_here_or_said_where_it_is_tested():
    commands = readme_commands()
    assert len(commands) >= 10, commands  # the extraction found the README's blocks
    run = [c for c in commands if not_run_reason(c) is None]
    assert run, "no README command is run"
    for command in run:
        argv = shlex.split(command)
        program = [word for word in argv if "=" not in word][0]
        assert program == "tinygpt", f"README command {command!r} is neither run here nor in NOT_RUN"
    used = {start for start in NOT_RUN if any(c.startswith(start) for c in commands)}
    assert used == set(NOT_RUN), f"NOT_RUN names commands the README no longer has: {set(NOT_RUN) - used}"


def test_the_readme_commands_work_in_order(tmp_path):
    (tmp_path / "input.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS), encoding="utf-8")
    paths = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for command in readme_commands():
        if not_run_reason(command):
            continue
        words = shlex.split(command)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        while "=" in words[0]:  # VAR=value before the command
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        argv = cheap(words)
        run = subprocess.run([sys.executable, "-m", "tinygrad_gpt", *argv[1:]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"README command {command!r} (run as {argv}) failed:\n{run.stderr[-2000:]}"


@pytest.mark.parametrize("command", ["tinygpt train --data input.txt", "tinygpt train --resume --out_dir x"])
def test_cheap_only_adds_flags(command):
    argv = shlex.split(command)
    assert cheap(argv)[: len(argv)] == argv
