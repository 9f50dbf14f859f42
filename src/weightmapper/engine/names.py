"""Names: keys → tokens with synonyms folded, layer indices lifted out, similarity matrices.

``blocks.3.attn.query.weight`` and ``transformer.h.3.attention.q.kernel`` both become the
template ``block # attn q weight`` with index tuple ``(3,)``. Similarity of many names at
once is a rapidfuzz ``cdist`` matrix, computed in C++.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process
from scipy import sparse

from weightmapper.dotted import number_components
from weightmapper.engine.columns import distinct_pairs

# token → canonical token. Folds the vocabularies of common libraries onto one.
SYNONYMS: dict[str, str] = {
    # normalisation layers
    "bn": "norm", "batchnorm": "norm", "ln": "norm", "layernorm": "norm", "gn": "norm",
    "groupnorm": "norm", "rmsnorm": "norm", "norm": "norm", "lnorm": "norm",
    "normalization": "norm",
    # learned affine parameters and statistics (TF / Flax / Keras spellings)
    "gamma": "weight", "kernel": "weight", "w": "weight", "weights": "weight",
    "beta": "bias", "b": "bias", "biases": "bias",
    "moving": "running", "variance": "var",
    # projections
    "fc": "fc", "linear": "fc", "dense": "fc", "lin": "fc",
    "classifier": "head", "predictions": "head", "head": "head", "logits": "head", "cls": "head", "heads": "head",
    "attn": "attn", "attention": "attn", "selfattention": "attn", "sa": "attn", "mha": "attn",
    "mlp": "mlp", "ffn": "mlp", "ff": "mlp", "feedforward": "mlp", "intermediate": "mlp",
    "q": "q", "query": "q", "k": "k", "key": "k", "v": "v", "value": "v",
    "o": "out", "out": "out", "output": "out", "outputs": "out",
    "qkv": "qkv", "inproj": "qkv",
    # containers
    "layer": "block", "layers": "block", "block": "block", "blocks": "block", "h": "block",
    "stage": "stage", "stages": "stage", "resblocks": "block", "res": "block",
    # embeddings
    "embed": "embed", "embedding": "embed", "embeddings": "embed", "emb": "embed",
    "wte": "embed", "tok": "embed", "word": "embed", "tokens": "embed",
    "wpe": "posembed", "pos": "pos", "position": "pos", "positional": "pos",
    # convolutions and shortcuts
    "conv": "conv", "convolution": "conv",
    "downsample": "downsample", "shortcut": "downsample", "skip": "downsample",
    "gate": "gate", "up": "up", "down": "down",
    # a norm's place in a block: HF ``input_layernorm``/``post_attention_layernorm``,
    # ``layernorm_before``/``layernorm_after`` against ``norm1``/``norm2``
    "input": "1", "pre": "1", "before": "1", "post": "2", "after": "2",
}  # fmt: skip

# Words whose trailing digits number a container (``layer3``, ``stage2``, ``res4``); other
# words keep their digits as part of the name (``conv1`` in ``res4.0.conv1.norm``).
CONTAINER_WORDS: frozenset[str] = frozenset(
    {"block", "stage", "level", "group", "features", "cell", "resblock", "dense", "transition"}
)

# Whole components with a conventional meaning that splitting would lose (Meta LLaMA and
# Mixtral: ``wq``/``wk``/``wv``/``wo`` attention, ``w1``/``w3`` gate/up and ``w2`` down).
WHOLE_WORDS: dict[str, tuple[str, ...]] = {
    "wq": ("q",), "wk": ("k",), "wv": ("v",), "wo": ("out",),
    "w1": ("gate",), "w2": ("down",), "w3": ("up",),
    "router": ("gate",), "feed_forward": ("mlp",), "feedforward": ("mlp",),
    "self_attention": ("attn",), "self_attn": ("attn",),
}  # fmt: skip

# Tokens that wrappers add and that carry no meaning for matching.
STOPWORDS: frozenset[str] = frozenset(
    {"module", "model", "orig", "mod", "self", "base", "transformer", "net", "network", "_", "c"}
)

# ``q_proj``, ``out_proj``, ``up_proj``: the ``proj`` adds nothing to the head word.
PROJ_HEADS: frozenset[str] = frozenset(
    {"q", "k", "v", "out", "qkv", "kv", "up", "down", "gate", "in", "o"}
)

_FLAT_INDEX = re.compile(r"_(\d+)_")
_SPLIT = re.compile(r"[._\-/:\s]+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_ALNUM = re.compile(r"[A-Za-z]+|\d+")
_TRAILING_DIGITS = re.compile(r"^(.*?[A-Za-z])_?(\d+)$")


@dataclass(frozen=True)
class NameParts:
    """One key split for matching: canonical tokens, layer indices and their template."""

    tokens: tuple[str, ...]
    """Canonical word tokens, indices removed (``("block", "attn", "q", "weight")``)."""
    indices: tuple[int, ...]
    """Layer indices in order of appearance (``(3,)``)."""
    template: str
    """Tokens with ``#`` where each index stood (``block # attn q weight``)."""


def tokenize(text: str) -> list[str]:
    """Any name fragment → lower-case word and number tokens (camelCase and digits split)."""
    out: list[str] = []
    for piece in _SPLIT.split(text):
        if not piece:
            continue
        for sub in _CAMEL.split(piece):
            out.extend(t.lower() for t in _ALNUM.findall(sub))
    return out


def fold(token: str) -> str:
    """Token → its canonical synonym (itself when none)."""
    return SYNONYMS.get(token, token)


def split_name(key: str) -> NameParts:
    """Full key → NameParts.

    A dot-component made of digits is a layer index (``blocks.3``); so are the trailing
    digits of an inner container component (``layer3.0`` → indices 3, 0). Digits that end
    any other name (``conv1``, ``ln_2``) stay part of the name: they tell siblings apart.
    """
    path, _, local = key.rpartition(".")
    mod = split_module(path)
    words, index = _component(local, False)
    indices = mod.indices + ((index,) if index is not None else ())
    template = " ".join(t for t in (mod.template, " ".join(words)) if t)
    if index is not None:
        template += " #"
    return NameParts(mod.tokens + words, indices, template)


@functools.lru_cache(maxsize=1 << 18)
def split_module(path: str) -> NameParts:
    """Module path → NameParts of the module (its own name is the last component); cached."""
    if not path:
        return NameParts((), (), "")
    if "_" in path and _FLAT_INDEX.search(path):
        # Flattened names (``layer1_0_conv1``): a number between underscores was a level.
        path = _FLAT_INDEX.sub(r".\1.", path)
    parent, _, name = path.rpartition(".")
    _, indices, template = _inner_parts(parent)
    tokens, text, index = _module_words(template, name, not parent)
    if index is not None:  # a bare number as module name (``features.3``)
        indices = (*indices, index)
    return NameParts(tokens, indices, text)


@dataclass(frozen=True)
class ModuleSplits:
    """Module paths split as :func:`split_module` splits each, as columns: templates coded,
    indices laid end to end."""

    template_code: np.ndarray
    """Path → code of its template (codes in order of first appearance)."""
    templates: list[str]
    """Distinct templates (``layers # attn q``)."""
    tokens: list[tuple[str, ...]]
    """Distinct template → its tokens (every path of a template has the same tokens)."""
    width: np.ndarray
    """Path → how many indices it has."""
    flat: np.ndarray
    """The indices of all paths, path after path (int64)."""
    skeleton_code: np.ndarray | None = None
    """Path → code of its skeleton (the path with each number component as ``#``), None
    when the paths were split one by one."""
    skeletons: list[str] | None = None
    """Distinct skeletons, in order of first appearance."""
    plain_numbers: bool = False
    """True when no number component has a leading zero: a path is then its skeleton and
    its numbers' values."""

    def indices(self) -> list[tuple[int, ...]]:
        """() → each path's index tuple (:attr:`NameParts.indices`)."""
        ends = np.cumsum(self.width).tolist()
        flat = self.flat.tolist()
        return [tuple(flat[a:b]) for a, b in zip([0, *ends], ends, strict=False)]


def split_modules(paths: Sequence[str]) -> ModuleSplits:
    """Module paths → :class:`ModuleSplits`, what :func:`split_module` gives for each.

    A deep stack's 50k module paths are a few hundred *skeletons* (numbers taken out), and a
    number component only adds its value to the indices (``#`` in the template, no token):
    each skeleton is split once, and the numbers are read from all paths in one pass.
    """
    joined = "\n".join(paths)
    found = None
    if (
        paths
        and "#" not in joined  # the skeletons' marker
        and joined.count("\n") == len(paths) - 1
        and not ("_" in joined and _FLAT_INDEX.search(joined))  # that changes components
    ):
        # None if not ASCII (str.isdigit sees other digits too) or a number past int64
        found = number_components(joined, ".\n")
    if found is None:
        return _split_one_by_one(paths)
    skeleton_code, skeletons = distinct_codes(found.text.split("\n"))
    values = found.values
    recipes = [_skeleton_recipe(s) for s in skeletons]
    if any(r is None for r in recipes):
        return _split_one_by_one(paths)  # a recipe that does not hold (never seen)
    # Per skeleton: its template, its indices with -1 where each number goes in.
    template_code, templates = distinct_codes([r[0].template for r in recipes])  # type: ignore[index]
    tokens = [recipes[first][0].tokens for first in first_of_each(template_code)]  # type: ignore[index]
    slots = [r[1] for r in recipes]  # type: ignore[index]
    n_slots = np.fromiter(map(len, slots), np.int64, len(slots))
    width = n_slots[skeleton_code]
    if all(all(v < 0 for v in r) for r in slots):
        flat = values  # every index is a number component, in order
    else:
        flat = _fill_slots(skeleton_code, slots, width, values)
    return ModuleSplits(
        template_code[skeleton_code],
        templates,
        tokens,
        width,
        flat,
        skeleton_code,
        skeletons,
        plain_numbers=found.plain,
    )


_NUMBER_COMPONENT = re.compile(r"(?<![^.\n])([0-9]+)(?![^.\n])")
"""A dot-component made of (ASCII) digits, in newline-separated paths; captured."""


def skeleton(path: str) -> str:
    """Module path → its skeleton: each component made of digits replaced by ``#``
    (``layers.12.mlp`` → ``layers.#.mlp``; ``conv1`` stays)."""
    return _NUMBER_COMPONENT.sub("#", path)


def _skeleton_recipe(skeleton: str) -> tuple[NameParts, tuple[int, ...]] | None:
    """A skeleton (numbers as ``#``) → (its NameParts, its indices with -1 in the slots its
    number components fill, in order), or None if two fillings disagree but in those slots.

    The slots are found by splitting the skeleton with every ``#`` as 0 and as 1: the
    indices that change are the number components'; the rest (``layer3`` → 3) are its own.
    """
    zero, one = split_module(skeleton.replace("#", "0")), split_module(skeleton.replace("#", "1"))
    if (zero.tokens, zero.template) != (one.tokens, one.template):
        return None
    if len(zero.indices) != len(one.indices):
        return None
    slots = tuple(-1 if a != b else a for a, b in zip(zero.indices, one.indices, strict=True))
    if sum(v < 0 for v in slots) != skeleton.count("#"):
        return None
    return zero, slots


def _fill_slots(
    skeleton_code: np.ndarray, slots: list[tuple[int, ...]], width: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """Per path its skeleton's code + per skeleton its index slots (-1: a number's) + each
    path's width + the numbers read in path order → all paths' indices laid end to end."""
    flat = np.empty(int(width.sum()), np.int64)
    start = np.cumsum(width) - width  # where each path's indices begin
    taken = np.fromiter((sum(v < 0 for v in r) for r in slots), np.int64, len(slots))
    n_taken = taken[skeleton_code]
    value_start = np.cumsum(n_taken) - n_taken  # where each path's numbers begin
    order = np.argsort(skeleton_code, kind="stable")
    cuts = np.nonzero(np.diff(skeleton_code[order]))[0] + 1
    for rows in np.split(order, cuts):
        at, nth = start[rows], value_start[rows]
        k = 0
        for pos, v in enumerate(slots[int(skeleton_code[rows[0]])]):
            if v < 0:
                flat[at + pos] = values[nth + k]
                k += 1
            else:
                flat[at + pos] = v
    return flat


def _split_one_by_one(paths: Sequence[str]) -> ModuleSplits:
    """Module paths → :class:`ModuleSplits` from :func:`split_module` of each path."""
    parts = list(map(split_module, paths))
    template_code, templates = distinct_codes([p.template for p in parts])
    tokens = [parts[first].tokens for first in first_of_each(template_code)]
    width = np.fromiter((len(p.indices) for p in parts), np.int64, len(parts))
    flat = np.fromiter(chain.from_iterable(p.indices for p in parts), np.int64, int(width.sum()))
    return ModuleSplits(template_code, templates, tokens, width, flat)


def first_of_each(code: np.ndarray) -> list[int]:
    """Codes numbered in order of first appearance → the position where each first appears."""
    if not len(code):
        return []
    seen_max = np.maximum.accumulate(code)
    return np.flatnonzero(np.r_[True, seen_max[1:] > seen_max[:-1]]).tolist()


@functools.lru_cache(maxsize=1 << 16)
def _module_words(
    template: tuple[str, ...], name: str, top: bool
) -> tuple[tuple[str, ...], str, int | None]:
    """A module's parent's template words (:func:`_inner_parts`), its own name and whether
    it sits at the top → (its tokens, its template, the index its name is or None); cached.

    A large model repeats a few module names under thousands of parents that differ in
    their indices only, so this runs once per distinct (parent template, name).
    """
    # A template is its tokens with ``#`` where each index stood: the tokens follow from it.
    tokens = tuple(w for w in template if w != "#")
    words, index = _component(name, False)
    if "norm" in words and not any(w.isdigit() for w in words):
        # A block's norms by what follows them: before attention = 1, before the MLP = 2
        # (``attention_norm``/``ffn_norm`` against ``norm1``/``norm2``, ``ln_1``/``ln_2``).
        if "attn" in words:
            words = tuple("1" if w == "attn" else w for w in words)
        elif "mlp" in words:
            words = tuple("2" if w == "mlp" else w for w in words)
    tokens = tokens + words
    template = template + words
    if index is not None:
        template = (*template, "#")
    if top and tokens == ("out",):
        # A top-level ``output``/``out`` module is the model's head (Meta's LLaMA ``output``).
        tokens, template = ("head",), ("head",)
    if len(tokens) >= 2 and tokens[-1] == "proj" and tokens[-2] == "attn":
        # ``attn.proj`` / ``attn.c_proj``: an attention's bare projection is its output.
        tokens = (*tokens[:-1], "out")
        template = (*template[:-1], "out")
    return tokens, " ".join(template), index


@functools.lru_cache(maxsize=1 << 18)
def _inner_parts(prefix: str) -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    """Dotted prefix of container components → (tokens, indices, template words); cached."""
    if not prefix:
        return (), (), ()
    parent, _, comp = prefix.rpartition(".")
    tokens, indices, template = _inner_parts(parent)
    if not comp:
        return tokens, indices, template
    words, index = _component(comp, True)
    if index is not None:
        return tokens + words, (*indices, index), template + words + ("#",)
    return tokens + words, indices, template + words


@functools.lru_cache(maxsize=65536)
def _component(comp: str, inner: bool) -> tuple[tuple[str, ...], int | None]:
    """One dot-component → (canonical word tokens, layer index or None); cached."""
    if comp.isdigit():
        return (), int(comp)
    m = _TRAILING_DIGITS.match(comp) if inner else None
    if m is not None and not _is_container(m.group(1)):
        m = None
    whole = WHOLE_WORDS.get(comp.lower()) if not m else None
    if whole is not None:
        return whole, None
    words = tokenize(m.group(1)) if m else tokenize(comp)
    for a, b in (("feed", "forward"), ("self", "attention")):
        if a in words and b in words and words.index(b) == words.index(a) + 1:
            k = words.index(a)
            words = [*words[:k], "mlp" if a == "feed" else "attn", *words[k + 2 :]]
    if len(words) == 2 and words[1] in ("proj", "projection") and fold(words[0]) in PROJ_HEADS:
        words = words[:1]
    out = []
    words = [part for w in words for part in _split_compound(w)]
    for w in words:
        if w.isdigit():
            out.append(w)
            continue
        f = fold(w)
        if f not in STOPWORDS:
            out.append(f)
    return tuple(out), (int(m.group(2)) if m else None)


_COMPOUND_TAILS: tuple[str, ...] = ("conv", "norm", "proj", "attn", "embed", "linear", "fc")


def _split_compound(word: str) -> list[str]:
    """``dwconv`` → ``dw conv``, ``pwconv`` → ``pw conv``: a short prefix glued to a known word."""
    if word in SYNONYMS:
        return [word]
    for tail in _COMPOUND_TAILS:
        if word.endswith(tail) and 1 <= len(word) - len(tail) <= 3:
            return [word[: -len(tail)], tail]
    return [word]


def _is_container(word: str) -> bool:
    toks = tokenize(word)
    return bool(toks) and (fold(toks[-1]) in CONTAINER_WORDS or toks[-1] in CONTAINER_WORDS)


@functools.lru_cache(maxsize=4096)
def local_tokens(local_name: str) -> tuple[str, ...]:
    """Local tensor name → canonical tokens (``gamma`` → ``("weight",)``)."""
    return _component(local_name, False)[0]


@functools.lru_cache(maxsize=4096)
def local_role(local_name: str) -> str:
    """Local tensor name → canonical role (``gamma`` → ``weight``, ``moving_mean`` → ``running mean``)."""
    toks = [fold(t) for t in tokenize(local_name)]
    return " ".join(t for t in toks if t not in STOPWORDS) or local_name


def common_prefix(paths: Iterable[str]) -> str:
    """Module paths → the longest dotted prefix they all share (``module.``), or ``""``.

    The prefix ends at a dot and never swallows a whole path, so every module keeps a name.
    """
    items = list(paths)
    if not items:
        return ""
    lo, hi = min(items), max(items)  # the common prefix of all = that of min and max
    n = 0
    for a, b in zip(lo, hi, strict=False):
        if a != b:
            break
        n += 1
    prefix = lo[:n]
    if not all(len(p) > n and p[n] == "." for p in (lo, hi)) or not all(len(p) > n for p in items):
        prefix = prefix.rpartition(".")[0]
        if not prefix:
            return ""
        return prefix + "." if all(p.startswith(prefix + ".") for p in items) else ""
    return prefix + "." if all(p.startswith(prefix + ".") for p in items) else ""


def dense_rank_indices(
    templates: Sequence[str], indices: Sequence[tuple[int, ...]]
) -> list[tuple[int, ...]]:
    """Per-key (template, indices) → indices replaced by their dense rank per template slot.

    ``layer1..layer4`` and ``stages.0..3`` both become 0..3, so 1-based and 0-based
    numbering compare equal.
    """
    return rank_index_rows(distinct_codes(templates)[0], indices)[0]


def rank_index_rows(
    template_code: np.ndarray, indices: Sequence[tuple[int, ...]]
) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Per row: template code and index tuple → (the indices dense-ranked per template slot
    (:func:`dense_rank_indices`), each row's primary index: its ranked value in the slot of
    its template with the most distinct values (the first such slot; -1 when it has none))."""
    n = len(indices)
    width = np.fromiter(map(len, indices), np.int64, n)
    flat = np.fromiter(chain.from_iterable(indices), np.int64, int(width.sum()))
    ranked, primary, _ = rank_index_columns(template_code, width, flat)
    return ranked, primary


def rank_index_columns(
    template_code: np.ndarray, width: np.ndarray, flat: np.ndarray
) -> tuple[list[tuple[int, ...]], np.ndarray, np.ndarray]:
    """Per row: template code, number of indices + all rows' indices laid end to end →
    (ranked indices and primary index of each row as :func:`rank_index_rows` gives them,
    the ranks as a matrix padded with 0).

    Rows are ranked one template at a time, as arrays cut out of the flat indices.
    """
    n = len(width)
    out: list[tuple[int, ...]] = [()] * n
    primary = np.full(n, -1, np.int64)
    padded = np.zeros((n, int(width.max(initial=0))), np.int64)
    if not n:
        return out, primary, padded
    start = np.cumsum(width) - width
    order = np.argsort(template_code, kind="stable")
    cuts = np.nonzero(np.diff(template_code[order]))[0] + 1
    for rows in np.split(order, cuts):
        w = int(width[rows[0]])
        rows_l = rows.tolist()
        if (width[rows] != w).any():
            flat_l = flat.tolist()
            ragged = [tuple(flat_l[start[q] : start[q] + width[q]]) for q in rows_l]
            ranked = [_rank_ragged(ragged, idx) for idx in ragged]
            slot = _primary_slot(ranked)
            for r, rk in zip(rows_l, ranked, strict=True):
                out[r] = rk
                primary[r] = rk[slot] if 0 <= slot < len(rk) else -1
                padded[r, : len(rk)] = rk
            continue
        if not w:
            continue  # no indices: () and -1
        arr = flat[start[rows][:, None] + np.arange(w)]
        ranks = np.empty_like(arr)
        for col in range(w):
            ranks[:, col] = np.unique(arr[:, col], return_inverse=True)[1].ravel()
        # Dense ranks: a slot's number of distinct values is its largest rank + 1.
        slot = int(np.argmax(ranks.max(axis=0)))
        primary[rows] = ranks[:, slot]
        padded[rows, :w] = ranks
        for r, rk in zip(rows_l, map(tuple, ranks.tolist()), strict=True):
            out[r] = rk
    return out, primary, padded


def _primary_slot(ranked: list[tuple[int, ...]]) -> int:
    """Ranked index tuples of one template → its slot with the most distinct values (the
    first such; slots counted on the first tuple's length), -1 when it has none."""
    slots: list[set[int]] = [set() for _ in ranked[0]]
    for r in ranked:
        for pos, v in enumerate(r[: len(slots)]):
            slots[pos].add(v)
    return max(range(len(slots)), key=lambda p: (len(slots[p]), -p)) if slots else -1


def _rank_ragged(all_idx: list[tuple[int, ...]], idx: tuple[int, ...]) -> tuple[int, ...]:
    # Index tuples of unequal length under one template cannot occur from split_name; kept
    # for safety: rank each slot among the tuples long enough to have it.
    return tuple(
        sorted({t[pos] for t in all_idx if len(t) > pos}).index(v) for pos, v in enumerate(idx)
    )


def similarity_matrix(a: Sequence[str], b: Sequence[str], workers: int = 1) -> np.ndarray:
    """Two lists of strings → float32 matrix of normalized Indel similarity in [0, 1]."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), dtype=np.float32)
    ca, ua = distinct_codes(a)
    cb, ub = distinct_codes(b)
    m = process.cdist(ua, ub, scorer=fuzz.ratio, dtype=np.uint8, workers=workers)
    return m.astype(np.float32)[ca[:, None], cb[None, :]] / 100.0


def index_similarity(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Two dense-ranked index tuples → 1 when equal, partial credit for a shared tail/head."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.5
    if len(a) == len(b):
        same = sum(x == y for x, y in zip(a, b, strict=True))
        return 0.5 * same / len(a)
    # Different nesting (flat ``features.7`` vs staged ``blocks.2.1``): no evidence either way.
    return 0.4


DENSE_LIMIT = 4_000_000
"""Largest distinct-name × distinct-name similarity table kept in memory."""


class TokenSpace:
    """Token strings of both sides → IDF-weighted unit vectors; cosine similarity as matrices.

    A token shared by most keys (``block``, ``weight``) weighs little; a rare one (``q``,
    ``downsample``) decides. Rows of :attr:`a` and :attr:`b` follow the input lists.
    """

    def __init__(
        self,
        a: Sequence[str],
        b: Sequence[str],
        codes: tuple[tuple[np.ndarray, list[str]], tuple[np.ndarray, list[str]]] | None = None,
    ) -> None:
        # Many keys share one token string (indices are not tokens): work on distinct ones.
        # ``codes``: both lists already coded (:func:`distinct_codes`), which ``a`` and ``b``
        # then need not repeat.
        (self.code_a, uni_a), (self.code_b, uni_b) = codes or (distinct_codes(a), distinct_codes(b))
        self.uni_a, self.uni_b = uni_a, uni_b
        """Distinct token strings of each side, in first-seen order (codes index them)."""
        count_a = np.bincount(self.code_a, minlength=len(uni_a))
        count_b = np.bincount(self.code_b, minlength=len(uni_b))
        vocab: dict[str, int] = {}
        docs_a = [sorted(set(t.split())) for t in uni_a]
        docs_b = [sorted(set(t.split())) for t in uni_b]
        df: list[float] = []
        for docs, counts in ((docs_a, count_a), (docs_b, count_b)):
            for doc, n in zip(docs, counts, strict=True):
                for tok in doc:
                    if tok not in vocab:
                        vocab[tok] = len(vocab)
                        df.append(0.0)
                    df[vocab[tok]] += float(n)
        n_docs = max(1, len(self.code_a) + len(self.code_b))
        idf = np.log((1.0 + n_docs) / (1.0 + np.array(df, dtype=np.float64))) + 1.0
        self.a = _unit_rows(docs_a, vocab, idf)
        self.b = _unit_rows(docs_b, vocab, idf)
        # Precompute all distinct × distinct similarities when that table is small.
        self._dense: np.ndarray | None = None
        if len(uni_a) * len(uni_b) <= DENSE_LIMIT:
            self._dense = (self.a @ self.b.T).toarray().astype(np.float32)

    def matrix(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Row numbers in a × row numbers in b → dense cosine similarity matrix (float32)."""
        ca, cb = self.code_a[rows], self.code_b[cols]
        if self._dense is not None:
            return self._dense[ca[:, None], cb[None, :]]
        ua, ia = np.unique(ca, return_inverse=True)
        ub, ib = np.unique(cb, return_inverse=True)
        sub = (self.a[ua] @ self.b[ub].T).toarray().astype(np.float32)
        return sub[ia[:, None], ib[None, :]]

    def pairwise(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Equal-length row numbers in a and b → cosine similarity of each pair."""
        if not len(rows):
            return np.zeros(0, dtype=np.float64)
        ca, cb = self.code_a[rows], self.code_b[cols]
        if self._dense is not None:
            return self._dense[ca, cb].astype(np.float64)
        prod = self.a[ca].multiply(self.b[cb])
        return np.asarray(prod.sum(axis=1), dtype=np.float64).ravel()

    def ratio_pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Equal-length row numbers in a and b → character similarity (``fuzz.ratio`` / 100,
        float64) of each pair's token strings, computed once per distinct pair of strings:
        a deep stack repeats a few names in every block."""
        if not len(rows):
            return np.zeros(0, dtype=np.float64)
        ka, kb, back = distinct_pairs(self.code_a[rows], self.code_b[cols], len(self.uni_b))
        a = [self.uni_a[i] for i in ka.tolist()]
        b = [self.uni_b[j] for j in kb.tolist()]
        vals = np.asarray(process.cpdist(a, b, scorer=fuzz.ratio), np.float64) / 100.0
        return vals[back]


def distinct_codes(items: Sequence[Hashable]) -> tuple[np.ndarray, list[Any]]:
    """Strings (or any hashable items) → (code per item, distinct items in first-seen order)."""
    code = {x: n for n, x in enumerate(dict.fromkeys(items))}
    return np.fromiter(map(code.__getitem__, items), np.int64, len(items)), list(code)


def _unit_rows(docs: list[list[str]], vocab: dict[str, int], idf: np.ndarray) -> sparse.csr_matrix:
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for doc in docs:
        ids = [vocab[t] for t in doc]
        w = idf[ids] if ids else np.zeros(0)
        norm = float(np.sqrt((w**2).sum())) or 1.0
        indices.extend(ids)
        data.extend((w / norm).tolist())
        indptr.append(len(indices))
    return sparse.csr_matrix(
        (np.array(data, dtype=np.float64), np.array(indices, dtype=np.int64), np.array(indptr)),
        shape=(len(docs), len(vocab)),
    )
