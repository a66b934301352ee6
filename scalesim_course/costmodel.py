"""Cost models: how long serving a request, a batch or an engine step takes.

Two interfaces, called by `scalesim_course.sim`:

* request level: ``batch_timing(prompt_tokens, output_tokens) -> (first_token_offset, busy)``,
  seconds from a batch's start to its first token and to its end;
* iteration level: ``step_time(prefill_tokens, decode_seqs, context_tokens) -> seconds`` for one
  engine step that prefills that many prompt tokens and decodes one token for each of
  `decode_seqs` sequences whose KV caches hold `context_tokens` tokens in all.

(a) sampled service times, for checks against queueing theory; (b) a roofline model of LLM
inference from a model's shape and a GPU's specs; (c) a linear model fitted from measurements.

The roofline (Williams, Waterman and Patterson, "Roofline: an insightful visual performance
model for multicore architectures", CACM 52(4), 2009): one pass of the model over a set of
tokens takes at least its arithmetic at the attainable FLOP rate, and at least its memory
traffic at the attainable bandwidth; the larger of the two wins:

    seconds = max(FLOPs / (peak_flops * mfu), bytes / (mem_bandwidth * mbu)) + step_overhead_s

* FLOPs: 2 * n_params per token for the matrix multiplies (Kaplan et al., "Scaling Laws for
  Neural Language Models", arXiv:2001.08361, section 2.1: one multiply-add per weight per
  token), plus attention: Q.K^T and softmax.V each cost 2 * n_heads * head_dim FLOPs per
  (query token, cached token) pair in every layer, so 4 * n_layers * n_heads * head_dim per pair.
* bytes: every weight is read once per pass, however many tokens share it, plus the KV cache
  of every context token (read in decode, written in prefill).

Decode reads all the weights to produce one token per sequence, so at small batch it is
memory-bound; batching more sequences into one step shares that read until the arithmetic
catches up (the ridge point). Prefill processes many tokens per weight read and is
compute-bound for all but very short prompts.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, Optional, Protocol, Sequence

import numpy as np

from ._checks import check_in_range, check_int, check_non_negative, check_positive, rng_from


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


GiB = 2**30  # memory capacities on datasheets ("80GB" of HBM) are binary: 80 GiB


# ----------------------------------------------------------------------------- (b) roofline
@dataclass(frozen=True)
class ModelSpec:
    """The shape of a decoder-only transformer, as much of it as inference cost needs.

    Args:
        name: catalogue key, e.g. "llama-2-7b".
        n_params: number of weights, embeddings included.
        n_layers, n_heads, n_kv_heads, head_dim, d_model: from the model's config.json
            (num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim or
            hidden_size / num_attention_heads, hidden_size). n_kv_heads < n_heads is
            grouped-query attention (GQA): fewer K/V heads, a smaller KV cache.
        vocab_size: for reference; not used in the cost.
        bytes_per_param: bytes per weight: 2 for FP16/BF16, 1 for INT8/FP8, 0.5 for 4-bit.
        kv_bytes_per_value: bytes per cached K or V number; None means bytes_per_param.
        source: where the numbers come from.
    """

    name: str
    n_params: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    vocab_size: Optional[int] = None
    bytes_per_param: float = 2.0
    kv_bytes_per_value: Optional[float] = None
    source: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        for field in ("n_params", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_model"):
            check_int(field, getattr(self, field), minimum=1)
        if self.vocab_size is not None:
            check_int("vocab_size", self.vocab_size, minimum=1)
        check_positive("bytes_per_param", self.bytes_per_param)
        if self.kv_bytes_per_value is not None:
            check_positive("kv_bytes_per_value", self.kv_bytes_per_value)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of "
                             f"n_kv_heads={self.n_kv_heads}")

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes per token: K and V, in every layer, for every KV head."""
        per_value = (self.bytes_per_param if self.kv_bytes_per_value is None
                     else self.kv_bytes_per_value)
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * per_value

    @property
    def weight_bytes(self) -> float:
        """Bytes of all the weights: n_params * bytes_per_param."""
        return self.n_params * self.bytes_per_param


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator's datasheet figures.

    Args:
        name: catalogue key, e.g. "a100-80gb-sxm".
        peak_flops: DENSE FP16/BF16 tensor-core FLOP/s. NVIDIA's headline tensor figures are
            often "with sparsity" (2:4 structured-sparse weights), twice the dense figure;
            ordinary dense LLM weights get the dense one.
        mem_bandwidth: device-memory bandwidth, bytes/s (decimal: 2,039 GB/s = 2.039e12).
        mem_bytes: device memory, bytes.
        source: where the numbers come from.
    """

    name: str
    peak_flops: float
    mem_bandwidth: float
    mem_bytes: float
    source: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        for field in ("peak_flops", "mem_bandwidth", "mem_bytes"):
            check_positive(field, getattr(self, field))

    @property
    def ridge_point(self) -> float:
        """FLOPs per byte at which the two roofs meet: peak_flops / mem_bandwidth."""
        return self.peak_flops / self.mem_bandwidth


# ----------------------------------------------------------------------------- (b) catalogue
# Shapes from each model's config.json on the Hugging Face Hub; n_params counted from those
# shapes (embeddings and untied LM head included; Qwen2's q/k/v biases included).
_HF = "https://huggingface.co/{}/blob/main/config.json"
MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec("llama-2-7b", n_params=6_738_415_616, n_layers=32, n_heads=32, n_kv_heads=32,
              head_dim=128, d_model=4096, vocab_size=32_000,
              source=_HF.format("meta-llama/Llama-2-7b-hf")),
    ModelSpec("llama-3-8b", n_params=8_030_261_248, n_layers=32, n_heads=32, n_kv_heads=8,
              head_dim=128, d_model=4096, vocab_size=128_256,
              source=_HF.format("meta-llama/Meta-Llama-3-8B")),
    ModelSpec("llama-2-70b", n_params=68_976_648_192, n_layers=80, n_heads=64, n_kv_heads=8,
              head_dim=128, d_model=8192, vocab_size=32_000,
              source=_HF.format("meta-llama/Llama-2-70b-hf")),
    ModelSpec("mistral-7b", n_params=7_241_732_096, n_layers=32, n_heads=32, n_kv_heads=8,
              head_dim=128, d_model=4096, vocab_size=32_000,
              source=_HF.format("mistralai/Mistral-7B-v0.1")),
    ModelSpec("qwen2-0.5b", n_params=494_032_768, n_layers=24, n_heads=14, n_kv_heads=2,
              head_dim=64, d_model=896, vocab_size=151_936,
              source=_HF.format("Qwen/Qwen2-0.5B")),
)}

# peak_flops is the DENSE FP16/BF16 tensor-core rate; the sparse headline is quoted beside it.
GPUS: dict[str, GpuSpec] = {g.name: g for g in (
    GpuSpec("a100-80gb-sxm", peak_flops=312e12, mem_bandwidth=2.039e12, mem_bytes=80 * GiB,
            source="NVIDIA A100 datasheet: BF16/FP16 tensor 312 TFLOPS dense (624 with "
                   "sparsity), 80GB HBM2e at 2,039 GB/s (SXM). https://www.nvidia.com/content/"
                   "dam/en-zz/Solutions/Data-Center/a100/pdf/"
                   "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"),
    GpuSpec("h100-80gb-sxm", peak_flops=989.5e12, mem_bandwidth=3.35e12, mem_bytes=80 * GiB,
            source="NVIDIA H100 datasheet: BF16/FP16 tensor 1,979 TFLOPS with sparsity, so "
                   "989.5 dense; 80GB HBM3 at 3.35 TB/s (SXM). "
                   "https://www.nvidia.com/en-us/data-center/h100/"),
    GpuSpec("l4", peak_flops=121e12, mem_bandwidth=300e9, mem_bytes=24 * GiB,
            source="NVIDIA L4 datasheet: FP16/BF16 tensor 242 TFLOPS with sparsity, so 121 "
                   "dense; 24GB GDDR6 at 300 GB/s. https://www.nvidia.com/en-us/data-center/l4/"),
    GpuSpec("t4", peak_flops=65e12, mem_bandwidth=320e9, mem_bytes=16 * GiB,
            source="NVIDIA T4 datasheet: mixed-precision (FP16/FP32) tensor 65 TFLOPS (Turing "
                   "has no sparsity mode, so dense); 16GB GDDR6 at 320 GB/s. "
                   "https://www.nvidia.com/en-us/data-center/tesla-t4/"),
    GpuSpec("jetson-agx-orin-64gb", peak_flops=42.5e12, mem_bandwidth=204.8e9,
            mem_bytes=64 * GiB,
            source="NVIDIA Jetson AGX Orin Series Technical Brief: GPU 170 INT8 TOPS with "
                   "sparsity (the 275 TOPS headline adds the DLAs), so 85 dense INT8 and 42.5 "
                   "dense FP16 (Ampere tensor FP16 = INT8 / 2; also 64 tensor cores x 512 "
                   "FLOP/clk x 1.3 GHz, the A100's per-core rate), in the MAXN power mode; "
                   "64GB 256-bit LPDDR5 at 204.8 GB/s, shared with "
                   "the CPU. https://www.nvidia.com/en-us/autonomous-machines/embedded-systems/"
                   "jetson-orin/"),
)}


def _lookup(kind: str, catalogue: dict, spec_type: type, name):
    """catalogue[name.lower()], or `name` itself if it is already a spec_type."""
    if isinstance(name, spec_type):
        return name
    key = name.lower() if isinstance(name, str) else name
    if key not in catalogue:
        raise ValueError(f"unknown {kind} {name!r}; valid names: {', '.join(catalogue)}")
    return catalogue[key]


def get_model(name) -> ModelSpec:
    """The catalogue entry for `name` (case-insensitive); a ModelSpec is passed through."""
    return _lookup("model", MODELS, ModelSpec, name)


def get_gpu(name) -> GpuSpec:
    """The catalogue entry for `name` (case-insensitive); a GpuSpec is passed through."""
    return _lookup("gpu", GPUS, GpuSpec, name)


# ----------------------------------------------------------------------------- helpers
def _fraction(name: str, value) -> float:
    """A number in (0, 1]."""
    check_positive(name, value)
    return check_in_range(name, value, 0.0, 1.0)


def _static_batch(prompt_tokens: Sequence[int], output_tokens: Sequence[int]
                  ) -> tuple[int, int, int]:
    """(batch size, longest prompt, longest output) of a static batch, after checking it."""
    b = len(prompt_tokens)
    if b == 0 or len(output_tokens) != b:
        raise ValueError(f"prompt_tokens and output_tokens must be non-empty and of equal "
                         f"length, got {b} and {len(output_tokens)}")
    if min(prompt_tokens) < 1:
        raise ValueError(f"prompt_tokens must all be >= 1, got {min(prompt_tokens)!r}")
    if min(output_tokens) < 1:
        raise ValueError(f"output_tokens must all be >= 1, got {min(output_tokens)!r}")
    return b, max(prompt_tokens), max(output_tokens)


def _negative_counts(prefill_tokens, decode_seqs, context_tokens) -> ValueError:
    """The error to raise for a negative step argument, naming the first one."""
    for name, value in (("prefill_tokens", prefill_tokens), ("decode_seqs", decode_seqs),
                        ("context_tokens", context_tokens)):
        if value < 0:
            return ValueError(f"{name} must be >= 0, got {value!r}")
    return ValueError("token counts must be >= 0")


def _sum_of_max(a1: float, b1: float, a2: float, b2: float, n: int) -> float:
    """Sum over k = 1..n of max(a1 + b1 k, a2 + b2 k), in constant time.

    Two lines cross at most once, so the sum splits into two arithmetic series.
    """
    def series(a, b, lo, hi):  # sum of a + b k for k = lo..hi
        count = hi - lo + 1
        return a * count + b * (lo + hi) * count / 2 if count > 0 else 0.0

    if b1 == b2:
        return series(max(a1, a2), b1, 1, n)
    if b1 < b2:  # make line 1 the steeper one: it is the max for k past the crossing
        a1, b1, a2, b2 = a2, b2, a1, b1
    cross = (a2 - a1) / (b1 - b2)
    m = min(n, max(0, math.floor(cross)))  # line 2 is the max for k <= m
    return series(a2, b2, 1, m) + series(a1, b1, m + 1, n)


# ----------------------------------------------------------------------------- (b) roofline
class RooflineCost:
    """Engine-step and static-batch times of `model` on `gpu` by the roofline.

    Implements both interfaces the simulator calls: ``step_time`` (iteration mode) and
    ``batch_timing`` (request mode).

    Args:
        model: a ModelSpec or a name in MODELS.
        gpu: a GpuSpec or a name in GPUS.
        n_gpus: tensor-parallel GPUs: FLOP/s, bandwidth and memory all scale by n_gpus and
            the communication between them is ignored, so this is an optimistic bound.
        mfu: model FLOPs utilisation, the fraction of peak_flops attained, in (0, 1].
        mbu: model bandwidth utilisation, the fraction of mem_bandwidth attained, in (0, 1]
            (term from Databricks/MosaicML, "LLM Inference Performance Engineering: Best
            Practices", 2023).
        step_overhead_s: fixed seconds added to every step (scheduling, kernel launches,
            sampling); 0 is the pure roofline.

    The default efficiencies are knobs, not measurements of any system: mfu=0.5 sits well
    below the 76% MFU that Pope et al. reached for large-batch prefill after heavy tuning
    ("Efficiently Scaling Transformer Inference", MLSys 2023, arXiv:2211.05102); mbu=0.7
    allows for decode kernels not streaming at the datasheet bandwidth. Calibrate against a
    measurement, or use mfu=mbu=1 for the ideal bound.
    """

    def __init__(self, model, gpu, *, n_gpus: int = 1, mfu: float = 0.5, mbu: float = 0.7,
                 step_overhead_s: float = 0.0):
        self.model = get_model(model)
        self.gpu = get_gpu(gpu)
        self.n_gpus = check_int("n_gpus", n_gpus, minimum=1)
        self.mfu = _fraction("mfu", mfu)
        self.mbu = _fraction("mbu", mbu)
        self.step_overhead_s = check_non_negative("step_overhead_s", step_overhead_s)
        m = self.model
        self.flop_rate = self.gpu.peak_flops * self.n_gpus * self.mfu       # FLOP/s attained
        self.byte_rate = self.gpu.mem_bandwidth * self.n_gpus * self.mbu    # bytes/s attained
        # Seconds per unit of work, precomputed so that step_time is a few multiplications.
        self._s_token = 2.0 * m.n_params / self.flop_rate                    # matmuls, a token
        self._s_pair = 4.0 * m.n_layers * m.n_heads * m.head_dim / self.flop_rate  # attention
        self._s_weights = m.weight_bytes / self.byte_rate                    # all weights once
        self._s_kv = m.kv_bytes_per_token / self.byte_rate                   # a cached token

    def __repr__(self) -> str:
        return (f"RooflineCost({self.model.name!r}, {self.gpu.name!r}, n_gpus={self.n_gpus}, "
                f"mfu={self.mfu}, mbu={self.mbu}, step_overhead_s={self.step_overhead_s})")

    def _pass_time(self, tokens: float, pairs: float, kv_tokens: float) -> float:
        """One pass over the weights for `tokens` tokens, `pairs` attention (query, key)
        pairs and `kv_tokens` cached tokens read or written."""
        compute = self._s_token * tokens + self._s_pair * pairs
        memory = self._s_weights + self._s_kv * kv_tokens
        return max(compute, memory) + self.step_overhead_s

    def step_time(self, prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float:
        """Seconds for one engine step, prefill and decode together in one pass.

        Same sum as `_pass_time`, written out because the simulator calls it per step.
        Approximation: the step's prefill tokens attend as one causal sequence (half of them
        each, on average): exact for one whole prompt, too high when several prompts share
        the step, too low for a later chunk of a long prompt (earlier chunks are not counted).
        Decode attention is exact: one query against each sequence's cache.
        """
        if prefill_tokens < 0 or decode_seqs < 0 or context_tokens < 0:
            raise _negative_counts(prefill_tokens, decode_seqs, context_tokens)
        compute = (self._s_token * (prefill_tokens + decode_seqs)
                   + self._s_pair * (0.5 * prefill_tokens * prefill_tokens + context_tokens))
        memory = self._s_weights + self._s_kv * (prefill_tokens + context_tokens)
        return (compute if compute > memory else memory) + self.step_overhead_s

    def prefill_time(self, prompt_tokens: Sequence[int]) -> float:
        """Seconds for one step that prefills these prompts together, each attending only to
        itself.

        Args:
            prompt_tokens: each prompt's length (>= 1).
        """
        if len(prompt_tokens) == 0 or min(prompt_tokens) < 1:
            raise ValueError(f"prompt_tokens must be non-empty, all >= 1, got {prompt_tokens!r}")
        total = sum(prompt_tokens)
        return self._pass_time(total, 0.5 * sum(p * p for p in prompt_tokens), total)

    def batch_timing(self, prompt_tokens: Sequence[int], output_tokens: Sequence[int]
                     ) -> tuple[float, float]:
        """(seconds to the first token, seconds busy) for one static batch.

        All b prompts are padded to the longest, P, and prefilled in one step, which yields
        every first token. Then max(output) - 1 decode steps run with all b sequences (the
        finished ones keep their slot: that is static batching's waste); in step k each cache
        holds P + k tokens. Equals prefill_time([P] * b) plus those step_time calls, summed
        in closed form.
        """
        b, p, longest = _static_batch(prompt_tokens, output_tokens)
        first = self._pass_time(b * p, 0.5 * b * p * p, b * p)
        # decode step k: compute = b*s_token + s_pair*b*(p+k); memory = s_weights + s_kv*b*(p+k)
        steps = longest - 1
        decode = _sum_of_max(b * self._s_token + self._s_pair * b * p, self._s_pair * b,
                             self._s_weights + self._s_kv * b * p, self._s_kv * b, steps)
        return first, first + decode + steps * self.step_overhead_s

    # --- memory
    def max_kv_tokens(self, utilization: float = 0.9) -> int:
        """KV-cache tokens that fit beside the weights (0 if the weights alone do not fit).

        As vLLM's gpu_memory_utilization (default 0.9): a fraction of the memory is usable,
        the weights come out of it and the rest holds the KV cache. Activations are ignored.

        Args:
            utilization: fraction of the GPUs' memory the server may use, in (0, 1].
        """
        usable = self.gpu.mem_bytes * self.n_gpus * _fraction("utilization", utilization)
        return max(0, math.floor((usable - self.model.weight_bytes)
                                 / self.model.kv_bytes_per_token))

    def memory_ok(self, batch: int, context_per_seq: int, utilization: float = 0.9) -> bool:
        """Whether `batch` sequences of `context_per_seq` tokens each fit in the KV cache."""
        check_int("batch", batch, minimum=1)
        check_int("context_per_seq", context_per_seq, minimum=0)
        return batch * context_per_seq <= self.max_kv_tokens(utilization)

    # --- why batching helps
    @property
    def ridge_point(self) -> float:
        """FLOPs per byte where a pass turns compute-bound: attained FLOP/s / attained bytes/s
        (the GPU's own ridge_point when mfu == mbu)."""
        return self.flop_rate / self.byte_rate

    def decode_intensity(self, batch: int, context_per_seq: int = 0) -> float:
        """Arithmetic intensity (FLOPs per byte moved) of a decode step of `batch` sequences.

        Below `ridge_point` the step is memory-bound: adding sequences is nearly free.
        """
        check_int("batch", batch, minimum=1)
        check_int("context_per_seq", context_per_seq, minimum=0)
        m, context = self.model, batch * context_per_seq
        flops = 2.0 * m.n_params * batch + 4.0 * m.n_layers * m.n_heads * m.head_dim * context
        return flops / (m.weight_bytes + m.kv_bytes_per_token * context)

    def ridge_batch(self, context_per_seq: int = 0) -> float:
        """The decode batch size at which compute time catches up with memory time.

        math.inf if it never does: with long contexts, each sequence's KV-cache reads can cost
        more time than its arithmetic, so decode stays memory-bound at any batch size.
        """
        check_int("context_per_seq", context_per_seq, minimum=0)
        per_seq = self._s_token + (self._s_pair - self._s_kv) * context_per_seq
        return self._s_weights / per_seq if per_seq > 0 else math.inf

    def decode_throughput(self, batch_sizes, context_per_seq: int = 0) -> np.ndarray:
        """Generated tokens per second of decode-only steps at each batch size.

        Args:
            batch_sizes: integers >= 1.
            context_per_seq: tokens in each sequence's KV cache.

        Returns:
            array like batch_sizes: batch / step_time(0, batch, batch * context_per_seq).
        """
        check_int("context_per_seq", context_per_seq, minimum=0)
        sizes = np.asarray(batch_sizes)
        if sizes.size == 0 or not np.issubdtype(sizes.dtype, np.integer) or sizes.min() < 1:
            raise ValueError(f"batch_sizes must be integers >= 1, got {batch_sizes!r}")
        return np.array([b / self.step_time(0, b, b * context_per_seq)
                         for b in sizes.ravel().tolist()]).reshape(sizes.shape)


# ----------------------------------------------------------------------------- (c) fitted
class StepRecord(NamedTuple):
    """One measured engine step, as `LinearStepCost.fit` takes it."""

    prefill_tokens: int
    decode_seqs: int
    context_tokens: int
    seconds: float


_FIELDS = StepRecord._fields


class LinearStepCost:
    """step_time = a + b_prefill * prefill_tokens + c_decode * decode_seqs
    + d_context * context_tokens.

    A calibrated model: fit the four coefficients to measured steps with `fit`. Linear is
    what a roofline looks like on one side of its ridge (memory-bound decode: a + d * context;
    compute-bound prefill: b * tokens); fit it over the range you will simulate.

    Args:
        a: seconds per step, whatever it does.
        b_prefill: seconds per prompt token prefilled.
        c_decode: seconds per sequence decoded.
        d_context: seconds per token held in the decoding sequences' KV caches.
    """

    def __init__(self, a: float, b_prefill: float, c_decode: float, d_context: float):
        self.a = check_non_negative("a", a)
        self.b_prefill = check_non_negative("b_prefill", b_prefill)
        self.c_decode = check_non_negative("c_decode", c_decode)
        self.d_context = check_non_negative("d_context", d_context)
        if a == b_prefill == c_decode == d_context == 0:
            raise ValueError("at least one coefficient must be > 0, or every step takes 0 s")

    def __repr__(self) -> str:
        return (f"LinearStepCost(a={self.a:.4g}, b_prefill={self.b_prefill:.4g}, "
                f"c_decode={self.c_decode:.4g}, d_context={self.d_context:.4g})")

    def step_time(self, prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float:
        """Seconds for one engine step (see the class formula)."""
        if prefill_tokens < 0 or decode_seqs < 0 or context_tokens < 0:
            raise _negative_counts(prefill_tokens, decode_seqs, context_tokens)
        return (self.a + self.b_prefill * prefill_tokens + self.c_decode * decode_seqs
                + self.d_context * context_tokens)

    def batch_timing(self, prompt_tokens: Sequence[int], output_tokens: Sequence[int]
                     ) -> tuple[float, float]:
        """(seconds to the first token, seconds busy) for one static batch, as
        `RooflineCost.batch_timing`: step_time(b * P, 0, 0), then max(output) - 1 steps
        step_time(0, b, b * (P + k)) for k = 1, 2, ..., summed in closed form."""
        b, p, longest = _static_batch(prompt_tokens, output_tokens)
        first = self.step_time(b * p, 0, 0)
        n = longest - 1
        decode = (n * (self.a + self.c_decode * b + self.d_context * b * p)
                  + self.d_context * b * n * (n + 1) / 2)
        return first, first + decode

    @classmethod
    def fit(cls, records) -> "LinearStepCost":
        """Least-squares coefficients, all >= 0, from measured steps.

        Args:
            records: iterable of StepRecord, or of mappings or objects with the fields
                prefill_tokens, decode_seqs, context_tokens (>= 0) and seconds (> 0). Use many
                more than four, spread over all three inputs.

        Returns:
            the fitted LinearStepCost.
        """
        rows = [_record_row(i, r) for i, r in enumerate(records)]
        if not rows:
            raise ValueError("records is empty: fit needs measured steps")
        data = np.array(rows, dtype=float)
        x = np.column_stack([np.ones(len(data)), data[:, :3]])
        return cls(*_nnls(x, data[:, 3]))


def _record_row(i: int, record) -> list[float]:
    """The four fields of records[i], checked."""
    row = []
    for name in _FIELDS:
        try:
            value = record[name] if isinstance(record, Mapping) else getattr(record, name)
        except (KeyError, AttributeError):
            raise ValueError(f"records[{i}] has no field {name!r}; each record needs "
                             f"{', '.join(_FIELDS)}") from None
        check = check_positive if name == "seconds" else check_non_negative
        row.append(check(f"records[{i}].{name}", value))
    return row


def _nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares for a few columns, exactly, by brute force.

    The constrained optimum is the ordinary least-squares fit on its own set of non-zero
    coefficients, so the best of the ordinary fits on every subset of columns whose
    coefficients all come out >= 0 is the optimum (2^k fits; k = 4 here).
    """
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    xs = x / scale  # columns of similar size, for a well-conditioned solve
    k = x.shape[1]
    best, best_sse = np.zeros(k), math.inf
    for mask in range(1, 2**k):
        cols = [j for j in range(k) if mask >> j & 1]
        coef = np.linalg.lstsq(xs[:, cols], y, rcond=None)[0]
        if (coef < 0).any():
            continue
        sse = float(np.sum((xs[:, cols] @ coef - y) ** 2))
        if sse < best_sse:
            best_sse, best = sse, np.zeros(k)
            best[cols] = coef
    return best / scale


# ----------------------------------------------------------------------------- wrapping costs
# Costs built on another cost's step_time (moved here from `batching`, which re-exports them).
class _WrapsStepCost:
    """A cost built on another cost's ``step_time``."""

    def __init__(self, step_cost):
        if not hasattr(step_cost, "step_time"):
            raise TypeError(f"step_cost needs a step_time(prefill_tokens, decode_seqs, "
                            f"context_tokens) method, got {step_cost!r}")
        self.step_cost = step_cost

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.step_cost!r})"


class StaticBatchCost(_WrapsStepCost):
    """Request-level timing of a static batch from an engine-step cost, run the simple way.

    Each prompt is prefilled in its own model call (no padding), then all b sequences decode
    together until the longest is done; a finished sequence keeps its slot and rides along
    (computed, output discarded), its cache no longer growing. This is how
    `tinymodel.generate_static` runs a group, so with a `LinearStepCost` fitted to its step
    records the simulator can predict it. (`LinearStepCost.batch_timing` instead prefills the
    batch padded to its longest prompt in one pass.)

    Decode step j (j = 1 .. longest - 1) sees context sum_i (P_i + min(j - 1, O_i - 1)) tokens.
    The first-token offset returned is when the last prompt's prefill ends.

    Args:
        step_cost: an object with ``step_time(prefill_tokens, decode_seqs, context_tokens)``.
    """

    def request_offsets(self, prompt_tokens, output_tokens) -> tuple[np.ndarray, np.ndarray]:
        """Per request, seconds from the batch's start to its first and to its last token."""
        prompts = [int(p) for p in prompt_tokens]
        outputs = [int(o) for o in output_tokens]
        if not prompts or len(prompts) != len(outputs):
            raise ValueError(f"prompt_tokens and output_tokens must be non-empty and of equal "
                             f"length, got {len(prompts)} and {len(outputs)}")
        step = self.step_cost.step_time
        firsts = np.cumsum([step(p, 0, 0) for p in prompts])  # one prefill call after another
        b, context = len(prompts), sum(prompts)
        ends = [float(firsts[-1])]  # ends[j]: when decode step j is over (step 0: prefills)
        for j in range(1, max(outputs)):
            ends.append(ends[-1] + step(0, b, context))
            context += sum(1 for o in outputs if o - 1 >= j)  # those still growing
        outs = np.asarray(outputs)
        dones = np.where(outs == 1, firsts, np.asarray(ends)[outs - 1])
        return firsts, dones

    def batch_timing(self, prompt_tokens, output_tokens) -> tuple[float, float]:
        """(seconds to the last first token, seconds busy) for one static batch."""
        firsts, dones = self.request_offsets(prompt_tokens, output_tokens)
        return float(firsts[-1]), float(max(dones.max(), firsts[-1]))


class SplitStepCost(_WrapsStepCost):
    """An engine-step cost for a server that runs a step's prefill and its decode as two model
    calls, as `tinymodel.generate_continuous` does (a prefill call, then a decode call):

        step_time(p, d, c) = cost(p, 0, 0) [if p > 0] + cost(0, d, c) [if d > 0].

    With a `LinearStepCost` fitted to measured calls, each call then pays the fixed cost `a`,
    as it does in the measured run. (Prompts that join in the same step still share one prefill
    call here, where the tiny model makes one call per prompt.)

    Args:
        step_cost: an object with ``step_time(prefill_tokens, decode_seqs, context_tokens)``.
    """

    def step_time(self, prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float:
        """Seconds for a prefill call (if any prompt tokens) plus a decode call (if any)."""
        step = self.step_cost.step_time
        return ((step(prefill_tokens, 0, 0) if prefill_tokens else 0.0)
                + (step(0, decode_seqs, context_tokens) if decode_seqs else 0.0))
