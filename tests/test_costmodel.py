"""Cost models (scalesim_course.costmodel): sampled service, batch cost, roofline, fitted."""
import itertools
import math
import time

import numpy as np
import pytest

from scalesim_course import sim
from scalesim_course.costmodel import (GPUS, MODELS, DeterministicService, ExponentialService,
                                       FixedBatchCost, GpuSpec, LinearStepCost,
                                       LognormalService, ModelSpec, RooflineCost, StepRecord,
                                       _sum_of_max, get_gpu, get_model, service_distribution)
from scalesim_course.workload import Workload, azure_like


# ----------------------------------------------------------------------------- (a) sampled
@pytest.mark.parametrize("dist, scv", [(ExponentialService(2.0), 1.0),
                                       (DeterministicService(2.0), 0.0),
                                       (LognormalService(2.0, 3.0), 3.0)])
def test_sampled_service_mean_and_variability(dist, scv):
    x = dist.sample(400_000, seed=1)
    assert x.mean() == pytest.approx(2.0, rel=0.02)
    assert x.var() / x.mean() ** 2 == pytest.approx(scv, abs=0.15)
    assert dist.scv == scv
    assert np.array_equal(x, dist.sample(400_000, seed=1))


def test_service_distribution_picks_by_scv():
    assert isinstance(service_distribution(1.0, 1.0), ExponentialService)
    assert isinstance(service_distribution(1.0, 0.0), DeterministicService)
    assert isinstance(service_distribution(1.0, 0.5), LognormalService)
    with pytest.raises(ValueError, match="scv"):
        service_distribution(1.0, -1.0)
    with pytest.raises(ValueError, match="mean"):
        ExponentialService(0.0)


def test_fixed_batch_cost_shares_the_setup():
    cost = FixedBatchCost(setup=0.05, per_request=0.01)
    assert cost.batch_timing([5], [5]) == pytest.approx((0.06, 0.06))
    assert cost.batch_timing([5] * 8, [5] * 8)[1] == pytest.approx(0.13)
    with pytest.raises(ValueError, match="setup"):
        FixedBatchCost(-1.0, 0.1)


def test_roofline_drives_both_simulator_modes():
    cost = RooflineCost("llama-3-8b", "a100-80gb-sxm")
    wl = azure_like(120, rate=2.0, seed=3)
    it = sim.simulate(wl, mode="iteration", cost=cost, kv_capacity=cost.max_kv_tokens(),
                      max_batch=64)
    assert it.completed.all()
    # a decode step of an 8B model on an A100 takes milliseconds, not seconds or microseconds
    assert 0.002 < np.nanmedian(it.tpot) < 0.1
    static = sim.simulate(Workload.build(wl.arrival[:50], wl.prompt_tokens[:50],
                                         wl.output_tokens[:50]), cost=cost)
    assert static.completed.all() and np.all(static.first_token < static.finish)


def ideal(model="llama-2-7b", gpu="a100-80gb-sxm", **kw):
    """The pure roofline: full efficiency, no per-step overhead."""
    return RooflineCost(model, gpu, mfu=1.0, mbu=1.0, step_overhead_s=0.0, **kw)


# ----------------------------------------------------------------------------- catalogue
def test_kv_bytes_per_token_of_known_models():
    assert MODELS["llama-2-7b"].kv_bytes_per_token == 524_288   # 0.5 MiB: 2*32*32*128*2
    assert MODELS["llama-3-8b"].kv_bytes_per_token == 131_072   # GQA: 8 KV heads, 4x less
    assert MODELS["llama-2-70b"].kv_bytes_per_token == 327_680  # 2*80*8*128*2
    assert MODELS["mistral-7b"].kv_bytes_per_token == 131_072
    assert MODELS["qwen2-0.5b"].kv_bytes_per_token == 12_288    # 2*24*2*64*2


def test_catalogue_entries_are_consistent_and_sourced():
    for key, m in MODELS.items():
        assert key == m.name and "https://" in m.source
        assert m.n_heads * m.head_dim == m.d_model
    for key, g in GPUS.items():
        assert key == g.name and "https://" in g.source
    assert MODELS["llama-2-7b"].weight_bytes == pytest.approx(13.48e9, rel=1e-3)
    assert GPUS["a100-80gb-sxm"].peak_flops == 312e12          # dense, not the 624 sparse
    assert GPUS["a100-80gb-sxm"].ridge_point == pytest.approx(153, abs=1)
    assert GPUS["h100-80gb-sxm"].ridge_point == pytest.approx(295, abs=1)


def test_lookup_by_name():
    assert get_model("Llama-2-7B") is MODELS["llama-2-7b"]
    assert get_gpu(GPUS["t4"]) is GPUS["t4"]
    with pytest.raises(ValueError, match="unknown model 'gpt-5'.*llama-2-7b"):
        get_model("gpt-5")
    with pytest.raises(ValueError, match="valid names: a100-80gb-sxm"):
        get_gpu("a99")


# ----------------------------------------------------------------------------- roofline
def test_decode_at_batch_one_reads_the_weights():
    cost = ideal()
    t = cost.step_time(0, 1, 0)
    # memory-bound: the matmul weights, 6,738,415,616 - 32,000 * 4,096 (the input-embedding
    # table is a lookup) = 6,607,343,616 weights of 2 bytes, read at 2.039 TB/s
    assert t == pytest.approx(6_607_343_616 * 2 / 2.039e12)
    assert t == pytest.approx(6.481e-3, rel=1e-4)
    assert cost.decode_intensity(1) < cost.ridge_point
    # with context, the KV cache is read too
    assert cost.step_time(0, 1, 1000) == pytest.approx(
        (6_607_343_616 * 2 + 1000 * 524_288) / 2.039e12)


def test_long_prefill_is_compute_bound():
    cost = ideal()
    t = cost.step_time(2048, 0, 0)
    matmuls = 2 * 6_607_343_616 * 2048 / 312e12     # matmul weights only (no embedding lookup)
    attention = 4 * 32 * 4096 * (2048 * 2048 / 2) / 312e12
    assert t == pytest.approx(matmuls + attention)
    assert t == pytest.approx(cost.prefill_time([2048]))


def test_efficiencies_and_overhead_scale_the_roofs():
    base = ideal()
    slow = RooflineCost("llama-2-7b", "a100-80gb-sxm", mfu=0.5, mbu=0.5, step_overhead_s=1e-3)
    for args in [(0, 1, 0), (4096, 0, 0), (100, 64, 50_000)]:
        assert slow.step_time(*args) == pytest.approx(2 * base.step_time(*args) + 1e-3)


def test_tensor_parallel_halves_step_time():
    one, two = ideal(), ideal(n_gpus=2)
    for args in [(0, 1, 0), (4096, 0, 0), (100, 64, 50_000)]:
        assert two.step_time(*args) == pytest.approx(one.step_time(*args) / 2)


@pytest.mark.parametrize("cost", [RooflineCost("llama-3-8b", "h100-80gb-sxm"),
                                  LinearStepCost(2e-3, 1e-4, 5e-5, 1e-7)], ids=repr)
def test_step_time_is_monotone_in_each_argument(cost):
    grid = [0, 1, 7, 64, 500, 4096, 100_000]
    for p, d, c in itertools.product(grid, repeat=3):
        t = cost.step_time(p, d, c)
        assert t > 0
        assert cost.step_time(p + 1, d, c) >= t
        assert cost.step_time(p, d + 1, c) >= t
        assert cost.step_time(p, d, c + 1) >= t
    assert cost.step_time(8192, 0, 0) > cost.step_time(16, 0, 0)  # prefill costs something


def test_decode_throughput_linear_below_ridge_then_flat():
    cost = RooflineCost("llama-2-7b", "a100-80gb-sxm")
    ridge = cost.ridge_batch()
    assert ridge == pytest.approx(cost.ridge_point)  # fp16: one FLOP per weight byte per seq
    sizes = np.arange(1, 8 * int(ridge))
    thr = cost.decode_throughput(sizes)
    assert np.all(np.diff(thr) >= -1e-12 * thr[1:])  # non-decreasing, to rounding
    below = sizes <= ridge
    np.testing.assert_allclose(thr[below], sizes[below] * thr[0])            # linear
    plateau = cost.flop_rate / (2 * 6_607_343_616)                         # tokens/s at peak
    np.testing.assert_allclose(thr[sizes >= ridge], plateau)               # saturated
    # with long contexts the KV reads also grow with the batch: the step never turns
    # compute-bound, and throughput approaches byte_rate / (kv bytes per token) instead
    assert cost.ridge_batch(context_per_seq=4096) == math.inf
    long = cost.decode_throughput([1, 1024], context_per_seq=4096)
    assert long[1] < cost.byte_rate / (4096 * 524_288)


def test_batch_timing_is_the_sum_of_its_steps():
    prompts, outputs = [100, 300, 50], [20, 5, 64]
    b, p, n = 3, 300, 64
    for cost in [RooflineCost("llama-2-7b", "a100-80gb-sxm", step_overhead_s=2e-4),
                 RooflineCost("qwen2-0.5b", "jetson-agx-orin-64gb", mfu=0.3, mbu=0.9),
                 LinearStepCost(2e-3, 1e-4, 5e-5, 1e-7)]:
        first, busy = cost.batch_timing(prompts, outputs)
        if isinstance(cost, RooflineCost):
            assert first == pytest.approx(cost.prefill_time([p] * b))
        else:
            assert first == pytest.approx(cost.step_time(b * p, 0, 0))
        steps = sum(cost.step_time(0, b, b * (p + k)) for k in range(1, n))
        assert busy == pytest.approx(first + steps, rel=1e-12)
        assert cost.batch_timing([10], [1]) == (cost.batch_timing([10], [1])[0],) * 2


def test_sum_of_max_matches_a_loop():
    rng = np.random.default_rng(0)
    for _ in range(500):
        a1, b1, a2, b2 = rng.normal(size=4)
        if rng.random() < 0.1:
            b2 = b1
        n = int(rng.integers(0, 50))
        loop = sum(max(a1 + b1 * k, a2 + b2 * k) for k in range(1, n + 1))
        assert _sum_of_max(a1, b1, a2, b2, n) == pytest.approx(loop, abs=1e-9)


def test_kv_capacity():
    cost = RooflineCost("llama-2-7b", "a100-80gb-sxm")
    tokens = cost.max_kv_tokens()
    assert tokens == math.floor((0.9 * 80 * 2**30 - 13_476_831_232) / 524_288)  # ~121k
    assert cost.memory_ok(64, tokens // 64) and not cost.memory_ok(64, tokens // 64 + 1)
    seventy = RooflineCost("llama-2-70b", "a100-80gb-sxm")
    assert seventy.max_kv_tokens() == 0 and not seventy.memory_ok(1, 1)  # 138 GB of weights
    assert RooflineCost("llama-2-70b", "a100-80gb-sxm", n_gpus=2).max_kv_tokens() > 50_000
    # GQA: the same memory holds 4x the tokens
    assert (RooflineCost("llama-3-8b", "a100-80gb-sxm").max_kv_tokens()
            > 3.5 * RooflineCost("llama-2-7b", "a100-80gb-sxm").max_kv_tokens())


def test_step_time_micro_benchmark(capsys):
    """Not a timed assertion: prints how many step_time calls a second this machine does."""
    cost = RooflineCost("llama-3-8b", "h100-80gb-sxm", step_overhead_s=1e-4)
    step = cost.step_time
    n = 200_000
    start = time.perf_counter()
    for i in range(n):
        step(i & 511, 64, 40_000 + i)
    rate = n / (time.perf_counter() - start)
    with capsys.disabled():
        print(f"\n  RooflineCost.step_time: {rate:,.0f} calls/s")
    assert rate > 0


# ----------------------------------------------------------------------------- fitting
def synthetic_records(coef, n=200, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    prefill = rng.integers(0, 2048, n) * (rng.random(n) < 0.5)
    decode = rng.integers(0, 128, n)
    context = decode * rng.integers(1, 2000, n)
    a, b, c, d = coef
    seconds = a + b * prefill + c * decode + d * context
    seconds = seconds * (1 + noise * rng.standard_normal(n))
    return [StepRecord(int(p), int(q), int(r), float(s))
            for p, q, r, s in zip(prefill, decode, context, seconds)]


def test_fit_recovers_known_coefficients():
    true = (2e-3, 1e-4, 5e-5, 1e-7)
    fitted = LinearStepCost.fit(synthetic_records(true))
    got = (fitted.a, fitted.b_prefill, fitted.c_decode, fitted.d_context)
    np.testing.assert_allclose(got, true, rtol=1e-8)
    # mappings work as well as StepRecords
    as_dicts = [r._asdict() for r in synthetic_records(true)]
    assert LinearStepCost.fit(as_dicts).a == pytest.approx(true[0], rel=1e-8)


def test_fit_keeps_coefficients_non_negative():
    # a true coefficient of 0 plus noise would come out negative in plain least squares
    records = synthetic_records((2e-3, 1e-4, 0.0, 1e-7), noise=0.05, seed=3)
    fitted = LinearStepCost.fit(records)
    assert min(fitted.a, fitted.b_prefill, fitted.c_decode, fitted.d_context) >= 0
    assert fitted.b_prefill == pytest.approx(1e-4, rel=0.05)


# ----------------------------------------------------------------------------- validation
def test_invalid_specs_name_the_parameter():
    good = dict(name="m", n_params=10, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=8,
                d_model=32)
    ModelSpec(**good)
    with pytest.raises(ValueError, match="n_layers must be >= 1, got 0"):
        ModelSpec(**{**good, "n_layers": 0})
    with pytest.raises(TypeError, match="n_params must be an integer"):
        ModelSpec(**{**good, "n_params": 1.5})
    with pytest.raises(ValueError, match="bytes_per_param must be > 0, got -2"):
        ModelSpec(**{**good, "bytes_per_param": -2})
    with pytest.raises(ValueError, match="multiple of n_kv_heads=3"):
        ModelSpec(**{**good, "n_kv_heads": 3})
    with pytest.raises(ValueError, match="peak_flops must be > 0, got 0"):
        GpuSpec("g", peak_flops=0, mem_bandwidth=1.0, mem_bytes=1.0)


def test_invalid_cost_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="mfu must be > 0"):
        RooflineCost("llama-2-7b", "t4", mfu=0)
    with pytest.raises(ValueError, match=r"mbu must be in \[0.0, 1.0\], got 1.5"):
        RooflineCost("llama-2-7b", "t4", mbu=1.5)
    with pytest.raises(ValueError, match="n_gpus must be >= 1"):
        RooflineCost("llama-2-7b", "t4", n_gpus=0)
    for cost in [RooflineCost("llama-2-7b", "t4"), LinearStepCost(1e-3, 0, 0, 0)]:
        with pytest.raises(ValueError, match="decode_seqs must be >= 0, got -1"):
            cost.step_time(0, -1, 0)
        with pytest.raises(ValueError, match="equal length, got 2 and 1"):
            cost.batch_timing([1, 2], [3])
        with pytest.raises(ValueError, match="output_tokens must all be >= 1, got 0"):
            cost.batch_timing([5], [0])
    with pytest.raises(ValueError, match="d_context must be >= 0, got -1"):
        LinearStepCost(1, 0, 0, -1)
    with pytest.raises(ValueError, match="at least one coefficient"):
        LinearStepCost(0, 0, 0, 0)
    with pytest.raises(ValueError, match="records is empty"):
        LinearStepCost.fit([])
    with pytest.raises(ValueError, match=r"records\[0\] has no field 'seconds'"):
        LinearStepCost.fit([{"prefill_tokens": 1, "decode_seqs": 0, "context_tokens": 0}])
    with pytest.raises(ValueError, match=r"records\[1\].seconds must be > 0"):
        LinearStepCost.fit([StepRecord(1, 0, 0, 1.0), StepRecord(1, 0, 0, 0.0)])
    with pytest.raises(ValueError, match="batch_sizes must be integers >= 1"):
        RooflineCost("llama-2-7b", "t4").decode_throughput([0, 1])


# ----------------------------------------------------------------------------- which weights count
def test_embedding_table_is_a_lookup_not_a_matmul():
    # vocab_size * d_model weights come off n_params; worked out by hand from config.json
    assert MODELS["llama-2-7b"].matmul_params == 6_738_415_616 - 32_000 * 4_096 == 6_607_343_616
    assert MODELS["llama-3-8b"].matmul_params == 7_504_924_672      # 8,030,261,248 - 128,256*4,096
    # Qwen2-0.5B ties its LM head to the embedding table: the table is the head's matmul
    assert MODELS["qwen2-0.5b"].matmul_params == 494_032_768
    m = ModelSpec("m", n_params=1000, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=4, d_model=4)
    assert m.matmul_params == 1000                                    # vocab unknown: all count
    assert MODELS["llama-2-7b"].weight_bytes == 6_738_415_616 * 2    # memory holds the table


def test_kv_bytes_per_token_follows_heads_and_kv_dtype():
    assert MODELS["llama-2-7b"].kv_bytes_per_token == 2 * 32 * 32 * 128 * 2 == 524_288
    assert MODELS["llama-3-8b"].kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131_072
    fp8_kv = ModelSpec("m8", n_params=8_030_261_248, n_layers=32, n_heads=32, n_kv_heads=8,
                       head_dim=128, d_model=4096, kv_bytes_per_value=1)
    assert fp8_kv.kv_bytes_per_token == 65_536
    int4 = ModelSpec("m4", n_params=8_030_261_248, n_layers=32, n_heads=32, n_kv_heads=8,
                     head_dim=128, d_model=4096, bytes_per_param=0.5)
    assert int4.kv_bytes_per_token == 32_768                          # KV follows the weights


def test_decode_intensity_counts_kv_bytes_and_attention_with_context():
    cost = ideal()
    # batch 4, 1000 cached tokens each (4000 in all):
    # FLOPs = 2 * 6,607,343,616 * 4 + 4 * 32 * 32 * 128 * 4000 = 54,955,900,928
    # bytes = 6,607,343,616 * 2 + 524,288 * 4000              = 15,311,839,232
    assert cost.decode_intensity(4, 1000) == pytest.approx(54_955_900_928 / 15_311_839_232)
    assert cost.decode_intensity(1) == pytest.approx(1.0)               # fp16: 2 FLOPs / 2 B


def test_model_spec_refuses_an_embedding_larger_than_the_model():
    with pytest.raises(ValueError, match="embedding table"):
        ModelSpec("m", n_params=100, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=4, d_model=10,
                  vocab_size=10)


# ----------------------------------------------------------------------------- exact edges
_SPEC = dict(name="m", n_params=100, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=8, d_model=4)


@pytest.mark.parametrize("call, error, message", [
    (lambda: ExponentialService(0), ValueError, "^mean must be > 0, got 0$"),
    (lambda: ExponentialService(1.0).sample(0), ValueError, "^n must be >= 1, got 0$"),
    (lambda: DeterministicService(-1.0), ValueError, "^time must be > 0, got -1.0$"),
    (lambda: DeterministicService(1.0).sample(0), ValueError, "^n must be >= 1, got 0$"),
    (lambda: LognormalService(0, 1.0), ValueError, "^mean must be > 0, got 0$"),
    (lambda: LognormalService(1.0, 0), ValueError, "^scv must be > 0, got 0$"),
    (lambda: LognormalService(1.0, 2.0).sample(0), ValueError, "^n must be >= 1, got 0$"),
    (lambda: service_distribution(1.0, -1), ValueError, "^scv must be >= 0, got -1$"),
    (lambda: FixedBatchCost(setup=-1, per_request=2), ValueError, "^setup must be >= 0, got -1$"),
    (lambda: FixedBatchCost(setup=1, per_request=-2), ValueError,
     "^per_request must be >= 0, got -2$"),
    (lambda: FixedBatchCost(setup=0, per_request=0), ValueError,
     r"^setup \+ per_request must be > 0$"),
    (lambda: ModelSpec(**{**_SPEC, "name": ""}), ValueError,
     "^name must be a non-empty string, got ''$"),
    (lambda: ModelSpec(**{**_SPEC, "name": 7}), ValueError, "^name must be a non-empty string"),
    (lambda: ModelSpec(**{**_SPEC, "vocab_size": 0}), ValueError,
     "^vocab_size must be >= 1, got 0$"),
    (lambda: ModelSpec(**{**_SPEC, "kv_bytes_per_value": 0}), ValueError,
     "^kv_bytes_per_value must be > 0, got 0$"),
    (lambda: ModelSpec(**{**_SPEC, "tied_embeddings": 1}), TypeError,
     "^tied_embeddings must be True or False, got 1$"),
    (lambda: ModelSpec(**{**_SPEC, "vocab_size": 25}), ValueError,
     r"^n_params=100 must exceed the embedding table vocab_size \* d_model = 100$"),
    (lambda: ModelSpec(**{**_SPEC, "n_kv_heads": 3}), ValueError,
     "^n_heads=4 must be a multiple of n_kv_heads=3$"),
    (lambda: GpuSpec("", 1.0, 1.0, 1.0), ValueError, "^name must be a non-empty string"),
    (lambda: GpuSpec("g", 1.0, 0.0, 1.0), ValueError, "^mem_bandwidth must be > 0, got 0.0$"),
    (lambda: GpuSpec("g", 1.0, 1.0, 0.0), ValueError, "^mem_bytes must be > 0, got 0.0$"),
    (lambda: get_gpu("b200"), ValueError, "^unknown gpu 'b200'; valid names: a100-80gb-sxm, "),
    (lambda: get_model("gpt-5"), ValueError, "^unknown model 'gpt-5'; valid names: llama-2-7b, "),
    (lambda: RooflineCost("llama-2-7b", "a100-80gb-sxm", step_overhead_s=-1), ValueError,
     "^step_overhead_s must be >= 0, got -1$"),
    (lambda: ideal().max_kv_tokens(0), ValueError, "^utilization must be > 0, got 0$"),
    (lambda: ideal().memory_ok(0, 10), ValueError, "^batch must be >= 1, got 0$"),
    (lambda: ideal().memory_ok(1, -1), ValueError, "^context_per_seq must be >= 0, got -1$"),
    (lambda: ideal().decode_intensity(0), ValueError, "^batch must be >= 1, got 0$"),
    (lambda: ideal().decode_intensity(1, -1), ValueError, "^context_per_seq must be >= 0, got -1$"),
    (lambda: ideal().ridge_batch(-1), ValueError, "^context_per_seq must be >= 0, got -1$"),
    (lambda: ideal().decode_throughput([1], -1), ValueError,
     "^context_per_seq must be >= 0, got -1$"),
    (lambda: ideal().decode_throughput([], 0), ValueError, "^batch_sizes must be integers >= 1"),
    (lambda: ideal().decode_throughput([1.0, 2.0]), ValueError, "^batch_sizes must be integers"),
    (lambda: ideal().decode_throughput([0, 2]), ValueError, "^batch_sizes must be integers"),
    (lambda: ideal().prefill_time([]), ValueError, "^prompt_tokens must be non-empty, all >= 1"),
    (lambda: ideal().prefill_time([4, 0]), ValueError, "^prompt_tokens must be non-empty"),
    (lambda: ideal().batch_timing([0], [1]), ValueError, "^prompt_tokens must all be >= 1, got 0$"),
    (lambda: ideal().step_time(-1, 0, 0), ValueError, "^prefill_tokens must be >= 0, got -1$"),
    (lambda: ideal().step_time(0, -2, 0), ValueError, "^decode_seqs must be >= 0, got -2$"),
    (lambda: ideal().step_time(0, 0, -3), ValueError, "^context_tokens must be >= 0, got -3$"),
    (lambda: LinearStepCost(-1, 0, 0, 1), ValueError, "^a must be >= 0, got -1$"),
    (lambda: LinearStepCost(0, -1, 0, 1), ValueError, "^b_prefill must be >= 0, got -1$"),
    (lambda: LinearStepCost(0, 0, -1, 1), ValueError, "^c_decode must be >= 0, got -1$"),
    (lambda: LinearStepCost(0, 0, 0, -1), ValueError, "^d_context must be >= 0, got -1$"),
    (lambda: LinearStepCost(0, 0, 0, 0), ValueError,
     "^at least one coefficient must be > 0, or every step takes 0 s$"),
    (lambda: LinearStepCost(1e-3, 0, 0, 0).step_time(0, 0, -5), ValueError,
     "^context_tokens must be >= 0, got -5$"),
    (lambda: LinearStepCost.fit([]), ValueError, "^records is empty: fit needs measured steps$"),
])
def test_every_bad_argument_is_named_with_its_value(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_smallest_valid_arguments_are_accepted():
    assert DeterministicService(0.5).sample(1).tolist() == [0.5]
    assert DeterministicService(0.5).mean == 0.5
    assert len(ExponentialService(1.0).sample(1)) == 1 and len(LognormalService(1, 2).sample(1)) == 1
    assert np.array_equal(ExponentialService(2.0).sample(5), ExponentialService(2.0).sample(5, 0))
    assert np.array_equal(LognormalService(2.0, 3.0).sample(5),
                          LognormalService(2.0, 3.0).sample(5, 0))
    s = LognormalService(2.0, 3.0)
    assert (s.mean, s.scv) == (2.0, 3.0)
    assert FixedBatchCost(setup=0, per_request=0.5).batch_timing([1, 1], [1, 1])[1] == 1.0
    ModelSpec(**{**_SPEC, "vocab_size": 1})
    cost = ideal()
    assert cost.prefill_time([1]) > 0 and cost.batch_timing([1], [1])[0] > 0
    assert cost.decode_intensity(1, 0) == cost.decode_intensity(1)   # default: no context


def test_memory_ok_holds_at_exactly_the_capacity():
    cost = ideal()
    cap = cost.max_kv_tokens()
    assert cost.memory_ok(1, cap) and not cost.memory_ok(1, cap + 1)
    # 0.9 * 80 GiB - 6,738,415,616 * 2 bytes of weights, over 524,288 bytes per token
    assert cap == (int(0.9 * 80 * 2**30) - 6_738_415_616 * 2) // 524_288 == 121_750
    assert cost.max_kv_tokens(0.1) == 0                     # the weights alone do not fit


def test_memory_bound_prefill_and_static_decode_count_kv_bytes():
    # qwen2-0.5b on a Jetson, 4 prompts of 8 tokens: the pass is memory-bound, so its time is
    # (matmul weights + KV of 32 tokens) / bandwidth, both worked out from the configs:
    # 494,032,768 * 2 bytes + 32 * (2 * 24 * 2 * 64 * 2 = 12,288) bytes at 204.8 GB/s
    cost = RooflineCost("qwen2-0.5b", "jetson-agx-orin-64gb", mfu=1.0, mbu=1.0)
    expected = (494_032_768 * 2 + 32 * 12_288) / 204.8e9
    assert cost.prefill_time([8, 8, 8, 8]) == pytest.approx(expected, rel=1e-12)
    first, busy = cost.batch_timing([8, 8, 8, 8], [3, 1, 1, 1])
    assert first == pytest.approx(expected, rel=1e-12)
    # two decode steps of 4 sequences with 4 * 9 and 4 * 10 cached tokens, also memory-bound
    steps = sum((494_032_768 * 2 + 4 * (8 + k) * 12_288) / 204.8e9 for k in (1, 2))
    assert busy == pytest.approx(first + steps, rel=1e-12)
    with_overhead = RooflineCost("qwen2-0.5b", "jetson-agx-orin-64gb", mfu=1.0, mbu=1.0,
                                 step_overhead_s=1e-3)
    assert with_overhead.prefill_time([8]) == pytest.approx(cost.prefill_time([8]) + 1e-3)


def test_ridge_batch_is_finite_until_kv_reads_outweigh_arithmetic():
    cost = ideal()
    # per sequence: s_token + (s_pair - s_kv) * context; attention FLOPs per cached token
    # (4 * 32 * 32 * 128 = 524,288 FLOPs at 312e12/s) against its KV bytes (524,288 at 2.039e12)
    s_token = 2 * 6_607_343_616 / 312e12
    s_pair, s_kv = 524_288 / 312e12, 524_288 / 2.039e12
    s_weights = 6_607_343_616 * 2 / 2.039e12
    assert cost.ridge_batch(100) == pytest.approx(s_weights / (s_token + (s_pair - s_kv) * 100))
    zero_at = s_token / (s_kv - s_pair)            # context where per_seq reaches 0
    assert cost.ridge_batch(math.ceil(zero_at)) == math.inf
    assert cost.decode_throughput(np.array([[1, 2]])).shape == (1, 2)
