"""The matching cascade: two Inventories → Candidates → MappingResult.

Cheapest evidence first, each stage working only on what the previous ones left:

1. ``exact``       identical keys (after a shared wrapper prefix is dropped), compatible shapes
2. ``normalized``  identical canonical names (synonyms folded, layer indices dense-ranked),
                   unique on both sides
3. ``template``    parameter groups bucketed by (name template, shape signature); a bucket
                   that pairs unambiguously with one on the other side is matched instance
                   by instance along its layer indices (this settles 10k-expert MoE layers)
   ``gap``         open groups between two matched neighbours (in execution or registration
                   order) pair position by position when both gaps hold the same sequence of
                   group signatures; unequal gaps (an inserted or removed block) are split
                   by which neighbour each group shares the longer module path with, so the
                   inserted block is skipped (also run again after ``structural``)
4. ``structural``  the remaining group sequences (execution or registration order) aligned
                   like sequences with gaps, under equal shape signatures, by dynamic
                   programming: a group with no partner is skipped, not shifting the rest
5. ``assignment``  leftovers, per shape bucket: fuzzy score matrices and an optimal
                   one-to-one assignment (``scipy.optimize.linear_sum_assignment``)

After every group-level match the rest of the group follows (``group``), and buffers follow
their module when the partner has the same buffer with the same shape (``buffer``).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from weightmapper.candidates import (
    Candidates,
    KeyNote,
    Proposal,
    assign_candidates,
    check_strategy,
    check_threshold,
)
from weightmapper.engine import BUFFER_MODES, Engine
from weightmapper.errors import MappingError
from weightmapper.inventory import Inventory, split_key
from weightmapper.result import MappingResult, MultiPair, UnmatchedReason
from weightmapper.scoring import parse_incompatible_pairs, validate_weights
from weightmapper.side import prepare_side
from weightmapper.transforms import TransformSpec

log = logging.getLogger(__name__)


def score_inventories(
    source: Inventory,
    target: Inventory,
    *,
    weights: Mapping[str, float] | None = None,
    shape_tolerance: float = 0.0,
    incompatible_pairs: Sequence[Sequence[str]] | None = None,
    buffer_matching_mode: str = "exclude",
) -> Candidates:
    """Source and target Inventory + settings → Candidates (proposals and notes, no threshold).

    Deterministic: the same inventories and settings give the same Candidates on every run.
    """
    w = validate_weights(weights)
    if buffer_matching_mode not in BUFFER_MODES:
        raise MappingError(
            f"unknown buffer_matching_mode {buffer_matching_mode!r}; choose one of "
            f"{list(BUFFER_MODES)} (exclude: buffers follow their module's match; lenient: "
            "buffers are scored with a soft penalty; strict: buffers must match)."
        )
    try:
        tol = float(shape_tolerance)
    except (TypeError, ValueError):
        raise MappingError(
            f"shape_tolerance must be a number ≥ 0, got {shape_tolerance!r}"
        ) from None
    if not tol >= 0:
        raise MappingError(f"shape_tolerance must be a number ≥ 0, got {shape_tolerance!r}")
    pairs = parse_incompatible_pairs(incompatible_pairs)
    with paused_gc():
        src, tgt = prepare_side(source), prepare_side(target)
        engine = Engine(
            src, tgt, weights=w, tolerance=tol, incompatible=pairs, mode=buffer_matching_mode
        )
        engine.run()
        proposals, notes, tied = engine.collect()
    proposals = settle_square_layouts(proposals, source, target)
    multi = _propose_multi(source, target, notes)
    multi, notes = _drop_ambiguous_multi(multi, notes)
    if multi:
        used = {("source", k) for m in multi for k in m.sources}
        used |= {("target", k) for m in multi for k in m.targets}
        notes = [n for n in notes if (n.side, n.name) not in used]
    settings: dict[str, Any] = {
        "shape_tolerance": tol,
        "buffer_matching_mode": buffer_matching_mode,
        "incompatible_pairs": [list(p) for p in incompatible_pairs] if incompatible_pairs else None,
        "source_traced": source.traced,
        "target_traced": target.traced,
    }
    log.info(
        "scored %s (%d tensors) against %s (%d tensors): %d proposals, stages %s",
        source.name, len(source), target.name, len(target), len(proposals), engine.stage_counts(),
    )  # fmt: skip
    return Candidates(
        source_name=source.name,
        target_name=target.name,
        proposals=proposals,
        notes=notes,
        weights=w,
        settings=settings,
        source_count=len(source),
        target_count=len(target),
        tied=tied,
        multi=multi,
        metadata={"stages": engine.stage_counts()},
    )


_LINEAR_TYPES = frozenset({"Linear", "Conv1D", "NonDynamicallyQuantizableLinear", "LazyLinear"})
_TRANSPOSE = TransformSpec("transpose", {"dim0": 0, "dim1": 1})


def settle_square_layouts(
    proposals: list[Proposal], source: Inventory, target: Inventory
) -> list[Proposal]:
    """Proposals + both inventories → proposals whose square linear weights follow the evidence.

    When one side is a bare checkpoint (no module types), a square weight's layout, (out, in)
    or (in, out), cannot be read from its shape. Its non-square linear weights can: when
    every one of them needed a transpose (GPT-2's Conv1D checkpoint against ``nn.Linear``),
    the square ones get it too; when they disagree, the square ones stay as they are. Either
    way the square pairs are marked low confidence, never guessed silently; when none needed
    a transpose, the layouts agree and nothing changes.
    """
    if bool(source.module_types) == bool(target.module_types):
        return proposals  # both known (types decide) or both unknown (no evidence either way)
    known, side = (target, "target") if target.module_types else (source, "source")

    def linear_weight(p: Proposal) -> bool:
        key = p.target if side == "target" else p.source
        path, local = split_key(key)
        return (
            local == "weight"
            and len(p.source_shape) == 2
            and known.module_type(path) in _LINEAR_TYPES
        )

    # Evidence is taken per block (the key up to its first layer index), where a library's
    # convention is uniform, falling back to the whole model: a genuine nn.Linear head next
    # to Conv1D blocks must not veto the blocks' own evidence.
    evidence: dict[str, list[bool]] = {}
    for p in proposals:
        if linear_weight(p) and p.source_shape[0] != p.source_shape[1]:
            transposed = p.transform.name == "transpose"
            evidence.setdefault(_block_scope(p.source), []).append(transposed)
            evidence.setdefault("", []).append(transposed)
    if not any(evidence.get("", [])):
        return proposals  # no weight needed a transpose: one consistent (out, in) layout
    out = []
    for p in proposals:
        if linear_weight(p) and p.source_shape[0] == p.source_shape[1] and p.transform.is_identity:
            seen = evidence.get(_block_scope(p.source)) or evidence[""]
            p = replace(p, transform=_TRANSPOSE if all(seen) else p.transform, confidence="low")
        out.append(p)
    return out


def _block_scope(key: str) -> str:
    """Key → its prefix up to and including the first numeric component (``h.0``), or ``""``."""
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ""


def _propose_multi(source: Inventory, target: Inventory, notes: list[KeyNote]) -> list[MultiPair]:
    """Keys left unmatched (buffers aside) → split/merge proposals from weightmapper.multi."""
    src = {n.name: source.tensors[n.name] for n in notes if n.side == "source" and _open(n)}
    tgt = {n.name: target.tensors[n.name] for n in notes if n.side == "target" and _open(n)}
    if not src or not tgt:
        return []
    try:
        multi = importlib.import_module("weightmapper.multi")
    except ModuleNotFoundError:
        return []
    # Keep each side's own order: propose_multi reads iteration order as registration order.
    src = {k: v for k, v in source.tensors.items() if k in src}
    tgt = {k: v for k, v in target.tensors.items() if k in tgt}
    return list(
        multi.propose_multi(
            src, tgt, source_types=source.module_types, target_types=target.module_types
        )
    )


def _drop_ambiguous_multi(
    multi: list[MultiPair], notes: list[KeyNote]
) -> tuple[list[MultiPair], list[KeyNote]]:
    """Split/merge proposals + notes → those whose single side has no open look-alike.

    A split takes one source tensor apart; when a sibling module (same parent) holds another
    unmatched tensor of the same shape and local name that no proposal uses (``k_proj`` and
    ``v_proj`` both (C, C) against grouped-query ``wk``/``wv``), nothing says which of the
    two is the one to split, so the proposal is dropped and both stay unmatched as
    ``ambiguous``. Merges are checked the same way on the target side.
    """
    if not multi:
        return multi, notes
    used = {("source", k) for m in multi for k in m.sources}
    used |= {("target", k) for m in multi for k in m.targets}
    open_by: dict[tuple[str, str, str, tuple[int, ...]], list[str]] = {}
    for n in notes:
        if _open(n):
            open_by.setdefault(_lookalike_key(n.side, n.name, n.shape), []).append(n.name)
    shapes = {(n.side, n.name): n.shape for n in notes}
    kept: list[MultiPair] = []
    rivals: dict[tuple[str, str], str] = {}
    for m in multi:
        side, keys = ("source", m.sources) if len(m.sources) == 1 else ("target", m.targets)
        if len(keys) != 1 or (side, keys[0]) not in shapes:
            kept.append(m)
            continue
        key = keys[0]
        others = [
            o
            for o in open_by.get(_lookalike_key(side, key, shapes[(side, key)]), [])
            if o != key and (side, o) not in used
        ]
        if not others:
            kept.append(m)
            continue
        log.info("dropped %s proposal for %s: %s looks the same", m.kind, key, others[0])
        for k in (key, *others):
            rivals[(side, k)] = others[0] if k == key else key
    if not rivals:
        return kept, notes
    out = []
    for n in notes:
        rival = rivals.get((n.side, n.name))
        if rival is not None:
            n = KeyNote(
                n.name, n.side, n.shape, UnmatchedReason.AMBIGUOUS,
                f"it and {rival} have the same shape and place; nothing says which of them "
                "is split or merged",
                n.best_candidate, n.best_breakdown,
            )  # fmt: skip
        out.append(n)
    return kept, out


def _lookalike_key(
    side: str, name: str, shape: tuple[int, ...]
) -> tuple[str, str, str, tuple[int, ...]]:
    """Key → (side, grandparent module path, local name, shape): tensors of sibling modules
    that agree on all of it are interchangeable as far as structure can tell."""
    module, _, local = name.rpartition(".")
    return side, module.rpartition(".")[0], local, tuple(shape)


def _open(note: KeyNote) -> bool:
    return note.reason is not UnmatchedReason.BUFFER_EXCLUDED


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a block that allocates many small objects.

    The matching stages create no reference cycles; collections triggered by their
    allocations would rescan every live object (a large model's modules included) again
    and again.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    # Objects that exist now (the user's models) are set aside, so a collection that our
    # allocations trigger later does not rescan them.
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def map_inventories(
    source: Inventory,
    target: Inventory,
    *,
    threshold: float = 0.6,
    strategy: str = "best_match",
    weights: Mapping[str, float] | None = None,
    shape_tolerance: float = 0.0,
    incompatible_pairs: Sequence[Sequence[str]] | None = None,
    buffer_matching_mode: str = "exclude",
) -> MappingResult:
    """Source and target Inventory + settings → MappingResult (score, then assign)."""
    check_strategy(strategy)
    check_threshold(threshold)
    cands = score_inventories(
        source,
        target,
        weights=weights,
        shape_tolerance=shape_tolerance,
        incompatible_pairs=incompatible_pairs,
        buffer_matching_mode=buffer_matching_mode,
    )
    with paused_gc():
        return assign_candidates(cands, threshold=threshold, strategy=strategy)
