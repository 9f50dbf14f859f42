"""Roles of one side's tensors, from dataflow where a forward pass was made, else from names.

The engine asks two questions of roles: may these two tensors pair at all (a query
projection is never a key projection, a decoder tensor never an encoder one), and is their
layout the same (RoPE's row order, a fused q/k/v's rows). :func:`side_roles` answers for one
side; :func:`roles_conflict` and :func:`layout_transform` compare two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from weightmapper.conventions import ConventionSet, Layout, load_conventions
from weightmapper.dataflow import FlowRole
from weightmapper.rope_style import ROTATING
from weightmapper.transforms import TransformSpec

EQUIVALENT: tuple[frozenset[str], ...] = (
    frozenset({"head.lm", "head.bias"}),  # an MLM decoder's bias is often tied to a lone bias
    frozenset({"head.cls", "head.proj"}),  # a final projection, named either way
    frozenset({"norm.pre", "embed.norm", "norm.attn"}),  # the norm right after the embeddings
    # (in a post-norm encoder it is also the first block's attention input)
    frozenset({"embed.positions", "embed.types"}),  # learned tables added to the tokens: an
    # index that is not the input ids tells too little apart; their shapes do
)
"""Role pairs that are one role written two ways (beside ``mlp.X`` ↔ ``moe.X``)."""


@dataclass(frozen=True)
class SideRoles:
    """What is known of one side's roles and layouts."""

    roles: dict[str, str] = field(default_factory=dict)
    """Key → role."""
    stacks: dict[str, str] = field(default_factory=dict)
    """Key → stack (``encoder``, ``decoder``, …), where a convention says so."""
    head_dim: dict[str, int] = field(default_factory=dict)
    """Attention projection key → size of one head (dataflow only)."""
    rope: dict[str, str] = field(default_factory=dict)
    """Query/key projection key → ``rotate_half``, ``interleaved`` or ``none``."""
    rope_read: dict[str, str] = field(default_factory=dict)
    """Query/key projection key → what its forward pass showed of RoPE (the style is then read,
    not assumed from a name)."""
    rope_unread: dict[str, str] = field(default_factory=dict)
    """Query/key projection key → why its forward pass could not tell RoPE's style."""
    rope_partial: dict[str, int] = field(default_factory=dict)
    """Query/key projection key → the rows of a head RoPE turns, where a forward pass showed
    that only part of the head turns (a partial rotary)."""
    layout: Layout | None = None
    """The convention's layout when one convention (or several that agree) fits."""
    source: str = ""
    """``dataflow``, ``convention <name>`` or ``conventions <a>|<b>`` (a tie) or empty."""
    named: frozenset[str] = frozenset()
    """Keys whose role a naming convention gave (a forward pass did not override it)."""

    @property
    def rope_proven(self) -> bool:
        """True when a forward pass read the RoPE style of some query/key projection."""
        return bool(self.rope_read)


def side_roles(
    keys: Iterable[str],
    flow: Mapping[str, FlowRole] | None = None,
    conventions: ConventionSet | None = None,
    head_dims: Mapping[str, int] | None = None,
) -> SideRoles:
    """Keys (+ dataflow roles, if a forward pass was made, + head sizes a module states)
    → the side's roles and layouts.

    Dataflow wins where it speaks; a naming convention fills the rest and says the layout
    the library stores (RoPE, fused rows) when no forward pass showed it.
    """
    distinct = True if isinstance(keys, Mapping) else None  # a mapping's keys never repeat
    keys = list(keys)
    conventions = conventions or load_conventions()
    named, best = conventions.roles(keys, distinct=distinct)
    roles = {k: r.role for k, r in named.items()}
    stacks = {k: r.stack for k, r in named.items() if r.stack not in ("main",)}
    layout = _agreed_layout([b.convention.layout for b in best])
    source = (
        ("convention " if len(best) == 1 else "conventions ")
        + "|".join(b.convention.name for b in best)
        if best
        else ""
    )
    rope = {
        k: layout.rope for k, r in roles.items() if layout and r in ("attn.q", "attn.k", "attn.qkv")
    }
    head_dim: dict[str, int] = dict(head_dims or {})
    read: dict[str, str] = {}
    unread: dict[str, str] = {}
    partial: dict[str, int] = {}
    flow = flow or {}
    if flow:
        source = "dataflow" + (f" + {source}" if source else "")
        for k, f in flow.items():
            roles[k] = f.role
            if f.head_dim:
                head_dim[k] = f.head_dim
            if f.rope:
                rope[k] = f.rope
                read[k] = f.rope_evidence or "read from the forward pass"
                if f.rope != "none" and f.head_dim and 0 < f.rope_rows < f.head_dim:
                    partial[k] = f.rope_rows
            elif f.rope_evidence:
                unread[k] = f.rope_evidence
    return SideRoles(
        named=frozenset(k for k in named if k not in flow),
        roles=roles,
        stacks=stacks,
        head_dim=head_dim,
        rope=rope,
        rope_read=read,
        rope_unread=unread,
        rope_partial=partial,
        layout=layout,
        source=source,
    )


def _agreed_layout(layouts: list[Layout]) -> Layout | None:
    """Tied conventions → their layout if they all agree on RoPE and q/k/v rows, else None."""
    if not layouts:
        return None
    first = layouts[0]
    if all((x.rope, x.qkv, x.gate_up) == (first.rope, first.qkv, first.gate_up) for x in layouts):
        return first
    return None


def family(role: str) -> str:
    """``moe.gate`` → ``mlp.gate``: experts play the MLP's roles."""
    return "mlp." + role[4:] if role.startswith("moe.") else role


_CONV_ROLES = ("stem.", "block.", "downsample.", "head.conv", "head.norm", "embed.patch")


def roles_conflict(a: str | None, b: str | None) -> bool:
    """Two roles (None: unknown) → True when the tensors cannot be the same tensor.

    Convolutional networks differ in where a block begins (a downsample at the end of one
    stage or the start of the next), so their conv and norm roles exclude each other only
    where no library differs: a shortcut projection is never a main-branch layer.
    """
    if not a or not b:
        return False
    fa, fb = family(a), family(b)
    if fa == fb:
        return False
    if fa.startswith(_CONV_ROLES) or fb.startswith(_CONV_ROLES):
        both_blocks = fa.startswith("block.") and fb.startswith("block.")
        return both_blocks and ("shortcut" in fa) != ("shortcut" in fb)
    return not any(fa in e and fb in e for e in EQUIVALENT) and not _fused_part(fa, fb)


def roles_same(a: str | None, b: str | None) -> bool:
    """Two roles (None: unknown) → True when both are known and name one role (``moe.up`` is
    ``mlp.up``; the norm after the embeddings is written three ways, :data:`EQUIVALENT`)."""
    if not a or not b:
        return False
    fa, fb = family(a), family(b)
    return fa == fb or any(fa in e and fb in e for e in EQUIVALENT)


def _fused_part(a: str, b: str) -> bool:
    """``attn.qkv`` ↔ ``attn.q`` (a split or merge), ``mlp.gate_up`` ↔ ``mlp.up``."""
    for whole, parts in (
        ("attn.qkv", {"attn.q", "attn.k", "attn.v", "attn.kv"}),
        ("attn.kv", {"attn.k", "attn.v"}),
        ("xattn.kv", {"xattn.k", "xattn.v"}),
        ("mlp.gate_up", {"mlp.gate", "mlp.up"}),
    ):
        if (a == whole and b in parts) or (b == whole and a in parts):
            return True
    return False


def stacks_conflict(a: str | None, b: str | None) -> bool:
    """Two stacks (None: unknown) → True for an encoder tensor against a decoder one."""
    return bool(a and b and a != b and {a, b} <= {"encoder", "decoder", "vision", "text"})


class LayoutChoice(NamedTuple):
    """The row permutation one pair needs between its two layouts, and what it rests on."""

    spec: TransformSpec | None
    """The permutation, or None when the rows stay as they are."""
    note: str = ""
    """What proved the layouts, what was assumed, or why nothing could be done."""
    assumed: bool = False
    """True when a layout came from names only (or could not be read): another layout fits
    the same names, so the pair is never a confident one."""


def layout_transform(
    role: str,
    src_key: str,
    tgt_key: str,
    src: SideRoles,
    tgt: SideRoles,
    rows: int = 0,
) -> LayoutChoice:
    """A one-to-one pair (its role, keys, both sides, the tensor's rows) → the row permutation
    its two layouts need, with a note and whether a layout was assumed. Query/key projections
    follow RoPE's layout; a fused q/k/v follows the row order of its parts
    (:data:`weightmapper.conventions.LAYOUT_CHOICES`).

    The note says what proved a permutation when both forward passes read their styles, what
    was assumed when a style comes from a name only, and why nothing could be done when the
    head size is unknown or a forward pass could not read a style.
    """
    if role == "attn.qkv":
        return _qkv_rows(src_key, tgt_key, src, tgt, rows)
    if role not in ("attn.q", "attn.k"):
        return LayoutChoice(None)
    a, b = src.rope.get(src_key), tgt.rope.get(tgt_key)
    if not a or not b:
        return _unread(a, b, src.rope_unread.get(src_key), tgt.rope_unread.get(tgt_key))
    why_a, why_b = src.rope_unread.get(src_key), tgt.rope_unread.get(tgt_key)
    if a == b:
        if why_a or why_b:  # a module was given, its pass showed nothing: the names decided
            side, why = ("source", why_a) if why_a else ("target", why_b)
            return LayoutChoice(
                None,
                f"layout assumed from names: RoPE {a} on both sides; the {side}'s forward pass "
                f"did not show it ({why})",
                assumed=True,
            )
        return LayoutChoice(None)
    if "none" in (a, b):
        return LayoutChoice(None, f"RoPE layouts differ ({a} → {b}); the rows are kept as they are")
    turned = src.rope_partial.get(src_key) or tgt.rope_partial.get(tgt_key)
    if turned:
        return LayoutChoice(
            None,
            f"RoPE layouts differ ({a} → {b}) on a partial rotary ({turned} rows of a head "
            "turn); the rows are kept as they are",
        )
    head = tgt.head_dim.get(tgt_key) or src.head_dim.get(src_key)
    if not head:
        return LayoutChoice(
            None,
            f"RoPE layouts differ ({a} → {b}) but the head size is unknown; give the target "
            "as a module with an input so it can be read",
        )
    spec = TransformSpec("rope_permute", {"head_dim": int(head), "to": b})
    seen_a, seen_b = src.rope_read.get(src_key), tgt.rope_read.get(tgt_key)
    if seen_a and seen_b:
        return LayoutChoice(
            spec,
            f"RoPE {a} → {b}, read from both forward passes (source: {seen_a}; target: {seen_b})",
        )
    if why_a or why_b:  # a module was given, but its forward pass did not show the style
        side, why = ("source", why_a) if why_a else ("target", why_b)
        tail = f"the {side}'s forward pass did not show it ({why})"
    elif seen_a:
        tail = "give the target module and an input to prove it"
    else:
        tail = "give the source module to prove it"
    return LayoutChoice(spec, f"layout assumed from names: RoPE {a} → {b}; {tail}", True)


def _unread(a: str | None, b: str | None, why_a: str | None, why_b: str | None) -> LayoutChoice:
    """A q/k pair whose style one side did not give → nothing, or a note saying which forward
    pass could not read it when the other side's rows turn (the rows are kept as they are)."""
    if a in ROTATING and not b and why_b:
        return LayoutChoice(None, f"target's {why_b}; source RoPE {a}, rows kept as they are", True)
    if b in ROTATING and not a and why_a:
        return LayoutChoice(None, f"source's {why_a}; target RoPE {b}, rows kept as they are", True)
    return LayoutChoice(None)


def _qkv_rows(
    src_key: str, tgt_key: str, src: SideRoles, tgt: SideRoles, rows: int
) -> LayoutChoice:
    """A fused q/k/v pair → the permutation between its row orders (per head ↔ [q; k; v])."""
    a = src.layout.qkv if src.layout else None
    b = tgt.layout.qkv if tgt.layout else None
    if not a or not b or a == b or "separate" in (a, b):
        return LayoutChoice(None)
    head = tgt.head_dim.get(tgt_key) or src.head_dim.get(src_key)
    if {a, b} == {"per_head", "concat"} and head and rows and rows % (3 * head) == 0:
        to = "concat" if b == "concat" else "interleaved"
        spec = TransformSpec(
            "interleave_heads", {"heads": rows // (3 * head), "parts": 3, "to": to}
        )
        return LayoutChoice(
            spec,
            f"layout assumed from names: fused q/k/v rows {a} → {b}, from the libraries' naming "
            "conventions; give both modules and an input to prove it",
            assumed=True,
        )
    return LayoutChoice(
        None,
        f"fused q/k/v rows are {a} in the source and {b} in the target; the head sizes are "
        "not known, so the rows are kept as they are: give both modules and an input to prove it",
    )
