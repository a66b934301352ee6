"""scalesim_course.edge: compression references, the ONNX runtime path, measurement helpers and
device budgets, checked against values worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scalesim_course import edge
from scalesim_course.costmodel import get_model


# ----------------------------------------------------------------------------- quantisation
def test_per_channel_int8_by_hand():
    w = torch.tensor([[1.0, -2.54, 0.02], [0.0, 0.0, 0.0], [-0.5, 0.25, 0.1]])
    q, scale = edge.quantize_symmetric(w, 8, per_channel=True)
    # row 0: step 2.54 / 127 = 0.02; row 1 all zero: scale 1; row 2: step 0.5 / 127
    assert torch.allclose(scale, torch.tensor([0.02, 1.0, 0.5 / 127]))
    assert q.dtype == torch.int8
    assert q[0].tolist() == [50, -127, 1]
    assert q[1].tolist() == [0, 0, 0]
    # 0.25 / (0.5 / 127) = 63.5 -> 64 (halves to even); 0.1 / (0.5 / 127) = 25.4 -> 25
    assert q[2].tolist() == [-127, 64, 25]


def test_per_tensor_uses_one_scale_and_error_stays_within_half_a_step():
    w = torch.tensor([[4.0, -1.0], [0.03, 2.0]])
    q, scale = edge.quantize_symmetric(w, 8, per_channel=False)
    assert scale.shape == () and math.isclose(float(scale), 4.0 / 127, rel_tol=1e-6)
    assert q.tolist() == [[127, -32], [1, 64]]  # -31.75 -> -32, 0.9525 -> 1, 63.5 -> 64
    gen = torch.Generator().manual_seed(0)
    for bits in (2, 3, 4, 8):
        w = torch.randn(16, 32, generator=gen)
        q, s = edge.quantize_symmetric(w, bits)
        assert int(q.abs().max()) == 2 ** (bits - 1) - 1
        assert bool(((edge.dequantize(q, s) - w).abs() <= s[:, None] / 2 + 1e-7).all())


def test_quantize_refuses_bad_arguments_and_leaves_the_input_alone():
    w = torch.ones(2, 2)
    before = w.clone()
    edge.quantize_symmetric(w)
    assert torch.equal(w, before)
    with pytest.raises(ValueError, match="bits"):
        edge.quantize_symmetric(w, bits=9)
    with pytest.raises(ValueError, match="bits"):
        edge.quantize_symmetric(w, bits=1)
    with pytest.raises(TypeError, match="weight"):
        edge.quantize_symmetric(torch.ones(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape"):
        edge.quantize_symmetric(torch.ones(2, 2, 2))


def test_pack_bits_packs_densely():
    assert edge.pack_bits(torch.tensor([-7, 7, 0, 1], dtype=torch.int8), 4).numel() == 2
    assert edge.pack_bits(torch.tensor([1, 2, 3], dtype=torch.int8), 3).numel() == 2  # 9 bits
    # -1 at 2 bits is stored as -1 + 2 = 1 -> bits 01; four of them: 0b01010101 = 85
    assert edge.pack_bits(torch.tensor([-1, -1, -1, -1], dtype=torch.int8), 2).tolist() == [85]


def test_quantized_model_stores_int8_and_loads_q_times_scale():
    model = edge.mlp((4,), seed=1, n_in=3, n_out=2)
    copy, state = edge.quantized_model(model, bits=8)
    assert sorted(state) == ["0.bias", "0.weight_q", "0.weight_scale", "2.bias", "2.weight_q",
                             "2.weight_scale"]
    assert state["0.weight_q"].dtype == torch.int8 and state["0.weight_scale"].shape == (4,)
    expected = state["0.weight_q"].float() * state["0.weight_scale"][:, None]
    assert torch.allclose(copy[0].weight, expected)
    assert torch.equal(model[0].bias, copy[0].bias)


# ----------------------------------------------------------------------------- pruning
def test_magnitude_prune_by_hand_with_ties():
    w = torch.tensor([[0.5, -3.0, 0.25], [-0.125, 2.0, 1.0]])
    assert edge.magnitude_prune(w, 0.5).tolist() == [[0.0, -3.0, 0.0], [0.0, 2.0, 1.0]]
    # four tied magnitudes, two pruned: the earlier ones in row-major order
    assert edge.magnitude_prune(torch.tensor([1.0, -1.0, 1.0, -1.0]), 0.5).tolist() == \
        [0.0, 0.0, 1.0, -1.0]
    assert torch.equal(edge.magnitude_prune(w, 0.0), w)
    assert edge.magnitude_prune(w, 1.0).abs().sum() == 0
    assert int((edge.magnitude_prune(torch.arange(1.0, 101.0), 0.29) == 0).sum()) == 29
    with pytest.raises(ValueError, match="sparsity"):
        edge.magnitude_prune(w, 1.5)
    with pytest.raises(ValueError, match="sparsity"):
        edge.magnitude_prune(w, float("nan"))


def test_csr_bytes_by_hand():
    w = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    # 2 values x 4 B + 2 column indexes x 2 B + 3 row pointers x 4 B
    assert edge.csr_bytes(w) == 8 + 4 + 12
    assert edge.csr_bytes(w, value_bytes=1) == 2 + 4 + 12
    with pytest.raises(ValueError):
        edge.csr_bytes(torch.ones(3))


def test_pruned_model_and_its_csr_run_agree_with_the_dense_one():
    model = edge.mlp((16,), seed=2, n_in=8, n_out=3)
    pruned = edge.pruned_model(model, 0.75)
    assert edge.sparsity_of(pruned) == pytest.approx(0.75, abs=0.01)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(edge.CsrMLP(pruned)(x), pruned(x), atol=1e-6)
    # 8x16 and 16x3 weights at 75%: 32 + 12 kept; biases 16 + 3
    assert edge.sparse_model_bytes(pruned) == (32 * 6 + 4 * 17) + (12 * 6 + 4 * 4) + 4 * 19


# ----------------------------------------------------------------------------- models, data
def test_digits_split_and_mlp_shape():
    data = edge.load_digits(seed=0)
    assert data.x_train.shape == (1347, 64) and data.x_test.shape == (450, 64)
    assert float(data.x_train.max()) <= 1.0 and float(data.x_train.min()) >= 0.0
    total = torch.bincount(data.y_train) + torch.bincount(data.y_test)
    # stratified: each digit's share of the test set is a quarter of its images, +-1
    assert bool(((torch.bincount(data.y_test) - 0.25 * total).abs() <= 1).all())
    # (64*256 + 256) + (256*256 + 256) + (256*10 + 10)
    assert edge.param_count(edge.mlp((256, 256))) == 85_002
    assert torch.equal(edge.load_digits(seed=0).x_test, data.x_test)


def test_the_digits_file_is_scikit_learns_data_set():
    from sklearn.datasets import load_digits

    ref = load_digits()
    table = edge._digits_table()
    assert np.array_equal(table[:, :-1], ref.data) and np.array_equal(table[:, -1], ref.target)
    data = edge.load_digits(seed=3)
    # every image exactly once, train or test
    assert len(data.y_train) + len(data.y_test) == 1797
    both = torch.cat([data.x_train, data.x_test]) * 16
    assert sorted(map(tuple, both.round().int().tolist())) == sorted(map(tuple, ref.data.astype(int).tolist()))


def test_training_is_seeded_and_learns():
    data = edge.load_digits(seed=1)
    a = edge.train(edge.mlp((16,), seed=0), data, epochs=3, batch_size=128, lr=1e-2, seed=0)
    b = edge.train(edge.mlp((16,), seed=0), data, epochs=3, batch_size=128, lr=1e-2, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert edge.accuracy(a, data.x_test, data.y_test) > 0.8  # chance is 0.1
    # alpha = 1: the student learns from the teacher's outputs alone, never sees a label
    student = edge.train(edge.mlp((16,), seed=1), data, epochs=5, batch_size=128, lr=1e-2,
                         seed=0, teacher=a, alpha=1.0)
    with torch.no_grad():
        agree = (student(data.x_test).argmax(1) == a(data.x_test).argmax(1)).float().mean()
    assert float(agree) > 0.7
    with pytest.raises(ValueError, match="alpha"):
        edge.train(edge.mlp((8,)), data, alpha=2.0)


def test_cast_halves_the_serialised_weights():
    model = edge.mlp((256, 256))
    half = edge.cast(model, torch.float16)
    assert next(half.parameters()).dtype == torch.float16
    raw32 = 4 * edge.param_count(model)
    assert raw32 < edge.serialized_bytes(model) < raw32 + 5000  # plus a zip header
    assert edge.serialized_bytes(half) < 0.51 * edge.serialized_bytes(model)
    with pytest.raises(ValueError):
        edge.cast(model, torch.int8)


# ----------------------------------------------------------------------------- runtime
def test_onnx_runtime_matches_torch_and_dynamic_int8_shrinks(tmp_path, capfd):
    model = edge.mlp((64, 32), seed=3)
    x = torch.rand(7, 64, generator=torch.Generator().manual_seed(4))
    path = edge.to_onnx(model, tmp_path / "m.onnx")
    run = edge.OrtModel(path)
    with torch.no_grad():
        assert np.allclose(run(x), model(x).numpy(), atol=1e-5)
    small = edge.OrtModel(edge.quantize_onnx_dynamic(path, tmp_path / "q.onnx"))
    assert small.file_bytes < 0.4 * run.file_bytes
    assert small(x).shape == (7, 10)
    assert capfd.readouterr().err == ""  # ONNX Runtime's pre-processing advice is silenced


# ----------------------------------------------------------------------------- measurement
def test_timing_statistics_by_hand():
    t = edge.Timing((5.0, 1.0, 3.0, 2.0, 4.0))
    assert t.median == 3.0
    assert t.p10 == pytest.approx(1.4) and t.p90 == pytest.approx(4.6)  # linear interpolation
    assert t.spread == pytest.approx(3.2 / 3.0)
    calls = []
    timing = edge.time_call(calls.append, 1, repeats=4, number=5, warmup=2)
    assert len(timing.samples) == 4 and len(calls) == 2 + 4 * 5
    with pytest.raises(ValueError, match="repeats"):
        edge.time_call(calls.append, 1, repeats=2)


def test_interleaved_timing_alternates_the_calls():
    order = []
    timings = edge.time_interleaved({"a": (order.append, ("a",)), "b": (order.append, ("b",))},
                                    repeats=3, warmup=1, budget_s=0.0)
    # per call: 1 warm-up + 1 sizing call, then 3 rounds of one call each (budget 0: 1 call),
    # the order reversed in the second round
    assert order == ["a", "a", "b", "b", "a", "b", "b", "a", "a", "b"]
    assert set(timings) == {"a", "b"} and len(timings["a"].samples) == 3


def test_inference_memory_is_weights_plus_the_widest_pair_of_activations():
    model = edge.mlp((256, 256))
    # widths 64, 256, 256, 10: widest adjacent pair 512 floats = 2048 B per image
    assert edge.inference_memory_bytes(1000, model) == 1000 + 2048
    assert edge.inference_memory_bytes(1000, model, batch=2) == 1000 + 4096


needs_peak_rss = pytest.mark.skipif(not edge.peak_memory_supported(),
                                    reason="no resettable peak RSS here (needs Linux's /proc/self/clear_refs)")


@needs_peak_rss
def test_peak_memory_sees_a_known_allocation_and_not_much_more():
    size = 8 * 2 ** 20

    def allocate():
        block = np.ones(size // 8)  # 8 MiB, every page written
        return float(block.sum())

    use = edge.peak_memory(allocate, repeats=3)
    assert use.measured and use.method == "measured" and len(use.samples) == 3
    assert use.peak_bytes == sorted(use.samples)[1]  # the median of three
    # the array itself, and at most 1 MiB besides (interpreter, page rounding)
    assert all(size <= b <= size + 2 ** 20 for b in use.samples), use.samples
    # a call that allocates nothing measures under 1 MiB; its result is kept until the reading
    assert edge.peak_memory(lambda: None).peak_bytes < 2 ** 20
    kept = edge.peak_memory(lambda: np.ones(size // 8), repeats=1)
    assert size <= kept.peak_bytes <= size + 2 ** 20


def test_peak_memory_runs_warmup_and_repeats_and_falls_back_where_it_cannot_measure(monkeypatch):
    calls = []
    if edge.peak_memory_supported():
        edge.peak_memory(calls.append, 1, repeats=4, warmup=2)
        assert calls == [1] * 6
    monkeypatch.setattr(edge, "_reset_peak_rss", lambda: False)
    assert not edge.peak_memory_supported()
    use = edge.peak_memory(calls.append, 1, fallback=1234.0)
    assert use == edge.MemoryUse(1234, "computed") and not use.measured
    with pytest.raises(RuntimeError, match="fallback"):
        edge.peak_memory(calls.append, 1)
    with pytest.raises(ValueError, match="repeats"):
        edge.peak_memory(calls.append, 1, repeats=0, fallback=1)


def test_load_mlp_rebuilds_a_model_from_its_file_by_hand(tmp_path):
    # Linear 2 -> 1 (weights 1, 2; bias 0.5), ReLU, Linear 1 -> 1 (weight 3, bias 0):
    # x = (1, 1): relu(1 + 2 + 0.5) * 3 = 10.5; x = (-1, -1): relu(-2.5) * 3 = 0
    state = {"0.weight": torch.tensor([[1.0, 2.0]]), "0.bias": torch.tensor([0.5]),
             "2.weight": torch.tensor([[3.0]]), "2.bias": torch.tensor([0.0])}
    model = edge.load_mlp(edge.save_state(state, tmp_path / "m.pt"))
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Linear"]
    assert model(torch.tensor([[1.0, 1.0], [-1.0, -1.0]])).flatten().tolist() == [10.5, 0.0]
    # int8 weights are dequantised at load: q (2, -1) with scale 0.5 is the weight (1, -0.5)
    state = {"0.weight_q": torch.tensor([[2, -1]], dtype=torch.int8),
             "0.weight_scale": torch.tensor([0.5]), "0.bias": torch.tensor([0.0])}
    model = edge.load_mlp(edge.save_state(state, tmp_path / "q.pt"))
    assert model[0].weight.dtype == torch.float32 and model[0].weight.tolist() == [[1.0, -0.5]]
    # packed sub-byte weights do not load
    _, packed = edge.quantized_model(edge.mlp((4,)), bits=4)
    with pytest.raises(ValueError, match="sub-byte"):
        edge.load_mlp(edge.save_state(packed, tmp_path / "p.pt"))
    with pytest.raises(ValueError, match="no layers"):
        edge.load_mlp(edge.save_state({}, tmp_path / "empty.pt"))
    with pytest.raises(ValueError, match="not a Linear"):
        edge.load_mlp(edge.save_state({"0.weight": torch.ones(3)}, tmp_path / "flat.pt"))


def test_saved_files_load_back_to_the_same_models(tmp_path):
    model = edge.mlp((32, 16), seed=2)
    x = torch.rand(5, 64, generator=torch.Generator().manual_seed(1))
    path = edge.save_state(model, tmp_path / "m.pt")
    import os

    assert os.path.getsize(path) == edge.serialized_bytes(model)
    with torch.no_grad():
        assert torch.equal(edge.load_mlp(path)(x), model(x))
        half = edge.cast(model, torch.float16)
        back = edge.load_mlp(edge.save_state(half, tmp_path / "h.pt"))
        assert back[0].weight.dtype == torch.float16 and torch.equal(back(x.half()), half(x.half()))
        quantized, state = edge.quantized_model(model, bits=8, per_channel=False)
        back = edge.load_mlp(edge.save_state(state, tmp_path / "q.pt"))
        assert torch.allclose(back(x), quantized(x), atol=1e-6)
        sparse = edge.CsrMLP(edge.pruned_model(model, 0.8))
        again = edge.CsrMLP.load(sparse.save(tmp_path / "s.pt"))
        assert torch.equal(again(x), sparse(x))


def test_token_agreement_of_a_model_with_itself_and_with_a_compressed_copy():
    from scalesim_course.tinymodel import TinyConfig, TinyTransformer

    ref = TinyTransformer(TinyConfig(dtype=torch.float32, n_layers=2))
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    same = edge.token_agreement(ref, ref, tokens)
    assert same == {"agreement": 1.0, "kl": 0.0}
    fp16 = edge.token_agreement(ref, edge.transformer_variant(ref, dtype=torch.float16), tokens)
    int2 = edge.token_agreement(ref, edge.transformer_variant(ref, bits=2), tokens)
    assert fp16["kl"] < int2["kl"] and fp16["agreement"] >= int2["agreement"]


# ----------------------------------------------------------------------------- devices, fit
def test_device_catalogue_cites_sources_and_the_pi_bandwidth_follows_from_its_bus():
    for d in edge.DEVICES.values():
        assert "http" in d.source and d.memory_bytes > 0
    pi = edge.get_device("raspberry-pi-5-8gb")
    assert pi.mem_bandwidth == pytest.approx(4267e6 * 32 / 8)
    with pytest.raises(ValueError, match="unknown device"):
        edge.get_device("toaster")


def test_decode_ceiling_is_bandwidth_over_weight_bytes():
    # Llama-3-8B at 4 bits: 8,030,261,248 x 0.5 B; Jetson Orin Nano Super: 102 GB/s
    bytes_4bit = 8_030_261_248 * 0.5
    assert edge.decode_ceiling(bytes_4bit, "jetson-orin-nano-super") == pytest.approx(
        102e9 / 4_015_130_624)
    assert math.isnan(edge.decode_ceiling(1e6, "nano-33-ble (MCU)"))
    rows = {(r["model"], r["bytes_per_param"], r["device"]): r for r in edge.llm_table()}
    # 75% of 8 GiB = 6.44e9 B: 4-bit Llama-3-8B (4.0e9) fits, 8-bit (8.0e9) does not
    assert rows["llama-3-8b", 0.5, "raspberry-pi-5-8gb"]["fits"]
    assert not rows["llama-3-8b", 1.0, "raspberry-pi-5-8gb"]["fits"]
    assert get_model("llama-3-8b").n_params == 8_030_261_248
    # the ceiling divides by the weights a step reads: 8,030,261,248 less the 128,256 x 4,096
    # embedding table (a lookup) = 7,504,924,672 weights, x 0.5 B at 102 GB/s
    row = rows["llama-3-8b", 0.5, "jetson-orin-nano-super"]
    assert row["weight_bytes"] == 8_030_261_248 * 0.5
    assert row["tokens_per_s"] == pytest.approx(102e9 / (7_504_924_672 * 0.5))


def test_fit_models_by_hand():
    def s(size, mem, lat, acc):
        return {"size_bytes": size, "memory_bytes": mem, "latency_s": lat, "accuracy": acc}

    models = {"a": s(10, 10, 2.0, 0.9), "b": s(10, 10, 1.0, 0.8), "c": s(10, 10, 1.0, 0.85),
              "d": s(99, 99, 0.1, 0.1)}
    fits, reasons, best = edge.fit_models(models, {"storage_bytes": 10, "memory_bytes": 50}, 0.8)
    assert fits == ["a", "b", "c"] and reasons == {"d": ["storage", "memory", "accuracy"]}
    assert best == "c"  # b and c tie on latency; c is more accurate
    assert edge.fit_models(models, {"storage_bytes": 1, "memory_bytes": 1}, 0.0)[2] is None
    with pytest.raises(ValueError):
        edge.fit_models(models, {"storage_bytes": 1, "memory_bytes": 1}, float("nan"))


def test_pareto_front_by_hand():
    # (cost, quality): point 2 is beaten by point 0 (cheaper, better); point 3 ties point 1
    # on cost and is worse
    points = [(1.0, 0.9), (2.0, 0.95), (3.0, 0.8), (2.0, 0.9), (5.0, 0.99)]
    assert edge.pareto_front(points) == [0, 1, 4]


def test_human_bytes():
    assert edge.human_bytes(1_234_567) == "1.23 MB"
    assert edge.human_bytes(512) == "512 B"
    assert edge.human_bytes(math.inf) == "any"
    assert edge.human_bytes(256 * 1024, binary=True) == "256 KiB"


def test_tradeoff_figure_numbers_the_front_from_the_cheapest():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timing = edge.Timing((1e-4, 1e-4, 1e-4))
    # (size, accuracy): "a" (10, 0.95) and "c" (40, 0.99) are on the size front; "b" (20, 0.94)
    # is beaten by "a" (smaller and more accurate)
    results = {n: {"size_bytes": s, "latency_s": lat, "accuracy": acc, "timing": timing}
               for n, s, lat, acc in (("c", 40e3, 3e-4, 0.99), ("a", 10e3, 1e-4, 0.95),
                                      ("b", 20e3, 2e-4, 0.94))}
    size_ax, _ = edge.plot_tradeoffs(results)
    labels = [t.get_text() for t in size_ax.get_legend().get_texts()]
    assert labels == ["Pareto front", "a", "c"]
    assert sorted(t.get_text() for t in size_ax.texts if t.get_text() in "12") == ["1", "2"]
    plt.close("all")


def test_explorer_builds_and_renders():
    import matplotlib

    matplotlib.use("Agg")
    data = edge.load_digits(seed=0)
    model = edge.train(edge.mlp((16,), seed=0), data, epochs=1, batch_size=256)
    box = edge.compression_explorer(model, data, repeats=3)
    assert box.children and "Compress" in box.children[0].children[0].value
