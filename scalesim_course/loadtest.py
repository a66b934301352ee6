"""Load-test an OpenAI-style completions server, the way ``vllm bench serve`` does.

An async client (httpx) sends a fixed number of streaming requests whose send times follow a
Poisson process (or gamma gaps, for bursts), bounded in count and in wall time, and records
when every token arrives. From those timestamps it reports, as vLLM's benchmark does:

* TTFT: time from sending a request to its first token;
* TPOT: per request, (end-to-end - TTFT) / (output tokens - 1);
* ITL: every gap between two consecutive tokens of a request, all requests pooled;
* end-to-end latency; request and output-token throughput over the run's span;
* goodput: requests per second that met a TTFT and a TPOT limit (`metrics.goodput`).

Summaries (mean, median, p99) use `metrics.latency_summary`. The client runs its event loop on
a thread of its own, so it works the same in a script, a test and a Jupyter kernel (which
already runs a loop).
"""
from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np

from . import metrics
from ._checks import check_int, check_positive, rng_from
from .workload import Workload, gamma_arrivals, lognormal_lengths, poisson_arrivals


class LoadRequest(NamedTuple):
    """One request to send: prompt token ids and how many tokens to generate."""

    prompt: list
    max_tokens: int


def make_requests(n: int, seed=0, *, prompt_len: tuple[float, float] = (24, 16),
                  output_len: tuple[float, float] = (16, 10), max_output: int = 64,
                  vocab_size: int = 256) -> list[LoadRequest]:
    """n reproducible requests: lognormal prompt and output lengths, random token ids.

    The defaults are those of `tinymodel.demo_requests` (the Azure 2023 conversation trace's
    shape scaled down 13x, so that the tiny model answers in milliseconds).

    Args:
        n: number of requests, >= 1.
        seed: int or numpy Generator.
        prompt_len, output_len: (mean, median) in tokens.
        max_output: longest output.
        vocab_size: token ids are drawn from 0 .. vocab_size - 1.
    """
    check_int("n", n, minimum=1)
    rng = rng_from(seed)
    plen = lognormal_lengths(*prompt_len, n, rng, maximum=4 * int(prompt_len[0]))
    olen = lognormal_lengths(*output_len, n, rng, maximum=max_output)
    return [LoadRequest(rng.integers(0, vocab_size, size=int(p)).tolist(), int(o))
            for p, o in zip(plen, olen)]


@dataclass
class RequestRecord:
    """What the client saw of one request (times in seconds from the start of the run)."""

    sent: float
    prompt_tokens: int
    max_tokens: int
    token_times: list = field(default_factory=list)
    tokens: list = field(default_factory=list)
    status: int = 0            # HTTP status (0: no answer)
    error: str = ""
    done: bool = False         # saw "data: [DONE]"
    well_formed: bool = False  # every event parsed, one token each, finish_reason last, [DONE]

    @property
    def ok(self) -> bool:
        """Completed: HTTP 200, every requested token, a well-formed stream."""
        return self.status == 200 and self.well_formed and len(self.tokens) == self.max_tokens


@dataclass
class LoadTestResult:
    """The records of one load test and their metrics.

    Attributes:
        records: one `RequestRecord` per request, in sending order.
        rate: the intended send rate (requests/s); cv: coefficient of variation of the gaps.
        wall_time: seconds the run took.
        timed_out: True if the time limit cut the run short.
    """

    records: list
    rate: float
    cv: float
    wall_time: float
    timed_out: bool

    def _per_request(self, fn) -> np.ndarray:
        return np.array([fn(r) if r.ok else math.nan for r in self.records], dtype=float)

    @property
    def sent(self) -> np.ndarray:
        return np.array([r.sent for r in self.records])

    @property
    def completed(self) -> np.ndarray:
        return np.array([r.ok for r in self.records])

    @property
    def ttft(self) -> np.ndarray:
        """Time to first token per request (nan if it did not complete)."""
        return self._per_request(lambda r: r.token_times[0] - r.sent)

    @property
    def e2e(self) -> np.ndarray:
        """End-to-end latency per request (nan if it did not complete)."""
        return self._per_request(lambda r: r.token_times[-1] - r.sent)

    @property
    def tpot(self) -> np.ndarray:
        """(e2e - TTFT) / (tokens - 1) per request; nan for one-token answers."""
        return self._per_request(lambda r: (r.token_times[-1] - r.token_times[0])
                                 / (len(r.tokens) - 1) if len(r.tokens) > 1 else math.nan)

    @property
    def itl(self) -> np.ndarray:
        """Every inter-token gap of every completed request, pooled."""
        gaps = [np.diff(r.token_times) for r in self.records if r.ok and len(r.tokens) > 1]
        return np.concatenate(gaps) if gaps else np.array([])

    @property
    def span(self) -> float:
        """Seconds from the first send to the last token received."""
        ends = [r.token_times[-1] for r in self.records if r.ok]
        if not ends:
            raise ValueError("no request completed in this load test")
        return max(ends) - min(r.sent for r in self.records)

    def summary(self, *, ttft_slo: float | None = None, tpot_slo: float | None = None) -> dict:
        """The benchmark's numbers as one flat dict (seconds, requests/s, tokens/s)."""
        ok = self.completed
        out = {"rate": self.rate, "requests": len(self.records), "completed": int(ok.sum()),
               "failed": int((~ok).sum()), "wall_s": self.wall_time}
        span = self.span
        out["requests_per_s"] = float(ok.sum() / span)
        out["output_tokens_per_s"] = float(sum(len(r.tokens) for r in self.records if r.ok) / span)
        for name, values in (("ttft", self.ttft), ("tpot", self.tpot), ("itl", self.itl),
                             ("e2e", self.e2e)):
            if np.isnan(values).all() if len(values) else True:
                continue
            s = metrics.latency_summary(values)
            out.update({f"{name}_mean": s["mean"], f"{name}_median": s["p50"],
                        f"{name}_p99": s["p99"]})
        if ttft_slo is not None and tpot_slo is not None:
            out["goodput_rps"] = metrics.goodput(self.ttft, self.tpot, ttft_slo=ttft_slo,
                                                 tpot_slo=tpot_slo, duration=span)
            out["slo_attainment"] = metrics.slo_attainment(self.ttft, self.tpot,
                                                           ttft_slo=ttft_slo, tpot_slo=tpot_slo)
        return out

    def workload(self) -> Workload:
        """The requests as the simulator's `Workload`: send times, prompt and output lengths."""
        sent = self.sent
        return Workload.build(sent - sent.min(), [r.prompt_tokens for r in self.records],
                              [r.max_tokens for r in self.records])


# ----------------------------------------------------------------------------- the client
async def _send(client, url: str, req: LoadRequest, rec: RequestRecord, t0: float) -> None:
    body = {"model": "scalesim-tiny", "prompt": req.prompt, "max_tokens": req.max_tokens,
            "stream": True}
    clock = time.perf_counter
    try:
        async with client.stream("POST", url + "/v1/completions", json=body) as resp:
            rec.status = resp.status_code
            if resp.status_code != 200:
                rec.error = (await resp.aread()).decode(errors="replace")[:300]
                return
            good, finish = True, None
            async for line in resp.aiter_lines():
                if not line:
                    continue
                now = clock() - t0
                if not line.startswith("data: ") or rec.done:
                    good = False
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    rec.done = True
                    continue
                try:
                    choice = json.loads(payload)["choices"][0]
                    ids = choice["token_ids"]
                    good &= len(ids) == 1 and finish is None
                    finish = choice["finish_reason"]
                    rec.tokens.extend(ids)
                    rec.token_times.extend([now] * len(ids))
                except (ValueError, KeyError, IndexError, TypeError):
                    good = False
            rec.well_formed = good and rec.done and finish == "length"
    except Exception as err:  # noqa: BLE001 - a failed request is a result, not a crash
        rec.error = f"{type(err).__name__}: {err}"


async def _run(url: str, requests: Sequence[LoadRequest], gaps_at: np.ndarray,
               time_limit: float, progress) -> tuple[list, float, bool]:
    import httpx

    n = len(requests)
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    timeout = httpx.Timeout(time_limit, connect=10.0)
    records: list[RequestRecord] = []
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        t0 = time.perf_counter()
        tasks = []
        for req, at in zip(requests, gaps_at):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.perf_counter() - t0 > time_limit:
                break
            rec = RequestRecord(time.perf_counter() - t0, len(req.prompt), req.max_tokens)
            records.append(rec)
            task = asyncio.ensure_future(_send(client, url, req, rec, t0))
            task.add_done_callback(lambda _: progress.update(1))
            tasks.append(task)
        remaining = time_limit - (time.perf_counter() - t0)
        done, pending = await asyncio.wait(tasks, timeout=max(remaining, 0.0))
        for task in pending:  # over the time limit: give up (the server frees their slots)
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for rec in records:
            if not rec.ok and not rec.error:
                rec.error = "not finished within the time limit"
        return records, time.perf_counter() - t0, bool(pending) or len(records) < n


def run_load_test(url: str, requests: Sequence[LoadRequest], rate: float, *, cv: float = 1.0,
                  seed=0, time_limit: float = 60.0, progress: bool = True,
                  desc: str | None = None) -> LoadTestResult:
    """Send `requests` to a completions server at `rate` per second and time every token.

    Args:
        url: the server's base URL, such as "http://127.0.0.1:8000".
        requests: what to send, in order (`make_requests`); at most 2,000.
        rate: mean send rate in requests/s (> 0); math.inf sends them all at once.
        cv: coefficient of variation of the gaps between sends: 1 Poisson, > 1 bursty (gamma).
        seed: seeds the send times.
        time_limit: seconds; requests not finished by then are cancelled and count as failed.
        progress: show a tqdm progress bar.
        desc: the progress bar's label.

    Returns:
        a `LoadTestResult`.
    """
    n = check_int("len(requests)", len(requests), minimum=1)
    if n > 2000:
        raise ValueError(f"requests has {n} entries; a load test here sends at most 2,000")
    check_positive("time_limit", time_limit)
    if rate == math.inf:
        at = np.zeros(n)
    else:
        check_positive("rate", rate)
        at = (poisson_arrivals(rate, n, seed) if cv == 1.0 else gamma_arrivals(rate, n, cv, seed))
        at = at - at[0]  # the first request goes at once
    from tqdm.auto import tqdm

    out: dict = {}

    def work():
        with tqdm(total=n, desc=desc or f"{rate:g} req/s", disable=not progress,
                  leave=False) as bar:
            try:
                out["value"] = asyncio.run(_run(url.rstrip("/"), list(requests), at,
                                                time_limit, bar))
            except BaseException as err:  # noqa: BLE001 - re-raised on the caller's thread
                out["error"] = err

    thread = threading.Thread(target=work, name="loadtest")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    records, wall, timed_out = out["value"]
    return LoadTestResult(records, float(rate), float(cv), wall, timed_out)
