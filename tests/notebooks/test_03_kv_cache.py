"""Notebook 03's tests tell right from wrong: plausible wrong answers lose the points, correct
answers written differently from the reference earn them all."""
from __future__ import annotations

import pytest

from answers import ExerciseNotebook, assert_caught_visibly, assert_fair, stub

ASSIGNMENT = "03_kv_cache"


@pytest.fixture(scope="module")
def book():
    return ExerciseNotebook(ASSIGNMENT)


def mutate(source: str, *edits: tuple[str, str]) -> str:
    """The source with each (old, new) replaced once; fails if `old` is not there."""
    for old, new in edits:
        assert old in source, f"mutation target not found: {old!r}"
        source = source.replace(old, new, 1)
    return source


# ----------------------------------------------------------------------------- Exercise 1
KV_RIGHT = {
    "numpy": '''
def kv_cache_bytes(model, seq_lens, dtype="fp16"):
    """Args: model, seq_lens, dtype. Returns: bytes."""
    table = dict(fp32=4, fp16=2, bf16=2, fp8=1, int8=1)
    if not isinstance(dtype, str) or dtype not in table:
        raise ValueError("unknown dtype")
    lens = np.asarray(list(seq_lens), dtype=np.int64)
    if (lens < 0).any():
        raise ValueError("negative length")
    return int(lens.sum()) * 2 * model.n_layers * model.n_kv_heads * model.head_dim * table[dtype]
''',
    "bits": '''
def kv_cache_bytes(model, seq_lens, dtype="fp16"):
    """Args: model, seq_lens, dtype. Returns: bytes."""
    bits = {"fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8}.get(dtype)
    if bits is None:
        raise ValueError(dtype)
    lens = list(seq_lens)
    if any(n < 0 for n in lens):
        raise ValueError("negative")
    per_layer = model.n_kv_heads * model.head_dim * bits // 8
    return sum(2 * per_layer * model.n_layers * n for n in lens)
''',
}

KV_WRONG = {
    "query heads": ("model.n_kv_heads", "model.n_heads"),
    "no factor 2 for K and V": ("per_token = 2 * model.n_layers", "per_token = model.n_layers"),
    "d_model instead of kv heads x head_dim": ("model.n_kv_heads * model.head_dim",
                                               "model.d_model"),
    "bits instead of bytes": ('"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1',
                              '"fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8'),
    "fp8 as two bytes": ('"fp8": 1', '"fp8": 2'),
    "no negative check": ("        if n < 0:\n", "        if False:\n"),
    "bf16 forgotten": ('"bf16": 2, ', ''),
}


KV_PACKAGE = '''
def kv_cache_bytes(model, seq_lens, dtype="fp16"):
    """Args: model, seq_lens, dtype. Returns: bytes."""
    return kvcache.kv_cache_bytes(model, seq_lens, dtype)
'''
# the common mistakes the visible tests catch before grading
KV_VISIBLE = ["query heads", "no factor 2 for K and V", "bits instead of bytes", "fp8 as two bytes",
              "no negative check", "padded to the longest", "refuses empty input", "untouched"]


def test_kv_cache_bytes_is_fair(book):
    ref = book.reference("kv_cache_bytes")
    wrong = {label: mutate(ref, edit) for label, edit in KV_WRONG.items()}
    wrong["padded to the longest"] = mutate(
        ref, ("    return per_token * tokens", "    lens = list(seq_lens)\n"
              "    return per_token * len(lens) * max(lens, default=0)"))
    wrong["refuses empty input"] = mutate(
        ref, ("    tokens = 0\n", "    tokens = 0\n    if len(seq_lens) == 0:\n        raise ValueError('no sequences')\n"))
    wrong["seq_lens sorted in place"] = mutate(ref, ("    tokens = 0\n", "    tokens = 0\n    seq_lens.sort()\n"))
    wrong["the package's bytes per token"] = mutate(
        ref, ("    per_token = 2 * model.n_layers * model.n_kv_heads * model.head_dim * sizes[dtype]",
              "    per_token = int(kvcache.kv_bytes_per_token(model, dtype))"))
    wrong["the package's function"] = KV_PACKAGE
    wrong["untouched"] = stub()
    assert_fair(book, "kv_cache_bytes", wrong, KV_RIGHT, explained=True)
    assert_caught_visibly(book, "kv_cache_bytes", wrong, KV_VISIBLE)


# ----------------------------------------------------------------------------- Exercise 2
ATTN_RIGHT = {
    "loops over heads": '''
def decode_attention(q, k_cache, v_cache, k_new, v_new):
    """Args: ... Returns: (out, k, v)."""
    k = torch.cat((k_cache, k_new[:, None, :]), 1)
    v = torch.cat((v_cache, v_new[:, None, :]), 1)
    per_kv = q.shape[0] // k.shape[0]
    rows = []
    for h in range(q.shape[0]):
        kh, vh = k[h // per_kv], v[h // per_kv]
        w = torch.softmax(kh @ q[h] / q.shape[1] ** 0.5, dim=0)
        rows.append(w @ vh)
    return torch.stack(rows), k, v
''',
    "grouped view": '''
def decode_attention(q, k_cache, v_cache, k_new, v_new):
    """Args: ... Returns: (out, k, v)."""
    k = torch.cat([k_cache, k_new.unsqueeze(-2)], dim=-2)
    v = torch.cat([v_cache, v_new.unsqueeze(-2)], dim=-2)
    kv, d = k.shape[0], q.shape[-1]
    qg = q.reshape(kv, -1, d)                       # [kv, group, d]
    s = qg @ k.transpose(-1, -2) / math.sqrt(d)     # [kv, group, T+1]
    s = s - s.max(dim=-1, keepdim=True).values
    w = s.exp() / s.exp().sum(dim=-1, keepdim=True)
    return (w @ v).reshape(q.shape), k, v
''',
}

ATTN_WRONG = {
    "no 1/sqrt(d) scaling": (" / math.sqrt(head_dim)", ""),
    "divides by d": ("math.sqrt(head_dim)", "head_dim"),
    "GQA heads interleaved (repeat)": (
        ("k_h = k.repeat_interleave(group, dim=0)", "k_h = k.repeat(group, 1, 1)"),
        ("v_h = v.repeat_interleave(group, dim=0)", "v_h = v.repeat(group, 1, 1)")),
    "new token prepended": (("torch.cat([k_cache, k_new.unsqueeze(1)], dim=1)",
                             "torch.cat([k_new.unsqueeze(1), k_cache], dim=1)"),
                            ("torch.cat([v_cache, v_new.unsqueeze(1)], dim=1)",
                             "torch.cat([v_new.unsqueeze(1), v_cache], dim=1)")),
    "softmax over heads": ("torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=0)"),
}


ATTN_VISIBLE = ["no 1/sqrt(d) scaling", "divides by d", "GQA heads interleaved (repeat)",
                "new token prepended", "softmax over heads", "untouched"]


def test_decode_attention_is_fair(book):
    ref = book.reference("decode_attention")
    wrong = {}
    for label, edit in ATTN_WRONG.items():
        edits = edit if isinstance(edit[0], tuple) else (edit,)
        wrong[label] = mutate(ref, *edits)
    wrong["the new token attends only to the old cache"] = mutate(
        ref, ("k_h = k.repeat_interleave", "k_h = (k_cache if k_cache.shape[1] else k).repeat_interleave"),
        ("v_h = v.repeat_interleave", "v_h = (v_cache if v_cache.shape[1] else v).repeat_interleave"))
    wrong["float32 arithmetic"] = mutate(
        ref, ("scores = torch.einsum(\"htd,hd->ht\", k_h, q)",
              "scores = torch.einsum(\"htd,hd->ht\", k_h.float(), q.float()).to(q.dtype)"))
    wrong["scales the caller's q in place"] = mutate(
        ref, ("    n_heads, head_dim = q.shape\n", "    n_heads, head_dim = q.shape\n    q /= math.sqrt(head_dim)\n"),
        (" / math.sqrt(head_dim)\n", "\n"))
    wrong["the package's function"] = '''
def decode_attention(q, k_cache, v_cache, k_new, v_new):
    """Args: ... Returns: (out, k, v)."""
    return kvcache.decode_attention(q, k_cache, v_cache, k_new, v_new)
'''
    wrong["untouched"] = stub()
    assert_fair(book, "decode_attention", wrong, ATTN_RIGHT, explained=True)
    assert_caught_visibly(book, "decode_attention", wrong, ATTN_VISIBLE)


# ----------------------------------------------------------------------------- Exercise 3
ALLOC_RIGHT = {
    "free set, lowest id first, refcount list": '''
def blocks_needed(n_tokens, block_size):
    """Args: n_tokens, block_size. Returns: blocks."""
    return math.ceil(n_tokens / block_size) if n_tokens else 0


class BlockAllocator:
    def __init__(self, n_blocks, block_size):
        self.n_blocks, self.block_size = n_blocks, block_size
        self.free_set = set(range(n_blocks))
        self.count = [0] * n_blocks
        self.seqs = {}

    def _grab(self):
        b = min(self.free_set)
        self.free_set.remove(b)
        self.count[b] = 1
        return b

    def _let_go(self, b):
        self.count[b] -= 1
        if not self.count[b]:
            self.free_set.add(b)

    def allocate(self, seq_id, n_tokens):
        if seq_id in self.seqs or n_tokens < 0:
            raise ValueError("bad allocate")
        need = blocks_needed(n_tokens, self.block_size)
        if need > len(self.free_set):
            raise MemoryError("full")
        self.seqs[seq_id] = [[self._grab() for _ in range(need)], n_tokens]
        return list(self.seqs[seq_id][0])

    def append(self, seq_id):
        if seq_id not in self.seqs:
            raise KeyError(seq_id)
        blocks, n = self.seqs[seq_id]
        full = n % self.block_size == 0
        if (full or self.count[blocks[-1]] > 1) and not self.free_set:
            raise MemoryError("full")
        if full:
            blocks.append(self._grab())
        elif self.count[blocks[-1]] > 1:
            old = blocks[-1]
            blocks[-1] = self._grab()
            self._let_go(old)
        self.seqs[seq_id][1] = n + 1

    def fork(self, parent_id, child_id):
        if parent_id not in self.seqs:
            raise KeyError(parent_id)
        if child_id in self.seqs:
            raise ValueError(child_id)
        blocks, n = self.seqs[parent_id]
        for b in blocks:
            self.count[b] += 1
        self.seqs[child_id] = [list(blocks), n]

    def free(self, seq_id):
        if seq_id not in self.seqs:
            raise KeyError(seq_id)
        for b in self.seqs.pop(seq_id)[0]:
            self._let_go(b)

    def block_table(self, seq_id):
        if seq_id not in self.seqs:
            raise KeyError(seq_id)
        return list(self.seqs[seq_id][0])

    def num_free(self):
        return len(self.free_set)

    def utilisation(self):
        return sum(1 for c in self.count if c > 0) / self.n_blocks
''',
    "deque, recomputed occupancy": '''
from collections import deque


def blocks_needed(n_tokens, block_size):
    """Args: n_tokens, block_size. Returns: blocks."""
    q, r = divmod(n_tokens, block_size)
    return q + (r > 0)


class BlockAllocator:
    def __init__(self, n_blocks, block_size):
        self.n_blocks, self.block_size = n_blocks, block_size
        self.pool = deque(range(n_blocks))
        self.rc = {}
        self.table = {}
        self.length = {}

    def allocate(self, seq_id, n_tokens):
        if n_tokens < 0:
            raise ValueError("negative")
        if seq_id in self.table:
            raise ValueError("exists")
        k = blocks_needed(n_tokens, self.block_size)
        if k > len(self.pool):
            raise MemoryError("no blocks")
        got = [self.pool.popleft() for _ in range(k)]
        for b in got:
            self.rc[b] = 1
        self.table[seq_id], self.length[seq_id] = got, n_tokens
        return got[:]

    def append(self, seq_id):
        t = self.table[seq_id]
        used = self.length[seq_id]
        if used < len(t) * self.block_size:
            last = t[-1]
            if self.rc[last] > 1:
                if not self.pool:
                    raise MemoryError("no block to copy into")
                new = self.pool.popleft()
                self.rc[new] = 1
                self.rc[last] -= 1
                t[-1] = new
        else:
            if not self.pool:
                raise MemoryError("no blocks")
            new = self.pool.popleft()
            self.rc[new] = 1
            t.append(new)
        self.length[seq_id] = used + 1

    def fork(self, parent_id, child_id):
        t = self.table[parent_id]
        if child_id in self.table:
            raise ValueError("exists")
        self.table[child_id] = t[:]
        self.length[child_id] = self.length[parent_id]
        for b in t:
            self.rc[b] += 1

    def free(self, seq_id):
        t = self.table.pop(seq_id)
        del self.length[seq_id]
        for b in t:
            self.rc[b] -= 1
            if self.rc[b] == 0:
                del self.rc[b]
                self.pool.append(b)

    def block_table(self, seq_id):
        return list(self.table[seq_id])

    def num_free(self):
        return len(self.pool)

    def utilisation(self):
        held = set()
        for t in self.table.values():
            held.update(t)
        return len(held) / self.n_blocks
''',
}

ALLOC_WRONG = {
    "blocks_needed off by one (floor + 1)": ("return -(-n_tokens // block_size)",
                                             "return n_tokens // block_size + 1"),
    "blocks_needed floors": ("return -(-n_tokens // block_size)",
                             "return n_tokens // block_size"),
    "no copy-on-write": ("        elif self.refs[table[-1]] > 1:",
                         "        elif False:"),
    "copies even a full shared block": (
        "        if n == len(table) * self.block_size:                 # no room in the last block",
        "        if table and self.refs[table[-1]] > 1 and self.free_blocks:\n"
        "            block = self.free_blocks.pop()\n"
        "            self.refs[block] = 1\n"
        "            self.refs[table[-1]] -= 1\n"
        "            table[-1] = block\n"
        "        if n == len(table) * self.block_size:"),
    "fork does not count references": ("            self.refs[block] += 1", "            pass"),
    "free returns shared blocks too": (
        "            self.refs[block] -= 1\n            if self.refs[block] == 0:",
        "            self.refs[block] -= 1\n            if True:"),
    "double free ignored": (
        ("        for block in self.tables.pop(seq_id):", "        for block in self.tables.pop(seq_id, []):"),
        ("        del self.tokens[seq_id]", "        self.tokens.pop(seq_id, None)")),
    "utilisation counts shared blocks per holder": (
        "        return (self.n_blocks - len(self.free_blocks)) / self.n_blocks",
        "        return sum(len(t) for t in self.tables.values()) / self.n_blocks"),
    "allocate takes blocks before checking": (
        "        if need > len(self.free_blocks):\n"
        "            raise MemoryError(f\"sequence {seq_id} needs {need} blocks, "
        "{len(self.free_blocks)} are free\")\n"
        "        table = [self.free_blocks.pop() for _ in range(need)]\n"
        "        for block in table:\n            self.refs[block] = 1",
        "        table = [self.free_blocks.pop() for _ in range(min(need, len(self.free_blocks)))]\n"
        "        for block in table:\n            self.refs[block] = 1\n"
        "        if len(table) < need:\n"
        "            raise MemoryError(\"out of blocks\")"),
    "fork of a freed sequence gives an empty child": (
        "        parent = self.tables[parent_id]                       # KeyError if unknown",
        "        parent = self.tables.get(parent_id, [])\n"
        "        self.tokens.setdefault(parent_id, 0)"),
    "fork copies the parent's blocks": (
        "        for block in parent:\n            self.refs[block] += 1\n"
        "        self.tables[child_id], self.tokens[child_id] = list(parent), self.tokens[parent_id]",
        "        if len(parent) > len(self.free_blocks):\n            raise MemoryError('full')\n"
        "        self.tables[child_id] = [self.free_blocks.pop() for _ in parent]\n"
        "        for block in self.tables[child_id]:\n            self.refs[block] = 1\n"
        "        self.tokens[child_id] = self.tokens[parent_id]"),
}


ALLOC_VISIBLE = ["blocks_needed off by one (floor + 1)", "blocks_needed floors", "no copy-on-write",
                 "fork does not count references", "free returns shared blocks too",
                 "double free ignored", "allocate takes blocks before checking", "untouched"]


def test_block_allocator_is_fair(book):
    ref = book.reference("BlockAllocator")
    wrong = {label: mutate(ref, *(edit if isinstance(edit[0], tuple) else (edit,)))
             for label, edit in ALLOC_WRONG.items()}
    wrong["subclasses the package's allocator"] = '''
def blocks_needed(n_tokens, block_size):
    """Args: n_tokens, block_size. Returns: blocks."""
    return -(-n_tokens // block_size)


class BlockAllocator(kvcache.BlockAllocator):
    """Args: n_blocks, block_size."""
'''
    wrong["delegates to the package's allocator"] = '''
def blocks_needed(n_tokens, block_size):
    """Args: n_tokens, block_size. Returns: blocks."""
    return -(-n_tokens // block_size)


class BlockAllocator:
    """Args: n_blocks, block_size."""

    def __init__(self, n_blocks, block_size):
        self.n_blocks, self.block_size = n_blocks, block_size
        self.inner = kvcache.BlockAllocator(n_blocks, block_size)

    def allocate(self, seq_id, n_tokens):
        return self.inner.allocate(seq_id, n_tokens)

    def append(self, seq_id):
        self.inner.append(seq_id)

    def fork(self, parent_id, child_id):
        self.inner.fork(parent_id, child_id)

    def free(self, seq_id):
        self.inner.free(seq_id)

    def block_table(self, seq_id):
        return self.inner.block_table(seq_id)

    def num_free(self):
        return self.inner.num_free()

    def utilisation(self):
        return self.inner.utilisation()
'''
    wrong["untouched"] = stub()
    assert_fair(book, "BlockAllocator", wrong, ALLOC_RIGHT, explained=True)
    assert_caught_visibly(book, "BlockAllocator", wrong, ALLOC_VISIBLE)
