"""Split and merge proposals: unmatched source and target keys → MultiPairs whose shapes add up.

Two families are recognised, in both directions:

* fused attention projections (``qkv``, ``in_proj_weight``, GPT-2's ``Conv1D`` ``c_attn``)
  ↔ separate ``q``/``k``/``v`` projections sharing a parent module: ``split`` one way,
  ``merge`` the other, with a ``transpose`` chained in when the fused side stores the
  weight as ``(in, out)`` (``Conv1D``) and the other side as ``(out, in)`` (``Linear``);
* per-expert tensors ``experts.{i}.w`` × E ↔ one stacked ``(E, ...)`` tensor: ``stack`` /
  ``unstack``.

A proposal is made only when shapes add up exactly. Where shapes cannot settle the layout
(square chunks with an unknown module type, q/k/v order not given by names, head-interleaved
``query_key_value`` layouts), the pair is still proposed but marked ``confidence="low"`` so the
functional check or a person can confirm it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz

from weightmapper.result import MultiPair
from weightmapper.tensor_info import TensorInfo
from weightmapper.transforms import TransformSpec, chain, invert, weight_layout

log = logging.getLogger(__name__)

_ROLE_TOKENS: dict[str, str] = {}
for _role, _names in {
    "q": ("q", "query", "q_proj", "to_q", "wq", "q_lin", "q_linear", "query_proj", "w_q"),
    "k": ("k", "key", "k_proj", "to_k", "wk", "k_lin", "k_linear", "key_proj", "w_k"),
    "v": ("v", "value", "v_proj", "to_v", "wv", "v_lin", "v_linear", "value_proj", "w_v"),
}.items():
    for _n in _names:
        _ROLE_TOKENS[_n] = _role
_ROLE_ORDER = {"q": 0, "k": 1, "v": 2}
_PARAM_ROLE = re.compile(r"(q|k|v)_proj_(weight|bias)")
_FUSED_HINT = re.compile(r"qkv|c_attn|in_proj|query_key_value|kv_proj|\bkv\b|wqkv|to_qkv")
# Libraries whose fused projection interleaves heads ([q0 k0 v0 q1 k1 v1 ...]) rather than
# stacking [q; k; v]: a contiguous split would be wrong, so such proposals stay low confidence.
_INTERLEAVED_HINT = re.compile(r"query_key_value")
_DIGITS = re.compile(r"^\d+$")


@dataclass(frozen=True)
class _Separate:
    """Tensors on one side that a fused tensor could split into, in their proposed order."""

    keys: tuple[str, ...]
    container: str
    param: str
    names_settle_order: bool


def propose_multi(
    source: Mapping[str, TensorInfo],
    target: Mapping[str, TensorInfo],
    *,
    source_types: Mapping[str, str] | None = None,
    target_types: Mapping[str, str] | None = None,
    source_order: Mapping[str, int] | None = None,
    target_order: Mapping[str, int] | None = None,
) -> list[MultiPair]:
    """Unmatched source and target TensorInfos (+ module path → class name) → split/merge pairs.

    Projections whose names do not say q/k/v are ordered by execution order when
    ``*_order`` (module path → first-call rank, from a trace) covers them, else by the
    iteration order of ``source`` / ``target`` (taken as registration order); either way
    the proposal is low confidence. Each key appears in at most one proposal.
    """
    src_types, tgt_types = dict(source_types or {}), dict(target_types or {})
    src_order, tgt_order = dict(source_order or {}), dict(target_order or {})
    used_src: set[str] = set()
    used_tgt: set[str] = set()
    out: list[MultiPair] = []

    # fused source → separate targets (split)
    for fused, parts, spec, score, breakdown, conf in _fused_to_separate(
        source, target, src_types, tgt_types, tgt_order
    ):
        if fused in used_src or used_tgt.intersection(parts):
            continue
        used_src.add(fused)
        used_tgt.update(parts)
        out.append(MultiPair((fused,), parts, spec, score, breakdown, conf))

    # separate sources → fused target (merge): the same search from the other side, inverted
    rest_src = {k: v for k, v in source.items() if k not in used_src}
    rest_tgt = {k: v for k, v in target.items() if k not in used_tgt}
    for fused, parts, spec, score, breakdown, conf in _fused_to_separate(
        rest_tgt, rest_src, tgt_types, src_types, src_order
    ):
        if fused in used_tgt or used_src.intersection(parts):
            continue
        used_tgt.add(fused)
        used_src.update(parts)
        out.append(MultiPair(parts, (fused,), invert(spec), score, breakdown, conf))

    # per-expert ↔ stacked
    rest_src = {k: v for k, v in source.items() if k not in used_src}
    rest_tgt = {k: v for k, v in target.items() if k not in used_tgt}
    for stacked, parts, score, breakdown in _stacks(rest_src, rest_tgt):
        if stacked in used_tgt or used_src.intersection(parts):
            continue
        used_tgt.add(stacked)
        used_src.update(parts)
        out.append(
            MultiPair(parts, (stacked,), TransformSpec("stack", {"dim": 0}), score, breakdown)
        )
    rest_src = {k: v for k, v in source.items() if k not in used_src}
    rest_tgt = {k: v for k, v in target.items() if k not in used_tgt}
    for stacked, parts, score, breakdown in _stacks(rest_tgt, rest_src):
        if stacked in used_src or used_tgt.intersection(parts):
            continue
        used_src.add(stacked)
        used_tgt.update(parts)
        spec = TransformSpec("unstack", {"dim": 0, "count": len(parts)})
        out.append(MultiPair((stacked,), parts, spec, score, breakdown))

    log.info("proposed %d split/merge pair(s)", len(out))
    return sorted(out, key=lambda m: (m.sources[0], m.targets[0]))


# --- fused ↔ separate --------------------------------------------------------------------


def _role_of(key: str) -> tuple[str, str, str] | None:
    """Tensor key → (container path, role q/k/v, parameter name) when its name says q/k/v."""
    parts = key.split(".")
    m = _PARAM_ROLE.fullmatch(parts[-1])
    if m:
        return ".".join(parts[:-1]), m.group(1), m.group(2)
    if len(parts) >= 2:
        role = _ROLE_TOKENS.get(parts[-2].lower())
        if role:
            return ".".join(parts[:-2]), role, parts[-1]
    return None


def _param_kind(key: str) -> str:
    """Tensor key → ``weight``, ``bias`` or its last segment (so weights pair with weights)."""
    last = key.rsplit(".", 1)[-1]
    for kind in ("weight", "bias"):
        if last.endswith(kind):
            return kind
    return last


def _module_of(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else ""


def _separate_sets(side: Mapping[str, TensorInfo], order: Mapping[str, int]) -> list[_Separate]:
    """One side's keys (+ execution ranks) → groups of separate projections (q/k/v, 3 siblings)."""
    named: dict[tuple[str, str], dict[str, str]] = {}
    unnamed: dict[tuple[str, str], list[str]] = {}
    for key in side:
        r = _role_of(key)
        if r is not None:
            container, role, param = r
            named.setdefault((container, _param_kind(param)), {}).setdefault(role, key)
            continue
        module = _module_of(key)
        if module:
            unnamed.setdefault((_module_of(module), _param_kind(key)), []).append(key)
    sets: list[_Separate] = []
    for (container, param), roles in named.items():
        if len(roles) >= 2 and ("q" in roles or set(roles) == {"k", "v"}):
            keys = tuple(roles[r] for r in sorted(roles, key=_ROLE_ORDER.__getitem__))
            sets.append(_Separate(keys, container, param, True))
    for (container, param), keys in unnamed.items():
        # Only a triple of unnamed siblings is a plausible q/k/v set. Execution order is the
        # better evidence of which is q, k and v; registration order is the fallback.
        if len(keys) == 3:
            modules = [_module_of(k) for k in keys]
            if all(m in order for m in modules):
                keys = [k for _, k in sorted(zip([order[m] for m in modules], keys, strict=True))]
            sets.append(_Separate(tuple(keys), container, param, False))
    return sets


def _fused_to_separate(
    fused_side: Mapping[str, TensorInfo],
    separate_side: Mapping[str, TensorInfo],
    fused_types: Mapping[str, str],
    separate_types: Mapping[str, str],
    separate_order: Mapping[str, int],
) -> list[tuple[str, tuple[str, ...], TransformSpec, float, dict[str, float], str]]:
    """Fused candidates × separate sets → best-first, non-overlapping (fused → parts) proposals."""
    sets = _separate_sets(separate_side, separate_order)
    if not sets:
        return []
    # Index the sets by every fused shape they could come from, so each fused candidate
    # looks at a handful of sets instead of all of them (MoE models leave thousands).
    by_shape: dict[tuple[tuple[int, ...], str], list[_Separate]] = {}
    for sep in sets:
        for shape in _fused_shapes([tuple(separate_side[k].shape) for k in sep.keys]):
            by_shape.setdefault((shape, sep.param), []).append(sep)
    candidates = []
    for key, info in fused_side.items():
        if len(info.shape) not in (1, 2):
            continue
        for sep in by_shape.get((tuple(info.shape), _param_kind(key)), []):
            if key in sep.keys:
                continue
            infos = [separate_side[k] for k in sep.keys]
            fit = _split_fit(key, info, infos, fused_types, separate_types, sep)
            if fit is None:
                continue
            spec, layout_settled = fit
            breakdown = _fused_breakdown(key, sep)
            score = (
                0.2 + 0.35 * breakdown["index"] + 0.3 * breakdown["name"] + 0.15 * breakdown["hint"]
            )
            interleave_risk = bool(_INTERLEAVED_HINT.search(key))
            breakdown["layout_settled"] = 1.0 if layout_settled else 0.0
            breakdown["order_settled"] = 1.0 if sep.names_settle_order else 0.0
            low = not layout_settled or not sep.names_settle_order or interleave_risk
            candidates.append((score, key, sep.keys, spec, breakdown, "low" if low else "high"))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    chosen = []
    taken_fused: set[str] = set()
    taken_parts: set[str] = set()
    for score, key, parts, spec, breakdown, conf in candidates:
        if key in taken_fused or taken_parts.intersection(parts):
            continue
        taken_fused.add(key)
        taken_parts.update(parts)
        chosen.append((key, parts, spec, round(score, 6), breakdown, conf))
    return chosen


def _fused_shapes(shapes: Sequence[tuple[int, ...]]) -> set[tuple[int, ...]]:
    """Shapes of separate tensors → every shape a fused tensor holding them could have."""
    if all(len(s) == 1 for s in shapes):
        return {(sum(s[0] for s in shapes),)}
    if not all(len(s) == 2 for s in shapes):
        return set()
    out: set[tuple[int, ...]] = set()
    if len({s[1] for s in shapes}) == 1:
        rows = (sum(s[0] for s in shapes), shapes[0][1])
        out |= {rows, rows[::-1]}
    if len({s[0] for s in shapes}) == 1:
        cols = (shapes[0][0], sum(s[1] for s in shapes))
        out |= {cols, cols[::-1]}
    return out


def _split_fit(
    key: str,
    info: TensorInfo,
    parts: Sequence[TensorInfo],
    fused_types: Mapping[str, str],
    separate_types: Mapping[str, str],
    sep: _Separate,
) -> tuple[TransformSpec, bool] | None:
    """Fused tensor + separate tensors → (fused → separate transform, layout settled?) or None."""
    shapes = [tuple(p.shape) for p in parts]
    if any(len(s) != len(info.shape) for s in shapes):
        return None
    if len(info.shape) == 1:
        sizes = [s[0] for s in shapes]
        if sum(sizes) != info.shape[0]:
            return None
        return TransformSpec("split", {"dim": 0, "sizes": sizes}), True
    # 2-D weights. The separate side's layout comes from its module type (Linear unless told).
    # q_proj.weight lives in module q_proj; q_proj_weight in the container itself.
    sep_layout_known = weight_layout(separate_types.get(_module_of(sep.keys[0])))
    sep_layout = sep_layout_known or "out_in"
    out_dim = 0 if sep_layout == "out_in" else 1
    in_dim = 1 - out_dim
    if len({s[in_dim] for s in shapes}) != 1:
        return None
    sizes = [s[out_dim] for s in shapes]
    fused_shape = [0, 0]
    fused_shape[out_dim], fused_shape[in_dim] = sum(sizes), shapes[0][in_dim]
    split = TransformSpec("split", {"dim": out_dim, "sizes": sizes})
    if tuple(info.shape) == tuple(fused_shape):
        spec = split
        fused_layout = sep_layout
    elif tuple(info.shape) == tuple(fused_shape[::-1]):
        spec = chain(TransformSpec("transpose", {"dim0": 0, "dim1": 1}), split)
        fused_layout = "in_out" if sep_layout == "out_in" else "out_in"
    else:
        return None
    fused_layout_known = weight_layout(fused_types.get(_module_of(key)))
    if fused_layout_known is not None and fused_layout_known != fused_layout:
        # The fused module's type contradicts the axis its shape is fused along.
        return None
    # The fused axis fixes the fused side's layout; only square chunks leave the separate
    # side's layout (transpose each chunk or not) open when its module type is unknown.
    square_chunks = all(s[0] == s[1] for s in shapes)
    return spec, bool(sep_layout_known) or not square_chunks


def _indices(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split(".") if _DIGITS.match(p))


def _words(path: str) -> str:
    return " ".join(p for p in re.split(r"[._]", path) if p and not p.isdigit())


def _fused_breakdown(key: str, sep: _Separate) -> dict[str, float]:
    """Fused key + separate set → per-signal scores: layer indices, name, fused-name hint."""
    fused_module = _module_of(key)
    idx_a, idx_b = _indices(fused_module), _indices(sep.container)
    index = 1.0 if idx_a == idx_b else 0.0
    # The fused module is usually a child of the container holding q/k/v (attn.c_attn ↔
    # attn.q_proj) or the container itself (in_proj_weight ↔ q_proj_weight).
    name = max(
        fuzz.token_set_ratio(_words(_module_of(fused_module)), _words(sep.container)),
        fuzz.token_set_ratio(_words(fused_module), _words(sep.container)),
    )
    hint = 1.0 if _FUSED_HINT.search(key.lower()) else 0.0
    return {"shape": 1.0, "index": index, "name": name / 100.0, "hint": hint}


# --- per-expert ↔ stacked ----------------------------------------------------------------


def _stacks(
    per_expert_side: Mapping[str, TensorInfo], stacked_side: Mapping[str, TensorInfo]
) -> list[tuple[str, tuple[str, ...], float, dict[str, float]]]:
    """Per-expert keys × stacked keys → best-first (stacked, expert keys in order) proposals."""
    groups: dict[str, dict[int, str]] = {}
    lifted_word: dict[str, str] = {}
    for key in per_expert_side:
        parts = key.split(".")
        for i, p in enumerate(parts):
            if _DIGITS.match(p):
                template = ".".join([*parts[:i], "{}", *parts[i + 1 :]])
                groups.setdefault(template, {})[int(p)] = key
                lifted_word[template] = parts[i - 1] if i else ""
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for key, info in stacked_side.items():
        by_shape.setdefault(tuple(info.shape), []).append(key)
    candidates = []
    for template, members in groups.items():
        n = len(members)
        if n < 2 or sorted(members) != list(range(n)):
            continue
        keys = tuple(members[i] for i in range(n))
        infos = [per_expert_side[k] for k in keys]
        if len({(tuple(i.shape), i.dtype) for i in infos}) != 1:
            continue
        want = (n, *infos[0].shape)
        for stacked in by_shape.get(want, []):
            if stacked_side[stacked].dtype != infos[0].dtype:
                continue
            rest = template.replace(".{}", "")
            index = 1.0 if _indices(rest) == _indices(stacked) else 0.0
            name = fuzz.token_set_ratio(_words(rest), _words(stacked)) / 100.0
            hint = 1.0 if "expert" in lifted_word[template].lower() else 0.0
            score = 0.2 + 0.35 * index + 0.3 * name + 0.15 * hint
            breakdown = {"shape": 1.0, "index": index, "name": name, "hint": hint}
            candidates.append((round(score, 6), stacked, keys, breakdown))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    chosen = []
    taken_stacked: set[str] = set()
    taken_keys: set[str] = set()
    for score, stacked, keys, breakdown in candidates:
        if stacked in taken_stacked or taken_keys.intersection(keys):
            continue
        taken_stacked.add(stacked)
        taken_keys.update(keys)
        chosen.append((stacked, keys, score, breakdown))
    return chosen
