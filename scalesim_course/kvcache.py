"""The KV cache: how big it is, how a decode step uses it, and how a server manages it in blocks.

Three parts, one per question of notebook 03:

* **Size.** Every generated token leaves a key and a value vector in every layer for every KV
  head: ``2 * n_layers * n_kv_heads * head_dim * bytes_per_element`` bytes per token
  (`kv_bytes_per_token`, `kv_cache_bytes`), and what is left of a GPU after the weights holds
  that many tokens (`max_concurrent`).
* **Use.** One decode step appends the new token's key and value to the cache and lets the new
  query attend over all of it (`decode_attention`); grouped-query attention (GQA) lets several
  query heads share one KV head.
* **Management.** `BlockAllocator` hands out fixed-size blocks of token slots, as vLLM's
  PagedAttention does (Kwon et al., "Efficient Memory Management for Large Language Model
  Serving with PagedAttention", SOSP 2023, arXiv:2309.06180), with reference counts so that
  sequences can share a prefix and copy a shared block only when they write to it. The KV
  managers `reserve_max` and `paged` plug into the simulator's iteration mode through the
  protocol of `scalesim_course.sim` (``ServingConfig(kv=...)``): the engine asks them to admit a
  sequence, to make room before every step (they answer with sequences to preempt) and to free a
  sequence.
"""
from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np

from ._checks import check_in_range, check_int, check_positive

# Bytes per stored number for each cache dtype. fp8 (E4M3/E5M2) and int8 caches are what vLLM
# calls kv_cache_dtype="fp8" / quantised caches; one byte per value.
DTYPE_BYTES: dict[str, float] = {"fp32": 4, "float32": 4, "fp16": 2, "float16": 2, "bf16": 2,
                                 "bfloat16": 2, "fp8": 1, "int8": 1}


def dtype_bytes(dtype) -> float:
    """Bytes per element of a cache dtype: a name in DTYPE_BYTES, or a number of bytes (> 0)."""
    if isinstance(dtype, numbers.Real) and not isinstance(dtype, bool):
        return check_positive("dtype", dtype)
    key = dtype.lower() if isinstance(dtype, str) else dtype
    if key not in DTYPE_BYTES:
        raise ValueError(f"dtype={dtype!r} is not a known cache dtype; use one of "
                         f"{', '.join(DTYPE_BYTES)} or a number of bytes per element")
    return DTYPE_BYTES[key]


# ----------------------------------------------------------------------------- size
def kv_bytes_per_token(model, dtype="fp16") -> float:
    """KV-cache bytes one token takes: a key and a value, in every layer, for every KV head.

    Args:
        model: anything with n_layers, n_kv_heads and head_dim (a `costmodel.ModelSpec`, a
            `tinymodel.TinyConfig`), or a name in `costmodel.MODELS`.
        dtype: cache dtype name ("fp16", "bf16", "fp8", "fp32", ...) or bytes per element.

    Returns:
        2 * n_layers * n_kv_heads * head_dim * bytes per element.
    """
    if isinstance(model, str):
        from .costmodel import get_model
        model = get_model(model)
    return 2 * model.n_layers * model.n_kv_heads * model.head_dim * dtype_bytes(dtype)


def kv_cache_bytes(model, seq_lens, dtype="fp16") -> int:
    """Bytes the KV cache of some sequences takes, each holding exactly its own tokens.

    Args:
        model: anything with n_layers, n_heads, n_kv_heads and head_dim.
        seq_lens: tokens held by each sequence (ints >= 0); empty: no cache.
        dtype: "fp32" (4 bytes), "fp16" or "bf16" (2), "fp8" or "int8" (1).

    Returns:
        the total bytes, an int.

    Raises:
        ValueError: a negative length or an unknown dtype.
    """
    per_value = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}
    if dtype not in per_value:
        raise ValueError(f"unknown dtype {dtype!r}")
    total = 0
    for n in seq_lens:
        if n < 0:
            raise ValueError(f"sequence length {n} is negative")
        total += int(n)
    return int(2 * model.n_layers * model.n_kv_heads * model.head_dim * per_value[dtype] * total)


def max_concurrent(model, gpu, context: int, *, dtype="fp16", utilization: float = 0.9,
                   n_gpus: int = 1) -> int:
    """How many requests of `context` tokens each fit in the KV cache beside the weights.

    As vLLM's gpu_memory_utilization (default 0.9): that share of the memory is usable, the
    weights (at the model's bytes_per_param) come out of it and the rest holds the cache.
    Activations and fragmentation are ignored, so this is an upper bound.

    Args:
        model: a `costmodel.ModelSpec` or a name in `costmodel.MODELS`.
        gpu: a `costmodel.GpuSpec` or a name in `costmodel.GPUS`.
        context: tokens per request (prompt + output), >= 1.
        dtype: the cache dtype (see `dtype_bytes`).
        utilization: share of the GPUs' memory the server may use, in (0, 1].
        n_gpus: GPUs the model is split over (weights and cache both spread).

    Returns:
        the number of requests (0 if the weights alone do not fit).
    """
    from .costmodel import get_gpu, get_model
    model, gpu = get_model(model), get_gpu(gpu)
    check_int("context", context, minimum=1)
    check_int("n_gpus", n_gpus, minimum=1)
    if not 0 < check_in_range("utilization", utilization, 0, 1):
        raise ValueError(f"utilization must be in (0, 1], got {utilization!r}")
    free = gpu.mem_bytes * n_gpus * utilization - model.weight_bytes
    return max(0, math.floor(free / (context * kv_bytes_per_token(model, dtype))))


def generation_flops(model, prompt_tokens: int, new_tokens: int, *, cache: bool = True
                     ) -> np.ndarray:
    """Multiply-add FLOPs of each step of greedy generation, counted from the model's shape.

    Per token, the weight matrices cost 2 FLOPs per weight (outside the embedding table);
    attention costs 4 * n_layers * n_heads * head_dim per (query, key) pair (scores and the
    weighted sum of values, 2 FLOPs each per multiply-add). Step 0 is the prefill of the
    prompt. With a cache, step i >= 1 runs one new token against prompt + i keys; without,
    it reruns all prompt + i tokens with causal attention.

    Args:
        model: a `tinymodel.TinyTransformer` (its weight count is counted) or anything with
            n_params, n_layers, n_heads, head_dim, d_model and vocab_size.
        prompt_tokens: the prompt length, >= 1.
        new_tokens: tokens generated, >= 1 (the prefill gives the first).
        cache: with a KV cache (True) or recomputing everything (False).

    Returns:
        FLOPs of each of the `new_tokens` steps, a float array.
    """
    check_int("prompt_tokens", prompt_tokens, minimum=1)
    check_int("new_tokens", new_tokens, minimum=1)
    if hasattr(model, "param_count"):  # a TinyTransformer
        cfg = model.config
        weights = model.param_count() - cfg.vocab_size * cfg.d_model  # the embedding is a lookup
        layers, heads, hd = cfg.n_layers, cfg.n_heads, cfg.head_dim
    else:
        weights = model.n_params - (model.vocab_size or 0) * model.d_model
        layers, heads, hd = model.n_layers, model.n_heads, model.head_dim
    per_pair = 4.0 * layers * heads * hd
    lengths = prompt_tokens + np.arange(new_tokens, dtype=float)  # tokens in the pass, step i
    full = 2.0 * weights * lengths + per_pair * lengths * (lengths + 1) / 2  # causal pairs
    if cache:
        one = 2.0 * weights + per_pair * lengths  # the new token against every key so far
        one[0] = full[0]  # the prefill is the same either way
        return one
    return full


# ----------------------------------------------------------------------------- use
def decode_attention(q, k_cache, v_cache, k_new, v_new):
    """One decode step of attention with a KV cache, for one sequence at one layer.

    Appends the new token's key and value to the cache, then lets each query head attend over
    every cached position (the new one included): softmax(q . k / sqrt(head_dim)) weighted sum
    of v. With grouped-query attention, query head h uses KV head h // (n_heads // n_kv_heads).

    Args:
        q: [n_heads, head_dim] the new token's queries.
        k_cache, v_cache: [n_kv_heads, T, head_dim] keys and values of the T earlier tokens
            (T may be 0).
        k_new, v_new: [n_kv_heads, head_dim] the new token's key and value.

    Returns:
        (out [n_heads, head_dim], k [n_kv_heads, T + 1, head_dim], v [n_kv_heads, T + 1,
        head_dim]); the inputs are left unchanged.
    """
    import torch

    k = torch.cat([k_cache, k_new[:, None]], dim=1)
    v = torch.cat([v_cache, v_new[:, None]], dim=1)
    group = q.shape[0] // k.shape[0]
    kk, vv = k.repeat_interleave(group, dim=0), v.repeat_interleave(group, dim=0)
    scores = (kk @ q[:, :, None])[..., 0] / math.sqrt(q.shape[-1])      # [n_heads, T + 1]
    out = (scores.softmax(-1)[:, None, :] @ vv)[:, 0]                   # [n_heads, head_dim]
    return out, k, v


# ----------------------------------------------------------------------------- management
class BlockAllocator:
    """Fixed-size blocks of KV slots for many sequences, with shared blocks and copy-on-write.

    The pool has `n_blocks` blocks of `block_size` token slots. Each sequence owns a block
    table, the list of its blocks in order; a sequence of n tokens holds ceil(n / block_size)
    blocks, the last one perhaps partly filled. A block may belong to several sequences (after
    `fork`); its reference count says how many. A block returns to the free pool when its count
    drops to 0. Free blocks are handed out lowest id first.

    Args:
        n_blocks: blocks in the pool, >= 1.
        block_size: token slots per block, >= 1.
    """

    def __init__(self, n_blocks: int, block_size: int = 16):
        self.n_blocks = check_int("n_blocks", n_blocks, minimum=1)
        self.block_size = check_int("block_size", block_size, minimum=1)
        self._free = list(range(n_blocks - 1, -1, -1))  # pop() gives the lowest id
        self._refs = [0] * n_blocks
        self._tables: dict = {}
        self._tokens: dict = {}

    def _take(self) -> int:
        block = self._free.pop()
        self._refs[block] = 1
        return block

    def _release(self, block: int) -> None:
        self._refs[block] -= 1
        if self._refs[block] == 0:
            self._free.append(block)

    def _known(self, seq_id) -> None:
        if seq_id not in self._tables:
            raise KeyError(f"sequence {seq_id!r} holds no blocks (never allocated, or freed)")

    def allocate(self, seq_id, n_tokens: int) -> list[int]:
        """Give a new sequence blocks for its first `n_tokens` tokens (its prompt).

        Returns:
            its block table (a copy).
        Raises:
            ValueError: seq_id already holds blocks, or n_tokens < 0.
            MemoryError: not enough free blocks (nothing is allocated then).
        """
        if seq_id in self._tables:
            raise ValueError(f"sequence {seq_id!r} already holds blocks")
        check_int("n_tokens", n_tokens, minimum=0)
        need = -(-n_tokens // self.block_size)
        if need > len(self._free):
            raise MemoryError(f"out of KV blocks: sequence {seq_id!r} needs {need}, "
                              f"{len(self._free)} free")
        self._tables[seq_id] = [self._take() for _ in range(need)]
        self._tokens[seq_id] = n_tokens
        return list(self._tables[seq_id])

    def append(self, seq_id) -> None:
        """Make room for one more token of a sequence.

        A new block is taken when the sequence has no room left in its last block; when its
        last block is shared with another sequence and not full, the sequence gets a private
        copy of it first (copy-on-write) and lets go of the shared one.

        Raises:
            KeyError: unknown (or freed) sequence.
            MemoryError: a block is needed and none is free (nothing changes then).
        """
        self._known(seq_id)
        table, n = self._tables[seq_id], self._tokens[seq_id]
        if n % self.block_size == 0:  # no blocks yet, or the last one is full
            if not self._free:
                raise MemoryError(f"out of KV blocks: sequence {seq_id!r} needs a new block")
            table.append(self._take())
        elif self._refs[table[-1]] > 1:  # shared last block: copy it before writing
            if not self._free:
                raise MemoryError(f"out of KV blocks: sequence {seq_id!r} needs a copy of its "
                                  f"shared last block")
            old = table[-1]
            table[-1] = self._take()
            self._release(old)
        self._tokens[seq_id] = n + 1

    def extend(self, seq_id, n: int) -> None:
        """Make room for n more tokens at once: what n calls of `append` do, all or nothing.

        Raises:
            KeyError: unknown (or freed) sequence.
            MemoryError: not enough free blocks (nothing changes then).
        """
        if n <= 0:
            return
        self._known(seq_id)
        table, have, size = self._tables[seq_id], self._tokens[seq_id], self.block_size
        cow = have % size != 0 and self._refs[table[-1]] > 1
        need = -(-(have + n) // size) - len(table) + cow
        if need > len(self._free):
            raise MemoryError(f"out of KV blocks: sequence {seq_id!r} needs {need} more, "
                              f"{len(self._free)} free")
        if cow:
            old = table[-1]
            table[-1] = self._take()
            self._release(old)
            need -= 1
        for _ in range(need):
            table.append(self._take())
        self._tokens[seq_id] = have + n

    def fork(self, parent_id, child_id) -> None:
        """Start `child_id` as a copy of `parent_id` that shares all of its blocks.

        Raises:
            KeyError: unknown (or freed) parent.
            ValueError: child_id already holds blocks.
        """
        self._known(parent_id)
        if child_id in self._tables:
            raise ValueError(f"sequence {child_id!r} already holds blocks")
        table = list(self._tables[parent_id])
        for block in table:
            self._refs[block] += 1
        self._tables[child_id] = table
        self._tokens[child_id] = self._tokens[parent_id]

    def free(self, seq_id) -> None:
        """Let go of every block of a sequence; blocks nobody else holds become free.

        Raises:
            KeyError: unknown sequence, or freed already.
        """
        self._known(seq_id)
        for block in self._tables.pop(seq_id):
            self._release(block)
        del self._tokens[seq_id]

    def block_table(self, seq_id) -> list[int]:
        """The blocks of a sequence, in order (a copy). Raises KeyError if unknown."""
        self._known(seq_id)
        return list(self._tables[seq_id])

    def num_tokens(self, seq_id) -> int:
        """Tokens a sequence holds. Raises KeyError if unknown."""
        self._known(seq_id)
        return self._tokens[seq_id]

    def num_free(self) -> int:
        """Blocks free now."""
        return len(self._free)

    def utilisation(self) -> float:
        """Share of the pool's blocks in use, in [0, 1]."""
        return (self.n_blocks - len(self._free)) / self.n_blocks


# ----------------------------------------------------------------------------- KV managers
def _need_finite(capacity, who: str) -> int:
    if not math.isfinite(capacity):
        raise ValueError(f"{who} needs a finite KV budget: set ServingConfig.kv_capacity "
                         f"(token slots per replica), got {capacity!r}")
    return int(capacity)


class ReserveMax:
    """KV manager that reserves prompt + `max_output` token slots for a request at admission.

    What a server must do when it does not know how long an answer will be and allocates
    contiguous memory per request (FasterTransformer, Orca, the systems vLLM compares with).
    Nothing grows later and nobody is ever preempted. A request whose output would exceed
    `max_output` is refused with an error: a real server would cut its answer there.

    Args:
        capacity: token slots in the pool (from the engine, per replica).
        max_output: output tokens reserved per request, >= 1.
    """

    def __init__(self, capacity: float, max_output: int):
        self.capacity = capacity
        self.max_output = check_int("max_output", max_output, minimum=1)
        self._used = 0
        self._stored = 0
        self._held: dict[int, int] = {}  # id -> reserved slots

    def used(self) -> int:
        """Token slots reserved now."""
        return self._used

    def stored(self) -> int:
        """Tokens whose KV is really held (at most what is reserved), as of the last `grow`."""
        return self._stored

    def admit(self, seq) -> bool:
        """Reserve prompt + max_output slots if they are free; False (nothing reserved) if not."""
        if seq.output_tokens > self.max_output:
            raise ValueError(f"reserve_max(max_output={self.max_output}): request {seq.id} "
                             f"generates {seq.output_tokens} tokens, more than max_output; "
                             f"raise max_output or cap the workload's output lengths")
        need = seq.prompt_tokens + self.max_output
        if need > self.capacity:
            raise ValueError(f"reserve_max(max_output={self.max_output}): request {seq.id} "
                             f"needs {need} KV slots but kv_capacity is {self.capacity}: it "
                             f"can never run")
        if seq.id in self._held:
            raise ValueError(f"reserve_max: request {seq.id} is admitted already")
        if self._used + need > self.capacity:
            return False
        self._used += need
        self._held[seq.id] = need
        self._stored += seq.context
        return True

    def grow(self, running) -> list[int]:
        """Nothing to allocate: each running sequence has its reservation. Notes tokens held."""
        self._stored = sum(s.context for s in running)
        return []

    def free(self, seq_id: int) -> None:
        """Release a request's reservation."""
        if seq_id not in self._held:
            raise KeyError(f"reserve_max: request {seq_id} holds no KV slots")
        self._used -= self._held.pop(seq_id)


def reserve_max(max_output: int) -> Callable[[float], ReserveMax]:
    """KV-manager factory for ``ServingConfig(kv=...)``: reserve prompt + max_output per request.

    Args:
        max_output: output tokens reserved per request (the server's max_tokens), >= 1.
    """
    check_int("max_output", max_output, minimum=1)
    return lambda capacity: ReserveMax(capacity, max_output)


class Paged:
    """KV manager that allocates fixed-size blocks as sequences grow (vLLM's PagedAttention).

    At admission a sequence gets the blocks its context needs (its prompt, or prompt plus
    tokens already generated when it comes back after a preemption); before every step each
    running sequence gets a new block when its last one is full. When no block is free, the
    most recently admitted running sequence is preempted (vLLM's default: it is recomputed
    later), until the rest fit; it may be the sequence that needs the block. Blocks return at
    finish or preemption.

    With prefix sharing, requests with the same ``prompt_id`` (>= 0) share the full blocks of
    that prompt: the first such request leaves them in a prefix cache (reference counted, as
    in vLLM's automatic prefix caching), later ones fork from it. Cached prefixes nobody runs
    with are evicted, least recently used first, before any sequence is preempted.

    Args:
        capacity: token slots in the pool (from the engine); blocks = capacity // block_size.
        block_size: token slots per block, >= 1 (vLLM's default is 16).
        prefix_sharing: share prompt blocks between requests with the same prompt_id.
        allocator: a class (or factory) called as allocator(n_blocks, block_size), with the
            methods of `BlockAllocator` (allocate, append, fork, free, num_free, and
            MemoryError when out of blocks); None: `BlockAllocator`.
        watermark: share of the blocks that must stay free after an admission (vLLM's
            default, 0.01, rounded down to whole blocks); 0: admit whenever the context fits.
    """

    def __init__(self, capacity: float, block_size: int = 16, prefix_sharing: bool = False,
                 allocator=None, watermark: float = 0.01):
        self.block_size = check_int("block_size", block_size, minimum=1)
        self.n_blocks = _need_finite(capacity, "paged") // self.block_size
        if self.n_blocks < 1:
            raise ValueError(f"paged: kv_capacity={capacity} holds no block of "
                             f"block_size={block_size} tokens")
        self.capacity = self.n_blocks * self.block_size
        self.prefix_sharing = bool(prefix_sharing)
        make = allocator if allocator is not None else BlockAllocator
        if not callable(make):
            raise TypeError(f"paged: allocator must be a class or callable, got {make!r}")
        self.alloc = make(self.n_blocks, self.block_size)
        for method in ("allocate", "append", "fork", "free", "num_free"):
            if not callable(getattr(self.alloc, method, None)):
                raise TypeError(f"paged: the allocator {type(self.alloc).__name__} has no "
                                f"method {method}()")
        self._tokens: dict[int, int] = {}   # running seq id -> tokens it holds
        self._shared: dict[int, int] = {}   # seq id -> tokens it shares with a cached prefix
        self._stored = 0
        self._prefixes: OrderedDict = OrderedDict()  # prompt_id -> tokens cached (LRU order)
        self._users: dict[int, int] = {}    # prompt_id -> running sequences sharing it
        self._pid: dict[int, int] = {}      # seq id -> prompt_id it shares
        self.prefix_hits = 0                # prompt tokens served from a cached prefix
        self.prompt_tokens = 0              # prompt tokens admitted (the hit-rate denominator)
        self.preemptions = 0
        # vLLM admits only while a watermark of free blocks stays (1% of the pool by default),
        # so that running sequences have room to grow and a fresh admission is not preempted
        # at once
        self._watermark = int(check_in_range("watermark", watermark, 0, 1) * self.n_blocks)
        self._preempted: set = set()        # victims of grow not yet freed by the engine
        # with the package's own allocator, grow skips the calls that need no new block
        self._room = {} if type(self.alloc) is BlockAllocator else None

    # --- what the engine reads
    def used(self) -> int:
        """Token slots in blocks that are in use (cached prefixes included)."""
        return (self.n_blocks - self.alloc.num_free()) * self.block_size

    def stored(self) -> int:
        """Tokens whose KV is held, each shared token counted once."""
        return self._stored

    @property
    def hit_rate(self) -> float:
        """Share of admitted prompt tokens found in the prefix cache (nan before any)."""
        return self.prefix_hits / self.prompt_tokens if self.prompt_tokens else math.nan

    # --- the protocol
    def admit(self, seq) -> bool:
        """Blocks for the sequence's context; False (nothing allocated) if they don't fit."""
        sid = seq.id
        self._preempted.discard(sid)
        if sid in self._tokens:
            raise ValueError(f"paged: request {sid} is admitted already")
        need = max(int(seq.context), 0)
        if -(-need // self.block_size) > self.n_blocks:
            raise ValueError(f"paged: request {sid} needs {need} KV slots but the pool holds "
                             f"{self.capacity}: it can never run")
        pid = getattr(seq, "prompt_id", -1)
        if self._watermark:
            cached = self._prefixes.get(pid, 0) if self.prefix_sharing and pid >= 0 else 0
            if cached > need or cached > seq.prompt_tokens:
                cached = 0
            required = -(-need // self.block_size) - cached // self.block_size
            while self.alloc.num_free() - required < self._watermark:
                if not self._evict_prefix(keep=pid):
                    return False
        shared, hit = 0, False
        if self.prefix_sharing and pid is not None and pid >= 0:
            shared, hit = self._admit_shared(seq, pid, need)
            if shared < 0:
                return False
        else:
            if not self._allocate(sid, need):
                return False
        self._tokens[sid] = need
        self._shared[sid] = shared
        self._note_room(sid)
        self._stored += need - shared
        self.prompt_tokens += seq.prompt_tokens
        if hit:
            self.prefix_hits += shared
        return True

    def grow(self, running: Sequence) -> list[int]:
        """Room for every running sequence's context; preempt the newest when out of blocks."""
        tokens = self._tokens
        if self._room is not None:  # the package's allocator: fill private room without calls
            room, counts, short, added = self._room, self.alloc._tokens, [], 0
            for s in running:
                ctx, have = s.context, tokens.get(s.id)
                if have is None:
                    raise ValueError(f"paged: running request {s.id} was never admitted")
                if ctx <= have:
                    continue
                if ctx <= room[s.id]:
                    added += ctx - have
                    tokens[s.id] = counts[s.id] = ctx
                else:
                    short.append(s)
            self._stored += added
        else:
            short = [s for s in running if s.context > tokens.get(s.id, -1)]
            for s in short:
                if s.id not in tokens:
                    raise ValueError(f"paged: running request {s.id} was never admitted")
        if not short:
            return []
        order = sorted(running, key=lambda s: s.admitted_at)  # oldest first, stable
        alive = [s.id for s in order]
        victims: list[int] = []
        extend = self._extend
        for seq in sorted(short, key=lambda s: s.admitted_at):
            sid = seq.id
            while sid not in victims and tokens[sid] < seq.context:
                more = seq.context - tokens[sid]
                try:
                    extend(sid, more)
                except MemoryError:
                    if self._evict_prefix():
                        continue
                    victim = next(v for v in reversed(alive) if v not in victims)
                    victims.append(victim)
                    self.free(victim)  # its blocks serve the others now
                    self._preempted.add(victim)  # the engine's free(victim) comes later
                    self.preemptions += 1
                    continue
                tokens[sid] += more
                self._stored += more
                self._note_room(sid)
        return victims

    def _note_room(self, sid) -> None:
        """Package allocator only: the tokens sid can hold before it needs a block or a copy."""
        if self._room is not None:
            table, refs = self.alloc._tables[sid], self.alloc._refs
            private = table and refs[table[-1]] == 1
            self._room[sid] = len(table) * self.block_size if private else self._tokens[sid]

    def _extend(self, sid, n: int) -> None:
        """n more tokens for sid through the allocator, all or nothing."""
        fast = getattr(self.alloc, "extend", None)
        if fast is not None:
            fast(sid, n)
            return
        done = 0
        try:
            for done in range(1, n + 1):
                self.alloc.append(sid)
        except MemoryError:
            done -= 1  # the failed append added nothing; keep what did fit
            if done:
                self._tokens[sid] += done
                self._stored += done
            raise

    def free(self, seq_id: int) -> None:
        """Release the blocks of a sequence (finished or preempted).

        A sequence this manager preempted in `grow` was freed there already; the engine's
        call for it afterwards does nothing.
        """
        if seq_id in self._preempted:
            self._preempted.discard(seq_id)
            return
        if seq_id not in self._tokens:
            raise KeyError(f"paged: request {seq_id} holds no KV blocks")
        self.alloc.free(seq_id)
        if self._room is not None:
            del self._room[seq_id]
        self._stored -= self._tokens.pop(seq_id) - self._shared.pop(seq_id)
        pid = self._pid.pop(seq_id, None)
        if pid is not None:
            self._users[pid] -= 1

    # --- helpers
    def _allocate(self, sid, tokens: int) -> bool:
        while True:
            try:
                self.alloc.allocate(sid, tokens)
                return True
            except MemoryError:
                if not self._evict_prefix():
                    return False

    def _admit_shared(self, seq, pid: int, need: int) -> tuple[int, bool]:
        """Fork from the cached prefix of `pid`, caching it first if it is new.

        Returns:
            (tokens shared with the cache, whether they were there before: a hit);
            shared = -1: no room, nothing allocated for the sequence.
        """
        holder = -1 - pid  # request ids are >= 0, so the cache entries never clash with them
        hit = pid in self._prefixes
        if not hit:
            full = (seq.prompt_tokens // self.block_size) * self.block_size  # whole blocks
            if full == 0:  # shorter than a block: nothing to share
                return (0, False) if self._allocate(seq.id, need) else (-1, False)
            if not self._allocate(holder, full):
                return -1, False
            self._prefixes[pid] = full
            self._users[pid] = 0
            self._stored += full
        cached = self._prefixes[pid]
        if cached > need or cached > seq.prompt_tokens:  # a shorter prompt under this id
            return (0, False) if self._allocate(seq.id, need) else (-1, False)
        self._prefixes.move_to_end(pid)
        self.alloc.fork(holder, seq.id)
        self._pid[seq.id] = pid
        self._users[pid] += 1
        have = cached
        while have < need:
            try:
                self.alloc.append(seq.id)
                have += 1
            except MemoryError:
                if self._evict_prefix(keep=pid):
                    continue  # and retry the same token
                self.alloc.free(seq.id)  # undo: the sequence waits
                del self._pid[seq.id]
                self._users[pid] -= 1
                return -1, False
        return cached, hit

    def _evict_prefix(self, keep=None) -> bool:
        """Drop the least recently used cached prefix that no running sequence shares."""
        for pid in self._prefixes:
            if self._users.get(pid, 0) == 0 and pid != keep:
                self.alloc.free(-1 - pid)
                self._stored -= self._prefixes.pop(pid)
                del self._users[pid]
                return True
        return False


def paged(block_size: int = 16, prefix_sharing: bool = False, allocator=None,
          watermark: float = 0.01) -> Callable[[float], Paged]:
    """KV-manager factory for ``ServingConfig(kv=...)``: fixed-size blocks allocated on demand.

    Args:
        block_size: token slots per block (vLLM's default, 16).
        prefix_sharing: requests with the same prompt_id share their prompt's full blocks.
        allocator: your block-allocator class (called as allocator(n_blocks, block_size));
            None: `BlockAllocator`.
        watermark: share of blocks kept free at admission (vLLM's default 0.01).
    """
    check_int("block_size", block_size, minimum=1)
    check_in_range("watermark", watermark, 0, 1)
    if allocator is not None and not callable(allocator):
        raise TypeError(f"allocator must be a class or callable, got {allocator!r}")
    return lambda capacity: Paged(capacity, block_size, prefix_sharing, allocator, watermark)
