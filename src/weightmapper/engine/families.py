"""Module families: which module types, roles and user-named components may exchange tensors.

A tensor may pair only with one whose module family is compatible (a norm never becomes a
linear layer), whose strict role agrees (a bias never becomes a weight), and which no
user-declared incompatible pair forbids (``("attention", "mlp")``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from weightmapper.engine.names import fold, tokenize

if TYPE_CHECKING:
    from weightmapper.engine.side import Side

# Roles that must never be crossed (a bias never becomes a weight).
STRICT_ROLES: frozenset[str] = frozenset(
    {"weight", "bias", "running mean", "running var", "num batches tracked"}
)

# Module class name → family; families decide which module types may exchange weights.
_TYPE_FAMILIES: dict[str, str] = {
    "linear": "linear", "conv1d": "conv", "conv2d": "conv", "conv3d": "conv",
    "nondynamicallyquantizablelinear": "linear", "lazylinear": "linear",
    "convtranspose1d": "convtranspose", "convtranspose2d": "convtranspose",
    "convtranspose3d": "convtranspose",
    "batchnorm1d": "batchnorm", "batchnorm2d": "batchnorm", "batchnorm3d": "batchnorm",
    "syncbatchnorm": "batchnorm", "frozenbatchnorm2d": "batchnorm", "batchnormact2d": "batchnorm",
    "groupnorm": "groupnorm", "groupnormact": "groupnorm",
    "layernorm": "layernorm", "rmsnorm": "layernorm", "layernorm2d": "layernorm",
    "instancenorm1d": "instancenorm", "instancenorm2d": "instancenorm",
    "embedding": "embedding", "embeddingbag": "embedding",
    "multiheadattention": "attention",
}  # fmt: skip

# Pairs of families whose tensors may exchange (both directions).
_FRIENDLY: frozenset[frozenset[str]] = frozenset(
    {frozenset({"linear", "conv"}), frozenset({"linear", "embedding"})}
)
_NORMS: frozenset[str] = frozenset({"batchnorm", "groupnorm", "layernorm", "instancenorm"})


def type_family(module_type: str | None, local_names: Iterable[str] = ()) -> str | None:
    """Module class name (or, without one, the group's local tensor names) → family or None.

    Transformers' ``Conv1D`` is a linear layer stored transposed; any class name ending in
    ``RMSNorm``/``LayerNorm`` counts as a layer norm, ``...BatchNorm...`` as a batch norm.
    """
    if module_type:
        t = module_type.lower()
        if t == "conv1d" and module_type == "Conv1D":
            return "linear"
        if t in _TYPE_FAMILIES:
            return _TYPE_FAMILIES[t]
        if "batchnorm" in t:
            return "batchnorm"
        if "groupnorm" in t:
            return "groupnorm"
        if t.endswith(("rmsnorm", "layernorm")):
            return "layernorm"
        if t.endswith("embedding"):
            return "embedding"
        if t.endswith("linear"):
            return "linear"
        return None
    if not _STAT_NAMES.isdisjoint(local_names):
        return "batchnorm"
    return None


_STAT_NAMES: frozenset[str] = frozenset(
    {"running_mean", "running_var", "moving_mean", "moving_variance"}
)
"""Local names of a batch norm's statistics: a group holding one is a batch norm."""
_KERNEL_NAMES: tuple[str, ...] = ("weight", "kernel")
"""Local names of a layer's main weight: with spatial dims (3-D to 5-D) a convolution's."""


def guess_family(local_shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """A group's local name → shape (no module type known) → a family guess, or None.

    Statistics mean a batch norm; a weight with spatial dims (3-D to 5-D) a convolution.
    """
    fam = type_family(None, local_shapes)
    if fam is not None:
        return fam
    for name in _KERNEL_NAMES:
        shape = local_shapes.get(name)
        if shape is not None and 3 <= len(shape) <= 5:
            return "conv"
    return None


def guess_families(
    group: np.ndarray,
    local_code: np.ndarray,
    local_names: Sequence[str],
    ndim: np.ndarray,
    n_groups: int,
) -> list[str | None]:
    """Per key: group, local name code, number of dims (+ the distinct local names, the
    number of groups) → per group what :func:`guess_family` guesses from its tensors,
    decided for all groups at once."""
    stat = np.fromiter((n in _STAT_NAMES for n in local_names), bool, len(local_names))
    kernel = np.fromiter((n in _KERNEL_NAMES for n in local_names), bool, len(local_names))
    spatial = kernel[local_code] & (ndim >= 3) & (ndim <= 5)
    has_stat = np.bincount(group[stat[local_code]], minlength=n_groups) > 0
    has_spatial = np.bincount(group[spatial], minlength=n_groups) > 0
    return [
        "batchnorm" if s else "conv" if c else None
        for s, c in zip(has_stat.tolist(), has_spatial.tolist(), strict=True)
    ]


def type_compat(fam_a: str | None, fam_b: str | None) -> float:
    """Two module families → 1 same, 0.6 unknown, 0.3 related, 0.25 two norms, 0 incompatible."""
    if fam_a is None or fam_b is None:
        return 0.6
    if fam_a == fam_b:
        return 1.0
    if frozenset({fam_a, fam_b}) in _FRIENDLY:
        return 0.3
    if fam_a in _NORMS and fam_b in _NORMS:
        # Another normalisation (BatchNorm → GroupNorm): the affine weight and bias still
        # carry over, the statistics never do (they have no partner of the same role).
        return 0.25
    if fam_a in _NORMS or fam_b in _NORMS:
        return 0.0
    return 0.3


def family_tokens(text: str) -> frozenset[str]:
    """A component-family name (``attention``, ``mlp``) → its canonical token set."""
    return frozenset(fold(t) for t in tokenize(text))


TokenPair = tuple[frozenset[str], frozenset[str]]


def incompatible_token_pairs(pairs: Sequence[Sequence[str]]) -> list[TokenPair]:
    """Validated ``incompatible_pairs`` (``[("attention", "mlp")]``) → canonical token pairs."""
    return [(family_tokens(a), family_tokens(b)) for a, b in pairs]


def family_token_sets(side: Side) -> list[frozenset[str]]:
    """Side → per key: canonical tokens of its name, its module type and its ancestors' types."""
    out = []
    types = side.inv.module_types
    for k in range(len(side.keys)):
        toks = set(side.tokens[k].split())
        path = side.group_paths[side.group[k]]
        while True:
            ty = types.get(path)
            if ty:
                toks.update(fold(t) for t in tokenize(ty))
            if not path:
                break
            path = path.rpartition(".")[0]
        fam = side.group_family[side.group[k]]
        if fam:
            toks.add(fam)
        out.append(frozenset(toks))
    return out


def incompatible_masks(side: Side, pairs: Sequence[TokenPair]) -> np.ndarray:
    """Side + token pairs → bool array [pair, a/b, key]: does each key belong to family a / b?"""
    out = np.zeros((len(pairs), 2, len(side)), bool)
    if not pairs:
        return out
    toks = family_token_sets(side)
    for p, (a, b) in enumerate(pairs):
        for i, ts in enumerate(toks):
            out[p, 0, i] = a <= ts
            out[p, 1, i] = b <= ts
    return out


def blocked_by_user(
    inc_s: np.ndarray, inc_t: np.ndarray, rows_s: np.ndarray, cols_t: np.ndarray
) -> np.ndarray:
    """Masks of both sides + source keys × target keys → bool matrix, True where forbidden.

    A source key of family a (and not b) may not go to a target key of family b, and the
    other way round.
    """
    out = np.zeros((len(rows_s), len(cols_t)), bool)
    for p in range(inc_s.shape[0]):
        a_s, b_s = inc_s[p, 0, rows_s], inc_s[p, 1, rows_s]
        a_t, b_t = inc_t[p, 0, cols_t], inc_t[p, 1, cols_t]
        out |= (a_s & ~b_s)[:, None] & b_t[None, :]
        out |= (b_s & ~a_s)[:, None] & a_t[None, :]
    return out


def allowed_pairs(
    inc_s: np.ndarray, inc_t: np.ndarray, rows_s: np.ndarray, cols_t: np.ndarray
) -> np.ndarray:
    """Masks of both sides + equal-length source and target keys → True where allowed."""
    ok = np.ones(len(rows_s), bool)
    for p in range(inc_s.shape[0]):
        a_s, b_s = inc_s[p, 0, rows_s], inc_s[p, 1, rows_s]
        a_t, b_t = inc_t[p, 0, cols_t], inc_t[p, 1, cols_t]
        ok &= ~((a_s & ~b_s & b_t) | (b_s & ~a_s & a_t))
    return ok
