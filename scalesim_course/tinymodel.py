"""A tiny real transformer on the CPU, to measure static against continuous batching for real.

`TinyTransformer` is a small decoder-only model in the LLaMA style: token embedding, RMSNorm,
causal self-attention with rotary positions (RoPE) and grouped-query attention (GQA), and a
SwiGLU MLP. Its weights are random but deterministic from a seed: nothing is downloaded or
trained. What it generates is gibberish, but every step costs what a real model's step costs,
for its size, which is all that serving cares about.

Generation keeps a KV cache with one *slot* per running sequence. A slot holds the keys and
values of one sequence's tokens so far, and every slot has its own length, so sequences with
different prompt lengths share a decode step: the attention of each sequence is masked to its
own length.

Two schedulers drive the same model and cache:

* `generate_static`: take requests in groups of `batch_size`; the group runs until its longest
  request is done, finished sequences riding along (computed, output thrown away).
* `generate_continuous`: iteration-level batching, as Orca and vLLM do: the moment a sequence
  finishes, its slot is refilled with the next waiting request.

Greedy decoding picks the largest logit. Batched arithmetic rounds differently from unbatched
arithmetic, so a near-tie between the two largest logits could be decided differently in a
batch than alone. The model therefore runs in float64 by default: rounding differences are then
about 1e-15, while the closest call in a run (`GenerationResult.min_margin`) is typically
1e-5 or wider, ten orders of magnitude more, so batching cannot change a token (the tests
check both numbers). float32 rounding is about 1e-6:
it usually agrees too on runs this small, but nothing guarantees it. Set
``TinyConfig(dtype=torch.float32)`` to compare speed and tokens.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_callable, check_int, rng_from
from .costmodel import StepRecord
from .metrics import latency_summary
from .workload import lognormal_lengths


# ----------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class TinyConfig:
    """The shape of a `TinyTransformer`.

    The defaults make about 0.3 M weights (2.3 MB in float64): on one CPU core a decode step
    for 8 sequences takes about 2 ms, mostly Python and PyTorch overhead per operation, the
    CPU counterpart of a GPU's fixed cost per step.

    Args:
        vocab_size: number of token ids, 0 .. vocab_size - 1.
        d_model: width of the residual stream.
        n_layers: number of transformer blocks.
        n_heads: query heads per layer; d_model / n_heads is the head dimension.
        n_kv_heads: key/value heads per layer (GQA when fewer than n_heads); None: n_heads.
        max_seq_len: most tokens one sequence may hold (prompt plus generated).
        seed: the weights are drawn from this seed.
        dtype: torch.float64 (default; batched and solo generation agree exactly, see the
            module docstring) or torch.float32.
    """

    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None
    max_seq_len: int = 256
    seed: int = 0
    dtype: torch.dtype = torch.float64

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("seed", self.seed, minimum=0)
        if self.n_kv_heads is None:  # frozen dataclass: set the default this way
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        check_int("n_kv_heads", self.n_kv_heads, minimum=1)
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model={self.d_model} must be n_heads={self.n_heads} times an "
                             f"even head dimension (rotary positions rotate pairs)")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of "
                             f"n_kv_heads={self.n_kv_heads}")
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {self.dtype}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_heads


class RMSNorm(nn.Module):
    """Scale each vector to unit root-mean-square, then by a learned gain (LLaMA's norm)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions: rotate each pair (x1[i], x2[i]) of x by its position's angle.

    Args:
        x: [batch, heads, tokens, head_dim].
        cos, sin: [batch, 1, tokens, head_dim / 2], from `TinyTransformer.rope`.
    """
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(nn.Module):
    """One transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        kv_width = cfg.n_kv_heads * cfg.head_dim
        self.attn_norm = RMSNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, cfg.d_model + 2 * kv_width, bias=False)  # Q, K, V
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.mlp_norm = RMSNorm(cfg.d_model)
        # the MLP is 4x wider; SwiGLU multiplies two projections, computed here as one
        self.gate_up = nn.Linear(cfg.d_model, 2 * 4 * cfg.d_model, bias=False)
        self.down = nn.Linear(4 * cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x, cos, sin, mask, store=None):
        """x: [batch, tokens, d_model]; mask: [batch or 1, 1, tokens, keys], True = may attend;
        store(k, v) -> (all keys, all values): the KV cache, or None for no cache."""
        b, t, _ = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).split(
            [self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim,
             self.n_kv_heads * self.head_dim], dim=-1)
        q = rotate(q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2), cos, sin)
        k = rotate(k.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2), cos, sin)
        v = v.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if store is not None:
            k, v = store(k, v)  # this sequence's earlier keys and values, plus the new ones
        group = self.n_heads // self.n_kv_heads  # GQA: each K/V head serves `group` query heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        attn = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        x = x + self.out(attn.transpose(1, 2).reshape(b, t, -1))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class TinyTransformer(nn.Module):
    """A small decoder-only transformer with deterministic random weights.

    Args:
        config: its shape; None: `TinyConfig()`.
    """

    def __init__(self, config: TinyConfig | None = None):
        super().__init__()
        self.config = cfg = config or TinyConfig()
        # torch's layers draw default weights from the global random state; fork it so
        # building a model leaves the caller's random numbers alone (ours come from the seed)
        with torch.random.fork_rng(devices=[]):
            self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
            self.norm = RMSNorm(cfg.d_model)
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        self.to(cfg.dtype).eval().requires_grad_(False)  # inference only: no autograd bookkeeping
        # rotary angles: frequency i turns by position * base^(-2i / head_dim)
        half = cfg.head_dim // 2
        self.register_buffer("inv_freq", 10_000.0 ** (-torch.arange(half, dtype=cfg.dtype) / half),
                             persistent=False)

    @torch.no_grad()
    def _init_weights(self) -> None:
        # A private generator: the same weights for the same seed, and the caller's global
        # torch random state is left alone.
        gen = torch.Generator().manual_seed(self.config.seed)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                continue  # norm gains stay 1
            std = 1.0 if name == "embed.weight" else p.shape[1] ** -0.5  # unit-scale activations
            p.copy_(torch.randn(p.shape, generator=gen) * std)

    def param_count(self) -> int:
        """Number of weights."""
        return sum(p.numel() for p in self.parameters())

    def kv_bytes_per_token(self, bytes_per_element: float | None = None) -> float:
        """KV-cache bytes per token: K and V, in every layer, for every KV head.

        2 * n_layers * n_kv_heads * head_dim * bytes_per_element, the formula of
        `costmodel.ModelSpec.kv_bytes_per_token`.

        Args:
            bytes_per_element: None: this model's dtype (8 for float64); 2 for FP16, ...
        """
        cfg = self.config
        if bytes_per_element is None:
            bytes_per_element = torch.empty(0, dtype=cfg.dtype).element_size()
        return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * bytes_per_element

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of the rotary angles: positions [batch, tokens] -> [batch, 1, tokens, half]."""
        angles = positions[:, None, :, None].to(self.config.dtype) * self.inv_freq
        return angles.cos(), angles.sin()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits for every position of whole sequences, without a cache (the reference).

        Args:
            tokens: [batch, tokens] ids, all sequences the same length.

        Returns:
            [batch, tokens, vocab_size] logits; position t predicts token t + 1.
        """
        t = tokens.shape[1]
        cos, sin = self.rope(torch.arange(t).expand(tokens.shape[0], t))
        causal = torch.ones(t, t, dtype=torch.bool).tril()[None, None]  # query i sees keys <= i
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, cos, sin, causal)
        return self.lm_head(self.norm(x))

    def extend(self, cache: "KVCache", slots: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Run new tokens through the model for some cache slots, appending their keys and values.

        A prefill is one slot with its whole prompt; a decode step is many slots with one token
        each. Each slot's tokens go after what that slot already holds.

        Args:
            cache: the `KVCache`.
            slots: [batch] slot indices.
            tokens: [batch, tokens] new token ids for those slots.

        Returns:
            [batch, tokens, vocab_size] logits.
        """
        t = tokens.shape[1]
        positions = cache.lengths[slots, None] + torch.arange(t)  # [batch, tokens]
        n_keys = int(positions.max()) + 1
        if n_keys > cache.capacity:
            raise ValueError(f"the cache holds {cache.capacity} tokens per slot; this step "
                             f"needs {n_keys}")
        # Sequences of different lengths share the step: each query sees only its own
        # sequence's keys up to its position; the rest of the padded key range is masked.
        mask = (torch.arange(n_keys) <= positions[..., None])[:, None]  # [batch, 1, tokens, keys]
        cos, sin = self.rope(positions)
        x = self.embed(tokens)
        for layer, block in enumerate(self.blocks):
            # the block hands its new keys and values to this layer's part of the cache
            # (layer=layer binds the current layer, not the loop variable's last value)
            x = block(x, cos, sin, mask,
                      lambda k, v, layer=layer: cache.store(layer, slots, positions, k, v, n_keys))
        cache.lengths[slots] += t
        return self.lm_head(self.norm(x))


class KVCache:
    """Keys and values of every layer for `n_slots` sequences, each up to `capacity` tokens.

    Args:
        config: the model's `TinyConfig`.
        n_slots: sequences held at once (the batch size).
        capacity: most tokens per sequence.
    """

    def __init__(self, config: TinyConfig, n_slots: int, capacity: int):
        shape = (n_slots, config.n_kv_heads, capacity, config.head_dim)
        self.k = [torch.zeros(shape, dtype=config.dtype) for _ in range(config.n_layers)]
        self.v = [torch.zeros(shape, dtype=config.dtype) for _ in range(config.n_layers)]
        self.lengths = torch.zeros(n_slots, dtype=torch.long)  # tokens each slot holds

    @property
    def capacity(self) -> int:
        """Most tokens one slot can hold."""
        return self.k[0].shape[2]

    @property
    def nbytes(self) -> int:
        """Bytes allocated for keys and values."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def store(self, layer, slots, positions, k, v, n_keys):
        """Write new keys and values [batch, kv_heads, tokens, head_dim] at `positions` of
        `slots` in `layer`; return those slots' first n_keys keys and values."""
        # slots[:, None] and positions index together, so the target is [batch, tokens, heads, dim]
        self.k[layer][slots[:, None], :, positions] = k.transpose(1, 2)
        self.v[layer][slots[:, None], :, positions] = v.transpose(1, 2)
        return self.k[layer][slots, :, :n_keys], self.v[layer][slots, :, :n_keys]


# ----------------------------------------------------------------------------- generation
@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with torch using n CPU threads, then restore the setting (None: as is)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(check_int("threads", n, minimum=1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class GenerationResult:
    """What one generation run produced and how long it took.

    Times are seconds since the run started (every request was present at time 0).

    Attributes:
        strategy: "static" or "continuous".
        max_batch: sequences decoded together at most.
        tokens: per request, the generated token ids.
        first_token_time: per request, when its first token was produced.
        completion_time: per request, when its last token was produced (its latency).
        wall_time: seconds the whole run took.
        steps: one `costmodel.StepRecord` per model call: a prefill has prefill_tokens > 0
            and decode_seqs = 0, a decode step the reverse. `LinearStepCost.fit` takes them.
        min_margin: the smallest gap between the two largest logits over all greedy choices:
            the closest call of the run.
    """

    strategy: str
    max_batch: int
    tokens: list[list[int]]
    first_token_time: np.ndarray
    completion_time: np.ndarray
    wall_time: float
    steps: list[StepRecord]
    min_margin: float

    @property
    def generated_tokens(self) -> int:
        """Tokens generated, all requests together."""
        return sum(len(t) for t in self.tokens)

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of wall time."""
        return self.generated_tokens / self.wall_time

    @property
    def decode_steps(self) -> int:
        """Number of decode steps (model calls that decoded one token for each of a batch)."""
        return sum(1 for s in self.steps if s.decode_seqs > 0)

    def summary(self) -> dict:
        """Throughput and latency (mean, p50, p99 of completion and first-token times), flat."""
        lat, ttft = latency_summary(self.completion_time), latency_summary(self.first_token_time)
        return {"strategy": self.strategy, "max_batch": self.max_batch,
                "tokens_per_s": self.tokens_per_s, "wall_s": self.wall_time,
                "decode_steps": self.decode_steps,
                "latency_mean_s": lat["mean"], "latency_p50_s": lat["p50"],
                "latency_p99_s": lat["p99"], "ttft_mean_s": ttft["mean"],
                "ttft_p50_s": ttft["p50"], "ttft_p99_s": ttft["p99"]}


class _Run:
    """The bookkeeping both schedulers share: the cache, outputs, clock and step log."""

    def __init__(self, model: TinyTransformer, prompts, max_new_tokens, n_slots: int):
        self.model, self.prompts, self.max_new = model, prompts, max_new_tokens
        capacity = max(len(p) + n for p, n in zip(prompts, max_new_tokens))
        self.cache = KVCache(model.config, n_slots, capacity)
        self.tokens: list[list[int]] = [[] for _ in prompts]
        self.first = np.full(len(prompts), np.nan)
        self.done = np.full(len(prompts), np.nan)
        self.steps: list[StepRecord] = []
        self.min_margin = math.inf
        self.t0 = time.perf_counter()

    def finished(self, req: int) -> bool:
        return len(self.tokens[req]) == self.max_new[req]

    def prefill(self, req: int, slot: int) -> bool:
        """Put request `req`'s prompt into `slot` and take its first token; True if it is done."""
        start = time.perf_counter()
        self.cache.lengths[slot] = 0  # the slot may hold a finished sequence: overwrite it
        logits = self.model.extend(self.cache, torch.tensor([slot]),
                                   torch.tensor([self.prompts[req]]))
        self._take([req], logits[:, -1])
        self._log(len(self.prompts[req]), 0, 0, start)
        self.first[req] = self.done[req]  # the prefill produced the first token
        return self.finished(req)

    def decode(self, slots: list[int], reqs: list[int]) -> None:
        """One decode step: one new token for request reqs[i] in slots[i], for every i.

        Finished requests in the batch (static batching) are computed but their token is
        dropped, and their length is rewound so their cache does not grow.
        """
        start = time.perf_counter()
        slots_t = torch.tensor(slots)
        context = int(self.cache.lengths[slots_t].sum())
        live = [i for i, r in enumerate(reqs) if not self.finished(r)]
        idle = torch.tensor([s for s, r in zip(slots, reqs) if self.finished(r)], dtype=torch.long)
        last = torch.tensor([[self.tokens[r][-1]] for r in reqs])
        logits = self.model.extend(self.cache, slots_t, last)[:, -1]
        self._take([reqs[i] for i in live], logits[live])
        self.cache.lengths[idle] -= 1
        self._log(0, len(slots), context, start)

    def _take(self, reqs: list[int], logits: torch.Tensor) -> None:
        """Greedy choice: append each request's largest-logit token; note the closest call."""
        top = logits.topk(2, dim=-1)
        margins = (top.values[:, 0] - top.values[:, 1]).tolist()
        now = time.perf_counter() - self.t0
        for req, token, margin in zip(reqs, top.indices[:, 0].tolist(), margins):
            self.tokens[req].append(token)
            self.done[req] = now
            self.min_margin = min(self.min_margin, margin)

    def _log(self, prefill_tokens: int, decode_seqs: int, context: int, start: float) -> None:
        self.steps.append(StepRecord(prefill_tokens, decode_seqs, context,
                                     time.perf_counter() - start))

    def result(self, strategy: str, max_batch: int) -> GenerationResult:
        return GenerationResult(strategy, max_batch, self.tokens, self.first, self.done,
                                time.perf_counter() - self.t0, self.steps, self.min_margin)


def generate_static(model: TinyTransformer, prompts: Sequence[Sequence[int]], max_new_tokens,
                    batch_size: int, *, threads: int | None = 1) -> GenerationResult:
    """Static batching: requests in order, in groups of `batch_size`, each group to the end.

    Each prompt of the group is prefilled, then the group decodes together until its longest
    request is done. A finished sequence keeps its slot and its share of every step (its
    output thrown away), as in a padded batch; the next group starts only when all are done.

    Args:
        model: the `TinyTransformer`.
        prompts: one list of token ids per request.
        max_new_tokens: tokens to generate for each request (a list), or one int for all.
        batch_size: requests per group, >= 1.
        threads: torch CPU threads during the run (restored after); None: leave as is.
            One by default: matrices this small gain little from a second thread, and when
            other programs keep the cores busy, threads waiting for each other can make a
            run many times slower. One thread gives steady timings, which a cost model fitted
            from them needs.

    Returns:
        a `GenerationResult`.
    """
    prompts, max_new = _check_requests(model, prompts, max_new_tokens)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    with torch.inference_mode(), torch_threads(threads):
        run = _Run(model, prompts, max_new, min(batch_size, len(prompts)))
        for start in range(0, len(prompts), batch_size):
            group = list(range(start, min(start + batch_size, len(prompts))))
            slots = list(range(len(group)))
            for slot, req in zip(slots, group):
                run.prefill(req, slot)
            while not all(run.finished(r) for r in group):
                run.decode(slots, group)
        return run.result("static", batch_size)


def generate_continuous(model: TinyTransformer, prompts: Sequence[Sequence[int]],
                        max_new_tokens, max_batch: int, *, threads: int | None = 1
                        ) -> GenerationResult:
    """Continuous (iteration-level) batching: refill a slot as soon as its sequence finishes.

    Before every decode step, each free slot takes the next waiting request and prefills it;
    the newcomer joins the running batch at that step. No slot idles while requests wait.

    Args:
        model: the `TinyTransformer`.
        prompts: one list of token ids per request.
        max_new_tokens: tokens to generate for each request (a list), or one int for all.
        max_batch: most sequences decoded together, >= 1.
        threads: torch CPU threads during the run; see `generate_static`.

    Returns:
        a `GenerationResult`.
    """
    prompts, max_new = _check_requests(model, prompts, max_new_tokens)
    max_batch = check_int("max_batch", max_batch, minimum=1)
    with torch.inference_mode(), torch_threads(threads):
        run = _Run(model, prompts, max_new, min(max_batch, len(prompts)))
        waiting = deque(range(len(prompts)))
        free = list(range(run.cache.lengths.numel()))[::-1]  # pop() hands out slot 0 first
        running: dict[int, int] = {}  # slot -> request
        while waiting or running:
            while free and waiting:  # admit: fill every free slot
                slot, req = free.pop(), waiting.popleft()
                if run.prefill(req, slot):
                    free.append(slot)  # a one-token request is done after its prefill
                else:
                    running[slot] = req
            if running:
                slots = sorted(running)
                run.decode(slots, [running[s] for s in slots])
                for slot in slots:
                    if run.finished(running[slot]):
                        del running[slot]
                        free.append(slot)
        return run.result("continuous", max_batch)


def generate_one(model: TinyTransformer, prompt: Sequence[int], max_new_tokens: int,
                 *, threads: int | None = 1) -> list[int]:
    """Greedy generation for one request alone (batch of 1): the reference for batched runs."""
    return generate_static(model, [prompt], [max_new_tokens], 1, threads=threads).tokens[0]


def same_tokens(a, b) -> bool:
    """True if two runs generated exactly the same tokens for every request.

    Args:
        a, b: `GenerationResult`s, or lists of per-request token lists.
    """
    a = a.tokens if isinstance(a, GenerationResult) else a
    b = b.tokens if isinstance(b, GenerationResult) else b
    return [list(t) for t in a] == [list(t) for t in b]


def _check_requests(model: TinyTransformer, prompts, max_new_tokens):
    """prompts as lists of ints and max_new_tokens as a list, checked against the model."""
    cfg = model.config
    if isinstance(prompts, (torch.Tensor, np.ndarray)):
        prompts = prompts.tolist()
    prompts = [list(p) for p in prompts]
    if not prompts:
        raise ValueError("prompts is empty: need at least one request")
    if isinstance(max_new_tokens, (int, np.integer)):
        max_new_tokens = [max_new_tokens] * len(prompts)
    max_new = [check_int(f"max_new_tokens[{i}]", n, minimum=1)
               for i, n in enumerate(max_new_tokens)]
    if len(max_new) != len(prompts):
        raise ValueError(f"max_new_tokens has {len(max_new)} entries for {len(prompts)} prompts")
    for i, (prompt, n) in enumerate(zip(prompts, max_new)):
        if not prompt:
            raise ValueError(f"prompts[{i}] is empty: each prompt needs at least one token")
        for j, token in enumerate(prompt):
            check_int(f"prompts[{i}][{j}]", token)
            if not 0 <= token < cfg.vocab_size:
                raise ValueError(f"prompts[{i}][{j}]={token} is outside the vocabulary "
                                 f"0..{cfg.vocab_size - 1}")
        if len(prompt) + n > cfg.max_seq_len:
            raise ValueError(f"prompts[{i}] has {len(prompt)} tokens + max_new_tokens[{i}]={n} "
                             f"= {len(prompt) + n} > max_seq_len={cfg.max_seq_len}")
    return [[int(t) for t in p] for p in prompts], max_new


# ----------------------------------------------------------------------------- demo
class DemoRequests(NamedTuple):
    """A closed batch of requests: prompts (token id lists) and tokens to generate for each."""

    prompts: list[list[int]]
    max_new_tokens: list[int]


def demo_requests(n: int = 32, seed=0, *, vocab_size: int = TinyConfig.vocab_size,
                  prompt_len: tuple[float, float] = (24, 16),
                  output_len: tuple[float, float] = (16, 10),
                  max_output: int = 64) -> DemoRequests:
    """A reproducible workload: varied prompt lengths and skewed output lengths.

    Lengths are lognormal (`workload.lognormal_lengths`). The default output lengths have
    about the shape of the Azure 2023 conversation trace (mean 211, median 129) scaled down
    13x, so the demo runs in seconds: most requests are short and a few are long, the case
    where static batching waits.

    Args:
        n: number of requests.
        seed: int or numpy Generator.
        vocab_size: prompt token ids are drawn from 0 .. vocab_size - 1.
        prompt_len, output_len: (mean, median) of prompt and output lengths in tokens.
        max_output: longest output (the lognormal tail is cut here).

    Returns:
        a `DemoRequests` (prompts, max_new_tokens).
    """
    check_int("n", n, minimum=1)
    check_int("vocab_size", vocab_size, minimum=1)
    rng = rng_from(seed)
    plen = lognormal_lengths(*prompt_len, n, rng, maximum=4 * int(prompt_len[0]))
    olen = lognormal_lengths(*output_len, n, rng, maximum=max_output)
    prompts = [rng.integers(0, vocab_size, size=p).tolist() for p in plen]
    return DemoRequests(prompts, olen.tolist())


def compare_batching(model: TinyTransformer, requests: DemoRequests, max_batch: int = 8,
                     repeats: int = 3, threads: int | None = 1) -> dict:
    """Run static and continuous batching on the same requests; best of `repeats` each.

    Args:
        model: the `TinyTransformer`.
        requests: (prompts, max_new_tokens), e.g. from `demo_requests`.
        max_batch: batch size of both strategies.
        repeats: runs of each; the fastest is kept (timings on a shared CPU are noisy).
        threads: torch CPU threads during the runs; see `generate_static`.

    Returns:
        {"static": summary, "continuous": summary (see `GenerationResult.summary`),
        "speedup": continuous tokens/s over static tokens/s,
        "same_tokens": both generated identical tokens for every request,
        "results": {"static": GenerationResult, "continuous": GenerationResult}}.
    """
    check_int("repeats", repeats, minimum=1)
    prompts, max_new = requests
    best: dict[str, GenerationResult] = {}
    with torch_threads(threads):
        generate_continuous(model, prompts[:2], [2] * min(2, len(prompts)), max_batch,
                            threads=None)  # warm-up
        for _ in range(repeats):  # alternate the two, so a slow spell hits both alike
            for name, generate in (("static", generate_static),
                                   ("continuous", generate_continuous)):
                r = generate(model, prompts, max_new, max_batch, threads=None)
                if name not in best or r.wall_time < best[name].wall_time:
                    best[name] = r
    return {"static": best["static"].summary(), "continuous": best["continuous"].summary(),
            "speedup": best["continuous"].tokens_per_s / best["static"].tokens_per_s,
            "same_tokens": same_tokens(best["static"], best["continuous"]),
            "results": best}


# ----------------------------------------------------------------------------- one sequence, with and without a KV cache
class SoloRun(NamedTuple):
    """Greedy generation of one sequence, timed step by step.

    Attributes:
        tokens: the generated token ids.
        step_times: seconds of each model call; step 0 is the prefill of the prompt, which
            yields the first token; step i >= 1 yields token i.
        cache: the `KVCache` that holds the sequence's keys and values at the end (None when
            generating without a cache).
    """

    tokens: list[int]
    step_times: np.ndarray
    cache: "KVCache | None"


def generate_with_cache(model: TinyTransformer, prompt: Sequence[int], max_new_tokens: int, *,
                        attention=None, threads: int | None = 1) -> SoloRun:
    """Greedy generation with a KV cache: each step runs only the newest token.

    The prompt is prefilled once into a one-slot `KVCache`; each later step computes the new
    token's query, key and value in every layer, appends the key and value to the cache and
    attends over it.

    Args:
        model: the `TinyTransformer`.
        prompt: token ids (at least one).
        max_new_tokens: tokens to generate, >= 1.
        attention: None: the model's own attention (the code path batched generation uses).
            Or a function attention(q, k_cache, v_cache, k_new, v_new) -> (out, k, v) with the
            shapes of `kvcache.decode_attention`, called for every layer of every decode step;
            the keys and values it returns become the cache.
        threads: torch CPU threads during the run; see `generate_static`.

    Returns:
        a `SoloRun` (tokens, step times, the cache).
    """
    (prompt,), (n,) = _check_requests(model, [prompt], [max_new_tokens])
    if attention is not None:
        check_callable("attention", attention)
    with torch.inference_mode(), torch_threads(threads):
        cache = KVCache(model.config, 1, len(prompt) + n)
        slot = torch.tensor([0])
        tokens, times = [], []
        start = time.perf_counter()
        logits = model.extend(cache, slot, torch.tensor([prompt]))[0, -1]
        for i in range(n):
            tokens.append(int(logits.argmax()))
            now = time.perf_counter()
            times.append(now - start)
            start = now
            if i == n - 1:
                break
            if attention is None:
                logits = model.extend(cache, slot, torch.tensor([[tokens[-1]]]))[0, -1]
            else:
                logits = _decode_with(model, cache, tokens[-1], attention)
    return SoloRun(tokens, np.array(times), cache)


def generate_without_cache(model: TinyTransformer, prompt: Sequence[int], max_new_tokens: int,
                           *, threads: int | None = 1) -> SoloRun:
    """Greedy generation without a KV cache: every step reruns the whole sequence so far.

    Args:
        model: the `TinyTransformer`.
        prompt: token ids (at least one).
        max_new_tokens: tokens to generate, >= 1.
        threads: torch CPU threads during the run; see `generate_static`.

    Returns:
        a `SoloRun` (cache None).
    """
    (prompt,), (n,) = _check_requests(model, [prompt], [max_new_tokens])
    with torch.inference_mode(), torch_threads(threads):
        seq, tokens, times = list(prompt), [], []
        for _ in range(n):
            start = time.perf_counter()
            token = int(model(torch.tensor([seq]))[0, -1].argmax())
            times.append(time.perf_counter() - start)
            tokens.append(token)
            seq.append(token)
    return SoloRun(tokens, np.array(times), None)


def _decode_with(model: TinyTransformer, cache: KVCache, token: int, attention) -> torch.Tensor:
    """One decode step of slot 0 with a caller's attention function; the last logits."""
    cfg = model.config
    pos = int(cache.lengths[0])
    h, kv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    x = model.embed(torch.tensor([[token]]))
    cos, sin = model.rope(torch.tensor([[pos]]))
    for layer, block in enumerate(model.blocks):
        q, k, v = block.qkv(block.attn_norm(x)).split([h * hd, kv * hd, kv * hd], dim=-1)
        q = rotate(q.view(1, 1, h, hd).transpose(1, 2), cos, sin)[0, :, 0]
        k = rotate(k.view(1, 1, kv, hd).transpose(1, 2), cos, sin)[0, :, 0]
        v = v.view(kv, hd)
        got = attention(q, cache.k[layer][0, :, :pos].clone(), cache.v[layer][0, :, :pos].clone(),
                        k, v)
        if not (isinstance(got, tuple) and len(got) == 3):
            raise TypeError(f"attention must return (out, k, v), got {type(got).__name__}")
        out, k_all, v_all = got
        for name, value, shape in (("out", out, (h, hd)), ("k", k_all, (kv, pos + 1, hd)),
                                   ("v", v_all, (kv, pos + 1, hd))):
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                raise ValueError(f"attention returned {name} of shape "
                                 f"{tuple(getattr(value, 'shape', ()))}; expected {shape}")
        cache.k[layer][0, :, :pos + 1] = k_all
        cache.v[layer][0, :, :pos + 1] = v_all
        x = x + block.out(out.reshape(1, 1, h * hd).to(x.dtype))
        gate, up = block.gate_up(block.mlp_norm(x)).chunk(2, dim=-1)
        x = x + block.down(F.silu(gate) * up)
    cache.lengths[0] += 1
    return model.lm_head(model.norm(x))[0, -1]


@torch.no_grad()
def attention_inputs(model: TinyTransformer, tokens: Sequence[int], layer: int = 0) -> dict:
    """What one layer's attention sees and computes for one sequence, in a full causal pass.

    Runs the model without a cache on `tokens` and records, at `layer`, the queries, keys and
    values (rotary positions applied) and the attention output (before the output
    projection), as the model itself computed them.

    Args:
        model: the `TinyTransformer`.
        tokens: token ids of the sequence.
        layer: which block, 0 .. n_layers - 1.

    Returns:
        {"q": [n_heads, T, head_dim], "k", "v": [n_kv_heads, T, head_dim],
        "out": [n_heads, T, head_dim]}: position t attended over positions 0..t.
    """
    cfg = model.config
    check_int("layer", layer, minimum=0)
    if layer >= cfg.n_layers:
        raise ValueError(f"layer={layer} but the model has {cfg.n_layers} layers (0..{cfg.n_layers - 1})")
    (tokens,), _ = _check_requests(model, [tokens], [1])
    block, seen = model.blocks[layer], {}
    hooks = [block.qkv.register_forward_hook(lambda m, i, o: seen.__setitem__("qkv", o)),
             block.out.register_forward_hook(lambda m, i, o: seen.__setitem__("attn", i[0]))]
    try:
        model(torch.tensor([tokens]))
    finally:
        for hook in hooks:
            hook.remove()
    t, h, kv, hd = len(tokens), cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    q, k, v = seen["qkv"].split([h * hd, kv * hd, kv * hd], dim=-1)
    cos, sin = model.rope(torch.arange(t)[None])
    return {"q": rotate(q.view(1, t, h, hd).transpose(1, 2), cos, sin)[0],
            "k": rotate(k.view(1, t, kv, hd).transpose(1, 2), cos, sin)[0],
            "v": v.view(1, t, kv, hd).transpose(1, 2)[0],
            "out": seen["attn"].view(t, h, hd).transpose(0, 1)}
