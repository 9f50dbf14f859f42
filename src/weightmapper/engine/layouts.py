"""Layouts the cascade's proposals need beyond their shapes (run after the cascade):

- square linear weights of a bare checkpoint follow the evidence of the non-square ones;
- query and key projections whose two libraries order RoPE's rows differently get the row
  permutation (:func:`weightmapper.roles.layout_transform`), and the pair says what was
  assumed when a layout comes from names only."""

from __future__ import annotations

from dataclasses import replace

from weightmapper.engine.candidates import Proposal
from weightmapper.inventory import Inventory, split_key
from weightmapper.roles import SideRoles, layout_transform
from weightmapper.transforms import TransformSpec, chain

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


def settle_role_layouts(
    proposals: list[Proposal], roles: tuple[SideRoles, SideRoles]
) -> list[Proposal]:
    """Proposals + both sides' roles → proposals whose q/k rows follow the target's RoPE layout.

    A pair gets the permutation only when both sides give it one role. What proved it (both
    forward passes) is written on the pair; so is what was assumed (a layout read from names,
    or one a forward pass could not show), and the pair is then ``ambiguous``: the other
    layout would fit the names just as well. A pair whose layouts differ with no permutation
    to offer (a head size unknown) is ``low``.
    """
    src, tgt = roles
    if not src.roles or not tgt.roles:
        return list(proposals)  # a side without roles: no pair has one role on both sides
    out = []
    for p in proposals:
        role = src.roles.get(p.source)
        if role and role == tgt.roles.get(p.target):
            rows = p.source_shape[0] if p.source_shape else 0
            choice = layout_transform(role, p.source, p.target, src, tgt, rows)
            transform = p.transform
            if choice.spec is not None:
                transform = choice.spec if transform.is_identity else chain(transform, choice.spec)
            confidence = p.confidence
            if choice.assumed and confidence == "high":
                confidence = "ambiguous"
            elif choice.spec is None and choice.note and not choice.assumed:
                confidence = "low"
            if choice.note or choice.spec is not None:
                p = replace(p, transform=transform, note=choice.note, confidence=confidence)
        out.append(p)
    return out
