"""Notes scored after split/merge proposals: the same notes as scoring every leftover first."""

from __future__ import annotations

import torch
from torch import nn

from weightmapper.engine import score_inventories
from weightmapper.engine.cascade import paused_gc, run_cascade
from weightmapper.engine.collect import collect_notes, collect_pairs
from weightmapper.engine.side import prepare_side
from weightmapper.engine.splits import drop_ambiguous, propose_leftovers
from weightmapper.engine.state import MatchState
from weightmapper.inventory import Inventory
from weightmapper.roles import side_roles
from weightmapper.settings import ScoreSettings

D = 8


def _llama(layers: int, *, fused: bool, extra: bool = False) -> nn.Module:
    """Layer count → a tiny Llama-like stack; ``extra`` adds a lone (D, D) projection."""

    def layer() -> nn.Module:
        m = nn.Module()
        m.attn = nn.Module()
        if fused:
            m.attn.qkv_proj = nn.Linear(D, 3 * D, bias=False)
        else:
            for n in ("q_proj", "k_proj", "v_proj"):
                setattr(m.attn, n, nn.Linear(D, D, bias=False))
        m.attn.o_proj = nn.Linear(D, D, bias=False)
        m.norm = nn.LayerNorm(D)
        return m

    root = nn.Module()
    root.layers = nn.ModuleList(layer() for _ in range(layers))
    if extra:
        root.adapter = nn.Linear(D, D, bias=False)
    return root


def _eager_notes(source: Inventory, target: Inventory) -> list:
    """Every leftover scored first, then proposals made and the notes of used keys dropped
    (how notes were made before they were deferred)."""
    roles = (
        side_roles(source.tensors, source.roles, head_dims=source.head_dims),
        side_roles(target.tensors, target.roles, head_dims=target.head_dims),
    )
    with paused_gc():
        st = MatchState(prepare_side(source), prepare_side(target), ScoreSettings(), roles)
        run_cascade(st)
        _, tied, _ = collect_pairs(st)
        notes = collect_notes(st, tied)
    multi, notes = drop_ambiguous(propose_leftovers(source, target, notes, roles), notes)
    used = {("source", k) for m in multi for k in m.sources}
    used |= {("target", k) for m in multi for k in m.targets}
    return [n for n in notes if (n.side, n.name) not in used]


def test_deferred_notes_equal_eager_notes_and_splits_are_kept() -> None:
    with torch.device("meta"):
        src = _llama(4, fused=False, extra=True)
        tgt = _llama(4, fused=True)
    source, target = Inventory.from_module(src), Inventory.from_module(tgt)
    cands = score_inventories(source, target)
    assert len(cands.multi) == 4  # q/k/v of every layer merged
    eager = _eager_notes(source, target)
    assert [n.to_dict() for n in cands.notes] == [n.to_dict() for n in eager]
    # the lone projection still gets its scored note, with a best candidate
    (lone,) = [n for n in cands.notes if n.name == "adapter.weight"]
    assert lone.best_candidate is not None and lone.best_breakdown


def test_unscored_notes_leave_out_skipped_keys_and_carry_no_candidate() -> None:
    with torch.device("meta"):
        source = Inventory.from_module(_llama(2, fused=False))
        target = Inventory.from_module(_llama(2, fused=True))
    with paused_gc():
        st = MatchState(prepare_side(source), prepare_side(target), ScoreSettings())
        run_cascade(st)
        _, tied, _ = collect_pairs(st)
        light = collect_notes(st, tied, score=False)
        skip = {("source", "layers.0.attn.q_proj.weight")}
        fewer = collect_notes(st, tied, skip=skip)
    assert {n.name for n in light} - {n.name for n in fewer} == {"layers.0.attn.q_proj.weight"}
    assert all(n.best_candidate is None for n in light)
