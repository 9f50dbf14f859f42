"""Functional proof: source module + target module + mapping + input → FunctionalCheck.

The source's weights are converted with the mapping and loaded into a copy of the target;
both run on the same input in eval mode. When the outputs differ, forward hooks on every
pair of corresponding modules (derived from the mapping's parameter names) find the first
target module, in execution order, whose output differs although its input matched: the
place where a wrong layout (a square matrix left untransposed, q and k swapped) bites.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from weightmapper.calls import main_tensor
from weightmapper.errors import CheckpointFormatError, MappingError
from weightmapper.result import MappingResult, check_verdict, diff_text, finite_number
from weightmapper.transforms import IDENTITY, TransformSpec, chain

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FunctionalCheck:
    """Outcome of running source and converted target on the same input."""

    max_abs_diff: float
    """max |target − reference| over the compared output tensor (inf when the outputs differ
    in shape; ``to_dict`` gives None then)."""
    max_rel_diff: float
    """max_abs_diff / max |reference| (a norm-wise relative error; 0 when both are zero)."""
    equal: bool
    """True when the outputs agree within ``atol`` + ``rtol`` · |reference| everywhere."""
    first_diverging: str | None = None
    """``target.path (source: source.path)`` of the first module whose output differs while
    its input matched; None when the outputs are equal or no module could be compared."""
    compared_modules: int = 0
    """Module pairs whose intermediate outputs were compared."""
    first_diverging_target: str | None = None
    first_diverging_source: str | None = None
    atol: float = 1e-5
    rtol: float = 1e-4
    notes: tuple[str, ...] = field(default_factory=tuple)
    """What was noticed on the way (keys the mapping left at their initial values, ...)."""
    output_shapes: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    """When the outputs differ in shape: (target's, source's)."""
    not_finite: str | None = None
    """When the source's (reference) output holds NaN or inf, how many: equal outputs would
    prove nothing then (NaN equals NaN whatever the weights), so ``equal`` is False."""

    def to_dict(self) -> dict[str, Any]:
        """FunctionalCheck → JSON-ready dict."""
        return {
            "equal": self.equal,
            # JSON has no infinity: outputs of different shapes have no difference to give.
            "max_abs_diff": finite_number(self.max_abs_diff),
            "max_rel_diff": finite_number(self.max_rel_diff),
            "atol": self.atol,
            "rtol": self.rtol,
            "first_diverging": self.first_diverging,
            "first_diverging_target": self.first_diverging_target,
            "first_diverging_source": self.first_diverging_source,
            "compared_modules": self.compared_modules,
            "notes": list(self.notes),
            "output_shapes": None
            if self.output_shapes is None
            else [list(shape) for shape in self.output_shapes],
            "not_finite": self.not_finite,
        }

    def summary(self) -> str:
        """FunctionalCheck → one or two human lines."""
        head = (
            f"outputs {check_verdict(self.to_dict()).upper()}: {diff_text(self.to_dict())} "
            f"(atol {self.atol:g}, rtol {self.rtol:g})"
        )
        lines = [head]
        if self.first_diverging:
            lines.append(f"first diverging module: {self.first_diverging}")
        elif not self.equal and not self.not_finite:
            lines.append(f"no single diverging module found among {self.compared_modules} compared")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def check_outputs(
    source_module: nn.Module | None,
    target_module: nn.Module,
    mapping: MappingResult | Mapping[str, str],
    inputs: Any,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    reference_output: Any = None,
) -> FunctionalCheck:
    """Source module (or a saved reference output) + target + mapping + input → FunctionalCheck.

    ``inputs`` is a tensor, a tuple of positional arguments or a dict of keyword arguments.
    Outputs may be tensors, tuples, dicts or HF ModelOutputs (``logits``, then
    ``last_hidden_state``, then the first tensor is compared). Neither module is modified.
    With ``source_module=None`` the target is run with its own (already converted) weights
    and compared with ``reference_output``; no diverging module can be located then.
    """
    result = mapping if isinstance(mapping, MappingResult) else MappingResult.from_simple(mapping)
    if source_module is None and reference_output is None:
        raise MappingError(
            "check_outputs needs a source module or a reference output to compare with; "
            "pass source_module=... or reference_output=..."
        )
    target = copy.deepcopy(target_module).eval()
    source = copy.deepcopy(source_module).eval() if source_module is not None else None
    if source is not None:
        notes = _load_converted(target, result.convert(source.state_dict()))
        pairs = _module_pairs(result, source, target)
    else:
        # A saved reference output: the target is expected to hold converted weights already.
        notes = ["no source module: the target's own weights were compared with the reference"]
        pairs = []
    args, kwargs = _as_call(inputs)

    src_rec: dict[str, tuple[Any, Any]] = {}
    tgt_rec: dict[str, tuple[Any, Any]] = {}
    order: list[str] = []
    handles = []
    try:
        for s_path, t_path in pairs if source is not None else []:
            handles.append(_hook(source.get_submodule(s_path), s_path, src_rec, None))
            handles.append(_hook(target.get_submodule(t_path), t_path, tgt_rec, order))
        with torch.no_grad():
            reference = (
                _run("source", source, args, kwargs) if source is not None else reference_output
            )
            got = _run("target", target, args, kwargs)
    finally:
        for h in handles:
            h.remove()
    if reference_output is not None and source is not None:
        notes.append("compared with the source module's output, not the given reference_output")

    ref_t, got_t = main_tensor(reference), main_tensor(got)
    if ref_t is None or got_t is None:
        raise CheckpointFormatError(
            f"cannot find an output tensor to compare (reference: {type(reference).__name__}, "
            f"target: {type(got).__name__}); return a tensor, tuple, dict or ModelOutput"
        )
    max_abs, max_rel, equal = _compare(got_t, ref_t, atol, rtol)
    not_finite = not_finite_text(ref_t)
    if not_finite is not None:
        # Nothing to locate either: every module downstream of the NaN "agrees" with it.
        equal, order = False, []
    shapes = None
    if tuple(got_t.shape) != tuple(ref_t.shape):
        shapes = (tuple(got_t.shape), tuple(ref_t.shape))  # said by every summary of the check

    t_to_s = {t: s for s, t in pairs}
    first_t = first_s = None
    compared = 0
    fallback: tuple[str, str] | None = None
    for t_path in order:
        s_path = t_to_s[t_path]
        if s_path not in src_rec:
            continue
        (s_in, s_out), (t_in, t_out) = src_rec[s_path], tgt_rec[t_path]
        out_same = _same(t_out, s_out, atol, rtol)
        if out_same is None:
            continue
        compared += 1
        if out_same or equal:
            continue
        if fallback is None:
            fallback = (t_path, s_path)
        if first_t is None and _same(t_in, s_in, atol, rtol) is not False:
            first_t, first_s = t_path, s_path
    if first_t is None and fallback is not None:
        first_t, first_s = fallback
        notes.append("no diverging module had matching inputs; naming the first that differs")
    first = f"{first_t} (source: {first_s})" if first_t is not None else None
    unmapped = _unmapped_module(result, target) if shapes and source is not None else None
    if first_t is None and unmapped is not None:
        # Nothing compared differs, yet the output shapes do: the one module the mapping
        # leaves at its initial values (a resized head, say) is where the networks part.
        first_t, first = unmapped, f"{unmapped} (not mapped: it keeps its initial values)"
    check = FunctionalCheck(
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        equal=equal,
        first_diverging=first,
        compared_modules=compared,
        first_diverging_target=first_t,
        first_diverging_source=first_s,
        atol=atol,
        rtol=rtol,
        notes=tuple(notes),
        output_shapes=shapes,
        not_finite=not_finite,
    )
    log.info("functional check: %s", check.summary().replace("\n", "; "))
    return check


def settle_ambiguous(
    source_module: nn.Module,
    target_module: nn.Module,
    mapping: MappingResult,
    inputs: Any,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    budget: int = 256,
) -> tuple[MappingResult, FunctionalCheck]:
    """Mapping with low-confidence layouts + both modules + input → settled mapping and its check.

    Runs the search of :func:`weightmapper.proof.prove` (square transposes, sibling swaps,
    RoPE and fused row orders, split orders, norm offsets, within ``budget`` forward passes).
    When the outputs end equal, every low-confidence pair is confirmed by the outputs and
    marked ``high`` with a ``functional_check`` signal of 1. Returns the mapping and last check.
    """
    from weightmapper.proof import prove  # the search builds on this module's helpers

    proof = prove(
        source_module, target_module, mapping, inputs, atol=atol, rtol=rtol, budget=budget
    )
    current = proof.mapping
    if proof.equal:
        current = _confirm(current)
        current.status = proof.mapping.status
    return current, proof.check


def _flip(result: MappingResult, key: str) -> MappingResult:
    """Mapping + source key → a copy where that pair's chunks or matrix are transposed."""
    t = TransformSpec("transpose", {"dim0": 0, "dim1": 1})
    pairs = list(result.pairs)
    multi = list(result.multi)
    if key in result:
        i = next(i for i, p in enumerate(pairs) if p.source == key)
        p = pairs[i]
        spec = IDENTITY if p.transform == t else chain(p.transform, t)
        pairs[i] = replace(p, transform=spec)
    else:
        i = next(i for i, m in enumerate(multi) if m.sources[0] == key)
        m = multi[i]
        # a split transposes each output chunk afterwards, a merge each input beforehand
        spec = chain(m.transform, t) if m.kind == "split" else chain(t, m.transform)
        multi[i] = replace(m, transform=spec)
    return _rebuild(result, pairs, multi)


def _confirm(result: MappingResult) -> MappingResult:
    """Mapping whose outputs proved equal → its low-confidence pairs marked high."""
    pairs = [
        replace(p, confidence="high", breakdown={**p.breakdown, "functional_check": 1.0})
        if p.confidence == "low"
        else p
        for p in result.pairs
    ]
    multi = [
        replace(m, confidence="high", breakdown={**m.breakdown, "functional_check": 1.0})
        if m.confidence == "low"
        else m
        for m in result.multi
    ]
    return _rebuild(result, pairs, multi)


def _rebuild(result: MappingResult, pairs: list[Any], multi: list[Any]) -> MappingResult:
    return MappingResult(
        pairs,
        result.unmatched_source,
        result.unmatched_target,
        multi,
        source_count=result.source_count,
        target_count=result.target_count,
        settings=result.settings,
        source_name=result.source_name,
        target_name=result.target_name,
        metadata=result.metadata,
    )


# --- loading ------------------------------------------------------------------------------


def _run(side: str, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """One forward pass; a model that rejects the input is a bad input, reported as ours."""
    try:
        return module(*args, **kwargs)
    except Exception as e:  # user model code: any failure means the input does not fit it
        raise MappingError(
            f"the {side} model {type(module).__name__} rejected the dummy input "
            f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}). Expected an "
            "input its forward accepts: check the --dummy-input shape and dtype (e.g. "
            "1,3,224,224 for images, 1,16:int64 for token ids)."
        ) from e


def _load_converted(target: nn.Module, converted: dict[str, torch.Tensor]) -> list[str]:
    """Converted state dict → loaded into ``target`` (strict when complete); → notes."""
    notes: list[str] = []
    expected = target.state_dict()
    on_meta = any(t.device.type == "meta" for t in expected.values())
    unexpected = sorted(k for k in converted if k not in expected)
    if unexpected:
        raise MappingError(
            f"the mapping produces {len(unexpected)} key(s) the target does not have, e.g. "
            f"{unexpected[:5]}; was it made for another target?"
        )
    wrong = [
        f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in converted.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise MappingError(
            f"{len(wrong)} converted tensor(s) do not fit the target, e.g. {wrong[:3]}; "
            "check the mapping's transforms"
        )
    missing = _untied_missing(target, converted)
    if missing:
        notes.append(
            f"{len(missing)} target key(s) not produced by the mapping keep their initial "
            f"values, e.g. {missing[:5]}"
        )
    target.load_state_dict(converted, strict=False, assign=on_meta)
    return notes


def _untied_missing(target: nn.Module, converted: Mapping[str, torch.Tensor]) -> list[str]:
    """Target keys the converted dict lacks, minus those tied to a key it has."""
    sd = target.state_dict(keep_vars=True)
    by_obj: dict[int, list[str]] = {}
    for k, v in sd.items():
        by_obj.setdefault(id(v), []).append(k)
    missing = []
    for k, v in sd.items():
        if k not in converted and not any(p in converted for p in by_obj[id(v)]):
            missing.append(k)
    return sorted(missing)


# --- module correspondence -----------------------------------------------------------------


def _unmapped_module(result: MappingResult, target: nn.Module) -> str | None:
    """Mapping + target → the one module holding every floating-point target tensor the
    mapping gives no source, or None (none, or several such modules)."""
    state = target.state_dict()
    modules = {
        _module_of(k)
        for k in result.get_unmatched()["target"]
        if k in state and state[k].is_floating_point()
    }
    return modules.pop() if len(modules) == 1 else None


def _module_of(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else ""


def _ancestors(path: str) -> list[str]:
    parts = path.split(".") if path else []
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _common_prefix(paths: list[str]) -> str:
    split = [p.split(".") if p else [] for p in paths]
    common: list[str] = []
    for tokens in zip(*split, strict=False):
        if len(set(tokens)) != 1:
            break
        common.append(tokens[0])
    return ".".join(common)


def _module_pairs(
    result: MappingResult, source: nn.Module, target: nn.Module
) -> list[tuple[str, str]]:
    """Mapping → (source module, target module) pairs whose whole subtrees correspond.

    A source module P and target module Q correspond when the mapped tensors under P land
    exactly in Q's subtree (their deepest common module is Q) and the reverse holds too. This
    gives leaf pairs (``attn.c_proj`` ↔ ``attn.o_proj``) and container pairs (``h.0`` ↔
    ``layers.0``); modules touched by a split or merge pair only at container level.
    """
    links = [(p.source, p.target) for p in result.pairs]
    links += [(s, t) for m in result.multi for s in m.sources for t in m.targets]
    s_to_t: dict[str, list[str]] = {}
    t_to_s: dict[str, list[str]] = {}
    for s, t in links:
        for a in _ancestors(_module_of(s)):
            s_to_t.setdefault(a, []).append(_module_of(t))
        for a in _ancestors(_module_of(t)):
            t_to_s.setdefault(a, []).append(_module_of(s))
    s_names = {n for n, _ in source.named_modules()}
    t_names = {n for n, _ in target.named_modules()}
    pairs = []
    for s_path, t_mods in s_to_t.items():
        t_path = _common_prefix(t_mods)
        if not t_path or s_path not in s_names or t_path not in t_names:
            continue
        if _common_prefix(t_to_s.get(t_path, [])) == s_path:
            pairs.append((s_path, t_path))
    return sorted(pairs)


# --- running and comparing -----------------------------------------------------------------


def _hook(
    module: nn.Module,
    path: str,
    record: dict[str, tuple[Any, Any]],
    order: list[str] | None,
) -> Any:
    """Module → forward hook keeping its first call's (first input tensor, output tensor)."""

    def hook(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        if path in record:
            return  # a module called twice (shared) is compared on its first call
        first_in = main_tensor(args) if args else main_tensor(kwargs)
        out_t = main_tensor(out)
        record[path] = (
            None if first_in is None else first_in.detach().clone(),
            None if out_t is None else out_t.detach().clone(),
        )
        if order is not None:
            order.append(path)

    return module.register_forward_hook(hook, with_kwargs=True)


def _as_call(inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


def _compare(
    got: torch.Tensor, ref: torch.Tensor, atol: float, rtol: float
) -> tuple[float, float, bool]:
    """Two tensors → (max abs diff, norm-wise relative diff, allclose)."""
    if tuple(got.shape) != tuple(ref.shape):
        return float("inf"), float("inf"), False
    got, ref = got.detach().double(), ref.detach().double()
    diff = (got - ref).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    equal = bool(torch.allclose(got, ref, atol=atol, rtol=rtol, equal_nan=True))
    return max_abs, max_rel, equal


def not_finite_text(reference: torch.Tensor) -> str | None:
    """The source's (reference) output → how many of its values are NaN or infinite, said
    as a sentence; None when all are finite numbers."""
    if not reference.is_floating_point() and not reference.is_complex():
        return None
    nan = int(torch.isnan(reference).sum())
    inf = int(torch.isinf(reference).sum())
    if nan == 0 and inf == 0:
        return None
    counts = " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "inf")) if n)
    return (
        f"the source's output holds {counts} of {reference.numel()} values, so equal outputs "
        "prove nothing; check the source's weights and the input"
    )


def _same(a: torch.Tensor | None, b: torch.Tensor | None, atol: float, rtol: float) -> bool | None:
    """Two recorded tensors → equal within tolerance, or None when they cannot be compared."""
    if a is None or b is None:
        return None if (a is None) != (b is None) else True
    if tuple(a.shape) != tuple(b.shape):
        return None
    return _compare(a, b, atol, rtol)[2]
