"""Split and merge proposals for the keys the cascade left over (fused against separate
attention, stacked against per-expert tensors), minus those a look-alike makes ambiguous."""

from __future__ import annotations

import logging

from weightmapper.engine.candidates import KeyNote
from weightmapper.engine.multi import propose_multi
from weightmapper.inventory import Inventory
from weightmapper.result import MultiPair, UnmatchedReason
from weightmapper.roles import SideRoles

log = logging.getLogger(__name__)


def propose_leftovers(
    source: Inventory,
    target: Inventory,
    notes: list[KeyNote],
    roles: tuple[SideRoles, SideRoles] | None = None,
) -> list[MultiPair]:
    """Both inventories + notes (+ both sides' roles) → split/merge proposals among the keys
    left unmatched (buffers aside)."""
    src = {n.name: source.tensors[n.name] for n in notes if n.side == "source" and _open(n)}
    tgt = {n.name: target.tensors[n.name] for n in notes if n.side == "target" and _open(n)}
    if not src or not tgt:
        return []
    # Keep each side's own order: propose_multi reads iteration order as registration order.
    src = {k: v for k, v in source.tensors.items() if k in src}
    tgt = {k: v for k, v in target.tensors.items() if k in tgt}
    return list(
        propose_multi(
            src,
            tgt,
            source_types=source.module_types,
            target_types=target.module_types,
            source_roles=roles[0].roles if roles else None,
            target_roles=roles[1].roles if roles else None,
        )
    )


def drop_ambiguous(
    multi: list[MultiPair], notes: list[KeyNote]
) -> tuple[list[MultiPair], list[KeyNote]]:
    """Split/merge proposals + notes → those whose single side has no open look-alike.

    A split takes one source tensor apart; when a sibling module (same parent) holds another
    unmatched tensor of the same shape and local name that no proposal uses (``k_proj`` and
    ``v_proj`` both (C, C) against grouped-query ``wk``/``wv``), nothing says which of the
    two is the one to split, so the proposal is dropped and both stay unmatched as
    ``ambiguous``. Merges are checked the same way on the target side.
    """
    kept, rivals = ambiguous_rivals(multi, notes)
    return kept, mark_ambiguous(notes, rivals)


def ambiguous_rivals(
    multi: list[MultiPair], notes: list[KeyNote]
) -> tuple[list[MultiPair], dict[tuple[str, str], str]]:
    """Split/merge proposals + notes → (the proposals kept, (side, key) → its look-alike for
    the keys of those dropped), see :func:`drop_ambiguous`. Reads only names, shapes and
    whether a note is open, never a note's best candidate."""
    if not multi:
        return multi, {}
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
    return kept, rivals


def mark_ambiguous(notes: list[KeyNote], rivals: dict[tuple[str, str], str]) -> list[KeyNote]:
    """Notes + (side, key) → look-alike (:func:`ambiguous_rivals`) → the notes of those keys
    rewritten as ``ambiguous`` (their best candidate kept)."""
    if not rivals:
        return notes
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
    return out


def _lookalike_key(
    side: str, name: str, shape: tuple[int, ...]
) -> tuple[str, str, str, tuple[int, ...]]:
    """Key → (side, grandparent module path, local name, shape): tensors of sibling modules
    that agree on all of it are interchangeable as far as structure can tell."""
    module, _, local = name.rpartition(".")
    return side, module.rpartition(".")[0], local, tuple(shape)


def _open(note: KeyNote) -> bool:
    return note.reason is not UnmatchedReason.BUFFER_EXCLUDED
