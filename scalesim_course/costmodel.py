"""Cost models: how long serving a request, a batch or an engine step takes.

Two interfaces, called by `scalesim_course.sim`:

* request level: ``batch_timing(prompt_tokens, output_tokens) -> (first_token_offset, busy)``,
  seconds from a batch's start to its first token and to its end;
* iteration level: ``step_time(prefill_tokens, decode_seqs, context_tokens) -> seconds`` for one
  engine step that prefills that many prompt tokens and decodes one token for each of
  `decode_seqs` sequences whose KV caches hold `context_tokens` tokens in all.

(a) sampled service times, for checks against queueing theory; (b) a roofline model of LLM
inference from a model's shape and a GPU's specs; (c) a linear model fitted from measurements.
"""
from __future__ import annotations

import math
from typing import Protocol, Sequence

import numpy as np

from ._checks import check_int, check_non_negative, check_positive, rng_from


class RequestCost(Protocol):
    def batch_timing(self, prompt_tokens: Sequence[int], output_tokens: Sequence[int]
                     ) -> tuple[float, float]: ...


class StepCost(Protocol):
    def step_time(self, prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float: ...


# ----------------------------------------------------------------------------- (a) sampled
class ExponentialService:
    """Exponential service times with the given mean (the M in M/M/c); scv = 1."""

    scv = 1.0

    def __init__(self, mean: float):
        self.mean = check_positive("mean", mean)

    def sample(self, n: int, seed=0) -> np.ndarray:
        """n service times."""
        return rng_from(seed).exponential(self.mean, check_int("n", n, minimum=1))


class DeterministicService:
    """Every request takes exactly `time` seconds (the D in M/D/c); scv = 0."""

    scv = 0.0

    def __init__(self, time: float):
        self.mean = check_positive("time", time)

    def sample(self, n: int, seed=0) -> np.ndarray:
        """n service times (all equal; seed unused, kept for a common signature)."""
        return np.full(check_int("n", n, minimum=1), self.mean)


class LognormalService:
    """Lognormal service times with a given mean and squared coefficient of variation."""

    def __init__(self, mean: float, scv: float):
        self.mean = check_positive("mean", mean)
        self.scv = check_positive("scv", scv)

    def sample(self, n: int, seed=0) -> np.ndarray:
        """n service times: sigma^2 = ln(1 + scv), mu = ln(mean) - sigma^2 / 2."""
        s2 = math.log1p(self.scv)
        return rng_from(seed).lognormal(math.log(self.mean) - s2 / 2, math.sqrt(s2),
                                        check_int("n", n, minimum=1))


def service_distribution(mean: float, scv: float):
    """Exponential if scv == 1, deterministic if scv == 0, lognormal otherwise."""
    check_non_negative("scv", scv)
    if scv == 1:
        return ExponentialService(mean)
    if scv == 0:
        return DeterministicService(mean)
    return LognormalService(mean, scv)


class FixedBatchCost:
    """A batch costs a fixed setup time plus a time per request in it (first token at the end).

    The simplest model of why batching pays: the setup (say, reading the weights once) is
    shared by every request in the batch.
    """

    def __init__(self, setup: float, per_request: float):
        self.setup = check_non_negative("setup", setup)
        self.per_request = check_non_negative("per_request", per_request)
        if setup + per_request <= 0:
            raise ValueError("setup + per_request must be > 0")

    def batch_timing(self, prompt_tokens, output_tokens) -> tuple[float, float]:
        busy = self.setup + self.per_request * len(prompt_tokens)
        return busy, busy
