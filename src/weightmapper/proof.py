"""Proof by search: source module + target module + mapping + input → proven mapping or diagnosis.

The mapped weights are loaded into the target and both networks run on the same input with
a hook on every module. Where the outputs differ, the first target module whose output
differs while its input matched is where a wrong layout bites; the alternatives for the
pairs feeding it are tried one by one (square transposes, same-shape sibling swaps, RoPE row
orders, fused q/k/v rows per head or per key/value group, split orders, norm offsets), and
the first one that makes that module equal without breaking an earlier one is kept. The
search then moves on to the next difference, until the outputs are equal, no alternative
helps (the diagnosis names the module, its pairs and what was tried), or the budget of
forward passes is spent. Every alternative is a mapping edit, so the proven mapping is
still pure data.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from weightmapper.calls import ModelCall, as_call, main_tensor
from weightmapper.engine.names import local_tokens
from weightmapper.errors import ForwardError
from weightmapper.result import (
    MappingResult,
    MappingStatus,
    MatchedPair,
    MultiPair,
    diff_text,
    shapes_text,
)
from weightmapper.settings import PROOF_BUDGET
from weightmapper.transforms import TransformSpec, chain
from weightmapper.verify import (
    FunctionalCheck,
    _compare,
    _flip,
    _load_converted,
    _module_pairs,
    _same,
    _untied_missing,
    not_finite_text,
)

log = logging.getLogger(__name__)

DEFAULT_BUDGET = PROOF_BUDGET
"""Target forward passes a search may spend (the source runs once)."""

# Transforms that reorder output rows: the module they land in computes the same function
# in another layout, so its own output is not comparable, only what consumes it.
_LAYOUT_TRANSFORMS = frozenset({"rope_permute", "interleave_heads", "interleave_kv_groups"})
_HEAD_ATTRS = (
    "num_heads",
    "n_heads",
    "n_head",
    "num_attention_heads",
    "nhead",
    "heads",
    "num_key_value_heads",
    "n_kv_heads",
    "num_kv_heads",
    "n_kv_head",
    "num_query_groups",
)
_HEAD_DIM_ATTRS = ("head_dim", "head_size", "attention_head_size", "d_head")
_LAYER_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)")


@dataclass(frozen=True)
class Proof:
    """Outcome of a search: the state reached, the mapping it holds and how it got there."""

    state: str
    """``proven_equal``, ``differs``, or ``loads_not_proven`` when the source's output is not
    finite (then equal outputs would prove nothing, and nothing is searched)."""
    mapping: MappingResult
    """The mapping with every kept alternative applied (and its status set)."""
    check: FunctionalCheck
    """The last comparison of outputs (max abs / rel difference, first diverging module)."""
    source_input: str
    """The source's input, described (shapes and dtypes)."""
    target_input: str
    """The target's input, described."""
    fixes: tuple[str, ...] = ()
    """Alternatives kept, each as ``module: what changed``."""
    alternatives_tried: int = 0
    """Alternatives tried in all (each one forward pass of the target)."""
    forward_passes: int = 0
    """Target forward passes spent, the baseline included."""
    budget: int = DEFAULT_BUDGET
    module: str | None = None
    """When the outputs differ: the target module where they first differ."""
    source_module: str | None = None
    """Its source counterpart."""
    pairs_at: tuple[str, ...] = ()
    """The pairs feeding ``module`` (``source → target``)."""
    tried_at: tuple[str, ...] = ()
    """The alternatives tried at ``module``."""
    budget_spent: bool = False
    """True when the search stopped because the budget ran out."""
    unmapped: tuple[str, ...] = ()
    """Target keys of ``module`` the mapping does not produce (they keep initial values)."""
    output_shapes: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    """When the outputs differ in shape: (target's, source's)."""
    computes_source: str | None = None
    """When the two networks compute different functions: the source module whose output
    the target's whole output equals (the target stops there, the source goes on)."""

    @property
    def equal(self) -> bool:
        """True when the outputs were proven equal."""
        return self.state == "proven_equal"

    @property
    def status(self) -> MappingStatus:
        """Proof → the mapping's status (``proven equal`` or ``differs at …``)."""
        return self.mapping.status or _status(self)

    def summary(self, max_items: int = 8) -> str:
        """Proof → a few human lines: the status, the numbers, the fixes or the diagnosis."""
        c = self.check
        lines = [
            self.status.label(),
            f"{diff_text(c.to_dict())} (atol {c.atol:g}, rtol {c.rtol:g}); input: source "
            f"{self.source_input}"
            + ("" if self.target_input == self.source_input else f"; target {self.target_input}"),
            f"alternatives tried: {self.alternatives_tried}, forward passes: "
            f"{self.forward_passes} of {self.budget}",
        ]
        lines += [f"fixed: {f}" for f in self.fixes[:max_items]]
        if len(self.fixes) > max_items:
            lines.append(f"… and {len(self.fixes) - max_items} more fixes")
        if not self.equal:
            if self.computes_source is not None or self.output_shapes is not None:
                lines.append(self.status.detail)
            if self.budget_spent:
                lines.append("stopped: the budget of forward passes is spent (raise --budget)")
            if self.unmapped:
                lines.append(f"not mapped, left at initial values: {', '.join(self.unmapped[:6])}")
            if self.pairs_at:
                lines.append(f"pairs feeding {self.module}: " + "; ".join(self.pairs_at[:6]))
            if self.tried_at:
                lines.append(
                    f"tried there ({len(self.tried_at)}): " + "; ".join(self.tried_at[:max_items])
                )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Proof → JSON-ready dict (the ``proof`` section of a report)."""
        return {
            "state": self.state,
            "status": self.status.to_dict(),
            "check": self.check.to_dict(),
            "source_input": self.source_input,
            "target_input": self.target_input,
            "fixes": list(self.fixes),
            "alternatives_tried": self.alternatives_tried,
            "forward_passes": self.forward_passes,
            "budget": self.budget,
            "budget_spent": self.budget_spent,
            "module": self.module,
            "source_module": self.source_module,
            "pairs_at": list(self.pairs_at),
            "tried_at": list(self.tried_at),
            "unmapped": list(self.unmapped),
            "output_shapes": None if self.output_shapes is None else list(self.output_shapes),
            "computes_source": self.computes_source,
        }


def prove(
    source_module: nn.Module,
    target_module: nn.Module,
    mapping: MappingResult | Mapping[str, str],
    inputs: Any,
    *,
    target_inputs: Any = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    budget: int = DEFAULT_BUDGET,
) -> Proof:
    """Both modules + mapping + input (+ the target's own input) → Proof, search included.

    ``inputs`` is a tensor, a tuple of positional arguments, a dict of keyword arguments or
    a :class:`~weightmapper.calls.ModelCall`; ``target_inputs`` (same forms) calls the target
    differently when its signature differs. Neither module is modified. ``budget`` bounds
    the target forward passes. The returned mapping carries its status.
    """
    result = mapping if isinstance(mapping, MappingResult) else MappingResult.from_simple(mapping)
    src_call = as_call(inputs)
    tgt_call = as_call(target_inputs) if target_inputs is not None else src_call
    bench = _Bench(source_module, target_module, src_call, tgt_call, atol, rtol)
    state = _State.of(result)
    obs = bench.observe(state.mapping(result))
    forwards, tried = 1, 0
    fixes: list[str] = []
    learned: set[str] = set()
    tried_at: list[str] = []
    hints = _Hints.of(source_module, target_module)
    spent = False
    while not obs.equal and obs.first_t is not None and bench.not_finite is None:
        where = obs.first_t
        hole = _unmapped_before(bench, obs.unmapped, where)
        if hole is not None:
            # Tensors left at initial values run first: the only alternatives are source
            # tensors nothing uses yet, paired or split into them.
            alternatives = _fills(state, hole, obs.unmapped, bench)
            accept = _filled(bench, hole, obs)
            where = hole
        elif where == "" and obs.shapes_differ:
            break  # nothing inside differs, and no layout of the weights changes an output shape
        else:
            alternatives = _alternatives(state, where, bench, hints)
            accept = _fixed(bench, where)
        alternatives.sort(key=lambda a: 0 if _template(a.label) in learned else 1)
        tried_at = []
        kept = None
        for alt in alternatives:
            if forwards >= budget:
                spent = True
                break
            try:
                trial = alt.apply(state)
                t_obs = bench.observe(trial.mapping(result))
            except Exception as e:
                log.debug("alternative %s does not apply: %s", alt.label, e)
                continue
            forwards += 1
            tried += 1
            tried_at.append(alt.label)
            if accept(t_obs):
                kept = (alt, trial, t_obs)
                break
        if kept is None:
            break
        alt, state, obs = kept
        learned.add(_template(alt.label))
        fixes.append(f"{where}: {alt.label}")
        log.info("proof: %s fixed by %s", where, alt.label)
    final = state.mapping(result)
    check = obs.check(atol, rtol)
    module = None if obs.equal else obs.first_t
    source_at = None if obs.equal else obs.first_s
    hole = None if obs.equal else _unmapped_before(bench, obs.unmapped, module)
    computes = None
    if hole is not None:
        # A module whose tensors the mapping leaves at their initial values is the cause
        # no layout can fix; it may have no counterpart to compare, so name it directly.
        module, source_at = hole, None
    elif not obs.equal and (obs.shapes_differ or module == ""):
        # Nothing inside differs: the target may compute only part of what the source does
        # (an encoder kept from an encoder-decoder), which no mapping can change.
        computes = bench.source_computing(obs.output)
        if computes is not None:
            module, source_at = "", computes
    pairs_at = () if module is None else tuple(_pairs_feeding(state, module))
    proof = Proof(
        state="loads_not_proven"
        if bench.not_finite is not None
        else "proven_equal"
        if obs.equal
        else "differs",
        mapping=final,
        check=check,
        source_input=src_call.describe(),
        target_input=tgt_call.describe(),
        fixes=tuple(fixes),
        alternatives_tried=tried,
        forward_passes=forwards,
        budget=budget,
        module=module,
        source_module=source_at,
        unmapped=tuple(k for k in obs.unmapped if _inside(hole, k)) if hole is not None else (),
        pairs_at=pairs_at if computes is None else (),
        tried_at=tuple(tried_at) if not obs.equal else (),
        budget_spent=spent and not obs.equal,
        output_shapes=(tuple(obs.output.shape), tuple(bench.reference.shape))
        if obs.output is not None and obs.shapes_differ
        else None,
        computes_source=computes,
    )
    status = _status(proof)
    final.status = status
    final.metadata["functional_check"] = check.to_dict()
    return proof


def _fixed(bench: _Bench, where: str) -> Callable[[_Observation], bool]:
    """Module where outputs first differ → the test a trial passes to be kept there.

    Kept when the outputs are equal, or when the module itself now matches and the first
    difference moved later (a module whose own layout changed is not comparable any more, so
    it cannot count as fixed).
    """

    def ok(t: _Observation) -> bool:
        return t.equal or (
            t.same.get(where, False)
            and t.first_t is not None
            and bench.rank(t.first_t) > bench.rank(where)
        )

    return ok


def _filled(bench: _Bench, hole: str, before: _Observation) -> Callable[[_Observation], bool]:
    """Module left unmapped + the observation before → the test a fill passes to be kept: its
    keys are produced now, it matches its new counterpart when one compares it, and the
    first module that differs (whatever its input) runs later than before."""
    keys = {k for k in before.unmapped if _inside(hole, k)}
    frontier = _frontier(bench, before)
    # A wrong fill whose own output cannot be compared (another shape) must still not keep
    # the first difference where it was.

    def ok(t: _Observation) -> bool:
        if keys & set(t.unmapped):
            return False
        if hole in t.same:  # compared with its new counterpart: that decides
            return t.same[hole]
        return t.equal or _frontier(bench, t) > frontier

    return ok


def _frontier(bench: _Bench, obs: _Observation) -> float:
    """Observation → the rank of the first compared module whose output differs (inf: none)."""
    return min((bench.rank(t) for t, same in obs.same.items() if not same), default=math.inf)


def _unmapped_before(bench: _Bench, unmapped: list[str], where: str | None) -> str | None:
    """Bench + unmapped target keys + where outputs first differ → the earliest target module,
    running no later, whose tensors the mapping does not produce (None when there is none)."""
    limit = bench.rank(where) if where else -1
    ranked = []
    for key in unmapped:
        module = key.rpartition(".")[0]
        rank = bench.rank(module)
        if rank >= 0 and (where == "" or limit < 0 or rank <= limit):
            ranked.append((rank, module))
    return min(ranked)[1] if ranked else None


def _status(proof: Proof) -> MappingStatus:
    c = proof.check
    if c.not_finite is not None:
        return MappingStatus("loads_not_proven", f"outputs compared, but {c.not_finite}")
    if proof.equal:
        return MappingStatus(
            "proven_equal",
            f"{diff_text(c.to_dict())} on input {proof.source_input}"
            + (f" after {len(proof.fixes)} fix(es)" if proof.fixes else ""),
        )
    if proof.module is None:
        return MappingStatus(
            "differs",
            f"outputs differ ({diff_text(c.to_dict())}); no single module found where they "
            "start to differ",
        )
    if proof.unmapped:
        return MappingStatus(
            "differs",
            f"{proof.module} is not mapped: {len(proof.unmapped)} target tensor(s) keep their "
            f"initial values, e.g. {', '.join(proof.unmapped[:3])}; no unused source tensor "
            "fills them"
            + (
                f"; the outputs differ in shape too ({shapes_text(proof.output_shapes)}): the "
                "target computes something the source does not"
                if proof.output_shapes is not None
                else ""
            ),
            module=proof.module,
        )
    if proof.computes_source is not None:
        shapes = ""
        if proof.output_shapes is not None:
            shapes = f" (output {proof.output_shapes[0]}, the source's {proof.output_shapes[1]})"
        return MappingStatus(
            "differs",
            "the networks compute different functions: the target's output equals the output "
            f"of the source's {proof.computes_source}, and the source goes on after it{shapes}; "
            "no mapping changes that",
            module=proof.module,
        )
    if proof.output_shapes is not None:
        return MappingStatus(
            "differs",
            f"the outputs differ in shape ({shapes_text(proof.output_shapes)}); the networks "
            "compute different functions",
            module=proof.module,
        )
    tried = f"{len(proof.tried_at)} alternative(s) tried there"
    if proof.budget_spent:
        tried += "; budget spent"
    return MappingStatus(
        "differs",
        f"first differs at {proof.module} (source: {proof.source_module}); {tried}",
        module=proof.module,
    )


# --- running both networks -------------------------------------------------------------------


@dataclass
class _Observation:
    """One run of the target against the recorded source: where (if anywhere) they differ."""

    equal: bool
    max_abs: float
    max_rel: float
    first_t: str | None
    first_s: str | None
    compared: int
    notes: list[str]
    same: dict[str, bool] = field(default_factory=dict)
    """Target module path → its output equals its source counterpart's (compared ones only)."""
    unmapped: list[str] = field(default_factory=list)
    """Target keys this mapping does not produce (they hold the target's initial values)."""
    output: torch.Tensor | None = None
    """The target's output compared with the source's."""
    shapes_differ: bool = False
    """The two outputs differ in shape: no layout of the weights changes that."""
    reference_shape: tuple[int, ...] = ()
    """The source output's shape."""
    not_finite: str | None = None
    """Said when the source's output holds NaN or inf (then the outputs are never equal)."""

    def check(self, atol: float, rtol: float) -> FunctionalCheck:
        first = f"{self.first_t} (source: {self.first_s})" if self.first_t else None
        return FunctionalCheck(
            max_abs_diff=self.max_abs,
            max_rel_diff=self.max_rel,
            equal=self.equal,
            first_diverging=None if self.equal else first,
            compared_modules=self.compared,
            first_diverging_target=None if self.equal else self.first_t,
            first_diverging_source=None if self.equal else self.first_s,
            atol=atol,
            rtol=rtol,
            notes=tuple(self.notes),
            output_shapes=(tuple(self.output.shape), self.reference_shape)
            if self.shapes_differ and self.output is not None
            else None,
            not_finite=self.not_finite,
        )


class _Bench:
    """Both networks hooked on every module; the source runs once, the target per trial."""

    def __init__(
        self,
        source: nn.Module,
        target: nn.Module,
        src_call: ModelCall,
        tgt_call: ModelCall,
        atol: float,
        rtol: float,
    ) -> None:
        self.source = copy.deepcopy(source).eval()
        self.target = copy.deepcopy(target).eval()
        self.tgt_call = tgt_call
        self.atol, self.rtol = atol, rtol
        self.source_state = self.source.state_dict()
        self.target_shapes = {k: tuple(v.shape) for k, v in self.target.state_dict().items()}
        self.target_types = {n: type(m).__name__ for n, m in self.target.named_modules()}
        self.src_rec, _ = _record(self.source, lambda m: src_call.run(m, "source"))
        raw = self.src_rec[""][2]
        self.reference = src_call.select(raw)
        if self.reference is None:
            raise _no_tensor("source", raw)
        self.not_finite = not_finite_text(self.reference)
        """Said when the source's output holds NaN or inf: no trial can prove anything."""
        self._order: dict[str, int] = {}
        # Keys a mapping does not produce get these back before every trial: a rejected
        # alternative that filled one must not leave its values behind for the next.
        self.initial = {k: v.detach().clone() for k, v in self.target.state_dict().items()}

    def shapes(self, p: MatchedPair) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Pair → (source shape, target shape), read from the networks (mappings may omit them)."""
        src = self.source_state.get(p.source)
        return (
            tuple(src.shape) if src is not None else p.source_shape,
            self.target_shapes.get(p.target, p.target_shape),
        )

    def rank(self, path: str) -> int:
        """Target module path → the rank at which its forward finished (-1 if it never ran)."""
        return self._order.get(path, -1)

    def observe(self, mapping: MappingResult) -> _Observation:
        """Mapping → loaded into the target, run, compared module by module with the source."""
        converted = mapping.convert(self.source_state)
        missing = _untied_missing(self.target, converted)
        notes = _load_converted(self.target, converted)
        self.target.load_state_dict({k: self.initial[k] for k in missing}, strict=False)
        # integer buffers (num_batches_tracked) do not change what the network computes
        unmapped = [k for k in missing if self.initial[k].is_floating_point()]
        tgt_rec, order = _record(self.target, lambda m: self.tgt_call.run(m, "target"))
        if not self._order:
            self._order = {p: i for i, p in enumerate(order)}
        got = self.tgt_call.select(tgt_rec[""][2])
        if got is None:
            raise _no_tensor("target", tgt_rec[""][2])
        max_abs, max_rel, equal = _compare(got, self.reference, self.atol, self.rtol)
        # Kept as the check's output_shapes, which every summary of the check says.
        shapes_differ = tuple(got.shape) != tuple(self.reference.shape)
        pairs = _comparable_pairs(mapping, self.source, self.target)
        first_t, first_s, compared, same_at = _first_difference(
            self.src_rec, tgt_rec, order, pairs, equal, self.atol, self.rtol
        )
        if self.not_finite is not None:
            # NaN "equals" NaN whatever the weights: nothing is proven and nothing located.
            equal, first_t, first_s = False, None, None
        return _Observation(
            equal,
            max_abs,
            max_rel,
            first_t,
            first_s,
            compared,
            notes,
            same_at,
            unmapped,
            got.detach().clone(),
            shapes_differ,
            tuple(self.reference.shape),
            self.not_finite,
        )

    def source_computing(self, output: torch.Tensor | None) -> str | None:
        """Target output → the outermost source module (not the whole network) whose output
        equals it, or None: where the target stops while the source goes on."""
        if output is None:
            return None
        found = [
            path
            for path, (_, out, _) in self.src_rec.items()
            if path and _same(output, out, self.atol, self.rtol)
        ]
        return min(found, key=lambda p: (p.count("."), p)) if found else None


def _first_difference(
    src_rec: Mapping[str, tuple[Any, Any, Any]],
    tgt_rec: Mapping[str, tuple[Any, Any, Any]],
    order: list[str],
    pairs: list[tuple[str, str]],
    equal: bool,
    atol: float,
    rtol: float,
) -> tuple[str | None, str | None, int, dict[str, bool]]:
    """Recordings of both runs + module pairs → first differing target module (input matched),
    its source module, how many pairs were compared, and which target modules matched."""
    t_to_s = {t: s for s, t in pairs}
    first_t = first_s = None
    fallback: tuple[str, str] | None = None
    compared = 0
    same_at: dict[str, bool] = {}
    for t_path in order:
        s_path = t_to_s.get(t_path)
        if s_path is None or s_path not in src_rec:
            continue
        s_in, s_out, _ = src_rec[s_path]
        t_in, t_out, _ = tgt_rec[t_path]
        same = _same(t_out, s_out, atol, rtol)
        if same is None:
            continue
        compared += 1
        same_at[t_path] = same
        if same or equal or first_t is not None:
            continue
        if fallback is None:
            fallback = (t_path, s_path)
        if _same(t_in, s_in, atol, rtol) is not False:
            first_t, first_s = t_path, s_path
    if first_t is None and fallback is not None and not equal:
        first_t, first_s = fallback
    if first_t is None and not equal:
        first_t, first_s = "", ""  # the whole network: nothing smaller could be located
    return first_t, first_s, compared, same_at


def compare_loaded(
    source_module: nn.Module,
    target_module: nn.Module,
    inputs: Any,
    *,
    target_inputs: Any = None,
    mapping: MappingResult | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> FunctionalCheck:
    """Two modules already holding their weights + input → FunctionalCheck, no search.

    For a converted checkpoint already loaded into the target. Modules are paired through
    ``mapping`` when given, else by equal paths; the first differing one is named.
    """
    src_call = as_call(inputs)
    tgt_call = as_call(target_inputs) if target_inputs is not None else src_call
    source, target = copy.deepcopy(source_module).eval(), copy.deepcopy(target_module).eval()
    src_rec, _ = _record(source, lambda m: src_call.run(m, "source"))
    tgt_rec, order = _record(target, lambda m: tgt_call.run(m, "target"))
    ref, got = src_call.select(src_rec[""][2]), tgt_call.select(tgt_rec[""][2])
    if ref is None:
        raise _no_tensor("source", src_rec[""][2])
    if got is None:
        raise _no_tensor("target", tgt_rec[""][2])
    max_abs, max_rel, equal = _compare(got, ref, atol, rtol)
    if mapping is not None:
        pairs = _comparable_pairs(mapping, source, target)
    else:
        names = {n for n, _ in source.named_modules()}
        pairs = [(n, n) for n, _ in target.named_modules() if n in names]
    first_t, first_s, compared, _ = _first_difference(
        src_rec, tgt_rec, order, pairs, equal, atol, rtol
    )
    obs = _Observation(equal, max_abs, max_rel, first_t, first_s, compared, [])
    return obs.check(atol, rtol)


def _record(
    model: nn.Module, run: Callable[[nn.Module], Any]
) -> tuple[dict[str, tuple[Any, Any, Any]], list[str]]:
    """Module + how to run it → path → (first input, output tensor, raw output), finish order."""
    record: dict[str, tuple[Any, Any, Any]] = {}
    order: list[str] = []
    handles = []
    for path, mod in model.named_modules():

        def hook(
            _m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any, path: str = path
        ) -> None:
            if path in record:
                return  # a shared module is compared on its first call
            first_in = main_tensor(args) if args else main_tensor(kwargs)
            out_t = main_tensor(out)
            record[path] = (
                None if first_in is None else first_in.detach().clone(),
                None if out_t is None else out_t.detach().clone(),
                out if path == "" else None,
            )
            order.append(path)

        handles.append(mod.register_forward_hook(hook, with_kwargs=True))
    try:
        raw = run(model)
    finally:
        for h in handles:
            h.remove()
    if "" not in record:
        record[""] = (None, main_tensor(raw), raw)
    else:
        record[""] = (record[""][0], record[""][1], raw)
    return record, order


def _no_tensor(side: str, raw: Any) -> ForwardError:
    return ForwardError(
        f"the {side} network returned {type(raw).__name__} with no tensor to compare; return a "
        "tensor, tuple, dict or ModelOutput, or choose the output with ModelCall(output=...)",
        side=side,
    )


def _comparable_pairs(
    mapping: MappingResult, source: nn.Module, target: nn.Module
) -> list[tuple[str, str]]:
    """Mapping → corresponding module pairs, minus modules whose rows are laid out otherwise."""
    relaid = {p.target.rsplit(".", 1)[0] for p in mapping.pairs if _has_layout(p.transform)} | {
        t.rsplit(".", 1)[0] for m in mapping.multi if _has_layout(m.transform) for t in m.targets
    }
    pairs = [(s, t) for s, t in _module_pairs(mapping, source, target) if t not in relaid]
    return [*pairs, ("", "")]  # the whole networks correspond too


def _has_layout(spec: TransformSpec) -> bool:
    if spec.name in _LAYOUT_TRANSFORMS:
        return True
    if spec.name == "chain":
        return any(_has_layout(TransformSpec.from_dict(s)) for s in spec.params.get("steps", []))
    return False


# --- the mapping as an editable state --------------------------------------------------------


@dataclass(frozen=True)
class _State:
    """The pairs and split/merge pairs of a mapping, edited by alternatives."""

    pairs: dict[str, MatchedPair]
    multi: tuple[MultiPair, ...]

    @classmethod
    def of(cls, result: MappingResult) -> _State:
        return cls({p.source: p for p in result.pairs}, tuple(result.multi))

    def mapping(self, base: MappingResult) -> MappingResult:
        used_s = self.used_sources()
        used_t = {p.target for p in self.pairs.values()} | {
            k for m in self.multi for k in m.targets
        }
        # a fill pairs keys the first pass left unmatched: they are not unmatched any more
        return MappingResult(
            list(self.pairs.values()),
            [u for u in base.unmatched_source if u.name not in used_s],
            [u for u in base.unmatched_target if u.name not in used_t],
            list(self.multi),
            source_count=base.source_count,
            target_count=base.target_count,
            settings=base.settings,
            source_name=base.source_name,
            target_name=base.target_name,
            metadata=base.metadata,
        )

    def without(self, sources: Iterable[str]) -> _State:
        """State + source keys → the same with their pairs removed."""
        drop = set(sources)
        if not drop:
            return self
        return _State({k: p for k, p in self.pairs.items() if k not in drop}, self.multi)

    def used_sources(self) -> set[str]:
        """Source keys some pair or split/merge reads."""
        return set(self.pairs) | {k for m in self.multi for k in m.sources}

    def with_multi_added(self, added: Iterable[MultiPair]) -> _State:
        return _State(self.pairs, (*self.multi, *added))

    def with_pairs(self, changed: Iterable[MatchedPair]) -> _State:
        pairs = dict(self.pairs)
        for p in changed:
            pairs[p.source] = p
        return _State(pairs, self.multi)

    def with_multi(self, index: int, m: MultiPair) -> _State:
        multi = list(self.multi)
        multi[index] = m
        return _State(self.pairs, tuple(multi))


@dataclass(frozen=True)
class _Alternative:
    label: str
    apply: Callable[[_State], _State] = field(compare=False)


def _template(label: str) -> str:
    """Alternative label → the same with layer indices lifted out (``layers.#.attn``)."""
    return _LAYER_INDEX.sub("#", label)


def _inside(module: str, key: str) -> bool:
    return module == "" or key.startswith(module + ".")


def _pairs_feeding(state: _State, module: str) -> list[str]:
    out = [f"{p.source} → {p.target}" for p in state.pairs.values() if _inside(module, p.target)]
    out += [
        f"{' + '.join(m.sources)} → {' + '.join(m.targets)}"
        for m in state.multi
        if any(_inside(module, t) for t in m.targets)
    ]
    return out


@dataclass(frozen=True)
class _Hints:
    """Head counts and head sizes read from both networks' attributes (and their configs)."""

    heads: tuple[int, ...]
    head_dims: tuple[int, ...]

    @classmethod
    def of(cls, *models: nn.Module) -> _Hints:
        heads: set[int] = set()
        dims: set[int] = set()
        for model in models:
            for mod in model.modules():
                for holder in (mod, getattr(mod, "config", None)):
                    if holder is None:
                        continue
                    for name in _HEAD_ATTRS:
                        v = getattr(holder, name, None)
                        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                            heads.add(v)
                    for name in _HEAD_DIM_ATTRS:
                        v = getattr(holder, name, None)
                        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                            dims.add(v)
        return cls(tuple(sorted(heads)), tuple(sorted(dims)))

    def head_dims_for(self, rows: int) -> list[int]:
        """Rows of a q or k weight → the even head sizes that could lay them out."""
        found = {d for d in self.head_dims if rows % d == 0}
        found |= {rows // h for h in self.heads if rows % h == 0}
        found = {d for d in found if d >= 2 and d % 2 == 0}
        if found:
            return sorted(found)
        # No hint: even divisors, the usual head sizes (near 64) first.
        divisors = [d for d in range(2, rows + 1, 2) if rows % d == 0]
        return sorted(divisors, key=lambda d: abs(math.log2(d / 64)))[:4]

    def groups_for(self, sizes: list[int]) -> list[int]:
        """Part sizes of a fused tensor → the group counts that could interleave them."""
        common = math.gcd(*sizes)
        found = [h for h in self.heads if h > 1 and common % h == 0]
        rest = [d for d in range(2, common + 1) if common % d == 0 and d not in found]
        return sorted(found) + rest[: max(0, 6 - len(found))]


# --- alternatives ----------------------------------------------------------------------------


def _alternatives(state: _State, where: str, bench: _Bench, hints: _Hints) -> list[_Alternative]:
    """State + the module where outputs first differ → the alternatives to try there, in order."""
    pairs = [
        replace(p, source_shape=s_shape, target_shape=t_shape)
        for p in state.pairs.values()
        if _inside(where, p.target)
        for s_shape, t_shape in [bench.shapes(p)]
    ]
    multi = [i for i, m in enumerate(state.multi) if any(_inside(where, t) for t in m.targets)]
    singles: list[_Alternative] = []
    singles += _transposes(state, pairs, multi)
    singles += _swaps(pairs)
    singles += _multi_orders(state, multi, bench)
    singles += _fused_rows(state, multi, hints)
    singles += _fused_pair_rows(pairs, hints)
    singles += _norm_offsets(pairs, bench)
    rope = _ropes(pairs, hints)
    out = singles + rope
    # Two independent mistakes inside one module: pairs of single edits, last.
    for a, b in itertools.combinations(singles, 2):
        out.append(_Alternative(f"{a.label} and {b.label}", _both(a.apply, b.apply)))
    return out


def _both(f: Callable[[_State], _State], g: Callable[[_State], _State]) -> Callable:
    return lambda s: g(f(s))


def _transposes(state: _State, pairs: list[MatchedPair], multi: list[int]) -> list[_Alternative]:
    out = []
    base = MappingResult([])
    for p in pairs:
        if len(p.source_shape) == 2 and p.source_shape[0] == p.source_shape[1] > 1:
            out.append(
                _Alternative(
                    f"transpose {p.source} → {p.target}",
                    lambda s, k=p.source: _State.of(_flip(s.mapping(base), k)),
                )
            )
    for i in multi:
        m = state.multi[i]
        out.append(
            _Alternative(
                f"transpose each part of {' + '.join(m.sources)} → {' + '.join(m.targets)}",
                lambda s, k=m.sources[0]: _State.of(_flip(s.mapping(base), k)),
            )
        )
    return out


def _swaps(pairs: list[MatchedPair]) -> list[_Alternative]:
    """Same-shape sibling modules: swap every tensor of one with the other's."""
    by_module: dict[str, dict[str, MatchedPair]] = {}
    for p in pairs:
        mod, _, param = p.target.rpartition(".")
        by_module.setdefault(mod, {})[param] = p

    def signature(params: dict[str, MatchedPair]) -> tuple[Any, ...]:
        return tuple(sorted((k, p.source_shape, p.target_shape) for k, p in params.items()))

    out = []
    mods = sorted(by_module)
    for a, b in itertools.combinations(mods, 2):
        if signature(by_module[a]) != signature(by_module[b]):
            continue
        pa, pb = by_module[a], by_module[b]

        def swap(s: _State, pa: dict = pa, pb: dict = pb) -> _State:
            changed = [replace(s.pairs[pa[k].source], target=pb[k].target) for k in pa]
            changed += [replace(s.pairs[pb[k].source], target=pa[k].target) for k in pb]
            return s.with_pairs(changed)

        out.append(_Alternative(f"swap {a} ↔ {b}", swap))
    return out


def _families(state: _State, multi: list[int]) -> list[list[int]]:
    """Split/merge pairs between the same modules (a fused weight and its bias) → one family.

    A layout belongs to a module, so an alternative changes every tensor of the family alike.
    """
    by_modules: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = {}
    for i in multi:
        m = state.multi[i]
        key = (
            tuple(k.rpartition(".")[0] for k in m.sources),
            tuple(k.rpartition(".")[0] for k in m.targets),
        )
        by_modules.setdefault(key, []).append(i)
    return list(by_modules.values())


def _family_edit(
    members: list[int], edit: Callable[[MultiPair], MultiPair]
) -> Callable[[_State], _State]:
    def apply(s: _State) -> _State:
        for i in members:
            s = s.with_multi(i, edit(s.multi[i]))
        return s

    return apply


def _multi_orders(state: _State, multi: list[int], bench: _Bench) -> list[_Alternative]:
    """Split targets or merged sources reordered among equal shapes (q/k/v, gate/up)."""
    out = []
    target_shapes = bench.target_shapes
    for family in _families(state, multi):
        m = state.multi[family[0]]
        split = m.kind == "split"
        side = m.targets if split else m.sources
        if len(side) > 4:
            continue  # per-expert stacks: their order is their index, not a guess
        shapes = [
            target_shapes.get(k) if split else _shape(bench.source_state.get(k)) for k in side
        ]
        for perm in itertools.permutations(range(len(side))):
            if list(perm) == list(range(len(side))):
                continue
            if any(shapes[j] != shapes[k] for j, k in enumerate(perm)):
                continue

            def edit(x: MultiPair, perm: tuple[int, ...] = perm, split: bool = split) -> MultiPair:
                if split:
                    return replace(x, targets=tuple(x.targets[k] for k in perm))
                return replace(x, sources=tuple(x.sources[k] for k in perm))

            order = " + ".join(side[k].rpartition(".")[0] for k in perm)
            out.append(
                _Alternative(
                    f"reorder {' + '.join(k.rpartition('.')[0] for k in side)} as {order}",
                    _family_edit(family, edit),
                )
            )
    return out


def _shape(t: torch.Tensor | None) -> tuple[int, ...] | None:
    return None if t is None else tuple(t.shape)


def _fused_rows(state: _State, multi: list[int], hints: _Hints) -> list[_Alternative]:
    """Fused q/k/v rows interleaved per head or per key/value group instead of concatenated."""
    out = []
    for family in _families(state, multi):
        m = state.multi[family[0]]
        sizes = _row_split_sizes(m)
        if sizes is None:
            continue
        for g in hints.groups_for(sizes):
            per = [x // g for x in sizes]
            if len(set(per)) == 1:
                label = f"rows per head ({g} heads)"
            else:
                label = f"rows per key/value group ({g} groups of {per})"
            out.append(
                _Alternative(
                    f"{label} in {' + '.join(m.sources)} → {' + '.join(m.targets)}",
                    _family_edit(family, lambda x, g=g: _with_row_layout(x, g)),
                )
            )
    return out


def _fused_pair_rows(pairs: list[MatchedPair], hints: _Hints) -> list[_Alternative]:
    """A fused q/k/v tensor mapped whole onto another fused one (weight and bias alike) → its
    rows relaid per head or per key/value group, in both directions."""
    modules: dict[str, list[MatchedPair]] = {}
    for p in pairs:
        modules.setdefault(p.target.rpartition(".")[0], []).append(p)
    out = []
    for mod, members in sorted(modules.items()):
        rows = {p.target_shape[0] for p in members if p.target_shape}
        if len(rows) != 1 or any(p.source_shape != p.target_shape for p in members):
            continue
        (n,) = rows
        layouts: list[tuple[str, str, dict[str, Any]]] = []
        # a head size the modules state, when they state one: a q or k weight alone has
        # rows a fused layout could also explain
        fits = (lambda d: d in hints.head_dims) if hints.head_dims else (lambda d: True)
        for h in hints.heads:
            if h > 1 and n % (3 * h) == 0 and fits(n // (3 * h)):
                layouts.append((f"{h} heads", "interleave_heads", {"heads": h, "parts": 3}))
        for h, g in itertools.permutations(hints.heads, 2):
            if g > 1 and h > g and h % g == 0 and n % (h + 2 * g) == 0 and fits(n // (h + 2 * g)):
                d = n // (h + 2 * g)
                sizes = [h // g * d, d, d]
                label = f"{g} key/value groups of {sizes}"
                layouts.append((label, "interleave_kv_groups", {"groups": g, "sizes": sizes}))
        for label, name, params in layouts:
            for to in ("interleaved", "concat"):
                spec = TransformSpec(name, {**params, "to": to})
                keys = [p.source for p in members]

                def apply(s: _State, keys: list[str] = keys, spec: TransformSpec = spec) -> _State:
                    return s.with_pairs(
                        [
                            replace(s.pairs[k], transform=chain(s.pairs[k].transform, spec))
                            for k in keys
                        ]
                    )

                out.append(_Alternative(f"fused rows ({label}, to {to}) in {mod}", apply))
    return out


def _row_split_sizes(m: MultiPair) -> list[int] | None:
    """A split or merge along dim 0 → its part sizes (None when there is none to relayout)."""
    steps = _steps(m.transform)
    step = next((st for st in steps if st.name in ("split", "merge") and _dim0(st)), None)
    if step is None or step.params.get("group") or step.params.get("each"):
        return None
    sizes = [int(x) for x in step.params.get("sizes") or []]
    return sizes if len(sizes) >= 2 else None


def _with_row_layout(m: MultiPair, groups: int) -> MultiPair:
    """Split/merge pair + group count → the same with fused rows laid out per group."""
    steps = _steps(m.transform)
    at = next(
        (j for j, st in enumerate(steps) if st.name in ("split", "merge") and _dim0(st)), None
    )
    if at is None or any(int(x) % groups for x in steps[at].params.get("sizes") or [1]):
        return m  # a family member laid out otherwise (a weight split along another dim)
    sizes = [int(x) // groups for x in steps[at].params["sizes"]]
    if len(set(sizes)) == 1:
        name, params = "interleave_heads", {"heads": groups, "parts": len(sizes)}
    else:
        name, params = "interleave_kv_groups", {"groups": groups, "sizes": sizes}
    if m.kind == "split":
        new = chain(*steps[:at], TransformSpec(name, {**params, "to": "concat"}), *steps[at:])
    else:
        layout = TransformSpec(name, {**params, "to": "interleaved"})
        new = chain(*steps[: at + 1], layout, *steps[at + 1 :])
    return replace(m, transform=new)


def _steps(spec: TransformSpec) -> list[TransformSpec]:
    if spec.name == "chain":
        return [TransformSpec.from_dict(s) for s in spec.params.get("steps", [])]
    return [] if spec.is_identity else [spec]


def _dim0(spec: TransformSpec) -> bool:
    return int(spec.params.get("dim", 0)) == 0


def _norm_offsets(pairs: list[MatchedPair], bench: _Bench) -> list[_Alternative]:
    """Norm weights stored as offsets: ``w`` ↔ ``1 + w``."""
    out = []
    for p in pairs:
        mod, _, param = p.target.rpartition(".")
        if param != "weight" or len(p.target_shape) != 1:
            continue
        if "norm" not in bench.target_types.get(mod, "").lower():
            continue
        for value in (1.0, -1.0):
            spec = TransformSpec("offset", {"value": value})
            out.append(
                _Alternative(
                    f"norm offset {value:+g} on {p.source} → {p.target}",
                    lambda s, k=p.source, t=spec: s.with_pairs(
                        [replace(s.pairs[k], transform=chain(s.pairs[k].transform, t))]
                    ),
                )
            )
    return out


def _ropes(pairs: list[MatchedPair], hints: _Hints) -> list[_Alternative]:
    """q/k rows in the other RoPE layout: one module, then two (q and k) with the same layout."""
    modules: dict[str, list[MatchedPair]] = {}
    rows: dict[str, int] = {}
    for p in pairs:
        mod, _, param = p.target.rpartition(".")
        modules.setdefault(mod, []).append(p)
        if param == "weight" and len(p.target_shape) == 2:
            rows[mod] = p.target_shape[0]
    candidates = sorted(m for m in modules if m in rows)
    out: list[_Alternative] = []
    groups = [(m,) for m in candidates]
    groups += list(itertools.combinations(candidates, 2))
    for group in groups:
        # q and k may differ in rows (GQA) but share the head size
        dims = set.intersection(*(set(hints.head_dims_for(rows[m])) for m in group))
        for d in sorted(dims):
            for to in ("rotate_half", "interleaved"):
                spec = TransformSpec("rope_permute", {"head_dim": d, "to": to})
                keys = [
                    p.source
                    for m in group
                    for p in modules[m]
                    if p.target_shape and p.target_shape[0] == rows[m]
                ]

                def apply(s: _State, keys: list[str] = keys, spec: TransformSpec = spec) -> _State:
                    return s.with_pairs(
                        [
                            replace(s.pairs[k], transform=chain(s.pairs[k].transform, spec))
                            for k in keys
                        ]
                    )

                out.append(
                    _Alternative(
                        f"rope_permute(head_dim={d}, to={to}) on {', '.join(group)}", apply
                    )
                )
    return out


# --- fills: tensors the first pass left unmapped ----------------------------------------------

_FILLS_PER_HOLE = 12
"""Source modules (or fused tensors) tried per unmapped target module, the closest first."""
_FILL_NOTE = "found by the proof's search; the outputs decide it, not the scores"


def _fills(state: _State, hole: str, unmapped: list[str], bench: _Bench) -> list[_Alternative]:
    """Target module left unmapped → alternatives filling it, closest names first.

    From source tensors nothing uses: the tensors of one source module (a pair the first pass
    missed), or one tensor split along its rows into this module and its unmapped siblings (a
    fused gate/up or q/k/v the first pass missed), in every order. Then from a source module
    the first pass gave to a target module that runs later (a block-for-block alignment
    shifted by one): it moves here, and its old place becomes the next hole to fill.
    """
    keys = sorted(k for k in unmapped if k.rpartition(".")[0] == hole)
    used = state.used_sources()
    shapes = {k: tuple(v.shape) for k, v in bench.source_state.items() if v.is_floating_point()}
    free: dict[str, list[str]] = {}
    for k in shapes:
        if k not in used:
            free.setdefault(k.rpartition(".")[0], []).append(k)
    # source modules all of whose tensors feed one target module running after the hole
    later: dict[str, set[str]] = {}
    for p in state.pairs.values():
        later.setdefault(p.source.rpartition(".")[0], set()).add(p.target.rpartition(".")[0])
    limit = bench.rank(hole)
    taken = {
        mod: sorted(k for k in state.pairs if k.rpartition(".")[0] == mod and k in shapes)
        for mod, places in later.items()
        if len(places) == 1 and bench.rank(next(iter(places))) > limit >= 0
    }
    near = _counterpart_of_parent(state, hole, bench)

    def ranked(groups: Mapping[str, list[str]]) -> list[tuple[str, dict]]:
        found = []
        for mod, tensors in groups.items():
            assign = _by_shape(keys, tensors, shapes, bench.target_shapes)
            if assign is not None:
                found.append((mod, assign))
        found.sort(key=lambda c: (not _inside(near, c[0]), -_closeness(c[0], hole), c[0]))
        return found[:_FILLS_PER_HOLE]

    out: list[_Alternative] = []
    for kind, groups in (("map", free), ("move", taken)):
        for mod, assign in ranked(groups):
            pairs = [
                MatchedPair(
                    s,
                    t,
                    0.5,
                    source_shape=shapes[s],
                    target_shape=bench.target_shapes[t],
                    transform=spec,
                    stage="proof",
                    confidence="low",
                    note=_FILL_NOTE,
                )
                for t, (s, spec) in assign.items()
            ]
            # a move takes the module's pairs from their old place: all of them
            dropped = [k for k in groups[mod] if k not in {s for s, _ in assign.values()}]
            label = f"{kind} {mod} → {hole}"
            if kind == "move":
                label = f"move {mod} from {state.pairs[groups[mod][0]].target.rpartition('.')[0]} → {hole}"
            out.append(
                _Alternative(
                    label,
                    lambda st, pairs=pairs, dropped=dropped: st.with_pairs(pairs).without(dropped),
                )
            )
        if kind == "map":
            free_shapes = {k: shapes[k] for ks in free.values() for k in ks}
            out += _split_fills(state, hole, keys, unmapped, free_shapes, bench)
    return out


def _by_shape(
    keys: list[str],
    tensors: list[str],
    free: Mapping[str, tuple[int, ...]],
    target_shapes: Mapping[str, tuple[int, ...]],
) -> dict[str, tuple[str, TransformSpec]] | None:
    """Target keys + one source module's free tensors → target → (source, transform): equal
    shapes, or a layout of the dims (a transposed matrix, a Keras HWIO kernel); the same role
    (``gamma`` is a ``weight``, ``moving_variance`` a ``running_var``) first. None when some
    key has no partner."""
    left = sorted(tensors)
    assign: dict[str, tuple[str, TransformSpec]] = {}
    for t in sorted(keys):
        shape = target_shapes.get(t)
        fits = [(s, f) for s in left if (f := _layout_fit(free[s], shape)) is not None]
        if not fits:
            return None
        role = local_tokens(t.rpartition(".")[2])
        fits.sort(
            key=lambda sf: (
                local_tokens(sf[0].rpartition(".")[2]) != role,
                not sf[1].is_identity,
                sf[0],
            )
        )
        assign[t] = fits[0]
        left.remove(fits[0][0])
    return assign


# Source dims → target dims for the usual layouts of a 4-d kernel: TF/Keras HWIO → OIHW first.
_KERNEL_LAYOUTS = ((3, 2, 0, 1), (0, 3, 1, 2), (3, 0, 1, 2))


def _layout_fit(source: tuple[int, ...], target: tuple[int, ...] | None) -> TransformSpec | None:
    """Source shape + target shape → the transform that makes one the other, or None."""
    if target is None or len(source) != len(target):
        return None
    if source == target:
        return TransformSpec()
    if len(source) == 2 and source[::-1] == target:
        return TransformSpec("transpose", {"dim0": 0, "dim1": 1})
    if len(source) == 4:
        for dims in _KERNEL_LAYOUTS:
            if tuple(source[d] for d in dims) == target:
                return TransformSpec("permute", {"dims": list(dims)})
    return None


def _split_fills(
    state: _State,
    hole: str,
    keys: list[str],
    unmapped: list[str],
    free: Mapping[str, tuple[int, ...]],
    bench: _Bench,
) -> list[_Alternative]:
    """Unmapped module + its unmapped siblings → splits of one free fused tensor into them."""
    shapes = bench.target_shapes
    parent = hole.rpartition(".")[0]
    # the weight decides the split (a bias follows it)
    weight = max(keys, key=lambda k: (len(shapes.get(k, ())), k.endswith(".weight")), default=None)
    if weight is None or not shapes.get(weight):
        return []
    param = weight.rpartition(".")[2]
    siblings = sorted(
        (
            u
            for u in unmapped
            if u.rpartition(".")[2] == param
            and u.rpartition(".")[0].rpartition(".")[0] == parent
            and shapes[u][1:] == shapes[weight][1:]
        ),
        key=lambda u: (bench.rank(u.rpartition(".")[0]), u),
    )
    if not 2 <= len(siblings) <= 4:
        return []
    rows = sum(shapes[u][0] for u in siblings)
    fused = [s for s, shp in free.items() if shp == (rows, *shapes[weight][1:])]
    near = _counterpart_of_parent(state, hole, bench)
    fused.sort(key=lambda s: (not _inside(near, s), -_closeness(s.rpartition(".")[0], hole), s))
    out = []
    for src in fused[:3]:
        # the bias of the fused module is split the same way when both sides have one
        family = [(src, siblings)]
        s_mod = src.rpartition(".")[0]
        t_bias = [u.rpartition(".")[0] + ".bias" for u in siblings]
        s_bias = f"{s_mod}.bias"
        if param == "weight" and all(b in unmapped for b in t_bias) and free.get(s_bias) == (rows,):
            family.append((s_bias, t_bias))
        for perm in list(itertools.permutations(range(len(siblings))))[:6]:
            multi = [
                MultiPair(
                    (s,),
                    tuple(targets[j] for j in perm),
                    TransformSpec(
                        "split", {"dim": 0, "sizes": [shapes[targets[j]][0] for j in perm]}
                    ),
                    0.5,
                    confidence="low",
                )
                for s, targets in family
            ]
            order = " + ".join(siblings[j].rpartition(".")[0] for j in perm)
            out.append(
                _Alternative(
                    f"split {s_mod} into {order}",
                    lambda st, multi=multi: st.with_multi_added(multi),
                )
            )
    return out


def _counterpart_of_parent(state: _State, hole: str, bench: _Bench) -> str:
    """Unmapped target module → the source module its closest mapped ancestor corresponds to
    ("" when none does): the source tensors that belong there are tried first."""
    pairs = _module_pairs(state.mapping(MappingResult([])), bench.source, bench.target)
    t_to_s = {t: s for s, t in pairs}
    parts = hole.split(".")
    for n in range(len(parts) - 1, 0, -1):
        s = t_to_s.get(".".join(parts[:n]))
        if s is not None:
            return s
    return ""


def _closeness(source_module: str, target_module: str) -> float:
    """Two module paths → how alike they are: the same first layer index counts most, then
    the similarity of the names with indices lifted out."""
    si, ti = _LAYER_INDEX.findall(source_module), _LAYER_INDEX.findall(target_module)
    same_index = 1.0 if si[:1] == ti[:1] else 0.0
    ratio = difflib.SequenceMatcher(
        None, _template(source_module), _template(target_module)
    ).ratio()
    return same_index + ratio
