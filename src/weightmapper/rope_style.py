"""RoPE's row order read by running the recorded forward pass again: a stretch of calls from a
query/key projection to the attention + the head size → ``rotate_half``, ``interleaved``,
``none`` or None (no evidence), and what showed it.

Libraries write RoPE in many ways: transformers' ``rotate_half`` (``cat((-x2, x1))``),
litgpt's halves, Meta's complex multiply (``view_as_complex``), torchtune's and GPT-J's pairs
stacked on a last axis of 2, a pair-to-halves permutation followed by a rotate-half.
Reading the code's spelling would need one rule per spelling; what they all share is
*which rows of a head turn together*. So the stretch of calls between the projection and
the attention is run again (outside the recorder, on the recorded constants: angle tables,
positions) with the projection's output replaced by probes, one per row of the first head:
a probe is 1 on that row at every position and 0 elsewhere. RoPE is linear in its input,
so the entries of the attention's operand that move (against an all-zero probe) are those
the row reaches, and two rows *turn together* when they reach a common entry:

- row i with row i + n/2 of the n rows that turn: ``rotate_half``;
- row 2i with row 2i + 1: ``interleaved``;
- n is the head size, or fewer when only the first rows of a head turn and the rest pass
  through (a partial rotary: GPT-NeoX, Phi); the reading says how many;
- no two rows: ``none`` when the stretch holds only views, casts, scaling and norms (else
  the input may simply not turn anything: position 0 alone, say, and there is no evidence).

Any other pairing, whole-row mixing (a norm over the head), a probe that reaches nothing, a
call that cannot run again or writes the recorder cannot see (item assignment) give no
evidence, with the reason: never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch.utils._pytree import tree_flatten, tree_map

ROTATING = ("rotate_half", "interleaved")

_PLAIN = frozenset(
    {"t", "transpose", "view", "reshape", "permute", "unsqueeze", "squeeze", "expand",
     "contiguous", "to", "float", "half", "bfloat16", "type_as", "flatten", "unflatten",
     "clone", "detach", "repeat", "repeat_interleave", "movedim", "swapaxes", "view_as",
     "reshape_as", "type", "mul", "__mul__", "__rmul__", "div", "__truediv__", "__getitem__",
     "rms_norm", "dropout"}
)  # fmt: skip
"""Calls a stretch without RoPE is made of: nothing among them adds two rows, so when none
mix at this input, none would at any other either. Any other call (an add, a ``cat``, a
complex multiply) may turn rows at other positions than this input's."""
_UNREPLAYABLE = frozenset(
    {"empty", "empty_like", "new_empty", "rand", "rand_like", "randn", "randn_like",
     "bernoulli", "normal", "uniform_", "normal_"}
)  # fmt: skip
"""Calls whose values are not a function of their inputs: a stretch holding one is not run."""


class CallLike(Protocol):
    """One recorded call: its name, the function and arguments, the ids of its outputs."""

    name: str
    func: Any
    args: Any
    kwargs: Any
    outputs: list[int]


class RopeReading(NamedTuple):
    """What a forward pass shows of RoPE for one query/key projection."""

    style: str | None
    """``rotate_half``, ``interleaved``, ``none``, or None (no evidence)."""
    evidence: str
    """What showed the style, or why it could not be read (``RoPE style not read: …``)."""
    rows: int = 0
    """Rows of a head RoPE turns: the head size, fewer for a partial rotary (the first
    ``rows`` turn, the rest pass through), 0 when no style was read."""


def _unread(why: str) -> RopeReading:
    return RopeReading(None, f"RoPE style not read: {why}")


def read_rope_style(
    chain: Sequence[CallLike], start: torch.Tensor, end: int, head_dim: int
) -> RopeReading:
    """Calls from the projection's output ``start`` to the attention's operand (id ``end``), in
    the order they ran, + the head size → the style, what showed it (or why not) and how
    many rows of a head turn."""
    d = int(head_dim)
    rows = int(start.shape[-1]) if start.dim() else 0
    if start.device.type == "meta" or not start.is_floating_point():
        return _unread("the forward pass ran without values")
    if d < 2 or rows < d:
        return _unread(f"a head of {d} rows in a projection of {rows}")
    bad = next((c.name for c in chain if c.func is None or c.name in _UNREPLAYABLE), None)
    if bad is not None:
        return _unread(f"{bad} between the projection and the attention")
    names = {c.name for c in chain}
    try:
        with torch.no_grad():
            base = _run(chain, start, torch.zeros_like(start), end)
            reach = []
            for r in range(d):
                probe = torch.zeros_like(start)
                probe[..., r] = 1
                out = _run(chain, start, probe, end)
                reach.append((out != base).reshape(-1))
    except _Unreplayable as e:
        return _unread(str(e))
    except Exception as e:  # a user model's call that does not run again: no evidence
        return _unread(f"running the attention's inputs again failed ({e})")
    if not all(bool(m.any()) for m in reach):
        return _unread("some rows of the first head never reach the attention")
    return _style(_partners(reach), d, names)


def _partners(reach: list[torch.Tensor]) -> list[set[int]]:
    """Per row, the entries its probe moves → per row, the other rows moving a common entry.

    Only the moved entries are kept (a few per position), so the table stays small however
    large the attention's operand is.
    """
    hit = [torch.nonzero(m).flatten() for m in reach]
    entries = torch.cat(hit)
    rows = torch.cat([torch.full_like(h, r) for r, h in enumerate(hit)])
    _, where = torch.unique(entries, return_inverse=True)
    table = torch.zeros(int(where.max()) + 1, len(reach), dtype=torch.float32)
    table[where, rows] = 1.0
    together = (table.T @ table) > 0
    together.fill_diagonal_(False)
    return [set(torch.nonzero(together[r]).flatten().tolist()) for r in range(len(reach))]


def _style(partners: list[set[int]], d: int, names: set[str]) -> RopeReading:
    """Each row's partners in its head + the head size + the calls' names → the reading.

    Rows that turn may be a prefix of the head (a partial rotary: GPT-NeoX, Phi); the pairing
    is then read within that prefix.
    """
    if not any(partners):
        if names <= _PLAIN:
            return RopeReading("none", "no two rows of a head mix on the way to the attention", d)
        return _unread(
            "no two rows of a head turn together at this input (at position 0 RoPE turns "
            "nothing; give an input of two or more positions)"
        )
    last = max(r for r, p in enumerate(partners) if p) + 1
    n = min(d, last + last % 2)
    turned = partners[:n]
    half = _fits(turned, lambda r: (r + n // 2) % n)
    pairs = _fits(turned, lambda r: r ^ 1)
    where = "of each head" if n == d else f"of the first {n} rows of each head"
    rest = "" if n == d else f", the other {d - n} pass through"
    if half and pairs:  # two rows turn: both layouts are one, so either name is right
        return RopeReading("rotate_half", f"rows 0 and 1 of each head turn together{rest}", n)
    if half:
        return RopeReading("rotate_half", f"rows i and i+{n // 2} {where} turn together{rest}", n)
    if pairs:
        return RopeReading("interleaved", f"rows 2i and 2i+1 {where} turn together{rest}", n)
    mixed = sum(1 for p in partners if p)
    return _unread(
        f"{mixed} of {d} rows of a head turn with others, neither in halves nor in "
        "neighbouring pairs"
    )


def _fits(partners: list[set[int]], partner: Callable[[int], int]) -> bool:
    """Each row's partners + a pairing → True when every row turns with its partner only.

    A pair whose angle is 0 at every position of the input (a zero frequency) turns with
    nothing and fits either pairing, as long as its partner does not turn either; such rows
    may be a quarter of the head at most, so a partial rotary (most rows passed through as
    they are) is never read as a whole-head layout.
    """
    still = [r for r, p in enumerate(partners) if not p]
    if len(still) > len(partners) // 4 or any(partners[partner(r)] for r in still):
        return False
    return all(not p or p == {partner(r)} for r, p in enumerate(partners))


class _Unreplayable(Exception):
    """A call that would write into a tensor the probe does not own."""


_IN_PLACE_DUNDER = re.compile(r"__i(add|sub|mul|truediv|floordiv|mod|pow|and|or|xor|matmul)__")


def _in_place(name: str) -> bool:
    """A call's name → True when it writes into its first argument (``mul_``, ``__iadd__``)."""
    return (name.endswith("_") and not name.endswith("__")) or bool(
        _IN_PLACE_DUNDER.fullmatch(name)
    )


def _run(
    chain: Sequence[CallLike], start: torch.Tensor, probe: torch.Tensor, end: int
) -> torch.Tensor:
    """The chain run again with ``probe`` in place of ``start`` → the value at id ``end``."""
    values: dict[int, torch.Tensor] = {id(start): probe}

    def swap(a: Any) -> Any:
        return values.get(id(a), a) if isinstance(a, torch.Tensor) else a

    for c in chain:
        args, kwargs = tree_map(swap, (c.args, c.kwargs or {}))
        if c.kwargs and "out" in c.kwargs:
            raise _Unreplayable(f"{c.name} writes into a tensor given as out=")
        if _in_place(c.name):
            first = next((a for a in tree_flatten(c.args)[0] if isinstance(a, torch.Tensor)), None)
            if first is None or id(first) not in values:
                raise _Unreplayable(f"{c.name} writes into a tensor of the model")
        out = c.func(*args, **kwargs)
        flat = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        if len(flat) != len(c.outputs):
            raise _Unreplayable(f"{c.name} gave other outputs when run again")
        values.update(zip(c.outputs, flat, strict=True))
    if end == id(start):
        return probe
    if end not in values:
        raise _Unreplayable("the attention's operand is not computed from the projection")
    return values[end]
