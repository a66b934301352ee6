"""kvcache: sizes worked out by hand from published configs, attention against a loop over
heads, the block allocator against hand-traced scenarios and random invariants, and the KV
managers driven through the engine's protocol."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from scalesim_course import costmodel, kvcache, tinymodel
from scalesim_course.kvcache import BlockAllocator


# ----------------------------------------------------------------------------- size
def test_bytes_per_token_of_published_configs():
    # config.json: Llama-2-7B 32 layers x 32 KV heads x 128; Llama-3-8B and Mistral-7B 8 KV heads
    assert kvcache.kv_bytes_per_token("llama-2-7b") == 2 * 32 * 32 * 128 * 2 == 512 * 1024
    assert kvcache.kv_bytes_per_token("llama-3-8b") == 128 * 1024
    assert kvcache.kv_bytes_per_token("mistral-7b", "fp16") == 128 * 1024
    assert kvcache.kv_bytes_per_token("mistral-7b", "fp8") == 64 * 1024
    assert kvcache.kv_bytes_per_token(costmodel.get_model("llama-2-7b"), 4) == 1024 * 1024


def test_kv_cache_bytes_sums_sequences_and_takes_kv_heads():
    m = costmodel.get_model("llama-3-8b")
    assert kvcache.kv_cache_bytes(m, [100, 0, 28], "fp8") == 128 * 2 * 32 * 8 * 128
    assert kvcache.kv_cache_bytes(m, [], "fp16") == 0
    assert kvcache.kv_cache_bytes(m, np.array([1]), "fp32") == 2 * 32 * 8 * 128 * 4
    with pytest.raises(ValueError, match="negative"):
        kvcache.kv_cache_bytes(m, [3, -1])
    with pytest.raises(ValueError, match="dtype"):
        kvcache.kv_cache_bytes(m, [3], "fp12")


def test_dtype_errors_name_the_argument():
    with pytest.raises(ValueError, match="dtype='fp12'"):
        kvcache.kv_bytes_per_token("llama-2-7b", "fp12")
    with pytest.raises(ValueError, match="dtype"):
        kvcache.dtype_bytes(-2)


def test_max_concurrent_by_hand():
    # A100 80 GB, 90% usable: 80 * 2**30 * 0.9 = 77,309,411,328 bytes
    # Llama-2-7B weights 6,738,415,616 * 2 = 13,476,831,232; 4096 tokens * 512 KiB = 2 GiB each
    assert kvcache.max_concurrent("llama-2-7b", "a100-80gb-sxm", 4096) == 29  # 63,832,580,096/2^31
    # Llama-3-8B weights 16,060,522,496; 4096 * 128 KiB = 0.5 GiB: 61,248,888,832 / 2^29 = 114.08
    assert kvcache.max_concurrent("llama-3-8b", "a100-80gb-sxm", 4096) == 114
    assert kvcache.max_concurrent("llama-2-70b", "l4", 100) == 0  # 138 GB of weights, 24 GB GPU
    with pytest.raises(ValueError, match="utilization"):
        kvcache.max_concurrent("llama-2-7b", "l4", 10, utilization=0)
    with pytest.raises(ValueError, match="context"):
        kvcache.max_concurrent("llama-2-7b", "l4", 0)


def test_generation_flops_by_hand():
    m = costmodel.ModelSpec("toy", n_params=1000, n_layers=2, n_heads=2, n_kv_heads=1,
                            head_dim=4, d_model=8, vocab_size=10)
    # weights outside the embedding: 1000 - 80 = 920; per (query, key) pair 4*2*2*4 = 64
    prefill = 2 * 920 * 3 + 64 * 6          # 3 prompt tokens, 3*4/2 = 6 causal pairs
    assert list(kvcache.generation_flops(m, 3, 3)) == [prefill, 2 * 920 + 64 * 4,
                                                       2 * 920 + 64 * 5]
    assert list(kvcache.generation_flops(m, 3, 2, cache=False)) == [prefill,
                                                                    2 * 920 * 4 + 64 * 10]


# ----------------------------------------------------------------------------- attention
def _loop_attention(q, k, v):
    """Attention of one query per head over k, v ([kv_heads, T, d]) written with loops."""
    n_heads, d = q.shape
    group = n_heads // k.shape[0]
    out = torch.zeros_like(q)
    for h in range(n_heads):
        kh, vh = k[h // group], v[h // group]
        s = torch.tensor([float(q[h] @ kh[t]) / math.sqrt(d) for t in range(kh.shape[0])],
                         dtype=q.dtype)
        w = torch.exp(s - s.max())
        out[h] = (w / w.sum()) @ vh
    return out


@pytest.mark.parametrize("n_heads,n_kv,T", [(4, 4, 5), (8, 2, 7), (6, 3, 0), (2, 1, 1)])
def test_decode_attention_matches_loops_and_leaves_inputs(n_heads, n_kv, T):
    g = torch.Generator().manual_seed(T)
    q = torch.randn(n_heads, 8, generator=g, dtype=torch.float64)
    kc, vc = (torch.randn(n_kv, T, 8, generator=g, dtype=torch.float64) for _ in range(2))
    kn, vn = (torch.randn(n_kv, 8, generator=g, dtype=torch.float64) for _ in range(2))
    before = [t.clone() for t in (q, kc, vc, kn, vn)]
    out, k, v = kvcache.decode_attention(q, kc, vc, kn, vn)
    assert k.shape == v.shape == (n_kv, T + 1, 8)
    assert torch.equal(k[:, -1], kn) and torch.equal(v[:, :T], vc)
    assert torch.allclose(out, _loop_attention(q, k, v), atol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(before, (q, kc, vc, kn, vn)))


def test_decode_attention_equals_the_models_full_attention():
    model = tinymodel.TinyTransformer(tinymodel.TinyConfig(n_heads=4, n_kv_heads=2))
    seen = tinymodel.attention_inputs(model, list(range(20, 45)), layer=2)
    q, k, v, full = seen["q"], seen["k"], seen["v"], seen["out"]
    assert q.shape == (4, 25, 16) and k.shape == (2, 25, 16)
    for t in (0, 10, 24):  # the query at t against keys 0..t, as the causal pass did
        out, _, _ = kvcache.decode_attention(q[:, t], k[:, :t], v[:, :t], k[:, t], v[:, t])
        assert torch.allclose(out, full[:, t], atol=1e-12)


# ----------------------------------------------------------------------------- allocator
def test_allocator_scenario_by_hand():
    a = BlockAllocator(6, 4)
    assert a.allocate("p", 6) == [0, 1]           # 6 tokens: one full block, one with 2
    assert a.allocate("q", 0) == [] and a.num_free() == 4
    a.fork("p", "c")                              # c shares blocks 0 and 1
    assert a.block_table("c") == [0, 1] and a.num_free() == 4
    a.append("c")                                 # shared last block, not full: copy it
    assert a.block_table("c") == [0, 2] and a.block_table("p") == [0, 1]
    a.append("p")                                 # block 1 is p's alone again: write in place
    assert a.block_table("p") == [0, 1] and a.num_tokens("p") == 7
    a.append("p"); a.append("p")                  # 8 tokens fill block 1; the 9th needs block 3
    assert a.block_table("p") == [0, 1, 3] and a.utilisation() == pytest.approx(4 / 6)
    a.append("q")
    assert a.block_table("q") == [4]
    a.free("p")                                   # 1 and 3 free; 0 still held by c
    assert a.num_free() == 3 and a.block_table("c") == [0, 2]
    with pytest.raises(KeyError):
        a.free("p")                               # double free
    with pytest.raises(KeyError):
        a.fork("p", "d")                          # fork of a freed sequence
    with pytest.raises(ValueError):
        a.allocate("c", 1)
    with pytest.raises(MemoryError):
        a.allocate("big", 13)                     # 4 blocks, 3 free: nothing allocated
    assert a.num_free() == 3


def test_allocator_copy_on_write_when_out_of_blocks_raises_and_keeps_state():
    a = BlockAllocator(2, 2)
    a.allocate(1, 3)
    a.fork(1, 2)
    with pytest.raises(MemoryError):
        a.append(1)
    assert a.block_table(1) == a.block_table(2) == [0, 1] and a.num_tokens(1) == 3


def test_allocator_random_sequences_never_leak_or_double_book():
    rnd = random.Random(7)
    a = BlockAllocator(40, 4)
    lengths: dict[int, int] = {}
    next_id = 0
    for _ in range(5000):
        op = rnd.random()
        try:
            if op < 0.25 or not lengths:
                n = rnd.randint(0, 20)
                a.allocate(next_id, n)
                lengths[next_id] = n
                next_id += 1
            elif op < 0.6:
                s = rnd.choice(list(lengths))
                a.append(s)
                lengths[s] += 1
            elif op < 0.75:
                s = rnd.choice(list(lengths))
                a.fork(s, next_id)
                lengths[next_id] = lengths[s]
                next_id += 1
            else:
                s = rnd.choice(list(lengths))
                a.free(s)
                del lengths[s]
        except MemoryError:
            pass
        refs: dict[int, int] = {}
        for s, n in lengths.items():
            table = a.block_table(s)
            assert len(table) == -(-n // 4) and len(set(table)) == len(table)
            for b in table:
                refs[b] = refs.get(b, 0) + 1
        assert a.num_free() + len(refs) == 40     # every block is free or held, never both
    for s in list(lengths):
        a.free(s)
    assert a.num_free() == 40


def test_allocator_arguments():
    with pytest.raises(ValueError, match="n_blocks"):
        BlockAllocator(0, 4)
    with pytest.raises(ValueError, match="n_tokens"):
        BlockAllocator(2, 4).allocate(0, -1)


# ----------------------------------------------------------------------------- managers
@dataclass
class Seq:  # the engine's KVSeq, as the protocol describes it
    id: int
    prompt_tokens: int
    output_tokens: int
    generated: int = 0
    context: int = 0
    prompt_id: int = -1
    admitted_at: float = 0.0


def test_reserve_max_reserves_prompt_plus_max_output():
    m = kvcache.reserve_max(100)(500)
    a, b = Seq(0, 150, 20, context=150), Seq(1, 200, 100, context=200, admitted_at=1)
    assert m.admit(a) and m.used() == 250 and m.stored() == 150
    assert not m.admit(b) and m.used() == 250     # 250 + 300 > 500: waits, nothing reserved
    assert m.grow([a]) == []
    m.free(0)
    assert m.admit(b) and m.used() == 300
    with pytest.raises(ValueError, match="max_output"):
        m.admit(Seq(2, 10, 101))
    with pytest.raises(ValueError, match="never run"):
        kvcache.reserve_max(100)(50).admit(Seq(3, 10, 5))
    with pytest.raises(KeyError):
        m.free(0)


def test_paged_allocates_as_sequences_grow_and_preempts_the_newest():
    m = kvcache.paged(block_size=4)(20)           # 5 blocks
    a = Seq(0, 5, 10, context=5, admitted_at=0.0)  # 2 blocks
    b = Seq(1, 7, 10, context=7, admitted_at=1.0)  # 2 blocks
    assert m.admit(a) and m.admit(b) and m.used() == 16 and m.stored() == 12
    assert not m.admit(Seq(2, 5, 3, context=5))   # needs 2, 1 free
    a.context, b.context = 6, 8
    assert m.grow([a, b]) == [] and m.used() == 16
    a.context, b.context = 9, 9                   # a needs its 3rd block (the last free), b too
    assert m.grow([a, b]) == [1]                  # b, admitted last, is preempted
    assert m.used() == 12 and m.stored() == 9
    m.free(0)
    assert m.used() == 0 and m.stored() == 0


def test_paged_preempts_the_sequence_itself_when_it_is_newest():
    m = kvcache.paged(block_size=2)(4)            # 2 blocks
    a = Seq(0, 2, 5, context=2, admitted_at=0.0)
    b = Seq(1, 2, 5, context=2, admitted_at=1.0)
    assert m.admit(a) and m.admit(b)
    b.context = 3                                  # only b grows: it is the newest, so it goes
    assert m.grow([a, b]) == [1] and m.used() == 2


def test_paged_prefix_sharing_hits_and_counts_tokens_once():
    m = kvcache.paged(block_size=4, prefix_sharing=True)(64)
    a = Seq(0, 10, 5, context=10, prompt_id=3)
    assert m.admit(a)                              # caches 8 tokens (2 full blocks) of prompt 3
    assert m.used() == 12 and m.stored() == 10 and m.hit_rate == 0
    b = Seq(1, 10, 5, context=10, prompt_id=3, admitted_at=1)
    assert m.admit(b)                              # shares the 2 blocks, adds 1 for 2 tokens
    assert m.used() == 16 and m.stored() == 12 and m.hit_rate == 8 / 20
    m.free(0), m.free(1)
    assert m.used() == 8                           # the cached prefix stays until evicted
    big = Seq(2, 60, 1, context=60)               # needs 15 of the 16 blocks: evicts it
    assert m.admit(big) and m.used() == 60


def test_paged_errors_name_the_problem():
    with pytest.raises(ValueError, match="kv_capacity"):
        kvcache.paged()(math.inf)
    with pytest.raises(ValueError, match="never run"):
        kvcache.paged(block_size=4)(16).admit(Seq(0, 17, 1, context=17))
    with pytest.raises(TypeError, match="allocator"):
        kvcache.paged(allocator=3)
    with pytest.raises(TypeError, match="no method allocate"):
        kvcache.paged(allocator=lambda n, b: object())(64)


def test_paged_random_protocol_run_keeps_its_invariants():
    """A random engine-like loop: admit, grow, finish and preempt; nothing leaks."""
    rnd = random.Random(3)
    for sharing in (False, True):
        m = kvcache.paged(block_size=8, prefix_sharing=sharing)(400)
        waiting = [Seq(i, rnd.randint(1, 60), rnd.randint(1, 60), prompt_id=rnd.choice(
            [-1, 0, 1, 2])) for i in range(300)]
        running: list[Seq] = []
        done = preempted = 0
        now = 0.0
        while waiting or running:
            now += 1
            while waiting:
                s = waiting[0]
                s.context = s.prompt_tokens + s.generated
                s.admitted_at = now
                if not m.admit(s):
                    break
                running.append(waiting.pop(0))
            for s in running:
                s.context = s.prompt_tokens + s.generated + 1
            victims = m.grow(running)
            assert len(set(victims)) == len(victims)
            for v in victims:
                m.free(v)  # as the engine does
                s = next(x for x in running if x.id == v)
                running.remove(s)
                waiting.insert(0, s)
                preempted += 1
            assert m.used() <= m.capacity and 0 <= m.stored() <= m.used()
            for s in list(running):
                s.generated += 1
                if s.generated == s.output_tokens:
                    m.free(s.id)
                    running.remove(s)
                    done += 1
        assert done == 300 and preempted > 0
        while m._evict_prefix():
            pass
        assert m.used() == 0 and m.stored() == 0 and m.alloc.num_free() == m.n_blocks


# ----------------------------------------------------------------------------- in the simulator
from scalesim_course import sim, workload  # noqa: E402
from scalesim_course.workload import Workload  # noqa: E402


class _Ten:
    """Every step takes 10 ms, whatever it holds."""

    def step_time(self, prefill_tokens, decode_seqs, context_tokens):
        return 0.01


def _keep(factory, into: list):
    def make(capacity):
        into.append(factory(capacity))
        return into[-1]
    return make


def test_reserve_max_equals_exact_when_every_answer_is_the_maximum():
    # if every output is exactly max_output, reserving the maximum IS the exact reservation
    rng = np.random.default_rng(1)
    wl = Workload.build(np.sort(rng.uniform(0, 20, 300)), rng.integers(1, 300, 300), [50] * 300)
    kw = dict(mode="iteration", cost=_Ten(), kv_capacity=3000, max_batch=64)
    a = sim.simulate(wl, kv=kvcache.reserve_max(50), **kw)
    b = sim.simulate(wl, **kw)
    assert np.array_equal(a.finish, b.finish) and np.array_equal(a.first_token, b.first_token)


def test_paged_with_room_for_everything_equals_exact():
    rng = np.random.default_rng(2)
    wl = Workload.build(np.sort(rng.uniform(0, 20, 300)), rng.integers(1, 300, 300),
                        rng.integers(1, 100, 300))
    kw = dict(mode="iteration", cost=_Ten(), kv_capacity=10**6, max_batch=64)
    a = sim.simulate(wl, kv=kvcache.paged(), **kw)
    assert np.array_equal(a.finish, sim.simulate(wl, **kw).finish) and not a.preemptions


@pytest.mark.parametrize("sharing,watermark", [(False, 0.0), (True, 0.0), (True, 0.01)])
def test_long_random_paged_runs_keep_every_invariant(sharing, watermark):
    rng = np.random.default_rng(4)
    n = 1500
    wl = Workload.build(np.sort(rng.uniform(0, 60, n)), rng.integers(1, 400, n),
                        rng.integers(1, 300, n), prompt_id=rng.integers(-1, 20, n))
    made: list = []
    res = sim.simulate(wl, mode="iteration", cost=_Ten(), kv_capacity=6000, max_batch=128,
                       replicas=2, kv=_keep(kvcache.paged(block_size=16, prefix_sharing=sharing,
                                                          watermark=watermark), made),
                       record_steps=True)
    # every request, preempted or not, finishes exactly once with all its tokens
    assert not np.isnan(res.finish).any() and res.unfinished == 0
    assert int(res.n_preemptions.sum()) == len(res.preemptions)
    if watermark == 0.0:
        assert len(res.preemptions) > 0  # the test exercises preemption
    for p in res.preemptions:
        assert p.generated < wl.output_tokens[p.request_id]
    # used blocks never exceed the pool, and what holds tokens never exceeds what is used
    for _, _, used, stored in res.kv_log:
        assert 0 <= stored <= used <= 6000
    # at the end nothing leaks: only cached prefixes hold blocks; evicting them empties the pool
    for m in made:
        assert not m._tokens and not m._preempted
        while m._evict_prefix():
            pass
        assert m.used() == 0 and m.stored() == 0 and m.alloc.num_free() == m.n_blocks
        assert not any(m.alloc._refs) and not m.alloc._tables


def test_paged_with_a_learner_style_allocator_matches_the_package():
    class Plain:  # no extend(): the manager must fall back to one append per token
        def __init__(self, n_blocks, block_size):
            self.a = BlockAllocator(n_blocks, block_size)
            self.allocate, self.append, self.fork = self.a.allocate, self.a.append, self.a.fork
            self.free, self.num_free = self.a.free, self.a.num_free

    rng = np.random.default_rng(6)
    wl = Workload.build(np.sort(rng.uniform(0, 10, 300)), rng.integers(1, 200, 300),
                        rng.integers(1, 200, 300), prompt_id=rng.integers(-1, 5, 300))
    kw = dict(mode="iteration", cost=_Ten(), kv_capacity=2500, max_batch=64)
    for sharing in (False, True):
        mine = sim.simulate(wl, kv=kvcache.paged(prefix_sharing=sharing, allocator=Plain,
                                                 watermark=0), **kw)
        ref = sim.simulate(wl, kv=kvcache.paged(prefix_sharing=sharing, watermark=0), **kw)
        assert np.array_equal(mine.finish, ref.finish) and mine.preemptions == ref.preemptions
        assert len(ref.preemptions) > 0


def test_prefix_sharing_hit_rate_of_identical_prompts():
    # 10 requests, all the same 40-token prompt, blocks of 16: the first caches 32 tokens
    # (2 full blocks), each of the other 9 finds them: hits 9 * 32 of 10 * 40 prompt tokens
    wl = Workload.build(np.arange(10) * 0.001, [40] * 10, [5] * 10, prompt_id=[7] * 10)
    made: list = []
    sim.simulate(wl, mode="iteration", cost=_Ten(), kv_capacity=4000, max_batch=64,
                 kv=_keep(kvcache.paged(prefix_sharing=True), made))
    assert made[0].hit_rate == pytest.approx(9 * 32 / 400)


def test_azure_trace_hour_replays_with_paging():
    path = "/work/shared/traces/AzureLLMInferenceTrace_conv.csv"
    import os
    if not os.path.exists(path):
        pytest.skip("Azure conversation trace not present")
    wl = workload.load_azure_trace(path)
    llm = costmodel.RooflineCost("llama-2-7b", "a100-80gb-sxm")
    res = sim.simulate(wl, mode="iteration", cost=llm, kv_capacity=llm.max_kv_tokens(),
                       max_batch=256, replicas=2, kv=kvcache.paged(watermark=0))
    assert res.unfinished == 0 and not np.isnan(res.finish).any()
