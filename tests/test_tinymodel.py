import numpy as np
import pytest
import torch

from scalesim_course import tinymodel
from scalesim_course.costmodel import LinearStepCost
from scalesim_course.tinymodel import (DemoRequests, KVCache, TinyConfig, TinyTransformer,
                                       compare_batching, demo_requests, generate_continuous,
                                       generate_one, generate_static, same_tokens, torch_threads)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # direct model calls too: steady and fast when other jobs share the cores
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def model():
    return TinyTransformer()


@pytest.fixture(scope="module")
def gqa_model():
    return TinyTransformer(TinyConfig(d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, seed=3))


# varied prompt lengths and skewed output lengths, one-token outputs included
PROMPTS = [[1, 2, 3], [7] * 11, [42], list(range(20, 37)), [5, 9], [200, 100, 50, 25, 12, 6],
           [3] * 8]
MAX_NEW = [12, 1, 30, 4, 2, 17, 6]


# ----------------------------------------------------------------------------- the model
def test_shapes_and_sizes(model):
    cfg = model.config
    assert model(torch.randint(0, cfg.vocab_size, (3, 5))).shape == (3, 5, cfg.vocab_size)
    d, f, L = cfg.d_model, 4 * cfg.d_model, cfg.n_layers
    per_layer = d * 3 * d + d * d + d * 2 * f + f * d + 2 * d  # qkv, out, gate_up, down, norms
    assert model.param_count() == L * per_layer + 2 * cfg.vocab_size * d + d
    assert model.kv_bytes_per_token() == 2 * L * cfg.n_kv_heads * cfg.head_dim * 8  # float64
    assert model.kv_bytes_per_token(2) == 2 * L * cfg.n_kv_heads * cfg.head_dim * 2
    cache = KVCache(cfg, n_slots=2, capacity=10)
    assert cache.nbytes == 2 * 10 * model.kv_bytes_per_token()


def test_gqa_cache_is_smaller(gqa_model):
    cfg = gqa_model.config
    assert cfg.n_kv_heads == 2 and cfg.head_dim == 16
    assert gqa_model.kv_bytes_per_token() == 2 * 2 * 2 * 16 * 8
    assert gqa_model(torch.tensor([[1, 2, 3]])).shape == (1, 3, cfg.vocab_size)


def test_weights_are_deterministic_from_seed_and_leave_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = TinyTransformer(TinyConfig(seed=5)), TinyTransformer(TinyConfig(seed=5))
    c = TinyTransformer(TinyConfig(seed=6))
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        if not name.endswith("norm.weight"):
            assert not torch.equal(pa, pc), name


@pytest.mark.parametrize("fixture", ["model", "gqa_model"])
def test_incremental_decoding_matches_full_forward(fixture, request):
    """Sequences of different lengths share decode steps; their logits must equal a full
    forward pass over each whole sequence, position by position."""
    m = request.getfixturevalue(fixture)
    seqs = [torch.randint(0, m.config.vocab_size, (n,), generator=torch.Generator().manual_seed(n))
            for n in (14, 9, 20)]
    prompt_len = [5, 1, 12]
    cache = KVCache(m.config, n_slots=3, capacity=20)
    got = [[] for _ in seqs]
    with torch.inference_mode():
        for s, (seq, p) in enumerate(zip(seqs, prompt_len)):
            got[s].append(m.extend(cache, torch.tensor([s]), seq[None, :p])[0])
        for step in range(max(len(q) - p for q, p in zip(seqs, prompt_len))):
            slots = [s for s, (q, p) in enumerate(zip(seqs, prompt_len)) if p + step < len(q)]
            new = torch.stack([seqs[s][prompt_len[s] + step] for s in slots])[:, None]
            for s, logits in zip(slots, m.extend(cache, torch.tensor(slots), new)):
                got[s].append(logits)
        for s, seq in enumerate(seqs):
            assert cache.lengths[s] == len(seq)
            full = m(seq[None])[0]
            torch.testing.assert_close(torch.cat(got[s]), full, rtol=0, atol=1e-10)


def test_extend_refuses_to_overflow_the_cache(model):
    cache = KVCache(model.config, n_slots=1, capacity=4)
    with pytest.raises(ValueError, match="holds 4 tokens"):
        model.extend(cache, torch.tensor([0]), torch.tensor([[1, 2, 3, 4, 5]]))


# ----------------------------------------------------------------------------- generation
def test_batched_generation_equals_solo(model):
    solo = [generate_one(model, p, n) for p, n in zip(PROMPTS, MAX_NEW)]
    assert [len(t) for t in solo] == MAX_NEW
    assert len({tuple(t) for t in solo}) == len(solo)  # the requests really differ
    for size in (1, 3, 8):
        assert same_tokens(generate_static(model, PROMPTS, MAX_NEW, size), solo), size
        assert same_tokens(generate_continuous(model, PROMPTS, MAX_NEW, size), solo), size


def test_batched_generation_equals_solo_with_gqa(gqa_model):
    solo = [generate_one(gqa_model, p, n) for p, n in zip(PROMPTS, MAX_NEW)]
    assert same_tokens(generate_static(gqa_model, PROMPTS, MAX_NEW, 4), solo)
    assert same_tokens(generate_continuous(gqa_model, PROMPTS, MAX_NEW, 4), solo)


def test_equality_is_by_margin_not_luck(model):
    """float64 rounding moves a batched logit by ~1e-15 from the solo one; the closest greedy
    call is many orders of magnitude wider, so no argmax can flip."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.config.vocab_size, (8, 30), generator=gen)
    with torch.inference_mode():
        batched = model(x)
        solo = torch.cat([model(x[i:i + 1]) for i in range(8)])
    error = (batched - solo).abs().max().item()
    margin = generate_continuous(model, PROMPTS, MAX_NEW, 4).min_margin
    assert error < 1e-12
    assert margin > 1e6 * max(error, 1e-16)


def test_result_times_and_step_records(model):
    r = generate_continuous(model, PROMPTS, MAX_NEW, 3)
    assert r.strategy == "continuous" and r.generated_tokens == sum(MAX_NEW)
    assert np.all(r.first_token_time > 0)
    assert np.all(r.first_token_time <= r.completion_time)
    assert r.completion_time.max() <= r.wall_time
    assert r.tokens_per_s == pytest.approx(sum(MAX_NEW) / r.wall_time)
    prefills = [s for s in r.steps if s.prefill_tokens]
    assert [s.prefill_tokens for s in prefills] == [len(p) for p in PROMPTS]
    assert all(s.decode_seqs == 0 and s.context_tokens == 0 for s in prefills)
    decodes = [s for s in r.steps if s.decode_seqs]
    assert len(decodes) == r.decode_steps and all(1 <= s.decode_seqs <= 3 for s in decodes)
    assert all(s.seconds > 0 for s in r.steps)
    assert len(r.steps) == len(prefills) + len(decodes)
    assert isinstance(LinearStepCost.fit(r.steps), LinearStepCost)  # calibration input works
    assert set(r.summary()) >= {"tokens_per_s", "decode_steps", "latency_mean_s",
                                "latency_p50_s", "latency_p99_s"}


def test_static_runs_each_group_to_its_longest(model):
    r = generate_static(model, PROMPTS, MAX_NEW, 3)
    groups = [MAX_NEW[i:i + 3] for i in range(0, len(MAX_NEW), 3)]
    assert r.decode_steps == sum(max(g) - 1 for g in groups)
    # finished sequences ride along: every decode step carries the whole group
    sizes = [s.decode_seqs for s in r.steps if s.decode_seqs]
    assert sizes == [len(g) for g in groups for _ in range(max(g) - 1)]


def test_continuous_takes_fewer_steps_and_is_faster_on_skewed_outputs(model):
    req = demo_requests(16, seed=1)
    assert max(req.max_new_tokens) > 4 * np.median(req.max_new_tokens)  # skewed
    cont = generate_continuous(model, *req, 8)
    static = generate_static(model, *req, 8)
    # deterministic: the decode steps either needs; continuous needs at least
    # ceil(sum(n - 1) / 8) and static sum over groups of max(n) - 1
    assert cont.decode_steps >= -(-sum(n - 1 for n in req.max_new_tokens) // 8)
    assert cont.decode_steps < 0.8 * static.decode_steps
    summary = compare_batching(model, req, max_batch=8, repeats=2)
    assert summary["same_tokens"]
    assert summary["continuous"]["decode_steps"] == cont.decode_steps
    assert summary["speedup"] > 1.1  # ~1.8 measured; generous margin for a busy machine


def test_continuous_never_needs_more_steps_than_static(model):
    rng = np.random.default_rng(0)
    for _ in range(4):
        n = int(rng.integers(1, 10))
        prompts = [[1] * int(rng.integers(1, 6)) for _ in range(n)]
        max_new = rng.integers(1, 15, n).tolist()
        batch = int(rng.integers(1, 5))
        s = generate_static(model, prompts, max_new, batch)
        c = generate_continuous(model, prompts, max_new, batch)
        assert c.decode_steps <= s.decode_steps
        assert same_tokens(s, c)


def test_max_new_tokens_may_be_one_int(model):
    r = generate_continuous(model, PROMPTS[:3], 2, 2)
    assert [len(t) for t in r.tokens] == [2, 2, 2]


# ----------------------------------------------------------------------------- helpers
def test_demo_requests_are_reproducible_and_fit_the_model(model):
    a, b = demo_requests(16, seed=4), demo_requests(16, seed=4)
    assert isinstance(a, DemoRequests) and a == b
    assert a != demo_requests(16, seed=5)
    assert len(a.prompts) == len(a.max_new_tokens) == 16
    assert all(1 <= len(p) and all(0 <= t < 256 for t in p) for p in a.prompts)
    assert all(1 <= n <= 64 for n in a.max_new_tokens)
    assert len(set(map(len, a.prompts))) > 3
    generate_continuous(model, *a, 4)  # fits max_seq_len and the vocabulary


def test_same_tokens():
    assert same_tokens([[1, 2], [3]], [[1, 2], [3]])
    assert not same_tokens([[1, 2], [3]], [[1, 2], [4]])
    assert not same_tokens([[1, 2]], [[1, 2], [3]])


def test_torch_threads_restores_the_setting():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError
    assert torch.get_num_threads() == before


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("prompts, max_new, match", [
    ([], [], "prompts is empty"),
    ([[1], []], [1, 1], r"prompts\[1\] is empty"),
    ([[1, 256]], [1], r"prompts\[0\]\[1\]=256 is outside the vocabulary"),
    ([[-1]], [1], r"prompts\[0\]\[0\]=-1 is outside"),
    ([[1], [1] * 250], [3, 7], r"prompts\[1\] has 250 tokens \+ max_new_tokens\[1\]=7"),
    ([[1]], [0], r"max_new_tokens\[0\] must be >= 1"),
    ([[1], [2]], [1], "max_new_tokens has 1 entries for 2 prompts"),
])
def test_bad_requests_are_refused(model, prompts, max_new, match):
    for generate in (generate_static, generate_continuous):
        with pytest.raises(ValueError, match=match):
            generate(model, prompts, max_new, 2)


def test_too_long_names_max_seq_len(model):
    with pytest.raises(ValueError, match=r"= 257 > max_seq_len=256"):
        generate_continuous(model, [[1] * 250], [7], 1)


def test_bad_batch_sizes_are_refused(model):
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        generate_continuous(model, [[1]], [1], 0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        generate_static(model, [[1]], [1], 0)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="n_heads=4 must be a multiple of n_kv_heads=3"):
        TinyConfig(n_kv_heads=3)
    with pytest.raises(ValueError, match="d_model=60 must be n_heads=8"):
        TinyConfig(d_model=60, n_heads=8)
    with pytest.raises(ValueError, match="dtype"):
        TinyConfig(dtype=torch.float16)
    with pytest.raises(ValueError, match="n_layers must be >= 1"):
        TinyConfig(n_layers=0)


# ----------------------------------------------------------------------------- one sequence, with and without a cache
def test_cache_and_no_cache_generate_the_same_tokens():
    from scalesim_course.kvcache import decode_attention

    model = TinyTransformer(TinyConfig(n_heads=4, n_kv_heads=2, seed=3))
    prompt = list(range(7, 30))
    cached = tinymodel.generate_with_cache(model, prompt, 40)
    plain = tinymodel.generate_without_cache(model, prompt, 40)
    own = tinymodel.generate_with_cache(model, prompt, 40, attention=decode_attention)
    assert cached.tokens == plain.tokens == own.tokens == tinymodel.generate_one(model, prompt, 40)
    assert len(cached.step_times) == len(plain.step_times) == 40 and plain.cache is None
    # the cache holds prompt + 39 tokens (the last token's KV is never needed)
    assert int(cached.cache.lengths[0]) == len(prompt) + 39
    # 2 (K and V) x 4 layers x 2 KV heads x 16 dims x 8 bytes, per slot of capacity
    assert cached.cache.nbytes == 2 * 4 * 2 * 16 * 8 * (len(prompt) + 40)
    assert torch.allclose(own.cache.k[1], cached.cache.k[1], atol=1e-12)  # same up to rounding


def test_custom_attention_errors_name_the_problem():
    model = TinyTransformer(TinyConfig())
    with pytest.raises(TypeError, match="attention"):
        tinymodel.generate_with_cache(model, [1, 2], 3, attention=lambda *a: a[0])
    with pytest.raises(ValueError, match="shape"):
        tinymodel.generate_with_cache(model, [1, 2], 3, attention=lambda q, kc, vc, k, v: (q, kc, vc))
    with pytest.raises(ValueError, match="layer=4"):
        tinymodel.attention_inputs(model, [1, 2], layer=4)
