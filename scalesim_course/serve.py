"""Serve the tiny transformer over HTTP: an OpenAI-compatible completions endpoint on localhost.

``scalesim-course serve --host 127.0.0.1 --port 0`` starts a FastAPI application on uvicorn
(the web stack vLLM's OpenAI server is built on) that runs `tinymodel.TinyTransformer` with
continuous batching, as `tinymodel.generate_continuous` does, but with requests arriving over
the network at any time:

* ``POST /v1/completions`` takes an OpenAI completions body (``prompt``, ``max_tokens``,
  ``stream``, ``model``) and answers either one JSON object or, with ``"stream": true``, one
  server-sent event per token (``data: {...}``) ending in ``data: [DONE]``, as OpenAI's API
  does. Decoding is greedy (temperature, top_p and other sampling fields are ignored), so the
  tokens are exactly those of `tinymodel.generate_one` for the same request alone.
* ``GET /v1/models`` lists the one model; ``GET /stats`` shows the engine's counters;
  ``GET /steps`` returns the engine's step log (`costmodel.StepRecord` fields) for fitting a
  step-cost model, ``DELETE /steps`` clears it.

Tokeniser: byte level. A text prompt becomes its UTF-8 bytes, one token per byte (the model's
vocabulary is 256); a prompt may also be a list of token ids. A generated token id t is shown as
the character chr(t). The response also carries the ids (``token_ids``, a vLLM-style extension).

Behaviour a client can rely on (tests/test_serve.py checks each):

* a bad request gets HTTP 400 and ``{"error": {"message", "type", "param"}}`` with ``param``
  naming the field (``body`` for a body that is not a JSON object); the server keeps serving;
* more than ``max_batch`` running plus ``max_queue`` waiting requests: HTTP 429, at once;
* a client that disconnects mid-stream frees its batch slot (its KV-cache slot) before the next
  engine step;
* it listens on a loopback address only, prints ``listening on http://HOST:PORT`` once bound
  (``--port 0`` picks a free port), and stops on SIGINT/SIGTERM or after ``--idle-timeout``
  seconds without requests.

`ServerProcess` starts the command as its own process and always stops it (a context manager).
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from ._checks import check_int, check_non_negative

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MODEL_NAME = "scalesim-tiny"


# ----------------------------------------------------------------------------- the engine
@dataclass
class _Job:
    """One request inside the engine (engine-internal)."""

    id: int
    prompt: list
    max_tokens: int
    emit: object                    # emit(token, finish_reason or None), from the engine thread
    arrival: float = 0.0
    tokens: list = field(default_factory=list)
    slot: int = -1
    cancelled: bool = False


class Engine:
    """Continuous batching of the tiny transformer on a thread of its own.

    Each engine step: drop cancelled requests (freeing their slots), admit waiting requests
    into free slots and prefill each (its first token), then decode one token for every
    sequence that was already running. One `costmodel.StepRecord` per step is logged, with the
    step's prefill tokens, decode sequences, context tokens and seconds, the quantities of
    `sim`'s iteration mode. A step followed at once by another lasts until the next one starts:
    its seconds include handing the tokens to the web server and whatever else the process
    did meanwhile (parsing requests, sending events), which is what a step costs in this
    server. A step after which the engine goes idle keeps its compute time.

    Args:
        model: a `tinymodel.TinyTransformer`.
        max_batch: KV-cache slots, the most sequences running at once.
        max_queue: most requests waiting for a slot; more are refused (`submit` returns None).
    """

    def __init__(self, model, max_batch: int = 8, max_queue: int = 64):
        from .tinymodel import KVCache

        self.model = model
        self.max_batch = check_int("max_batch", max_batch, minimum=1)
        self.max_queue = check_int("max_queue", max_queue, minimum=0)
        self.cache = KVCache(model.config, self.max_batch, model.config.max_seq_len)
        self.waiting: deque[_Job] = deque()
        self.running: dict[int, _Job] = {}      # slot -> job
        self.free = list(range(self.max_batch))[::-1]
        self.cond = threading.Condition()
        self.steps: list = []
        self.counts = {"accepted": 0, "completed": 0, "cancelled": 0, "rejected": 0}
        self.last_activity = time.monotonic()
        self._next_id = 0
        self._stop = False
        self._open = None   # (index in steps, start) of the step running back to back
        self.thread = threading.Thread(target=self._loop, name="engine", daemon=True)

    def start(self) -> "Engine":
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.cond:
            self._stop = True
            self.cond.notify_all()
        self.thread.join(timeout=10)

    def submit(self, prompt: list, max_tokens: int, emit) -> _Job | None:
        """Queue a request; None if the queue is full (the caller answers 429)."""
        with self.cond:
            self.last_activity = time.monotonic()
            if len(self.waiting) + len(self.running) >= self.max_batch + self.max_queue:
                self.counts["rejected"] += 1
                return None
            self._next_id += 1
            job = _Job(self._next_id, prompt, max_tokens, emit, time.perf_counter())
            self.waiting.append(job)
            self.counts["accepted"] += 1
            self.cond.notify_all()
            return job

    def cancel(self, job: _Job) -> None:
        """The client went away: free the job's slot before the next step."""
        with self.cond:
            self.last_activity = time.monotonic()
            if not job.cancelled and len(job.tokens) < job.max_tokens:
                job.cancelled = True
                self.counts["cancelled"] += 1
                self.cond.notify_all()

    def stats(self) -> dict:
        with self.cond:
            return {"running": len(self.running), "waiting": len(self.waiting),
                    "free_slots": len(self.free), "max_batch": self.max_batch,
                    "max_queue": self.max_queue, "steps": len(self.steps), **self.counts}

    def busy(self) -> bool:
        with self.cond:
            return bool(self.running or self.waiting)

    # --- the loop (engine thread)
    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self.cond:
                    if not self.running and not self.waiting:
                        self._open = None  # idle: the last step keeps its own duration
                    while not self._stop and not self.running and not self.waiting:
                        self.cond.wait(0.5)
                    if self._stop:
                        return
                    if self._open is not None:
                        # back to back: the previous step lasted until this one starts,
                        # handing out its tokens and the server's other work included
                        i, began = self._open
                        self.steps[i] = self.steps[i]._replace(
                            seconds=time.perf_counter() - began)
                    for slot, job in list(self.running.items()):
                        if job.cancelled:  # a disconnected client: free its KV slot now
                            del self.running[slot]
                            self.free.append(slot)
                    self.waiting = deque(j for j in self.waiting if not j.cancelled)
                    decoding = sorted(self.running)
                    admitted = []
                    while self.free and self.waiting:
                        job = self.waiting.popleft()
                        job.slot = self.free.pop()
                        self.running[job.slot] = job
                        admitted.append(job)
                if admitted or decoding:
                    self._step(admitted, decoding, torch)

    def _step(self, admitted: list, decoding: list, torch) -> None:
        start = time.perf_counter()
        context = int(self.cache.lengths[decoding].sum()) if decoding else 0
        out = []
        for job in admitted:  # prefill: the whole prompt in one call, as tinymodel does
            self.cache.lengths[job.slot] = 0
            logits = self.model.extend(self.cache, torch.tensor([job.slot]),
                                       torch.tensor([job.prompt]))
            out.append((job, int(logits[:, -1].topk(2, dim=-1).indices[0, 0])))
        if decoding:
            jobs = [self.running[s] for s in decoding]
            last = torch.tensor([[j.tokens[-1]] for j in jobs])
            logits = self.model.extend(self.cache, torch.tensor(decoding), last)[:, -1]
            top = logits.topk(2, dim=-1).indices[:, 0].tolist()
            out.extend(zip(jobs, top))
        seconds = time.perf_counter() - start
        from .costmodel import StepRecord

        with self.cond:
            self._open = (len(self.steps), start)
            self.steps.append(StepRecord(sum(len(j.prompt) for j in admitted), len(decoding),
                                         context, seconds))
            for job, token in out:
                job.tokens.append(token)
                done = len(job.tokens) >= job.max_tokens
                if not job.cancelled:  # the last token carries its finish reason
                    job.emit(token, "length" if done else None)
                if done or job.cancelled:
                    if self.running.get(job.slot) is job:
                        del self.running[job.slot]
                        self.free.append(job.slot)
                    if done and not job.cancelled:
                        self.counts["completed"] += 1
            self.last_activity = time.monotonic()


# ----------------------------------------------------------------------------- the web app
class RequestError(ValueError):
    """A bad request: HTTP 400 with a JSON error naming `param`."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def parse_completion_request(body: bytes, vocab_size: int, max_seq_len: int) -> dict:
    """Check an OpenAI completions body; return prompt (token ids), max_tokens, stream, model.

    Raises:
        RequestError: naming the bad field ("body" if it is not a JSON object).
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError("body", "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestError("body", f"the request body must be a JSON object, got "
                                   f"{type(data).__name__}")
    if "prompt" not in data:
        raise RequestError("prompt", "missing field 'prompt' (a string or a list of token ids)")
    prompt = data["prompt"]
    if isinstance(prompt, str):
        prompt = list(prompt.encode("utf-8"))
    elif isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool)
                                          for t in prompt):
        bad = [t for t in prompt if not 0 <= t < vocab_size]
        if bad:
            raise RequestError("prompt", f"'prompt' holds token id {bad[0]}, outside the vocabulary "
                                         f"0..{vocab_size - 1}")
    else:
        raise RequestError("prompt", "'prompt' must be a string or a list of integer token ids "
                                     "(one prompt per request)")
    if not prompt:
        raise RequestError("prompt", "'prompt' is empty: it needs at least one token")
    max_tokens = data.get("max_tokens", 16)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise RequestError("max_tokens", f"'max_tokens' must be an integer, got "
                                         f"{json.dumps(max_tokens)}")
    if max_tokens < 1:
        raise RequestError("max_tokens", f"'max_tokens' must be >= 1, got {max_tokens}")
    if len(prompt) + max_tokens > max_seq_len:
        raise RequestError("max_tokens", f"the prompt's {len(prompt)} tokens + max_tokens="
                                         f"{max_tokens} exceed the model's context of "
                                         f"{max_seq_len} tokens")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream", f"'stream' must be true or false, got {json.dumps(stream)}")
    model = data.get("model", MODEL_NAME)
    if not isinstance(model, str):
        raise RequestError("model", f"'model' must be a string, got {json.dumps(model)}")
    return {"prompt": prompt, "max_tokens": max_tokens, "stream": stream, "model": model}


def _error(status: int, param: str | None, message: str, kind: str = "invalid_request_error"):
    from fastapi.responses import JSONResponse

    headers = {"Retry-After": "1"} if status == 429 else None
    return JSONResponse({"error": {"message": message, "type": kind, "param": param,
                                   "code": None}}, status_code=status, headers=headers)


def create_app(engine: Engine):
    """The FastAPI application around a running `Engine`."""
    import asyncio

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="scalesim-course tiny model server")
    cfg = engine.model.config

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": MODEL_NAME, "object": "model",
                                            "owned_by": "scalesim-course",
                                            "max_model_len": cfg.max_seq_len}]}

    @app.get("/stats")
    async def stats():
        return engine.stats()

    @app.get("/steps")
    async def steps():
        with engine.cond:
            return {"steps": [s._asdict() for s in engine.steps]}

    @app.delete("/steps")
    async def clear_steps():
        with engine.cond:
            engine.steps.clear()
        return {"cleared": True}

    async def completions(request):
        try:
            req = parse_completion_request(await request.body(), cfg.vocab_size,
                                           cfg.max_seq_len)
        except RequestError as err:
            return _error(400, err.param, str(err))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(token, finish):  # called on the engine's thread
            loop.call_soon_threadsafe(queue.put_nowait, (token, finish))

        job = engine.submit(req["prompt"], req["max_tokens"], emit)
        if job is None:
            return _error(429, None, f"the server is full ({engine.max_batch} running, "
                                     f"{engine.max_queue} waiting): retry later",
                          "rate_limit_error")
        rid, created = f"cmpl-{job.id}", int(time.time())

        def chunk(token_ids, text, finish):
            return {"id": rid, "object": "text_completion", "created": created,
                    "model": req["model"],
                    "choices": [{"index": 0, "text": text, "token_ids": token_ids,
                                 "logprobs": None, "finish_reason": finish}]}

        async def tokens():
            """(token, finish_reason) pairs as the engine produces them."""
            while True:
                token, finish = await queue.get()
                yield token, finish
                if finish is not None:
                    return

        if not req["stream"]:
            ids = []
            try:
                async for token, _ in tokens():
                    ids.append(token)
            finally:
                engine.cancel(job)  # no-op when it finished
            body = chunk(ids, "".join(map(chr, ids)), "length")
            body["usage"] = {"prompt_tokens": len(req["prompt"]), "completion_tokens": len(ids),
                             "total_tokens": len(req["prompt"]) + len(ids)}
            return JSONResponse(body)

        async def events():
            try:
                async for token, finish in tokens():
                    yield f"data: {json.dumps(chunk([token], chr(token), finish))}\n\n"
                yield "data: [DONE]\n\n"
            finally:  # runs when the client disconnects too (the stream is cancelled)
                engine.cancel(job)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    # FastAPI reads the annotation to hand over the raw request (set here: this module's
    # annotations are strings, and Request is imported only when the app is built)
    completions.__annotations__ = {"request": Request}
    app.post("/v1/completions")(completions)
    return app


# ----------------------------------------------------------------------------- the command
def add_arguments(parser) -> None:
    """Options of `scalesim-course serve`."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="loopback address to listen on (127.0.0.1, localhost or ::1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port; 0 picks a free one")
    parser.add_argument("--max-batch", type=int, default=8, help="sequences decoded together")
    parser.add_argument("--max-queue", type=int, default=64,
                        help="requests waiting for a slot before the server answers 429")
    parser.add_argument("--idle-timeout", type=float, default=600.0,
                        help="stop after this many seconds without requests (0: never)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's weights")
    parser.add_argument("--max-seq-len", type=int, default=256, help="model context in tokens")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def run(args) -> int:
    """Serve until a signal or the idle timeout; print the bound address first."""
    if args.host not in LOOPBACK:
        raise SystemExit(f"--host {args.host!r} refused: this course server listens on a "
                         f"loopback address only ({', '.join(LOOPBACK)})")
    check_int("--port", args.port, minimum=0)
    idle = check_non_negative("--idle-timeout", args.idle_timeout)
    import asyncio

    import torch
    import uvicorn

    from .tinymodel import TinyConfig, TinyTransformer

    torch.set_num_threads(check_int("--threads", args.threads, minimum=1))
    model = TinyTransformer(TinyConfig(seed=args.seed, max_seq_len=args.max_seq_len))
    engine = Engine(model, args.max_batch, args.max_queue).start()
    app = create_app(engine)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    # Listen before saying so: a client that connects as soon as it reads the line then waits
    # in the backlog until uvicorn accepts, instead of being refused (a bound socket that does
    # not listen yet refuses connections; seen under load).
    sock.listen(config.backlog)

    class Server(uvicorn.Server):
        # uvicorn re-raises SIGTERM after shutting down, so the process would die by the
        # signal; here a signal just asks for a clean stop, and the command exits with 0
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    server = Server(config)

    async def watch_idle():
        while not server.should_exit:
            await asyncio.sleep(min(0.5, idle / 4))
            if engine.busy():
                continue
            if time.monotonic() - engine.last_activity > idle:
                print(f"idle for {idle:g} s: stopping", flush=True)
                server.should_exit = True

    async def serve():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        if idle > 0:
            asyncio.get_running_loop().create_task(watch_idle())
        await server.serve(sockets=[sock])

    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        asyncio.run(serve())
    finally:
        engine.stop()
        sock.close()
    print("server stopped", flush=True)
    return 0


# ----------------------------------------------------------------------------- a managed process
class ServerProcess:
    """Run `scalesim-course serve` as a child process; always stop it (a context manager).

    >>> with ServerProcess(max_batch=8) as server:   # doctest: +SKIP
    ...     print(server.url)                        # http://127.0.0.1:<port>

    Args:
        max_batch, max_queue, idle_timeout, seed, max_seq_len: the command's options.
        start_timeout: seconds to wait for the "listening on" line.
    """

    def __init__(self, *, max_batch: int = 8, max_queue: int = 64, idle_timeout: float = 120.0,
                 seed: int = 0, max_seq_len: int = 256, start_timeout: float = 60.0):
        self.args = ["--host", "127.0.0.1", "--port", "0", "--max-batch", str(max_batch),
                     "--max-queue", str(max_queue), "--idle-timeout", str(idle_timeout),
                     "--seed", str(seed), "--max-seq-len", str(max_seq_len)]
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.port = 0

    def start(self) -> "ServerProcess":
        """Start the process (again, if it has exited) and wait until it listens."""
        if self.proc is not None and self.proc.poll() is not None:
            self.proc, self.url, self.port = None, "", 0  # it stopped (idle): start afresh
        if self.proc is None:
            self.launch()
        return self.wait_ready()

    def launch(self) -> "ServerProcess":
        """Start the process without waiting (it loads torch meanwhile); see `wait_ready`."""
        if self.proc is not None:
            raise RuntimeError("this ServerProcess was already launched")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, "-m", "scalesim_course.cli", "serve",
                                      *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        _LIVE.add(self)
        return self

    def wait_ready(self) -> "ServerProcess":
        """Wait for the "listening on" line; stop the process and raise if it does not come."""
        if self.url:
            return self
        deadline = time.monotonic() + self.start_timeout
        seen = []
        try:
            while time.monotonic() < deadline:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError("the server exited before listening:\n" + "".join(seen))
                seen.append(line)
                found = re.search(r"listening on (http://\S+):(\d+)", line)
                if found:
                    self.port = int(found.group(2))
                    self.url = f"{found.group(1)}:{self.port}"
                    threading.Thread(target=self._drain, daemon=True).start()
                    return self
            raise RuntimeError(f"the server did not start within {self.start_timeout} s")
        except BaseException:
            self.stop()
            raise

    def _drain(self) -> None:
        """Keep reading the child's output so that it never blocks on a full pipe."""
        for _ in self.proc.stdout:
            pass

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 s; returns the exit code."""
        _LIVE.discard(self)
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_LIVE: set = set()   # launched and not yet stopped; stopped when Python exits


@atexit.register
def _stop_all() -> None:
    for proc in list(_LIVE):
        proc.stop()
