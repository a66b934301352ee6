"""Notebook 05's graded tests tell right from wrong: plausible wrong answers, written from the
docstrings alone, lose the points; correct answers written differently from the reference earn
them (tests/notebooks/answers.py runs each against the exercise's own test cell)."""
from __future__ import annotations

import pytest
from answers import ExerciseNotebook, assert_caught_visibly, assert_fair, stub

ASSIGNMENT = "05_autoscaling"


@pytest.fixture(scope="module")
def book():
    return ExerciseNotebook(ASSIGNMENT)


# ----------------------------------------------------------------------------- Exercise 1
HPA_CHECKS = '''
    if current < 1 or not metric >= 0 or not target > 0 or min_replicas < 1 \\
            or max_replicas < min_replicas or tolerance < 0:
        raise ValueError("bad argument")
'''


def hpa(body: str) -> str:
    return ("def hpa_desired_replicas(current, metric, target, min_replicas, max_replicas, "
            "tolerance=0.1):" + HPA_CHECKS + body)


HPA_WRONG = {
    "no tolerance": hpa('''
    desired = math.ceil(current * metric / target)
    desired = min(desired, max(2 * current, current + 4))
    return min(max(desired, min_replicas), max_replicas)
'''),
    "tolerance boundary < instead of <=": hpa('''
    ratio = metric / target
    desired = current if abs(ratio - 1) < tolerance else math.ceil(current * ratio)
    desired = min(desired, max(2 * current, current + 4))
    return min(max(desired, min_replicas), max_replicas)
'''),
    "rounds to nearest": hpa('''
    ratio = metric / target
    desired = current if abs(ratio - 1) <= tolerance else round(current * ratio)
    desired = min(desired, max(2 * current, current + 4))
    return min(max(desired, min_replicas), max_replicas)
'''),
    "no scale-up limit": hpa('''
    ratio = metric / target
    desired = current if abs(ratio - 1) <= tolerance else math.ceil(current * ratio)
    return min(max(desired, min_replicas), max_replicas)
'''),
    "limit doubles only (forgets 4 pods)": hpa('''
    ratio = metric / target
    desired = current if abs(ratio - 1) <= tolerance else math.ceil(current * ratio)
    desired = min(desired, 2 * current)
    return min(max(desired, min_replicas), max_replicas)
'''),
    "limit adds 4 only (forgets doubling)": hpa('''
    ratio = metric / target
    desired = current if abs(ratio - 1) <= tolerance else math.ceil(current * ratio)
    desired = min(desired, current + 4)
    return min(max(desired, min_replicas), max_replicas)
'''),
    "tolerance on the metric difference": hpa('''
    desired = current if abs(metric - target) <= tolerance else math.ceil(current * metric / target)
    desired = min(desired, max(2 * current, current + 4))
    return min(max(desired, min_replicas), max_replicas)
'''),
    "clamps before the limit": hpa('''
    ratio = metric / target
    desired = current if abs(ratio - 1) <= tolerance else math.ceil(current * ratio)
    desired = min(max(desired, min_replicas), max_replicas)
    return min(desired, max(2 * current, current + 4))
'''),
    "no bounds inside the tolerance": hpa('''
    ratio = metric / target
    if abs(ratio - 1) <= tolerance:
        return current
    desired = min(math.ceil(current * ratio), max(2 * current, current + 4))
    return min(max(desired, min_replicas), max_replicas)
'''),
    "no check of bad arguments": '''
def hpa_desired_replicas(current, metric, target, min_replicas, max_replicas, tolerance=0.1):
    ratio = metric / target
    desired = current if abs(ratio - 1) <= tolerance else math.ceil(current * ratio)
    desired = min(desired, max(2 * current, current + 4))
    return min(max(desired, min_replicas), max_replicas)
''',
    "nan metric passes": '''
def hpa_desired_replicas(current, metric, target, min_replicas, max_replicas, tolerance=0.1):
    if current < 1 or metric < 0 or target <= 0 or min_replicas < 1 or max_replicas < min_replicas:
        raise ValueError("bad argument")
    ratio = metric / target
    if ratio != ratio:
        return current
    desired = current if abs(ratio - 1) <= tolerance else math.ceil(current * ratio)
    desired = min(desired, max(2 * current, current + 4))
    return min(max(desired, min_replicas), max_replicas)
''',
    "asks the package through a helper of its own": '''
def _ask(*args):
    return autoscaling.hpa_desired_replicas(*args)


def hpa_desired_replicas(current, metric, target, min_replicas, max_replicas, tolerance=0.1):
    return _ask(current, metric, target, min_replicas, max_replicas, tolerance)
''',
}

HPA_RIGHT = {
    "integer-minded with numpy": '''
def hpa_desired_replicas(current, metric, target, min_replicas, max_replicas, tolerance=0.1):
    values = np.array([current, metric, target, min_replicas, max_replicas, tolerance], dtype=float)
    if np.isnan(values).any() or current < 1 or metric < 0 or target <= 0:
        raise ValueError("current >= 1, metric >= 0 and target > 0 are required")
    if min_replicas < 1 or max_replicas < min_replicas or tolerance < 0:
        raise ValueError("bounds or tolerance out of range")
    ratio = metric / target
    if np.abs(ratio - 1.0) > tolerance:
        wanted = int(np.ceil(ratio * current))
        cap = current + max(current, 4)
        current_out = wanted if wanted < cap else cap
    else:
        current_out = current
    return int(np.clip(current_out, min_replicas, max_replicas))
''',
    "step by step with early returns": '''
def hpa_desired_replicas(current, metric, target, min_replicas, max_replicas, tolerance=0.1):
    import math as m
    for name, ok in (("current", current >= 1), ("metric", metric >= 0 and not m.isnan(metric)),
                     ("target", target > 0), ("min_replicas", min_replicas >= 1),
                     ("max_replicas", max_replicas >= min_replicas), ("tolerance", tolerance >= 0)):
        if not ok:
            raise ValueError(f"bad {name}")

    def bounded(n):
        return max(min_replicas, min(max_replicas, n))

    usage = metric / target
    if -tolerance <= usage - 1 <= tolerance:
        return bounded(current)
    raw = -(-current * metric // target) if isinstance(metric, int) and isinstance(target, int) \\
        else m.ceil(current * usage)
    return bounded(min(raw, max(current * 2, current + 4)))
''',
}


def test_exercise_1_hpa_desired_replicas_is_fair(book):
    wrong = dict(HPA_WRONG, untouched=stub())
    assert len(HPA_WRONG) >= 5 and len(HPA_RIGHT) >= 2
    assert_fair(book, "hpa_desired_replicas", wrong, HPA_RIGHT, explained=True)
    assert_caught_visibly(book, "hpa_desired_replicas", HPA_WRONG,
                          ["no tolerance", "no scale-up limit", "limit doubles only (forgets 4 pods)",
                           "tolerance on the metric difference", "no check of bad arguments"])


# ----------------------------------------------------------------------------- Exercise 2
STAB_WRONG = {
    "window closed at its start (>=)": '''
def stabilized_recommendation(history, now, window, recommendation):
    if window < 0:
        raise ValueError("window")
    return max([r for t, r in history if now - window <= t <= now] + [recommendation])
''',
    "forgets this sync's recommendation": '''
def stabilized_recommendation(history, now, window, recommendation):
    if window < 0:
        raise ValueError("window")
    kept = [r for t, r in history if now - window < t <= now]
    return max(kept) if kept else recommendation
''',
    "ignores the window": '''
def stabilized_recommendation(history, now, window, recommendation):
    if window < 0:
        raise ValueError("window")
    return max([r for t, r in history] + [recommendation])
''',
    "assumes sorted history, stops at the first old entry": '''
def stabilized_recommendation(history, now, window, recommendation):
    if window < 0:
        raise ValueError("window")
    best = recommendation
    for t, r in reversed(list(history)):
        if t <= now - window:
            break
        if t <= now:
            best = max(best, r)
    return best
''',
    "prunes the history in place": '''
def stabilized_recommendation(history, now, window, recommendation):
    if window < 0:
        raise ValueError("window")
    for entry in list(history):
        if entry[0] <= now - window:
            history.remove(entry)
    return max([r for t, r in history if t <= now] + [recommendation])
''',
    "lowest instead of highest": '''
def stabilized_recommendation(history, now, window, recommendation):
    if window < 0:
        raise ValueError("window")
    return min([r for t, r in history if now - window < t <= now] + [recommendation])
''',
    "counts entries after now": '''
def stabilized_recommendation(history, now, window, recommendation):
    if window < 0:
        raise ValueError("window")
    return max([r for t, r in history if t > now - window] + [recommendation])
''',
    "latest recommendation instead of highest": '''
def stabilized_recommendation(history, now, window, recommendation):
    if window < 0:
        raise ValueError("window")
    inside = sorted((t, r) for t, r in history if now - window < t <= now)
    return max(inside[-1][1], recommendation) if inside else recommendation
''',
    "negative window accepted": '''
def stabilized_recommendation(history, now, window, recommendation):
    return max([r for t, r in history if now - window < t <= now] + [recommendation])
''',
    "negative window refused only when there is history": '''
def stabilized_recommendation(history, now, window, recommendation):
    best = recommendation
    for t, r in history:
        if window < 0:
            raise ValueError("window must be >= 0")
        if now - window < t <= now:
            best = max(best, r)
    return best
''',
}

STAB_RIGHT = {
    "explicit loop": '''
def stabilized_recommendation(history, now, window, recommendation):
    if not window >= 0:
        raise ValueError(f"window must be >= 0, got {window}")
    cutoff = now - window
    best = recommendation
    for when, value in history:
        if cutoff < when and when <= now and value > best:
            best = value
    return int(best)
''',
    "numpy masks": '''
def stabilized_recommendation(history, now, window, recommendation):
    if window < 0:
        raise ValueError("negative window")
    pairs = np.asarray(list(history), dtype=float).reshape(-1, 2)
    keep = (pairs[:, 0] > now - window) & (pairs[:, 0] <= now)
    return int(max(recommendation, pairs[keep, 1].max(initial=recommendation)))
''',
}


def test_exercise_2_stabilized_recommendation_is_fair(book):
    wrong = dict(STAB_WRONG, untouched=stub())
    assert len(STAB_WRONG) >= 5 and len(STAB_RIGHT) >= 2
    assert_fair(book, "stabilized_recommendation", wrong, STAB_RIGHT, explained=True)
    assert_caught_visibly(book, "stabilized_recommendation", STAB_WRONG,
                          ["forgets this sync's recommendation", "ignores the window",
                           "prunes the history in place", "lowest instead of highest",
                           "negative window accepted"])


# ----------------------------------------------------------------------------- Exercise 3
TH_CHECKS = '''
    if not utilization >= 0 or low < 0 or high <= low or cooldown < 0 or current < 0 \\
            or min_replicas < 0 or max_replicas < min_replicas:
        raise ValueError("bad argument")
'''


def th(body: str) -> str:
    return ("def threshold_step(utilization, current, now, last_scaled, high, low, cooldown, "
            "min_replicas, max_replicas):" + TH_CHECKS + body)


TH_WRONG = {
    "scales up at the threshold (>=)": th('''
    if last_scaled is not None and now - last_scaled < cooldown:
        return min(max(current, min_replicas), max_replicas)
    if utilization >= high:
        current += 1
    elif utilization <= low:
        current -= 1
    return min(max(current, min_replicas), max_replicas)
'''),
    "cooldown still holds at exactly cooldown seconds": th('''
    desired = current
    if last_scaled is None or now - last_scaled > cooldown:
        if utilization > high:
            desired += 1
        elif utilization < low:
            desired -= 1
    return min(max(desired, min_replicas), max_replicas)
'''),
    "crashes before the first change (None)": th('''
    desired = current
    if now - last_scaled >= cooldown:
        if utilization > high:
            desired += 1
        elif utilization < low:
            desired -= 1
    return min(max(desired, min_replicas), max_replicas)
'''),
    "no clamp during the cooldown": th('''
    if last_scaled is not None and now - last_scaled < cooldown:
        return current
    desired = current + (utilization > high) - (utilization < low)
    return min(max(desired, min_replicas), max_replicas)
'''),
    "cooldown only after scale-ups": th('''
    desired = current
    if utilization > high and (last_scaled is None or now - last_scaled >= cooldown):
        desired += 1
    elif utilization < low:
        desired -= 1
    return min(max(desired, min_replicas), max_replicas)
'''),
    "no hysteresis: one threshold": th('''
    desired = current
    if last_scaled is None or now - last_scaled >= cooldown:
        if utilization > high:
            desired += 1
        elif utilization < high:
            desired -= 1
    return min(max(desired, min_replicas), max_replicas)
'''),
    "forgets the min bound": th('''
    desired = current
    if last_scaled is None or now - last_scaled >= cooldown:
        if utilization > high:
            desired += 1
        elif utilization < low:
            desired -= 1
    return min(desired, max_replicas)
'''),
    "nan utilization passes": '''
def threshold_step(utilization, current, now, last_scaled, high, low, cooldown, min_replicas, max_replicas):
    if utilization < 0 or low < 0 or high <= low or cooldown < 0 or current < 0 \\
            or min_replicas < 0 or max_replicas < min_replicas:
        raise ValueError("bad argument")
    desired = current
    if last_scaled is None or now - last_scaled >= cooldown:
        if utilization > high:
            desired += 1
        elif utilization < low:
            desired -= 1
    return min(max(desired, min_replicas), max_replicas)
''',
    "looks the package's rule up by name": '''
def threshold_step(utilization, current, now, last_scaled, high, low, cooldown, min_replicas, max_replicas):
    rule = getattr(autoscaling, "threshold_step")
    return rule(utilization, current, now, last_scaled, high, low, cooldown, min_replicas, max_replicas)
''',
}

TH_RIGHT = {
    "a table of moves": '''
def threshold_step(utilization, current, now, last_scaled, high, low, cooldown, min_replicas, max_replicas):
    import math as m
    if m.isnan(utilization) or utilization < 0:
        raise ValueError("utilization must be a number >= 0")
    if not (0 <= low < high) or cooldown < 0 or current < 0 or not 0 <= min_replicas <= max_replicas:
        raise ValueError("bad settings")
    free = last_scaled is None or (now - last_scaled) >= cooldown
    move = 0
    if free:
        move = {True: 1, False: 0}[utilization > high] - {True: 1, False: 0}[utilization < low]
    return sorted([min_replicas, current + move, max_replicas])[1]
''',
    "numpy clip and sign": '''
def threshold_step(utilization, current, now, last_scaled, high, low, cooldown, min_replicas, max_replicas):
    u = float(utilization)
    if not u >= 0 or low < 0 or high <= low or cooldown < 0 or current < 0 or min_replicas < 0 \\
            or max_replicas < min_replicas:
        raise ValueError("invalid input")
    cooling = False if last_scaled is None else now - last_scaled < cooldown
    step = 0 if cooling else int(np.sign(max(u - high, 0.0)) - np.sign(max(low - u, 0.0)))
    return int(np.clip(current + step, min_replicas, max_replicas))
''',
}


def test_exercise_3_threshold_step_is_fair(book):
    wrong = dict(TH_WRONG, untouched=stub())
    assert len(TH_WRONG) >= 5 and len(TH_RIGHT) >= 2
    assert_fair(book, "threshold_step", wrong, TH_RIGHT, explained=True)
    assert_caught_visibly(book, "threshold_step", TH_WRONG,
                          ["cooldown still holds at exactly cooldown seconds",
                           "crashes before the first change (None)", "no hysteresis: one threshold"])


def test_borrowing_the_package_earns_nothing(book):
    borrowed = '''
from scalesim_course import autoscaling as pkg

def stabilized_recommendation(history, now, window, recommendation):
    return pkg.stabilized_recommendation(history, now, window, recommendation)
'''
    out = book.score("stabilized_recommendation", borrowed)
    assert not out.passed and "OwnWorkError" in out.error
