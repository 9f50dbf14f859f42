"""Split and merge proposals: unmatched source and target keys → MultiPairs whose shapes add up.

Two families are recognised, in both directions:

* fused attention projections (``qkv``, ``in_proj_weight``, GPT-2's ``Conv1D`` ``c_attn``)
  ↔ separate ``q``/``k``/``v`` projections sharing a parent module: ``split`` one way,
  ``merge`` the other, with a ``transpose`` chained in when the fused side stores the
  weight as ``(in, out)`` (``Conv1D``) and the other side as ``(out, in)`` (``Linear``);
* fused gated-MLP projections (``gate_up_proj``) ↔ ``gate``/``up`` (Meta's ``w1``/``w3``)
  siblings, including 3-d stacked-expert parameters (``experts.w1`` (E, I, H) ×2 ↔
  ``experts.gate_up_proj`` (E, 2I, H)), split or merged along the one axis whose sizes add up;
* per-expert tensors ``experts.{i}.w`` × E ↔ one stacked ``(E, ...)`` tensor: ``stack`` /
  ``unstack``; when each slice concatenates several per-expert siblings
  (``experts.{i}.w1`` and ``w3`` → ``gate_up_proj[i]``): ``merge`` per expert (``group``)
  then ``stack``, and its inverse ``unstack`` then ``split`` each.

A proposal is made only when shapes add up exactly. Where shapes cannot settle the layout
(square chunks with an unknown module type, q/k/v order not given by names, head-interleaved
``query_key_value`` layouts), the pair is still proposed but marked ``confidence="low"`` so the
functional check or a person can confirm it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    # Gated MLPs: gate_up_proj = cat(gate, up). Meta's Llama/Mixtral call them w1 and w3 (w2 is
    # the down projection), T5 v1.1 wi_0 and wi_1; only a complete gate+up pair counts.
    "gate": ("gate", "gate_proj", "w1", "wi_0"),
    "up": ("up", "up_proj", "w3", "wi_1"),
}.items():
    for _n in _names:
        _ROLE_TOKENS[_n] = _role
_ROLE_ORDER = {"q": 0, "k": 1, "v": 2, "gate": 0, "up": 1}
# Roles a 3-d stacked-expert parameter can carry as its own name (``experts.w1``).
_PARAM_ROLES = frozenset({"gate", "up"})
_PARAM_ROLE = re.compile(r"(q|k|v)_proj_(weight|bias)")
_FUSED_HINT = re.compile(
    r"qkv|c_attn|in_proj|query_key_value|kv_proj|\bkv\b|wqkv|to_qkv|gate_up|w13|w12|wi\b"
)
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
    source_roles: Mapping[str, str] | None = None,
    target_roles: Mapping[str, str] | None = None,
) -> list[MultiPair]:
    """Unmatched source and target TensorInfos (+ module path → class name, + key → role)
    → split/merge pairs.

    A projection's part of a fused tensor (q, k, v; gate, up) is read from its name, else
    from its role (a naming convention's or a forward pass's: litgpt's ``fc_1``/``fc_2``
    are the gate and up projections).

    Projections whose names do not say q/k/v are ordered by execution order when
    ``*_order`` (module path → first-call rank, from a trace) covers them, else by the
    iteration order of ``source`` / ``target`` (taken as registration order); either way
    the proposal is low confidence. Each key appears in at most one proposal.
    """
    src_types, tgt_types = dict(source_types or {}), dict(target_types or {})
    src_order, tgt_order = dict(source_order or {}), dict(target_order or {})
    src_roles, tgt_roles = dict(source_roles or {}), dict(target_roles or {})
    used_src: set[str] = set()
    used_tgt: set[str] = set()
    out: list[MultiPair] = []

    def rest(keys: Mapping[str, TensorInfo], used: set[str]) -> dict[str, TensorInfo]:
        return {k: v for k, v in keys.items() if k not in used}

    # fused source → separate targets (split)
    found = _fused_to_separate(source, target, src_types, tgt_types, tgt_order, tgt_roles)
    for fused, parts, spec, score, breakdown, conf in _unused(found, used_src, used_tgt):
        out.append(MultiPair((fused,), parts, spec, score, breakdown, conf))

    # separate sources → fused target (merge): the same search from the other side, inverted
    found = _fused_to_separate(
        rest(target, used_tgt), rest(source, used_src), tgt_types, src_types, src_order, src_roles
    )
    for fused, parts, spec, score, breakdown, conf in _unused(found, used_tgt, used_src):
        out.append(MultiPair(parts, (fused,), invert(spec), score, breakdown, conf))

    # per-expert ↔ stacked
    found = _stacks(rest(source, used_src), rest(target, used_tgt))
    for stacked, parts, spec, score, breakdown, conf in _unused(found, used_tgt, used_src):
        out.append(MultiPair(parts, (stacked,), spec, score, breakdown, conf))
    found = _stacks(rest(target, used_tgt), rest(source, used_src))
    for stacked, parts, spec, score, breakdown, conf in _unused(found, used_src, used_tgt):
        if spec.name == "stack":
            spec = TransformSpec("unstack", {"dim": 0, "count": len(parts)})
        else:
            spec = invert(spec)
        out.append(MultiPair((stacked,), parts, spec, score, breakdown, conf))

    log.info("proposed %d split/merge pair(s)", len(out))
    return sorted(out, key=lambda m: (m.sources[0], m.targets[0]))


def _unused(
    found: Iterable[_Proposal], used_one: set[str], used_parts: set[str]
) -> Iterator[_Proposal]:
    """Proposals (one key ↔ its parts, best first) + the keys already used on the one key's
    side and on the parts' side → the proposals that reuse no key, each marking its keys used."""
    for proposal in found:
        one, parts = proposal[0], proposal[1]
        if one in used_one or used_parts.intersection(parts):
            continue
        used_one.add(one)
        used_parts.update(parts)
        yield proposal


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
        role = _ROLE_TOKENS.get(parts[-1].lower())
        if role in _PARAM_ROLES:
            # a parameter named for its role, e.g. stacked experts' ``experts.w1`` (E, I, H)
            return ".".join(parts[:-1]), role, "weight"
    return None


def _param_kind(key: str) -> str:
    """Tensor key → ``weight``, ``bias`` or its last segment (so weights pair with weights)."""
    last = key.rsplit(".", 1)[-1]
    for kind in ("weight", "bias"):
        if last.endswith(kind):
            return kind
    if last.endswith("_proj") or _ROLE_TOKENS.get(last.lower()) in _PARAM_ROLES:
        # stacked experts name the parameter itself: ``experts.gate_up_proj``, ``experts.w1``
        return "weight"
    return last


def _module_of(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else ""


_PART_OF_ROLE = {
    "attn.q": "q", "attn.k": "k", "attn.v": "v",
    "mlp.gate": "gate", "mlp.up": "up", "moe.gate": "gate", "moe.up": "up",
}  # fmt: skip
"""Role (:mod:`weightmapper.roles`) → the part of a fused tensor a projection of it is."""


def _separate_sets(
    side: Mapping[str, TensorInfo],
    order: Mapping[str, int],
    roles: Mapping[str, str] | None = None,
) -> list[_Separate]:
    """One side's keys (+ execution ranks, + key → role) → groups of separate projections
    (q/k/v, gate/up; 3 unnamed siblings)."""
    named: dict[tuple[str, str], dict[str, str]] = {}
    unnamed: dict[tuple[str, str], list[str]] = {}
    roles = roles or {}
    for key in side:
        r = _role_of(key)
        part = _PART_OF_ROLE.get(roles.get(key, ""))
        if r is None and part is not None and "." in _module_of(key):
            r = _module_of(_module_of(key)), part, key.rsplit(".", 1)[1]
        if r is not None:
            container, role, param = r
            named.setdefault((container, _param_kind(param)), {}).setdefault(role, key)
            continue
        module = _module_of(key)
        if module:
            unnamed.setdefault((_module_of(module), _param_kind(key)), []).append(key)
    sets: list[_Separate] = []
    for (container, param), roles in named.items():
        if len(roles) >= 2 and ("q" in roles or set(roles) in ({"k", "v"}, {"gate", "up"})):
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
    separate_roles: Mapping[str, str] | None = None,
) -> list[_Proposal]:
    """Fused candidates × separate sets → best-first, non-overlapping (fused → parts) proposals."""
    sets = _separate_sets(separate_side, separate_order, separate_roles)
    if not sets:
        return []
    # Index the sets by every fused shape they could come from, so each fused candidate
    # looks at a handful of sets instead of all of them (MoE models leave thousands), and
    # within a shape by layer indices: a deep stack of identical layers puts every layer's
    # set under one shape.
    by_shape: dict[tuple[tuple[int, ...], str], list[_Separate]] = {}
    by_index: dict[tuple[tuple[int, ...], str, tuple[str, ...]], list[_Separate]] = {}
    for sep in sets:
        idx = _indices(sep.container)
        for shape in _fused_shapes([tuple(separate_side[k].shape) for k in sep.keys]):
            by_shape.setdefault((shape, sep.param), []).append(sep)
            by_index.setdefault((shape, sep.param, idx), []).append(sep)
    fused = [
        (key, info, (tuple(info.shape), _param_kind(key)))
        for key, info in fused_side.items()
        if len(info.shape) in (1, 2, 3)
    ]
    # Greedy choice, best score first. A pair whose layer indices differ scores at most
    # _CROSS_INDEX_MAX, so every same-index pair scoring above it is chosen before any of
    # those are even looked at: choose those first, then score all pairs among what is left.
    chosen: list[_Proposal] = []
    taken_fused: set[str] = set()
    taken_parts: set[str] = set()
    first = []
    for key, info, bucket in fused:
        for sep in by_index.get((*bucket, _indices(_module_of(key))), []):
            cand = _fused_candidate(key, info, sep, separate_side, fused_types, separate_types)
            if cand is not None and cand[0] > _CROSS_INDEX_MAX:
                first.append(cand)
    _choose(first, chosen, taken_fused, taken_parts)
    rest = []
    for key, info, bucket in fused:
        if key in taken_fused:
            continue
        for sep in by_shape.get(bucket, []):
            if taken_parts.intersection(sep.keys):
                continue
            cand = _fused_candidate(key, info, sep, separate_side, fused_types, separate_types)
            if cand is not None:
                rest.append(cand)
    _choose(rest, chosen, taken_fused, taken_parts)
    return chosen


_Proposal = tuple[str, tuple[str, ...], TransformSpec, float, dict[str, float], str]
_Candidate = tuple[float, str, tuple[str, ...], TransformSpec, dict[str, float], str]
# The best score of a fused/separate pair whose layer indices differ (index signal 0, name
# and hint signals 1); the weights are those of _fused_candidate.
_CROSS_INDEX_MAX = 0.2 + 0.35 * 0.0 + 0.3 * 1.0 + 0.15 * 1.0


def _fused_candidate(
    key: str,
    info: TensorInfo,
    sep: _Separate,
    separate_side: Mapping[str, TensorInfo],
    fused_types: Mapping[str, str],
    separate_types: Mapping[str, str],
) -> _Candidate | None:
    """Fused key + one separate set → (score, key, parts, spec, breakdown, confidence) or None."""
    if key in sep.keys:
        return None
    infos = [separate_side[k] for k in sep.keys]
    fit = _split_fit(key, info, infos, fused_types, separate_types, sep)
    if fit is None:
        return None
    spec, layout_settled = fit
    breakdown = _fused_breakdown(key, sep)
    score = 0.2 + 0.35 * breakdown["index"] + 0.3 * breakdown["name"] + 0.15 * breakdown["hint"]
    interleave_risk = bool(_INTERLEAVED_HINT.search(key))
    breakdown["layout_settled"] = 1.0 if layout_settled else 0.0
    breakdown["order_settled"] = 1.0 if sep.names_settle_order else 0.0
    low = not layout_settled or not sep.names_settle_order or interleave_risk
    return score, key, sep.keys, spec, breakdown, "low" if low else "high"


def _choose(
    candidates: list[_Candidate],
    chosen: list[_Proposal],
    taken_fused: set[str],
    taken_parts: set[str],
) -> None:
    """Candidates → appended to ``chosen`` best-first, skipping any key already taken."""
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    for score, key, parts, spec, breakdown, conf in candidates:
        if key in taken_fused or taken_parts.intersection(parts):
            continue
        taken_fused.add(key)
        taken_parts.update(parts)
        chosen.append((key, parts, spec, round(score, 6), breakdown, conf))


def _fused_shapes(shapes: Sequence[tuple[int, ...]]) -> set[tuple[int, ...]]:
    """Shapes of separate tensors → every shape a fused tensor holding them could have."""
    if all(len(s) == 1 for s in shapes):
        return {(sum(s[0] for s in shapes),)}
    if len({len(s) for s in shapes}) == 1 and len(shapes[0]) >= 3:
        return {shape for shape, _ in _concat_fits(shapes)}
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


def _concat_fits(shapes: Sequence[tuple[int, ...]]) -> list[tuple[tuple[int, ...], int]]:
    """Equal-rank shapes → every (concatenated shape, dim) where all other dims agree."""
    out = []
    for d in range(len(shapes[0])):
        rest = {s[:d] + s[d + 1 :] for s in shapes}
        if len(rest) == 1:
            fused = list(shapes[0])
            fused[d] = sum(s[d] for s in shapes)
            out.append((tuple(fused), d))
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
    if len(info.shape) >= 3:
        # Stacked (E, ...) tensors: no transpose; the one dim the parts differ in (or whose
        # sum gives the fused size) is the fused axis, and it must be the only one that fits.
        dims = [d for shape, d in _concat_fits(shapes) if shape == tuple(info.shape)]
        if not dims:
            return None
        d = dims[0]
        spec = TransformSpec("split", {"dim": d, "sizes": [s[d] for s in shapes]})
        return spec, len(dims) == 1
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


_StackCandidate = tuple[str, tuple[str, ...], TransformSpec, float, dict[str, float], str]


def _stacks(
    per_expert_side: Mapping[str, TensorInfo], stacked_side: Mapping[str, TensorInfo]
) -> list[_StackCandidate]:
    """Per-expert keys × stacked keys → best-first (stacked, expert keys in order, spec) proposals.

    Besides one per-expert tensor per slice (``stack``), a slice may concatenate several
    per-expert siblings (``experts.{e}.w1`` and ``w3`` → ``gate_up_proj[e]``): ``merge`` each
    expert's group, then ``stack``.
    """
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
    complete: dict[str, tuple[str, ...]] = {}
    for template, members in groups.items():
        n = len(members)
        if n < 2 or sorted(members) != list(range(n)):
            continue
        keys = tuple(members[i] for i in range(n))
        infos = [per_expert_side[k] for k in keys]
        if len({(tuple(i.shape), i.dtype) for i in infos}) != 1:
            continue
        complete[template] = keys
    candidates: list[_StackCandidate] = []
    for template, keys in complete.items():
        shape = tuple(per_expert_side[keys[0]].shape)
        spec = TransformSpec("stack", {"dim": 0})
        candidates += _stack_candidates(
            per_expert_side, stacked_side, by_shape, [template], [keys], (shape,), spec, "high"
        )
    for templates, confidence in _sibling_templates(complete):
        members = [complete[t] for t in templates]
        shapes = tuple(tuple(per_expert_side[m[0]].shape) for m in members)
        if len({per_expert_side[m[0]].dtype for m in members}) != 1:
            continue
        fits = [(fused, d) for fused, d in _concat_fits(shapes) if len(fused) == len(shapes[0])]
        for fused, d in fits:
            merge = TransformSpec(
                "merge", {"dim": d, "sizes": [s[d] for s in shapes], "group": len(templates)}
            )
            spec = chain(merge, TransformSpec("stack", {"dim": 0}))
            conf = confidence if len(fits) == 1 else "low"
            candidates += _stack_candidates(
                per_expert_side, stacked_side, by_shape, templates, members, (fused,), spec, conf
            )
    candidates.sort(key=lambda c: (-c[3], c[0], c[1]))
    return list(_unused(candidates, set(), set()))


def _sibling_templates(complete: Mapping[str, tuple[str, ...]]) -> list[tuple[list[str], str]]:
    """Complete per-expert templates → groups of siblings one stacked slice could concatenate.

    Siblings share everything up to the expert index and the parameter kind (``experts.{}.w1
    .weight`` and ``experts.{}.w3.weight``). A gate+up pair named as such is ordered by its
    roles (high confidence); otherwise only a lone pair of siblings is tried, in name order,
    at low confidence.
    """
    buckets: dict[tuple[str, int, str], list[str]] = {}
    for template, keys in complete.items():
        head, _, tail = template.partition("{}")
        buckets.setdefault((head, len(keys), _param_kind(tail)), []).append(template)
    out: list[tuple[list[str], str]] = []
    for (head, _, _), templates in buckets.items():
        if len(templates) < 2:
            continue
        roles: dict[str, str] = {}
        for t in templates:
            first = t[len(head) + 2 :].lstrip(".").split(".")[0]
            role = _ROLE_TOKENS.get(first.lower())
            if role in _PARAM_ROLES:
                roles.setdefault(role, t)
        if set(roles) == _PARAM_ROLES:
            out.append(([roles["gate"], roles["up"]], "high"))
        elif len(templates) == 2:
            out.append((sorted(templates), "low"))
    return out


def _stack_candidates(
    per_expert_side: Mapping[str, TensorInfo],
    stacked_side: Mapping[str, TensorInfo],
    by_shape: Mapping[tuple[int, ...], list[str]],
    templates: Sequence[str],
    members: Sequence[tuple[str, ...]],
    slice_shape: tuple[tuple[int, ...], ...],
    spec: TransformSpec,
    confidence: str,
) -> list[_StackCandidate]:
    """Sibling templates (+ their expert keys) → candidates for each stacked tensor that fits."""
    n = len(members[0])
    # expert-major order: e0's tensors, then e1's, ... as ``merge(group=k)`` then ``stack`` read
    keys = tuple(m[e] for e in range(n) for m in members)
    dtype = per_expert_side[keys[0]].dtype
    rest = templates[0].replace(".{}", "")
    head = templates[0].partition("{}")[0].rstrip(".")
    lifted = head.rsplit(".", 1)[-1]
    out: list[_StackCandidate] = []
    for stacked in by_shape.get((n, *slice_shape[0]), []):
        if stacked_side[stacked].dtype != dtype:
            continue
        index = 1.0 if _indices(rest) == _indices(stacked) else 0.0
        name = max(fuzz.token_set_ratio(_words(t.replace(".{}", "")), _words(stacked))
                   for t in templates) / 100.0  # fmt: skip
        hint = 1.0 if "expert" in lifted.lower() else 0.0
        score = 0.2 + 0.35 * index + 0.3 * name + 0.15 * hint
        breakdown = {"shape": 1.0, "index": index, "name": name, "hint": hint}
        out.append((stacked, keys, spec, round(score, 6), breakdown, confidence))
    return out
