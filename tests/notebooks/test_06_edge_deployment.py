"""Notebook 06's graded exercises tell right from wrong: plausible wrong answers, written from
the docstrings alone, lose the points; correct answers written differently earn them."""
from __future__ import annotations

import pytest

from answers import ExerciseNotebook, assert_caught_visibly, assert_fair, stub

ASSIGNMENT = "06_edge_deployment"

# ----------------------------------------------------------------------------- exercise 1
_DEQ = '''
def dequantize_per_channel(q, scales):
    return q.to(torch.float32) * torch.as_tensor(scales, dtype=torch.float32)[:, None]
'''

QUANT_WRONG = {
    "one scale for the whole tensor": '''
def quantize_per_channel(weight):
    if weight.dim() != 2:
        raise ValueError("2-D")
    w = weight.float()
    scale = w.abs().max() / 127 if w.abs().max() > 0 else torch.tensor(1.0)
    scales = scale.repeat(w.shape[0])
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scales
''' + _DEQ,
    "divides by 128, so the largest weight lands on 128 and wraps": '''
def quantize_per_channel(weight):
    if weight.dim() != 2:
        raise ValueError("2-D")
    w = weight.float()
    top = w.abs().amax(dim=1)
    scales = torch.where(top > 0, top / 128, torch.ones_like(top))
    return torch.round(w / scales[:, None]).to(torch.int8), scales
''' + _DEQ,
    "largest signed value instead of largest magnitude": '''
def quantize_per_channel(weight):
    if weight.dim() != 2:
        raise ValueError("2-D")
    w = weight.float()
    top = w.amax(dim=1)
    scales = torch.where(top > 0, top / 127, torch.ones_like(top))
    return torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8), scales
''' + _DEQ,
    "an all-zero row gets scale 0": '''
def quantize_per_channel(weight):
    if weight.dim() != 2:
        raise ValueError("2-D")
    w = weight.float()
    scales = w.abs().amax(dim=1) / 127
    q = torch.nan_to_num(torch.round(w / scales[:, None])).clamp(-127, 127).to(torch.int8)
    return q, scales
''' + _DEQ,
    "truncates instead of rounding": '''
def quantize_per_channel(weight):
    if weight.dim() != 2:
        raise ValueError("2-D")
    w = weight.float()
    top = w.abs().amax(dim=1)
    scales = torch.where(top > 0, top / 127, torch.ones_like(top))
    return (w / scales[:, None]).to(torch.int8), scales
''' + _DEQ,
    "one scale per column (input channel)": '''
def quantize_per_channel(weight):
    if weight.dim() != 2:
        raise ValueError("2-D")
    w = weight.float()
    top = w.abs().amax(dim=0)
    scales = torch.where(top > 0, top / 127, torch.ones_like(top))
    return torch.round(w / scales[None, :]).clamp(-127, 127).to(torch.int8), scales
''' + _DEQ,
    "divides the input in place": '''
def quantize_per_channel(weight):
    if weight.dim() != 2:
        raise ValueError("2-D")
    top = weight.abs().amax(dim=1).float()
    scales = torch.where(top > 0, top / 127, torch.ones_like(top))
    weight /= scales[:, None].to(weight.dtype)
    return torch.round(weight).clamp(-127, 127).to(torch.int8), scales
''' + _DEQ,
    "returns q as floats": '''
def quantize_per_channel(weight):
    if weight.dim() != 2:
        raise ValueError("2-D")
    w = weight.float()
    top = w.abs().amax(dim=1)
    scales = torch.where(top > 0, top / 127, torch.ones_like(top))
    return torch.round(w / scales[:, None]).clamp(-127, 127), scales
''' + _DEQ,
    "asymmetric range (max - min) / 255": '''
def quantize_per_channel(weight):
    if weight.dim() != 2:
        raise ValueError("2-D")
    w = weight.float()
    span = w.amax(dim=1) - w.amin(dim=1)
    scales = torch.where(span > 0, span / 255, torch.ones_like(span))
    return torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8), scales
''' + _DEQ,
    "dequantize scales the columns": '''
def quantize_per_channel(weight):
    if weight.dim() != 2:
        raise ValueError("2-D")
    w = weight.float()
    top = w.abs().amax(dim=1)
    scales = torch.where(top > 0, top / 127, torch.ones_like(top))
    return torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8), scales

def dequantize_per_channel(q, scales):
    return q.float() * scales
''',
    "no check for a tensor that is not 2-D": '''
def quantize_per_channel(weight):
    w = weight.float().reshape(weight.shape[0], -1) if weight.dim() else weight.float().reshape(1, 1)
    top = w.abs().amax(dim=1)
    scales = torch.where(top > 0, top / 127, torch.ones_like(top))
    return torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8).reshape(weight.shape), scales
''' + _DEQ,
    "borrows the package's quantiser": '''
from scalesim_course import edge as _e

def quantize_per_channel(weight):
    if weight.dim() != 2:
        raise ValueError("2-D")
    return _e.quantize_symmetric(weight, 8, True)
''' + _DEQ,
}

QUANT_RIGHT = {
    "numpy, row by row, halves away from zero": '''
def quantize_per_channel(weight):
    if len(weight.shape) != 2:
        raise ValueError(f"need a 2-D weight, got {tuple(weight.shape)}")
    w = weight.detach().to(torch.float32).numpy()
    q = np.zeros(w.shape, dtype=np.int8)
    scales = np.ones(w.shape[0], dtype=np.float32)
    for i, row in enumerate(w):
        top = float(np.abs(row).max()) if row.size else 0.0
        if top > 0:
            scales[i] = top / 127
            q[i] = np.clip(np.sign(row) * np.floor(np.abs(row) / scales[i] + 0.5), -127, 127)
    return torch.from_numpy(q), torch.from_numpy(scales)

def dequantize_per_channel(q, scales):
    return torch.stack([row.float() * float(s) for row, s in zip(q, scales)]) if len(q) else q.float()
''',
    "clamped denominator, keepdim": '''
def quantize_per_channel(weight):
    if weight.ndim != 2:
        raise ValueError("weight must be 2-D")
    w = weight.float()
    scale = (w.abs().amax(dim=1, keepdim=True) / 127).clamp_min(1e-12)
    q = (w / scale).round().clamp(-127, 127).to(torch.int8)
    return q, scale.squeeze(1)

def dequantize_per_channel(q, scales):
    return (q.to(torch.float64) * scales.reshape(-1, 1).to(torch.float64)).float()
''',
}


# ----------------------------------------------------------------------------- exercise 2
PRUNE_WRONG = {
    "threshold with <=: ties over-prune": '''
def magnitude_prune(weight, sparsity):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity")
    w = weight.clone()
    k = round(sparsity * w.numel())
    if k == 0:
        return w
    cut = w.abs().flatten().kthvalue(k).values
    w[w.abs() <= cut] = 0
    return w
''',
    "empty tensor returned before checking the sparsity": '''
def magnitude_prune(weight, sparsity):
    flat = weight.detach().flatten().clone()
    if flat.numel() == 0:
        return flat.reshape(weight.shape)
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity must be in [0, 1]")
    k = round(sparsity * flat.numel())
    flat[torch.argsort(flat.abs(), stable=True)[:k]] = 0
    return flat.reshape(weight.shape)
''',
    "threshold with <: misses the k-th": '''
def magnitude_prune(weight, sparsity):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity")
    w = weight.clone()
    k = round(sparsity * w.numel())
    if k == 0:
        return w
    cut = w.abs().flatten().kthvalue(k).values
    w[w.abs() < cut] = 0
    return w
''',
    "signed values instead of magnitudes": '''
def magnitude_prune(weight, sparsity):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity")
    flat = weight.flatten().clone()
    k = round(sparsity * flat.numel())
    flat[torch.argsort(flat)[:k]] = 0
    return flat.reshape(weight.shape)
''',
    "prunes the input in place": '''
def magnitude_prune(weight, sparsity):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity")
    flat = weight.view(-1)
    k = round(sparsity * flat.numel())
    flat[torch.argsort(flat.abs())[:k]] = 0
    return weight
''',
    "floor instead of round": '''
def magnitude_prune(weight, sparsity):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity")
    flat = weight.flatten().clone()
    k = int(sparsity * flat.numel())
    flat[torch.argsort(flat.abs())[:k]] = 0
    return flat.reshape(weight.shape)
''',
    "kthvalue crashes at sparsity 0": '''
def magnitude_prune(weight, sparsity):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity")
    flat = weight.flatten().clone()
    k = round(sparsity * flat.numel())
    cut = flat.abs().kthvalue(k).values
    order = torch.argsort(flat.abs())[:k]
    flat[order] = 0
    return flat.reshape(weight.shape)
''',
    "index past the end at sparsity 1": '''
def magnitude_prune(weight, sparsity):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity")
    w = weight.clone()
    n = w.numel()
    k = round(sparsity * n)
    ranked = torch.sort(w.abs().flatten()).values
    keep_from = ranked[k]
    order = torch.argsort(w.abs().flatten())[:k]
    w.view(-1)[order] = 0
    return w
''',
    "row by row instead of the whole tensor": '''
def magnitude_prune(weight, sparsity):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity")
    w = weight.clone().reshape(weight.shape[0], -1) if weight.dim() > 1 else weight.clone().reshape(1, -1)
    for row in w:
        k = round(sparsity * row.numel())
        row[torch.argsort(row.abs())[:k]] = 0
    return w.reshape(weight.shape)
''',
    "no check of the sparsity": '''
def magnitude_prune(weight, sparsity):
    flat = weight.flatten().clone()
    k = min(max(round(sparsity * flat.numel()), 0), flat.numel()) if sparsity == sparsity else 0
    flat[torch.argsort(flat.abs())[:k]] = 0
    return flat.reshape(weight.shape)
''',
    "returns the keep mask": '''
def magnitude_prune(weight, sparsity):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity")
    flat = weight.flatten().clone()
    k = round(sparsity * flat.numel())
    mask = torch.ones_like(flat)
    mask[torch.argsort(flat.abs())[:k]] = 0
    return mask.reshape(weight.shape)
''',
}

PRUNE_RIGHT = {
    "topk keeps the largest, float64 mask": '''
def magnitude_prune(weight, sparsity):
    if not (0.0 <= sparsity <= 1.0):
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    n = weight.numel()
    keep = n - round(sparsity * n)
    mask = torch.zeros(n, dtype=torch.bool)
    if keep:
        mask[torch.topk(weight.detach().abs().flatten().double(), keep).indices] = True
    return torch.where(mask.reshape(weight.shape), weight, torch.zeros_like(weight))
''',
    "numpy argsort, descending, ties to the later entries": '''
def magnitude_prune(weight, sparsity):
    if math.isnan(sparsity) or sparsity < 0 or sparsity > 1:
        raise ValueError("sparsity must be in [0, 1]")
    values = weight.detach().cpu().numpy().astype(np.float64).ravel()
    k = int(np.round(sparsity * values.size))
    order = np.argsort(-np.abs(values), kind="stable")  # largest first
    out = values.copy()
    out[order[values.size - k:]] = 0.0
    return torch.from_numpy(out.reshape(weight.shape)).to(weight.dtype)
''',
}


# ----------------------------------------------------------------------------- exercise 3
_FIT_BODY = '''
    if not 0 <= min_accuracy <= 1:
        raise ValueError("min_accuracy")
'''

FIT_WRONG = {
    "strict < on the budgets: equality fails": '''
def fit_models(models, device, min_accuracy):''' + _FIT_BODY + '''
    fits, reasons = [], {}
    for name, m in models.items():
        failed = [c for c, ok in (("storage", m["size_bytes"] < device["storage_bytes"]),
                                  ("memory", m["memory_bytes"] < device["memory_bytes"]),
                                  ("accuracy", m["accuracy"] >= min_accuracy)) if not ok]
        if failed:
            reasons[name] = failed
        else:
            fits.append(name)
    best = min(fits, key=lambda n: (models[n]["latency_s"], -models[n]["accuracy"]), default=None)
    return fits, reasons, best
''',
    "only the first failed check": '''
def fit_models(models, device, min_accuracy):''' + _FIT_BODY + '''
    fits, reasons = [], {}
    for name, m in models.items():
        if m["size_bytes"] > device["storage_bytes"]:
            reasons[name] = ["storage"]
        elif m["memory_bytes"] > device["memory_bytes"]:
            reasons[name] = ["memory"]
        elif m["accuracy"] < min_accuracy:
            reasons[name] = ["accuracy"]
        else:
            fits.append(name)
    best = min(fits, key=lambda n: (models[n]["latency_s"], -models[n]["accuracy"]), default=None)
    return fits, reasons, best
''',
    "best is the most accurate, not the fastest": '''
def fit_models(models, device, min_accuracy):''' + _FIT_BODY + '''
    fits, reasons = [], {}
    for name, m in models.items():
        failed = [c for c, ok in (("storage", m["size_bytes"] <= device["storage_bytes"]),
                                  ("memory", m["memory_bytes"] <= device["memory_bytes"]),
                                  ("accuracy", m["accuracy"] >= min_accuracy)) if not ok]
        if failed:
            reasons[name] = failed
        else:
            fits.append(name)
    best = max(fits, key=lambda n: (models[n]["accuracy"], -models[n]["latency_s"]), default=None)
    return fits, reasons, best
''',
    "latency ties go to the lower accuracy": '''
def fit_models(models, device, min_accuracy):''' + _FIT_BODY + '''
    fits, reasons = [], {}
    for name, m in models.items():
        failed = [c for c, ok in (("storage", m["size_bytes"] <= device["storage_bytes"]),
                                  ("memory", m["memory_bytes"] <= device["memory_bytes"]),
                                  ("accuracy", m["accuracy"] >= min_accuracy)) if not ok]
        if failed:
            reasons[name] = failed
        else:
            fits.append(name)
    best = min(fits, key=lambda n: (models[n]["latency_s"], models[n]["accuracy"]), default=None)
    return fits, reasons, best
''',
    "a full tie goes to the last listed": '''
def fit_models(models, device, min_accuracy):''' + _FIT_BODY + '''
    fits, reasons = [], {}
    for name, m in models.items():
        failed = [c for c, ok in (("storage", m["size_bytes"] <= device["storage_bytes"]),
                                  ("memory", m["memory_bytes"] <= device["memory_bytes"]),
                                  ("accuracy", m["accuracy"] >= min_accuracy)) if not ok]
        if failed:
            reasons[name] = failed
        else:
            fits.append(name)
    best = None
    for n in fits:
        if best is None or (models[n]["latency_s"], -models[n]["accuracy"]) <= (models[best]["latency_s"], -models[best]["accuracy"]):
            best = n
    return fits, reasons, best
''',
    "nothing fits: crashes instead of None": '''
def fit_models(models, device, min_accuracy):''' + _FIT_BODY + '''
    fits, reasons = [], {}
    for name, m in models.items():
        failed = [c for c, ok in (("storage", m["size_bytes"] <= device["storage_bytes"]),
                                  ("memory", m["memory_bytes"] <= device["memory_bytes"]),
                                  ("accuracy", m["accuracy"] >= min_accuracy)) if not ok]
        if failed:
            reasons[name] = failed
        else:
            fits.append(name)
    best = min(fits, key=lambda n: (models[n]["latency_s"], -models[n]["accuracy"]))
    return fits, reasons, best
''',
    "size checked against memory, memory against storage": '''
def fit_models(models, device, min_accuracy):''' + _FIT_BODY + '''
    fits, reasons = [], {}
    for name, m in models.items():
        failed = [c for c, ok in (("storage", m["memory_bytes"] <= device["storage_bytes"]),
                                  ("memory", m["size_bytes"] <= device["memory_bytes"]),
                                  ("accuracy", m["accuracy"] >= min_accuracy)) if not ok]
        if failed:
            reasons[name] = failed
        else:
            fits.append(name)
    best = min(fits, key=lambda n: (models[n]["latency_s"], -models[n]["accuracy"]), default=None)
    return fits, reasons, best
''',
    "fits sorted by latency": '''
def fit_models(models, device, min_accuracy):''' + _FIT_BODY + '''
    fits, reasons = [], {}
    for name, m in models.items():
        failed = [c for c, ok in (("storage", m["size_bytes"] <= device["storage_bytes"]),
                                  ("memory", m["memory_bytes"] <= device["memory_bytes"]),
                                  ("accuracy", m["accuracy"] >= min_accuracy)) if not ok]
        if failed:
            reasons[name] = failed
        else:
            fits.append(name)
    fits.sort(key=lambda n: (models[n]["latency_s"], -models[n]["accuracy"]))
    return fits, reasons, fits[0] if fits else None
''',
    "accuracy must beat the bar strictly": '''
def fit_models(models, device, min_accuracy):''' + _FIT_BODY + '''
    fits, reasons = [], {}
    for name, m in models.items():
        failed = [c for c, ok in (("storage", m["size_bytes"] <= device["storage_bytes"]),
                                  ("memory", m["memory_bytes"] <= device["memory_bytes"]),
                                  ("accuracy", m["accuracy"] > min_accuracy)) if not ok]
        if failed:
            reasons[name] = failed
        else:
            fits.append(name)
    best = min(fits, key=lambda n: (models[n]["latency_s"], -models[n]["accuracy"]), default=None)
    return fits, reasons, best
''',
    "models that fit get an empty reason list": '''
def fit_models(models, device, min_accuracy):''' + _FIT_BODY + '''
    fits, reasons = [], {}
    for name, m in models.items():
        reasons[name] = [c for c, ok in (("storage", m["size_bytes"] <= device["storage_bytes"]),
                                         ("memory", m["memory_bytes"] <= device["memory_bytes"]),
                                         ("accuracy", m["accuracy"] >= min_accuracy)) if not ok]
        if not reasons[name]:
            fits.append(name)
    best = min(fits, key=lambda n: (models[n]["latency_s"], -models[n]["accuracy"]), default=None)
    return fits, reasons, best
''',
    "no models: returns before checking the quality bar": '''
def fit_models(models, device, min_accuracy):
    if not models:
        return [], {}, None
    if not 0 <= min_accuracy <= 1:
        raise ValueError("min_accuracy")
    fits, reasons = [], {}
    for name, m in models.items():
        failed = [c for c, ok in (("storage", m["size_bytes"] <= device["storage_bytes"]),
                                  ("memory", m["memory_bytes"] <= device["memory_bytes"]),
                                  ("accuracy", m["accuracy"] >= min_accuracy)) if not ok]
        if failed:
            reasons[name] = failed
        else:
            fits.append(name)
    best = min(fits, key=lambda n: (models[n]["latency_s"], -models[n]["accuracy"]), default=None)
    return fits, reasons, best
''',
    "writes its verdict into the caller's statistics": '''
def fit_models(models, device, min_accuracy):
    if not 0 <= min_accuracy <= 1:
        raise ValueError("min_accuracy")
    fits, reasons = [], {}
    for name, m in models.items():
        m["failed"] = [c for c, ok in (("storage", m["size_bytes"] <= device["storage_bytes"]),
                                       ("memory", m["memory_bytes"] <= device["memory_bytes"]),
                                       ("accuracy", m["accuracy"] >= min_accuracy)) if not ok]
        if m["failed"]:
            reasons[name] = list(m["failed"])
        else:
            fits.append(name)
    best = min(fits, key=lambda n: (models[n]["latency_s"], -models[n]["accuracy"]), default=None)
    return fits, reasons, best
''',
    "no check of the quality bar": '''
def fit_models(models, device, min_accuracy):
    fits, reasons = [], {}
    for name, m in models.items():
        failed = [c for c, ok in (("storage", m["size_bytes"] <= device["storage_bytes"]),
                                  ("memory", m["memory_bytes"] <= device["memory_bytes"]),
                                  ("accuracy", m["accuracy"] >= min_accuracy)) if not ok]
        if failed:
            reasons[name] = failed
        else:
            fits.append(name)
    best = min(fits, key=lambda n: (models[n]["latency_s"], -models[n]["accuracy"]), default=None)
    return fits, reasons, best
''',
}

FIT_RIGHT = {
    "sorted with a stable key, ok flags": '''
def fit_models(models, device, min_accuracy):
    if min_accuracy != min_accuracy or not (0.0 <= min_accuracy <= 1.0):
        raise ValueError(f"min_accuracy must be in [0, 1], got {min_accuracy}")
    checks = {
        "storage": lambda m: m["size_bytes"] <= device["storage_bytes"],
        "memory": lambda m: m["memory_bytes"] <= device["memory_bytes"],
        "accuracy": lambda m: m["accuracy"] >= min_accuracy,
    }
    fits = [n for n, m in models.items() if all(ok(m) for ok in checks.values())]
    reasons = {n: [c for c, ok in checks.items() if not ok(m)] for n, m in models.items() if n not in fits}
    ranked = sorted(fits, key=lambda n: (models[n]["latency_s"], -models[n]["accuracy"]))
    return fits, reasons, (ranked[0] if ranked else None)
''',
    "tuples and enumerate for the tie-break": '''
def fit_models(models, device, min_accuracy):
    if not (min_accuracy >= 0 and min_accuracy <= 1):
        raise ValueError("min_accuracy out of range")
    fits, reasons, candidates = [], {}, []
    for position, (name, s) in enumerate(models.items()):
        bad = []
        if s["size_bytes"] > device["storage_bytes"]:
            bad.append("storage")
        if s["memory_bytes"] > device["memory_bytes"]:
            bad.append("memory")
        if s["accuracy"] < min_accuracy:
            bad.append("accuracy")
        if bad:
            reasons[name] = bad
        else:
            fits.append(name)
            candidates.append((s["latency_s"], -s["accuracy"], position, name))
    return tuple(fits), reasons, (min(candidates)[3] if candidates else None)
''',
}


# the common mistakes: the visible tests catch them, where the learner reads why before grading
QUANT_VISIBLE = ["one scale for the whole tensor", "divides by 128, so the largest weight lands on 128 and wraps",
                 "largest signed value instead of largest magnitude", "an all-zero row gets scale 0",
                 "truncates instead of rounding", "one scale per column (input channel)", "returns q as floats",
                 "no check for a tensor that is not 2-D"]
PRUNE_VISIBLE = ["threshold with <=: ties over-prune", "threshold with <: misses the k-th",
                 "signed values instead of magnitudes", "prunes the input in place", "floor instead of round",
                 "row by row instead of the whole tensor", "no check of the sparsity"]
FIT_VISIBLE = ["strict < on the budgets: equality fails", "only the first failed check",
               "nothing fits: crashes instead of None", "size checked against memory, memory against storage",
               "accuracy must beat the bar strictly", "no check of the quality bar"]


@pytest.fixture(scope="module")
def book():
    return ExerciseNotebook(ASSIGNMENT)


@pytest.mark.parametrize("exercise, wrong, right", [
    ("quantize_per_channel", QUANT_WRONG, QUANT_RIGHT),
    ("magnitude_prune", PRUNE_WRONG, PRUNE_RIGHT),
    ("fit_models", FIT_WRONG, FIT_RIGHT),
])
def test_wrong_answers_lose_points_and_right_ones_earn_them(book, exercise, wrong, right):
    assert len(wrong) >= 5 and len(right) >= 2
    assert_fair(book, exercise, wrong, right, explained=True)


@pytest.mark.parametrize("exercise, wrong, common", [
    ("quantize_per_channel", QUANT_WRONG, QUANT_VISIBLE),
    ("magnitude_prune", PRUNE_WRONG, PRUNE_VISIBLE),
    ("fit_models", FIT_WRONG, FIT_VISIBLE),
])
def test_common_mistakes_fail_in_the_visible_tests(book, exercise, wrong, common):
    assert_caught_visibly(book, exercise, wrong, common)


@pytest.mark.parametrize("exercise", ["quantize_per_channel", "magnitude_prune", "fit_models"])
def test_the_untouched_stub_earns_nothing(book, exercise):
    assert not book.score(exercise, stub()).passed
