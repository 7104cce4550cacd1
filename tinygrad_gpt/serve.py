"""Serve a GPT over HTTP: OpenAI's completions API, streamed, and a page to try it.

    POST /v1/completions        {"prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "stream"}
    POST /v1/chat/completions   {"messages": [{"role", "content"}, ...], same settings}
    GET  /v1/models             the one model served
    GET  /                      a page: a prompt box, the settings, the completion as it streams

How it is built, and why:

- The standard library's `http.server` (`ThreadingHTTPServer`, a thread per
  connection), so serving needs no dependency. The work is CPU-bound NumPy
  and Numba, not waiting on I/O, so an event loop would buy nothing, and a
  server-sent event stream is only lines written to the socket.
- One model thread (`Scheduler`) owns the model. Each request is a
  `GPT.generate_stream` generator with its own KV cache; the model thread
  takes one token step from each active request in turn, so a long
  completion delays the others by one step per turn and never blocks them.
  One thread because `no_grad` is process-wide, because Numba's kernels
  already use every core (two steps at once would only contend), and because
  Numba's workqueue threading layer, used when neither OpenMP nor TBB is
  installed, aborts when two threads run parallel kernels at once.
- Request threads only parse, turn tokens into text and write: they read
  their tokens from a queue. A stop sequence, the end-of-text token, or a
  client that hangs up (a write fails) cancels the request, and the model
  thread closes its generator, which frees its KV cache.

Chat messages are rendered with the template of the fine-tuning run that
wrote the checkpoint (its `finetune.json`; otherwise finetune's
`DEFAULT_TEMPLATE`): see `render_chat`. Errors are OpenAI's JSON, `{"error": {"message", "type",
"param", "code"}}`, with a 4xx status; each request logs one line.
"""

import dataclasses
import http.server
import importlib.resources
import json
import math
import os
import queue
import sys
import threading
import time
import uuid

import numpy as np

from .finetune import DEFAULT_TEMPLATE, SETTINGS_FILE

MAX_BODY_BYTES = 1 << 20  # a request body above this gets a 413 before it is read
MAX_STOP_SEQUENCES = 4  # as OpenAI
SECONDS_BEFORE_A_SILENT_CLIENT_IS_DROPPED = 60


class RequestError(ValueError):
    """A request the server refuses: its HTTP status and OpenAI's error fields."""

    def __init__(self, message, param=None, status=400, error_type="invalid_request_error"):
        super().__init__(message)
        self.param, self.status, self.error_type = param, status, error_type

    def to_json(self):
        return {"error": {"message": str(self), "type": self.error_type, "param": self.param, "code": None}}


# ---------------------------------------------------------------- requests


@dataclasses.dataclass
class Sampling:
    """One request's prompt tokens and sampling settings, checked."""

    prompt_ids: np.ndarray  # (T,) int64
    max_tokens: int
    temperature: float
    top_p: float  # None: no nucleus cut (top_p 1)
    top_k: int  # None: no top-k cut (a tinygpt extension, as `tinygpt sample --top-k`)
    stop: list  # of strings; the text ends before the first one
    seed: int  # None: fresh entropy
    stream: bool
    include_usage: bool


# The fields a request may carry. `model`, `n` (1 only) and `user` are accepted
# because OpenAI clients send them; any other field is refused by name.
_SETTING_FIELDS = {"model", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "stream",
                   "stream_options", "n", "user"}
COMPLETION_FIELDS = _SETTING_FIELDS | {"prompt"}
CHAT_FIELDS = _SETTING_FIELDS | {"messages", "max_completion_tokens"}


def parse_json_object(body):
    """The request body as a dict, or a RequestError saying why not."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(f"the request body is not valid JSON ({error})") from None
    if not isinstance(request, dict):
        raise RequestError(f"the request body must be a JSON object, got a JSON {type(request).__name__}")
    return request


def _number(request, name, default):
    value = request.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number, got {json.dumps(value)}", param=name)
    return float(value)


def _integer(request, name, default):
    value = request.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name} must be an integer, got {json.dumps(value)}", param=name)
    return value


def _boolean(request, name, default):
    value = request.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false, got {json.dumps(value)}", param=name)
    return value


def _string(value, name):
    if not isinstance(value, str):
        raise RequestError(f"{name} must be a string, got {json.dumps(value)}", param=name)
    return value


def parse_settings(request, allowed_fields, prompt_ids, block_size, default_max_tokens):
    """Check a request's sampling fields against OpenAI's rules and the model's context."""
    unknown = sorted(set(request) - allowed_fields)
    if unknown:
        raise RequestError(f"unrecognized request argument(s) {unknown}; this server accepts "
                           f"{sorted(allowed_fields)}", param=unknown[0])
    if "model" in request:
        _string(request["model"], "model")  # any name is served by the one model
    if "user" in request:
        _string(request["user"], "user")
    if _integer(request, "n", 1) != 1:
        raise RequestError("n must be 1: this server writes one completion per request", param="n")
    name = "max_completion_tokens" if request.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _integer(request, name, default_max_tokens)
    if not 1 <= max_tokens <= block_size:
        raise RequestError(f"{name} must be between 1 and the model's context of {block_size} tokens, "
                           f"got {max_tokens}", param=name)
    temperature = _number(request, "temperature", 1.0)
    if temperature < 0:
        raise RequestError(f"temperature must be 0 or more (0 is greedy), got {temperature:g}", param="temperature")
    top_p = _number(request, "top_p", 1.0)
    if not 0 < top_p <= 1:
        raise RequestError(f"top_p must be in (0, 1], got {top_p:g}", param="top_p")
    top_k = _integer(request, "top_k", None)
    if top_k is not None and top_k < 1:
        raise RequestError(f"top_k must be at least 1, got {top_k}", param="top_k")
    seed = _integer(request, "seed", None)
    if seed is not None and seed < 0:
        raise RequestError(f"seed must be 0 or more, got {seed}", param="seed")
    stop = request.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > MAX_STOP_SEQUENCES or not all(
            isinstance(s, str) and s for s in stop):
        raise RequestError(f"stop must be a non-empty string or a list of up to {MAX_STOP_SEQUENCES} of them, "
                           f"got {json.dumps(request['stop'])}", param="stop")
    options = request.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise RequestError(f"stream_options must be an object with only include_usage, got {json.dumps(options)}",
                           param="stream_options")
    return Sampling(prompt_ids=prompt_ids, max_tokens=max_tokens, temperature=temperature,
                    top_p=None if top_p == 1 else top_p, top_k=top_k, stop=stop, seed=seed,
                    stream=_boolean(request, "stream", False),
                    include_usage=_boolean(options, "include_usage", False))


def encode_prompt(tokenizer, text, param):
    """The prompt's token ids; an empty prompt starts from end-of-text (as GPT-2 does) or a newline."""
    if text == "":
        eot = getattr(tokenizer, "eot_token", None)
        if eot is not None:
            return np.array([eot], dtype=np.int64)  # (1,)
        text = "\n"
    try:
        return np.asarray(tokenizer.encode(text), dtype=np.int64)  # (T,)
    except ValueError as error:
        raise RequestError(f"{param} cannot be written in the model's vocabulary: {error}", param=param) from None


def parse_completion(request, tokenizer, block_size):
    if "prompt" not in request:
        raise RequestError("prompt is required: the text to continue", param="prompt")
    prompt = request["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]  # OpenAI's batch form with one prompt
    ids = encode_prompt(tokenizer, _string(prompt, "prompt"), "prompt")
    return parse_settings(request, COMPLETION_FIELDS, ids, block_size, default_max_tokens=16)


def render_chat(messages, template):
    """The prompt text of a conversation, in the template the model was fine-tuned with.

    A user message becomes the template with `{prompt}` replaced by its
    content ("Q: {prompt}\\nA:" makes "Q: hi\\nA:"); an assistant message
    follows as " " + content + "\\n"; a system message is its content and a
    newline, placed first. The conversation must end with a user message.
    """
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content} objects", param="messages")
    parts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise RequestError(f"messages[{i}] must be an object with a string content, got {json.dumps(message)}",
                               param=f"messages[{i}]")
        role, content = message.get("role"), message["content"]
        if role == "system":
            parts.append(content + "\n")
        elif role == "user":
            parts.append(template.replace("{prompt}", content))
        elif role == "assistant":
            parts.append(" " + content + "\n")
        else:
            raise RequestError(f"messages[{i}].role must be system, user or assistant, got {json.dumps(role)}",
                               param=f"messages[{i}].role")
    if messages[-1].get("role") != "user":
        raise RequestError("the last message must be the user's: the model writes the assistant's reply",
                           param="messages")
    return "".join(parts)


def chat_stop(template):
    """Where a chat reply ends: where the model would begin the next user turn ("\\nQ:")."""
    before_prompt = template.split("{prompt}")[0].strip()
    return "\n" + before_prompt if before_prompt else None


def parse_chat(request, tokenizer, block_size, template):
    if "messages" not in request:
        raise RequestError("messages is required: the conversation to reply to", param="messages")
    ids = encode_prompt(tokenizer, render_chat(request["messages"], template), "messages")
    sampling = parse_settings(request, CHAT_FIELDS, ids, block_size, default_max_tokens=block_size)
    implicit = chat_stop(template)
    if implicit is not None and implicit not in sampling.stop:
        sampling.stop.append(implicit)
    return sampling


# ---------------------------------------------------------------- text


class TextStream:
    """Turns a completion's tokens into text pieces, ending at the first stop sequence.

    Text that could still grow into a stop sequence (an ending that begins
    one) is held back until it cannot, so no part of a stop sequence is ever
    sent; so is a trailing U+FFFD, a character whose UTF-8 bytes a byte-level
    BPE has not finished yet.
    """

    def __init__(self, tokenizer, stop):
        self.tokenizer, self.stop = tokenizer, stop
        self.ids = []
        self.text = ""
        self.sent = 0  # characters of self.text already handed out
        self.stopped = False

    def push(self, token):
        """Add one token; return the text now safe to send (may be '')."""
        self.ids.append(token)
        self.text = self.tokenizer.decode(np.array(self.ids, dtype=np.int64))
        found = [i for i in (self.text.find(s, self.sent) for s in self.stop) if i >= 0]
        if found:
            self.stopped = True
            self.text = self.text[: min(found)]
            return self.rest()
        end = len(self.text.rstrip("\ufffd"))
        held = max((k for s in self.stop for k in range(1, len(s)) if self.text[:end].endswith(s[:k])), default=0)
        piece = self.text[self.sent : max(end - held, self.sent)]
        self.sent += len(piece)
        return piece

    def rest(self):
        """The text held back, once no more tokens come."""
        piece = self.text[self.sent :]
        self.sent = len(self.text)
        return piece


# ---------------------------------------------------------------- the model thread


class Job:
    """One request's generation: its token generator, the queue its tokens go to, a cancel flag."""

    DONE = None  # put on the queue after the last token

    def __init__(self, tokens):
        self.tokens = tokens
        self.output = queue.Queue()
        self.cancelled = threading.Event()

    def cancel(self):
        self.cancelled.set()


class Scheduler:
    """The one thread that runs the model: a token step of each active job in turn."""

    def __init__(self):
        self._incoming = queue.Queue()
        self._active = []
        self.cancelled_jobs = 0  # jobs closed before their last token (stop, end-of-text, hang-up)
        self._thread = threading.Thread(target=self._run, name="tinygpt-model", daemon=True)
        self._thread.start()

    def submit(self, tokens):
        """Queue a generator of token arrays; returns its Job."""
        job = Job(tokens)
        self._incoming.put(job)
        return job

    def active_jobs(self):
        return len(self._active) + self._incoming.qsize()

    def stop(self):
        self._incoming.put(None)
        self._thread.join(timeout=10)

    def _run(self):
        while True:
            # Wait when there is nothing to do; otherwise take whatever has arrived.
            arrivals = [self._incoming.get()] if not self._active else []
            while not self._incoming.empty():
                arrivals.append(self._incoming.get_nowait())
            if None in arrivals:  # stop(): close everything
                for job in self._active + [j for j in arrivals if j is not None]:
                    job.tokens.close()
                    job.output.put(Job.DONE)
                return
            self._active.extend(arrivals)
            for job in list(self._active):
                self._step(job)

    def _step(self, job):
        if job.cancelled.is_set():
            job.tokens.close()  # frees its KV cache
            self.cancelled_jobs += 1
            self._active.remove(job)
            return
        try:
            job.output.put(int(next(job.tokens)[0]))
        except StopIteration:
            job.output.put(Job.DONE)
            self._active.remove(job)
        except Exception as error:  # a bug must fail its request, not the server
            job.output.put(error)
            self._active.remove(job)


# ---------------------------------------------------------------- HTTP


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "tinygpt"
    timeout = SECONDS_BEFORE_A_SILENT_CLIENT_IS_DROPPED
    # Each event is a small write: with Nagle's algorithm it waits for the client's
    # delayed ACK (~40 ms on Linux), which measured 50 ms per streamed token.
    disable_nagle_algorithm = True
    routes = {("GET", "/"): "_page", ("GET", "/v1/models"): "_models",
              ("POST", "/v1/completions"): "_completions", ("POST", "/v1/chat/completions"): "_chat"}

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def __getattr__(self, name):
        # http.server looks a method up as do_<METHOD>: every other method gets a 405, not a 501.
        if name.startswith("do_"):
            return lambda: self._route(name[3:])
        raise AttributeError(name)

    def _route(self, method):
        self.started, self.note, self.status = time.perf_counter(), "", None  # status: None until a reply starts
        path = self.path.split("?")[0]
        try:
            if (method, path) not in self.routes:
                allowed = [m for m, p in self.routes if p == path]
                if allowed:
                    raise RequestError(f"{path} takes {' or '.join(allowed)}, not {method}", status=405)
                raise RequestError(f"unknown path {path}; this server has {sorted({p for _, p in self.routes})}",
                                   status=404)
            getattr(self, self.routes[method, path])()
        except RequestError as error:
            # Logged before the reply, so the line is written by the time the client reads the error.
            self.note, self.status = str(error), error.status
            self._log(method, path)
            self._send_json(error.to_json(), error.status)
            return
        except (BrokenPipeError, ConnectionResetError):
            self.note = "the client hung up"
        except Exception as error:  # a bug fails its request with a 500, one line, and the server serves on
            self.note = f"internal error: {error!r}"
            if self.status is None:  # nothing sent yet
                self._send_json(RequestError(f"internal error: {error}", status=500, error_type="server_error")
                                .to_json(), 500)
        self._log(method, path)

    # -- responses

    def _send_json(self, payload, status=200):
        body = json.dumps(payload).encode()
        self.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _log(self, method, path):
        milliseconds = (time.perf_counter() - self.started) * 1000
        note = f": {self.note}" if self.note else ""
        self.log_message('"%s %s" %d in %.0f ms%s', method, path, self.status or 0, milliseconds, note)

    def log_request(self, code="-", size="-"):
        pass  # _log writes one line per request, with the reason of an error

    def log_message(self, format, *args):
        if self.server.log:
            sys.stderr.write(f"tinygpt serve: {self.address_string()} {format % args}\n")

    def send_error(self, code, message=None, explain=None):
        # http.server's own refusals (a malformed request line, headers too long) as OpenAI JSON.
        self.started, self.note, self.status = getattr(self, "started", time.perf_counter()), message or "", code
        self._log(self.command or "-", getattr(self, "path", "-"))
        if self.request_version == "HTTP/0.9":  # an unreadable request line: http.server would send no headers
            self.request_version = "HTTP/1.0"
        self._send_json(RequestError(message or "bad request", status=code).to_json(), code)

    def _read_json(self):
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError("a request body needs a Content-Length header", status=411)
        if not length.isdigit():
            raise RequestError(f"Content-Length must be a number of bytes, got {length!r}")
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body must not be taken for a next request
            raise RequestError(f"the request body of {length} bytes is over the limit of {MAX_BODY_BYTES} bytes",
                               status=413)
        return parse_json_object(self.rfile.read(int(length)))

    # -- endpoints

    def _page(self):
        body = importlib.resources.files("tinygrad_gpt").joinpath("static/index.html").read_bytes()
        self.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _models(self):
        self._send_json({"object": "list", "data": [
            {"id": self.server.model_name, "object": "model", "created": self.server.created, "owned_by": "tinygpt"}]})

    def _completions(self):
        s = self.server
        self._generate(parse_completion(self._read_json(), s.tokenizer, s.block_size), chat=False)

    def _chat(self):
        s = self.server
        self._generate(parse_chat(self._read_json(), s.tokenizer, s.block_size, s.template), chat=True)

    def _generate(self, sampling, chat):
        server = self.server
        generator = np.random.default_rng(sampling.seed)
        tokens = server.model.generate_stream(
            sampling.prompt_ids[None, :], sampling.max_tokens, temperature=sampling.temperature,
            top_k=sampling.top_k, top_p=sampling.top_p, generator=generator)
        job = server.scheduler.submit(tokens)
        text = TextStream(server.tokenizer, sampling.stop)
        reply = _Reply(server.model_name, chat)
        try:
            if sampling.stream:
                self._stream(job, text, reply, sampling)
            else:
                pieces = list(_pieces(job, text, server.eot_token))
                usage = _usage(sampling, text)
                self._send_json(reply.whole("".join(pieces), _finish_reason(text), usage))
        finally:
            job.cancel()  # a no-op once the job has ended
        self.note = f"{len(text.ids)} tokens"

    def _stream(self, job, text, reply, sampling):
        self.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
        if reply.chat:  # OpenAI's chat stream names the role first
            self._send_event(reply.first_chunk())
        for piece in _pieces(job, text, self.server.eot_token):
            self._send_event(reply.chunk(piece))
        self._send_event(reply.chunk("", _finish_reason(text)))
        if sampling.include_usage:
            self._send_event(reply.usage_chunk(_usage(sampling, text)))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _send_event(self, payload):
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()


def _pieces(job, text, eot_token):
    """The text pieces of a job's tokens as they arrive, up to a stop or the end."""
    while True:
        token = job.output.get()
        if isinstance(token, Exception):
            raise token
        if token is Job.DONE:
            break
        if token == eot_token:
            text.stopped = True
            break
        piece = text.push(token)
        if piece:
            yield piece
        if text.stopped:
            break
    job.cancel()
    piece = text.rest()
    if piece:
        yield piece


def _finish_reason(text):
    return "stop" if text.stopped else "length"


def _usage(sampling, text):
    prompt, completion = len(sampling.prompt_ids), len(text.ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Reply:
    """OpenAI's response and chunk objects, for text completions or chat."""

    def __init__(self, model_name, chat):
        self.chat, self.model_name = chat, model_name
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _envelope(self, chunk):
        kind = ("chat.completion" if self.chat else "text_completion") + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model_name}

    def whole(self, content, finish_reason, usage):
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": content, "logprobs": None, "finish_reason": finish_reason}
        return {**self._envelope(chunk=False), "choices": [choice], "usage": usage}

    def first_chunk(self):
        return {**self._envelope(chunk=True),
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}

    def chunk(self, piece, finish_reason=None):
        if self.chat:
            choice = {"index": 0, "delta": {"content": piece} if piece else {}, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish_reason}
        return {**self._envelope(chunk=True), "choices": [choice]}

    def usage_chunk(self, usage):
        return {**self._envelope(chunk=True), "choices": [], "usage": usage}


class CompletionServer(http.server.ThreadingHTTPServer):
    """An HTTP server for a (model, tokenizer) pair; `port=0` picks a free port (see `.url`).

    `serve_forever()` serves in the calling thread; `start()` in a background
    thread (tests, benchmarks); `close()` stops it and the model thread.
    """

    daemon_threads = True  # a stream in flight does not hold up the process's exit

    def __init__(self, model, tokenizer, model_name="tinygpt", template=DEFAULT_TEMPLATE,
                 host="127.0.0.1", port=8000, log=True):
        if "{prompt}" not in template:
            raise ValueError(f"the chat template must contain {{prompt}}, got {template!r}")
        model.eval()
        self.model, self.tokenizer, self.model_name, self.template, self.log = model, tokenizer, model_name, template, log
        self.block_size = model.config.block_size
        self.eot_token = getattr(tokenizer, "eot_token", None)
        self.created = int(time.time())
        super().__init__((host, port), _Handler)
        self.scheduler = Scheduler()
        self._thread = None

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._thread = threading.Thread(target=self.serve_forever, name="tinygpt-http", daemon=True)
        self._thread.start()
        return self

    def close(self):
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=10)
        self.server_close()
        self.scheduler.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_checkpoint_for_serving(path):
    """(model, tokenizer, chat template) of a checkpoint written by `tinygpt train` or `tinygpt finetune`.

    The template is the one a fine-tuning run used, read from the `finetune.json` it
    keeps beside its checkpoints; any other model gets the default.
    """
    from .training_state import load_model_and_tokenizer

    model, tokenizer, _ = load_model_and_tokenizer(path)
    template = DEFAULT_TEMPLATE
    settings = os.path.join(os.path.dirname(os.path.abspath(path)), SETTINGS_FILE)
    if os.path.exists(settings):
        try:
            with open(settings, encoding="utf-8") as f:
                template = json.load(f).get("template", DEFAULT_TEMPLATE)
        except (OSError, ValueError, AttributeError) as error:
            raise ValueError(f"{settings} beside {path} cannot be read for its chat template ({error})") from None
    return model, tokenizer, template
