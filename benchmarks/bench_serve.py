"""Serving speed: requests/s and time to first token through `tinygpt serve`, against generate in-process.

    python benchmarks/bench_serve.py            # 6 rounds, about a minute
    python benchmarks/bench_serve.py --rounds 1

The model is the baby config (4 layers, 4 heads, 128 embd, block 64) over a
printable-ASCII character vocabulary, with random weights: the speed of a
step does not depend on what the weights have learnt. Every request is a
16-character prompt and 48 greedy tokens (64 in all: one KV cache, no
restart), streamed. The server runs as `python -m tinygrad_gpt serve` in a
process of its own, as a user runs it; the clients are threads here, reading
the server-sent events over plain HTTP.

Each round measures generate in-process (the baseline, on the model in eval
mode as the server keeps it), one client sending requests back to back, and
8 clients at once; the order rotates from round to round so none always
goes first. Ratios are taken within a round, then the median over the
rounds is printed, because a shared machine's speed drifts between rounds.
"""

import argparse
import http.client
import json
import os
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


import tinygrad_gpt as tg  # noqa: E402
from tinygrad_gpt.checkpoint import save_checkpoint  # noqa: E402
from tinygrad_gpt.gpt import GPT, GPTConfig  # noqa: E402
from tinygrad_gpt.tokenizers import CharTokenizer  # noqa: E402
from machine import print_header  # noqa: E402  (benchmarks/machine.py, next to this script)

PROMPT = "def main(args):\n"  # 16 characters
NEW_TOKENS = 48


def baby_checkpoint(directory):
    tg.manual_seed(0)
    tokenizer = CharTokenizer("".join(sorted(set(string.printable))))
    model = GPT(GPTConfig(block_size=64, vocab_size=tokenizer.vocab_size, n_layer=4, n_head=4, n_embd=128))
    path = os.path.join(directory, "baby.npz")
    save_checkpoint(path, {"model/" + k: v for k, v in model.state_dict().items()},
                    {"model_config": model.config.to_dict(), "tokenizer": tokenizer.to_dict()})
    return path, model, tokenizer


def start_server(checkpoint):
    process = subprocess.Popen([sys.executable, "-m", "tinygrad_gpt", "serve", "--ckpt", checkpoint, "--port", "0"],
                               stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()  # "tinygpt: serving baby at http://127.0.0.1:PORT (Ctrl-C stops)"
    if "127.0.0.1:" not in first:
        process.kill()
        raise RuntimeError(f"the server did not start: {first!r}")
    # The per-request log lines must not fill the pipe and block the server.
    threading.Thread(target=lambda: process.stderr.read(), daemon=True).start()
    return process, int(first.split("127.0.0.1:")[1].split()[0])


def streamed_request(port):
    """(seconds to the first token, seconds in all) of one streamed completion."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = {"prompt": PROMPT, "max_tokens": NEW_TOKENS, "temperature": 0, "stream": True}
    connection.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    first_token, tokens = None, 0
    for line in connection.getresponse():
        if line.startswith(b"data: [DONE]"):
            break
        if line.startswith(b"data: ") and json.loads(line[6:])["choices"][0]["text"]:
            tokens += 1
            first_token = first_token or time.perf_counter() - started
    connection.close()
    if tokens != NEW_TOKENS:
        raise RuntimeError(f"expected {NEW_TOKENS} streamed tokens, got {tokens}")
    return first_token, time.perf_counter() - started


def in_process(model, tokenizer, requests):
    """(requests/s, median seconds to the first token) of generate and generate_stream in this process."""
    ids = tokenizer.encode(PROMPT)[None, :]  # (1, 16)
    started = time.perf_counter()
    for _ in range(requests):
        model.generate(ids, NEW_TOKENS, temperature=0)
    rate = requests / (time.perf_counter() - started)
    first = []
    for _ in range(requests):
        t = time.perf_counter()
        next(model.generate_stream(ids, NEW_TOKENS, temperature=0))
        first.append(time.perf_counter() - t)
    return rate, statistics.median(first)


def clients(port, n_clients, requests_each):
    """(requests/s, median seconds to the first token) with n_clients sending requests at once."""
    firsts, errors = [], []

    def client():
        try:
            for _ in range(requests_each):
                firsts.append(streamed_request(port)[0])
        except Exception as error:  # reported below, after the threads have ended
            errors.append(error)

    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return n_clients * requests_each / (time.perf_counter() - started), statistics.median(firsts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=8, help="requests per measurement (8 clients: each sends "
                                                                 "this many divided by 8, at least 2)")
    args = parser.parse_args()
    print_header()  # machine.py: CPU, vector ISA, cores, library versions
    print(f"baby GPT (4 layers, 4 heads, 128 embd, block 64), {len(PROMPT)}-char prompt + {NEW_TOKENS} greedy tokens")
    with tempfile.TemporaryDirectory() as directory:
        checkpoint, model, tokenizer = baby_checkpoint(directory)
        model.eval()
        server, port = start_server(checkpoint)
        try:
            in_process(model, tokenizer, 2)  # warm-up: Numba's kernels load here and in the server
            clients(port, 1, 2)
            rows = []
            measurements = {
                "in-process": lambda: in_process(model, tokenizer, args.requests),
                "1 client": lambda: clients(port, 1, args.requests),
                "8 clients": lambda: clients(port, 8, max(args.requests // 8, 2)),
            }
            for round_number in range(args.rounds):
                names = list(measurements)
                order = names[round_number % 3:] + names[: round_number % 3]  # each goes first in turn
                got = {name: measurements[name]() for name in order}
                rows.append(got["in-process"] + got["1 client"] + got["8 clients"])
                print(f"round {round_number + 1} ({', '.join(order)}): " + " | ".join(
                    f"{name} {got[name][0]:5.1f} req/s, first token {got[name][1] * 1e3:5.1f} ms" for name in names))
        finally:
            server.terminate()
            server.wait(timeout=30)
    median = [statistics.median(column) for column in zip(*rows)]
    ratio = [statistics.median(r[i] / r[j] for r in rows) for i, j in ((2, 0), (4, 0), (3, 1), (5, 1))]
    print(f"\nmedian of {args.rounds} rounds    requests/s   first token   requests/s vs in-process")
    print(f"generate in-process    {median[0]:10.1f}   {median[1] * 1e3:8.1f} ms   1.00x (baseline)")
    print(f"serve, 1 client        {median[2]:10.1f}   {median[3] * 1e3:8.1f} ms   {ratio[0]:.2f}x "
          f"(first token {ratio[2]:.1f}x in-process)")
    print(f"serve, 8 clients       {median[4]:10.1f}   {median[5] * 1e3:8.1f} ms   {ratio[1]:.2f}x "
          f"(first token {ratio[3]:.1f}x in-process)")


if __name__ == "__main__":
    main()
