"""tinygpt serve: a real server on a free 127.0.0.1 port, spoken to by the openai client, raw HTTP and Chromium."""

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import types

import numpy as np
import pytest

import tinygrad_gpt as tg
from tinygrad_gpt import cli
from tinygrad_gpt.checkpoint import save_checkpoint
from tinygrad_gpt.finetune import SETTINGS_FILE
from tinygrad_gpt.gpt import GPT, GPTConfig
from tinygrad_gpt.serve import (DEFAULT_TEMPLATE, CompletionServer, RequestError, TextStream,
                                load_checkpoint_for_serving, render_chat)
from tinygrad_gpt.tokenizers import CharTokenizer

openai = pytest.importorskip("openai", reason="the openai client is an optional test dependency (pip install openai)")

BLOCK_SIZE = 64
TEMPLATE = "Question: {prompt}\nAnswer:"  # not the default, so the test sees it read from the run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random GPT over printable ASCII, saved as a fine-tuning run saves it: the checkpoint,
    and beside it the run's finetune.json holding its chat template."""
    tg.manual_seed(0)
    tokenizer = CharTokenizer("".join(sorted(set(string.printable))))
    model = GPT(GPTConfig(block_size=BLOCK_SIZE, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32))
    run = tmp_path_factory.mktemp("serve")
    path = str(run / "tiny.npz")
    save_checkpoint(path, {"model/" + k: v for k, v in model.state_dict().items()},
                    {"model_config": model.config.to_dict(), "tokenizer": tokenizer.to_dict()})
    (run / SETTINGS_FILE).write_text(json.dumps({"template": TEMPLATE}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(checkpoint):
    model, tokenizer, template = load_checkpoint_for_serving(checkpoint)
    with CompletionServer(model, tokenizer, model_name="tiny", template=template, port=0).start() as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def sample_text(capsys, checkpoint, prompt, max_tokens, temperature, seed=1337):
    """What `tinygpt sample` writes after the prompt."""
    capsys.readouterr()
    assert cli.main(["sample", "--ckpt", checkpoint, "--prompt", prompt, "--max-new-tokens", str(max_tokens),
                     "--temperature", str(temperature), "--seed", str(seed)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(prompt) and printed.endswith("\n")
    return printed[len(prompt):-1]


def post(server, path, body, method="POST", headers=None):
    """(status, parsed JSON or raw text) of one raw HTTP request."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    payload = response.read().decode()
    connection.close()
    is_json = response.getheader("Content-Type", "").startswith("application/json")
    return response.status, json.loads(payload) if is_json else payload


# ---------------------------------------------------------------- generate_stream


def test_generate_stream_yields_the_tokens_generate_appends(checkpoint):
    model, tokenizer, _ = load_checkpoint_for_serving(checkpoint)
    prompt = tokenizer.encode("To be")[None, :]  # (1, 5)
    # 2 * BLOCK_SIZE tokens: the KV cache restarts on the way.
    whole = model.generate(prompt, 2 * BLOCK_SIZE, temperature=0.9, generator=np.random.default_rng(3))
    steps = list(model.generate_stream(prompt, 2 * BLOCK_SIZE, temperature=0.9, generator=np.random.default_rng(3)))
    assert len(steps) == 2 * BLOCK_SIZE and all(step.shape == (1,) for step in steps)
    np.testing.assert_array_equal(np.concatenate(steps), whole[0, prompt.shape[1]:])


def test_generate_stream_checks_its_arguments_when_called(checkpoint):
    model, _, _ = load_checkpoint_for_serving(checkpoint)
    with pytest.raises(ValueError, match="temperature"):
        model.generate_stream(np.zeros((1, 1), np.int64), 3, temperature=-1)  # not at the first next()


# ---------------------------------------------------------------- the openai client


def test_greedy_completion_equals_tinygpt_sample(client, checkpoint, capsys):
    response = client.completions.create(model="tiny", prompt="Hello", max_tokens=40, temperature=0)
    assert response.choices[0].text == sample_text(capsys, checkpoint, "Hello", 40, 0)
    assert response.choices[0].finish_reason == "length"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (5, 40, 45)
    assert response.model == "tiny"


def test_seeded_sampling_equals_tinygpt_sample_with_the_seed(client, checkpoint, capsys):
    response = client.completions.create(model="tiny", prompt="The", max_tokens=30, temperature=0.9, seed=7)
    assert response.choices[0].text == sample_text(capsys, checkpoint, "The", 30, 0.9, seed=7)


def test_stream_sends_the_completion_token_by_token(client):
    whole = client.completions.create(model="tiny", prompt="abc", max_tokens=25, temperature=0).choices[0].text
    stream = client.completions.create(model="tiny", prompt="abc", max_tokens=25, temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    chunks = list(stream)  # the client ends the iteration at data: [DONE]
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == whole
    assert len([t for t in texts if t]) == 25  # one event per token (a character here)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 25 and chunks[-1].usage.prompt_tokens == 3


def test_stop_sequence_ends_the_completion_before_it(client):
    whole = client.completions.create(model="tiny", prompt="Hello", max_tokens=40, temperature=0).choices[0].text
    stop = whole[10:13]
    cut = whole[: whole.index(stop)]
    for stream in (False, True):
        response = client.completions.create(model="tiny", prompt="Hello", max_tokens=40, temperature=0,
                                             stop=[stop], stream=stream)
        if stream:
            chunks = list(response)
            text, reason = "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason
        else:
            text, reason = response.choices[0].text, response.choices[0].finish_reason
        assert (text, reason) == (cut, "stop")


def test_chat_uses_the_checkpoints_template(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"}]
    prompt = render_chat(messages, TEMPLATE)
    assert prompt == "Be brief.\nQuestion: Who are you?\nAnswer:"
    expected = client.completions.create(model="tiny", prompt=prompt, max_tokens=30, temperature=0,
                                         stop=["\nQuestion:"]).choices[0].text
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30, temperature=0)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected
    assert reply.usage.prompt_tokens == len(prompt)
    streamed = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30, temperature=0,
                                              stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == expected


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_render_chat_multi_turn_and_default_template():
    messages = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
                {"role": "user", "content": "2+2?"}]
    assert render_chat(messages, DEFAULT_TEMPLATE) == "Q: 1+1?\nA: 2\nQ: 2+2?\nA:"
    with pytest.raises(RequestError, match="last message"):
        render_chat(messages[:2], DEFAULT_TEMPLATE)


# ---------------------------------------------------------------- stop sequences in text


@pytest.mark.parametrize("stop", [["lo w"], ["xyz", "o w"], ["d!"], ["q"]])
def test_text_stream_never_sends_part_of_a_stop_sequence(stop):
    tokenizer = CharTokenizer("".join(sorted(set(string.printable))))
    text_stream, sent = TextStream(tokenizer, stop), []
    for token in tokenizer.encode("hello world!"):
        sent.append(text_stream.push(int(token)))
        if text_stream.stopped:
            break
    sent.append(text_stream.rest())
    starts = [i for i in ("hello world!".find(s) for s in stop) if i >= 0]
    expected = "hello world!"[: min(starts)] if starts else "hello world!"
    assert "".join(sent) == expected
    assert text_stream.stopped == bool(starts)


class ByteTokenizer:
    """Token i is byte i, as a byte-level BPE's first 256 tokens: one character may take several tokens."""

    vocab_size, eot_token = 256, None

    def decode(self, ids):
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def test_text_stream_holds_back_an_unfinished_utf8_character():
    text_stream = TextStream(ByteTokenizer(), stop=[])
    pieces = [text_stream.push(byte) for byte in "aé!".encode()]  # a, 0xC3, 0xA9, !
    assert pieces == ["a", "", "é", "!"]


def test_generation_stops_at_the_end_of_text_token(checkpoint):
    model, tokenizer, _ = load_checkpoint_for_serving(checkpoint)
    greedy = model.generate(tokenizer.encode("Hello")[None, :], 20, temperature=0)[0, 5:]  # (20,)
    eot = int(next(t for t in greedy if t != greedy[0]))  # pretend this token is end-of-text: text before it

    class CharTokenizerWithEnd(CharTokenizer):
        eot_token = eot

    with CompletionServer(model, CharTokenizerWithEnd(tokenizer.chars), port=0, log=False).start() as running:
        status, reply = post(running, "/v1/completions", {"prompt": "Hello", "max_tokens": 20, "temperature": 0})
    assert status == 200 and reply["choices"][0]["finish_reason"] == "stop"
    cut = list(greedy).index(eot)  # generation ends at its first appearance, after >= 1 token
    assert cut >= 1 and reply["choices"][0]["text"] == tokenizer.decode(greedy[:cut])


# ---------------------------------------------------------------- concurrency


def _stream_text(server, prompt, max_tokens, after_first=None):
    """The text of a streamed completion read over raw HTTP; calls after_first() after the first event."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    connection.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    response, pieces = connection.getresponse(), []
    for line in response:
        line = line.decode().strip()
        if line == "data: [DONE]":
            break
        if line.startswith("data: "):
            pieces.append(json.loads(line[6:])["choices"][0]["text"])
            if after_first is not None and len(pieces) == 1:
                after_first()
    connection.close()
    return "".join(pieces)


def test_concurrent_streams_do_not_corrupt_each_other(server):
    prompts = ["Hello", "The cat", "1 2 3", "Why?", "zzz", "Once upon"]
    alone = [_stream_text(server, p, 50) for p in prompts]
    together = [None] * len(prompts)

    def run(i):
        together[i] = _stream_text(server, prompts[i], 50)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert together == alone
    assert len(set(alone)) > 1  # the prompts lead to different texts: a mix-up would show


@pytest.fixture(scope="module")
def long_context_server():
    """A random GPT with a context of 1024 tokens: a whole-context completion takes seconds, not milliseconds."""
    tg.manual_seed(1)
    tokenizer = CharTokenizer("".join(sorted(set(string.printable))))
    model = GPT(GPTConfig(block_size=1024, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32))
    with CompletionServer(model, tokenizer, port=0).start() as running:
        yield running


def test_a_long_completion_does_not_stall_a_short_one(long_context_server):
    finished = []  # the order the two requests end in
    short = threading.Thread(target=lambda: finished.append(("short", _stream_text(long_context_server, "Hi", 2))))

    def long():
        text = _stream_text(long_context_server, "Hello", 1024, after_first=short.start)
        finished.append(("long", text))

    long_thread = threading.Thread(target=long)
    long_thread.start()
    long_thread.join(timeout=120)
    short.join(timeout=120)
    # Round-robin: the short request's 2 steps are taken while the long one still has ~1000 to go.
    assert [name for name, _ in finished] == ["short", "long"]
    assert [len(text) for _, text in finished] == [2, 1024]


def test_a_client_that_hangs_up_mid_stream_frees_its_generation(long_context_server):
    server = long_context_server
    before = server.scheduler.cancelled_jobs
    body = json.dumps({"prompt": "Hello", "max_tokens": 1024, "temperature": 0, "stream": True}).encode()
    with socket.create_connection(server.server_address[:2], timeout=60) as connection:
        connection.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(body), body))
        received = b""
        for _ in range(100):  # bounded: read until the first event has come
            received += connection.recv(4096)
            if b"data: " in received:
                break
        assert b"data: " in received
    # the connection is closed here, mid-stream
    for _ in range(200):  # bounded: up to 10 s for the server to notice
        if server.scheduler.active_jobs() == 0:
            break
        time.sleep(0.05)
    assert server.scheduler.active_jobs() == 0  # well before the ~4 s the 1024 tokens would take
    assert server.scheduler.cancelled_jobs == before + 1  # closed before its last token, not run to the end
    assert post(server, "/v1/models", None, method="GET")[0] == 200


# ---------------------------------------------------------------- bad input


BAD_REQUESTS = [
    ("malformed JSON", "/v1/completions", b'{"prompt": "hi",', "POST", 400, None),
    ("not an object", "/v1/completions", b'["hi"]', "POST", 400, None),
    ("prompt missing", "/v1/completions", {"max_tokens": 3}, "POST", 400, "prompt"),
    ("prompt of the wrong type", "/v1/completions", {"prompt": 5}, "POST", 400, "prompt"),
    ("max_tokens of the wrong type", "/v1/completions", {"prompt": "hi", "max_tokens": "3"}, "POST", 400, "max_tokens"),
    ("max_tokens a bool", "/v1/completions", {"prompt": "hi", "max_tokens": True}, "POST", 400, "max_tokens"),
    ("max_tokens 0", "/v1/completions", {"prompt": "hi", "max_tokens": 0}, "POST", 400, "max_tokens"),
    ("max_tokens over the context", "/v1/completions", {"prompt": "hi", "max_tokens": BLOCK_SIZE + 1}, "POST", 400,
     "max_tokens"),
    ("negative temperature", "/v1/completions", {"prompt": "hi", "temperature": -0.1}, "POST", 400, "temperature"),
    ("top_p 0", "/v1/completions", {"prompt": "hi", "top_p": 0}, "POST", 400, "top_p"),
    ("top_p over 1", "/v1/completions", {"prompt": "hi", "top_p": 1.5}, "POST", 400, "top_p"),
    ("stream not a bool", "/v1/completions", {"prompt": "hi", "stream": "yes"}, "POST", 400, "stream"),
    ("stop of the wrong type", "/v1/completions", {"prompt": "hi", "stop": 3}, "POST", 400, "stop"),
    ("negative seed", "/v1/completions", {"prompt": "hi", "seed": -1}, "POST", 400, "seed"),
    ("unknown field", "/v1/completions", {"prompt": "hi", "best_of": 3}, "POST", 400, "best_of"),
    ("a character not in the vocabulary", "/v1/completions", {"prompt": "naïve"}, "POST", 400, "prompt"),
    ("messages missing", "/v1/chat/completions", {"prompt": "hi"}, "POST", 400, "messages"),
    ("unknown role", "/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, "POST", 400,
     "messages[0].role"),
    ("unknown path", "/v1/engines", {}, "POST", 404, None),
    ("GET of a POST path", "/v1/completions", b"", "GET", 405, None),
    ("unknown method", "/v1/models", b"", "DELETE", 405, None),
]


@pytest.mark.parametrize("name, path, body, method, status, param", BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_bad_request_gets_openai_error_json_and_one_log_line(server, capsys, name, path, body, method, status, param):
    capsys.readouterr()
    got_status, payload = post(server, path, body, method=method)
    assert got_status == status
    assert set(payload) == {"error"} and {"message", "type", "param"} <= set(payload["error"])
    assert payload["error"]["param"] == param and payload["error"]["message"]
    # (the previous test's last request may log just after its reply: count this request's lines)
    log = [line for line in capsys.readouterr().err.splitlines() if f'"{method} {path}" ' in line]
    assert len(log) == 1 and f'"{method} {path}" {status} ' in log[0] and payload["error"]["message"] in log[0], log
    assert post(server, "/v1/models", b"", method="GET")[0] == 200  # still serving


def raw_request(server, request):
    """(status line, parsed JSON body) of bytes sent as they are, read until the server closes."""
    with socket.create_connection(server.server_address[:2], timeout=60) as connection:
        connection.sendall(request)
        reply = b""
        for _ in range(100):  # bounded
            chunk = connection.recv(4096)
            if not chunk:
                break
            reply += chunk
    head, body = reply.split(b"\r\n\r\n", 1)
    return head.split(b"\r\n")[0].decode(), json.loads(body)


@pytest.mark.parametrize("request_bytes, status, message", [
    # Only the headers: the server must refuse from Content-Length alone, before reading a body.
    (b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % ((1 << 20) + 1), 413, "over the limit"),
    (b"POST /v1/completions HTTP/1.1\r\n\r\n", 411, "Content-Length"),
    (b"NONSENSE\r\n\r\n", 400, "request"),  # refused by http.server itself, still as OpenAI's JSON
], ids=["body over the limit", "no Content-Length", "malformed request line"])
def test_raw_http_errors_get_openai_error_json(server, capsys, request_bytes, status, message):
    capsys.readouterr()
    status_line, payload = raw_request(server, request_bytes)
    assert status_line.split()[1] == str(status)
    assert message in payload["error"]["message"]
    assert len([line for line in capsys.readouterr().err.splitlines() if f" {status} " in line]) == 1
    assert post(server, "/v1/models", b"", method="GET")[0] == 200


def test_openai_client_raises_bad_request_for_bad_settings(client):
    with pytest.raises(openai.BadRequestError, match="top_p"):
        client.completions.create(model="tiny", prompt="hi", top_p=2)


# ---------------------------------------------------------------- the command


def test_serve_binds_to_loopback_unless_told():
    assert cli.build_parser().parse_args(["serve"]).host == "127.0.0.1"


def test_serve_refuses_a_bad_port(capsys, checkpoint):
    assert cli.main(["serve", "--ckpt", checkpoint, "--port", "70000"]) == 2
    assert capsys.readouterr().err.strip() == "tinygpt: error: --port must be in 0..65535, got 70000"


def test_init_from_serves_the_pair_load_pretrained_returns(monkeypatch, tmp_path, checkpoint):
    model, tokenizer, _ = load_checkpoint_for_serving(checkpoint)
    calls, served = [], []
    stand_in = types.ModuleType("tinygrad_gpt.pretrained")  # the real one is written on another branch
    stand_in.load_pretrained = lambda directory: calls.append(directory) or (model, tokenizer)
    monkeypatch.setitem(sys.modules, "tinygrad_gpt.pretrained", stand_in)

    def serve_until_ctrl_c(self):
        served.append(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(CompletionServer, "serve_forever", serve_until_ctrl_c)
    hf_dir = tmp_path / "gpt2-tiny"
    assert cli.main(["serve", "--init_from", str(hf_dir), "--port", "0"]) == 0
    assert calls == [str(hf_dir)]
    assert served[0].model is model and served[0].model_name == "gpt2-tiny" and served[0].template == DEFAULT_TEMPLATE


def test_ctrl_c_stops_the_server_cleanly(checkpoint):
    process = subprocess.Popen([sys.executable, "-m", "tinygrad_gpt", "serve", "--ckpt", checkpoint, "--port", "0"],
                               stderr=subprocess.PIPE, text=True)
    try:
        first = process.stderr.readline()  # "tinygpt: serving tiny at http://127.0.0.1:PORT (Ctrl-C stops)"
        assert "serving tiny at http://127.0.0.1:" in first
        port = int(first.split("127.0.0.1:")[1].split()[0])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/v1/completions", body=json.dumps({"prompt": "hi", "max_tokens": 3}))
        assert connection.getresponse().status == 200
        connection.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        rest = process.stderr.read()
        assert "tinygpt: server stopped" in rest and "Traceback" not in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


# ---------------------------------------------------------------- the page


class HeadlessChromium:
    """Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe).

    The browser reads JSON commands, each ended by a NUL byte, on its file
    descriptor 3 and answers on 4: no websocket library and no port needed.
    """

    def __init__(self, executable, profile):
        self._to_browser, self._from_browser = os.pipe(), os.pipe()
        theirs = (self._to_browser[0], self._from_browser[1])

        def give_the_pipes_fds_3_and_4():
            copies = [os.dup(fd) for fd in theirs]  # above 4, so dup2 below never maps an fd onto itself
            os.dup2(copies[0], 3)
            os.dup2(copies[1], 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
             "--remote-debugging-pipe", "--window-size=900,640", "about:blank"],
            preexec_fn=give_the_pipes_fds_3_and_4, close_fds=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in theirs:
            os.close(fd)
        self._next_id, self._unread = 0, b""

    def call(self, method, session=None, **params):
        """Send one command; return its result (events in between are skipped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser[1], json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._unread:
                data = os.read(self._from_browser[0], 1 << 16)
                if not data:
                    raise RuntimeError(f"Chromium closed its DevTools pipe while answering {method}")
                self._unread += data
            reply, self._unread = self._unread.split(b"\0", 1)
            reply = json.loads(reply)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"Chromium refused {method}: {reply['error']}")
                return reply["result"]

    def open(self, url):
        """A session on a new tab showing url."""
        target = self.call("Target.createTarget", url=url)["targetId"]
        return self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def evaluate(self, session, expression):
        return self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"].get("value")

    def close(self):
        try:
            self.call("Browser.close")
        except (OSError, RuntimeError):
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        for fd in (self._to_browser[1], self._from_browser[0]):
            os.close(fd)


def test_page_streams_a_completion_in_headless_chromium(server, client):
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    expected = client.completions.create(model="tiny", prompt="Hello", max_tokens=20, temperature=0).choices[0].text
    states = []
    with tempfile.TemporaryDirectory() as profile:
        browser = HeadlessChromium(executable, profile)
        try:
            session = browser.open(server.url + "/?prompt=Hello&max_tokens=20&temperature=0&autorun=1")
            for _ in range(300):  # bounded: up to ~30 s for the page to finish
                states.append(browser.evaluate(session, "document.body && document.body.dataset.state"))
                if states[-1] in ("done", "error"):
                    break
                time.sleep(0.1)
            shown = browser.evaluate(session, "document.getElementById('completion').textContent")
            status = browser.evaluate(session, "document.getElementById('status').textContent")
            if os.environ.get("TINYGPT_SCREENSHOT"):  # where to write a PNG of the page, for the README
                png = browser.call("Page.captureScreenshot", session, format="png")["data"]
                with open(os.environ["TINYGPT_SCREENSHOT"], "wb") as f:
                    f.write(base64.b64decode(png))
        finally:
            browser.close()
    assert states[-1] == "done", (states, status)
    assert shown == expected
    assert status == "done: 20 tokens"
