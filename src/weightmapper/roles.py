"""Roles of one side's tensors, from dataflow where a forward pass was made, else from names.

The engine asks two questions of roles: may these two tensors pair at all (a query
projection is never a key projection, a decoder tensor never an encoder one), and is their
layout the same (RoPE's row order, a fused q/k/v's rows). :func:`side_roles` answers for one
side; :func:`roles_conflict` and :func:`layout_transform` compare two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from weightmapper.conventions import ConventionSet, Layout, load_conventions
from weightmapper.dataflow import FlowRole
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
    rope_proven: bool = False
    """True when the RoPE layout was read from a forward pass, not assumed from a name."""
    layout: Layout | None = None
    """The convention's layout when one convention (or several that agree) fits."""
    source: str = ""
    """``dataflow``, ``convention <name>`` or ``conventions <a>|<b>`` (a tie) or empty."""
    named: frozenset[str] = frozenset()
    """Keys whose role a naming convention gave (a forward pass did not override it)."""


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
    keys = list(keys)
    conventions = conventions or load_conventions()
    named, best = conventions.roles(keys)
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
    flow = flow or {}
    if flow:
        source = "dataflow" + (f" + {source}" if source else "")
        for k, f in flow.items():
            roles[k] = f.role
            if f.head_dim:
                head_dim[k] = f.head_dim
            if f.rope:
                rope[k] = f.rope
    return SideRoles(
        named=frozenset(k for k in named if k not in flow),
        roles=roles,
        stacks=stacks,
        head_dim=head_dim,
        rope=rope,
        rope_proven=any(f.rope for f in flow.values()),
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


def layout_transform(
    role: str,
    src_key: str,
    tgt_key: str,
    src: SideRoles,
    tgt: SideRoles,
    rows: int = 0,
) -> tuple[TransformSpec | None, str]:
    """A one-to-one pair (its role, keys, both sides, the tensor's rows) → (the row permutation
    its two layouts need, a note). Query/key projections follow RoPE's layout; a fused q/k/v
    follows the row order of its parts (:data:`weightmapper.conventions.LAYOUT_CHOICES`).

    The note is empty when both layouts are known and equal; it says what was assumed when
    one side's layout comes from a name only, and why nothing could be done when the head
    size is unknown.
    """
    if role == "attn.qkv":
        return _qkv_rows(src_key, tgt_key, src, tgt, rows)
    if role not in ("attn.q", "attn.k"):
        return None, ""
    a, b = src.rope.get(src_key), tgt.rope.get(tgt_key)
    if not a or not b or a == b or "none" in (a, b):
        if a and b and a != b and "none" in (a, b):
            return None, f"RoPE layouts differ ({a} → {b}); the rows are kept as they are"
        return None, ""
    head = tgt.head_dim.get(tgt_key) or src.head_dim.get(src_key)
    assumed = "" if (src.rope_proven and tgt.rope_proven) else (
        f"layout assumed from names: RoPE {a} → {b}; give the source module to prove it"
    )  # fmt: skip
    if not head:
        return None, (
            f"RoPE layouts differ ({a} → {b}) but the head size is unknown; give the target "
            "as a module with an input so it can be read"
        )
    return TransformSpec("rope_permute", {"head_dim": int(head), "to": b}), assumed


def _qkv_rows(
    src_key: str, tgt_key: str, src: SideRoles, tgt: SideRoles, rows: int
) -> tuple[TransformSpec | None, str]:
    """A fused q/k/v pair → the permutation between its row orders (per head ↔ [q; k; v])."""
    a = src.layout.qkv if src.layout else None
    b = tgt.layout.qkv if tgt.layout else None
    if not a or not b or a == b or "separate" in (a, b):
        return None, ""
    head = tgt.head_dim.get(tgt_key) or src.head_dim.get(src_key)
    if {a, b} == {"per_head", "concat"} and head and rows and rows % (3 * head) == 0:
        to = "concat" if b == "concat" else "interleaved"
        spec = TransformSpec(
            "interleave_heads", {"heads": rows // (3 * head), "parts": 3, "to": to}
        )
        return spec, (
            f"layout assumed from names: fused q/k/v rows {a} → {b}, from the libraries' naming "
            "conventions; give both modules and an input to prove it"
        )
    return None, (
        f"fused q/k/v rows are {a} in the source and {b} in the target; the head sizes are "
        "not known, so the rows are kept as they are: give both modules and an input to prove it"
    )
