"""The engine's primitives on their own: alignment, mutual best, shape relations, group carry."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import torch

from weightmapper.engine import assign, score_inventories
from weightmapper.engine.assign import _fields_of, accept, accept_many
from weightmapper.engine.candidates import Proposal, proposals_of
from weightmapper.engine.primitives import align, increasing, mutual_best, signatures_fit
from weightmapper.engine.shapes import shape_bucket, shape_relation
from weightmapper.engine.side import prepare_side
from weightmapper.engine.signals import _agreeing
from weightmapper.engine.state import MatchState
from weightmapper.inventory import Inventory
from weightmapper.settings import AssignSettings, ScoreSettings
from weightmapper.transforms import IDENTITY

NO = -np.inf


def test_align_is_monotone_and_skips_a_row_without_shifting_the_rest() -> None:
    # Source rows 0, 1, 2; row 1 (an inserted block) has no partner; 0 → 0 and 2 → 1.
    score = np.array([[1.0, NO], [NO, NO], [NO, 1.0]])
    assert align(score) == [(0, 0), (2, 1)]
    # Crossing pairs cannot both be taken: the better total wins, order is kept.
    crossing = np.array([[0.2, 1.0], [1.0, 0.2]])
    pairs = align(crossing)
    assert len(pairs) == 1 and pairs[0] in {(0, 1), (1, 0)}
    # Equal totals: deterministic, the earliest target positions.
    assert align(np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])) == [(0, 0), (1, 1)]
    assert align(np.zeros((0, 3))) == []


def test_mutual_best_needs_both_directions_a_floor_and_a_margin() -> None:
    sim = np.array(
        [
            [0.9, 0.1, 0.0],  # clear pair with column 0
            [0.6, 0.55, 0.0],  # best is column 0, which prefers row 0: no pair
            [0.0, 0.2, 0.4],  # mutual best with column 2, but below the floor
        ]
    )
    assert mutual_best(sim, margin=0.15, floor=0.5) == [(0, 0)]
    close = np.array([[0.8, 0.7], [0.1, 0.2]])
    assert mutual_best(close, margin=0.15, floor=0.5) == []  # 0.8 vs 0.7: margin too small
    assert mutual_best(close, margin=0.05, floor=0.5) == [(0, 0)]


def test_shape_relation_transforms_scores_and_confidence() -> None:
    same = shape_relation((4, 3), (4, 3))
    assert same is not None and same.transform == IDENTITY and same.score == 1.0
    t = shape_relation((3, 4), (4, 3))
    assert t is not None and t.transform.name == "transpose" and t.score == 0.85
    # Types that explain the transpose (Conv1D stores (in, out)) give full marks, squares too.
    explained = shape_relation((3, 4), (4, 3), "Conv1D", "Linear")
    assert explained is not None and explained.score == 1.0
    square = shape_relation((4, 4), (4, 4), "Conv1D", "Linear")
    assert square is not None and square.transform.name == "transpose"
    misleading = shape_relation((3, 4), (3, 4), "Conv1D", "Linear")
    assert misleading is not None and misleading.confidence == "low"
    keras = shape_relation((3, 3, 8, 16), (16, 8, 3, 3))
    assert keras is not None and keras.transform.name == "permute"
    assert keras.transform.params["dims"] == [3, 2, 0, 1]
    scale = shape_relation((8, 1, 1), (8,))
    assert scale is not None and scale.transform.name == "reshape"
    assert shape_relation((10, 8), (11, 8)) is None
    near = shape_relation((10, 8), (11, 8), tolerance=0.2)
    assert near is not None and near.confidence == "low" and 0.9 < near.score < 1.0
    assert shape_bucket((8, 1, 1)) == shape_bucket((8,))
    assert shape_bucket((3, 4)) == shape_bucket((4, 3))


def _proposal(source: str, target: str, *, group: bool = True, follows: str | None = None,
              stage: str = "template", confidence: str = "high") -> Proposal:  # fmt: skip
    return Proposal(source, target, {}, IDENTITY, stage, group, confidence, (2,), (2,), follows)


def test_group_carry_accepts_a_weak_member_with_its_group_at_the_groups_score() -> None:
    w, b = _proposal("l.weight", "m.weight"), _proposal("l.bias", "m.bias")
    mean = _proposal("bn.running_mean", "n.running_mean", follows="l.weight", stage="buffer")
    lone = _proposal("k.bias", "z.bias", group=False)
    scored = {"l.weight": (w, 0.9), "l.bias": (b, 0.5), "bn.running_mean": (mean, 0.2),
              "k.bias": (lone, 0.5)}  # fmt: skip
    accepted, rejected = accept(scored, 0.6, conservative=False)
    assert accepted["l.weight"][1] == 0.9
    assert accepted["l.bias"][1] == 0.9  # carried, and reports the score it was accepted at
    assert accepted["bn.running_mean"][1] == 0.9  # a buffer follows its lead
    assert rejected == {"k.bias": (lone, 0.5)}  # no group to carry it
    # When the group's best misses the bar, nothing is carried and the follower goes too.
    low = {**scored, "l.weight": (w, 0.55)}
    accepted, rejected = accept(low, 0.6, conservative=False)
    assert set(accepted) == set()
    assert set(rejected) == {"l.weight", "l.bias", "bn.running_mean", "k.bias"}
    # Conservative: a low-confidence member stays out even when its group carries others.
    guess = _proposal("l.bias", "m.bias", confidence="low")
    accepted, rejected = accept({**scored, "l.bias": (guess, 0.95)}, 0.6, conservative=True)
    assert "l.bias" in rejected and "l.weight" in accepted


def test_fields_read_in_one_pass_are_each_proposals_own_and_accept_the_same() -> None:
    proposals = [
        _proposal("l.weight", "m.weight"),
        _proposal("l.bias", "m.bias", confidence="low"),
        _proposal("bn.running_mean", "n.running_mean", follows="l.weight", stage="buffer"),
        _proposal("k.bias", "z.bias", group=False),
    ]
    fields = _fields_of(proposals)
    for name, values in fields.items():
        assert list(values) == [getattr(p, name) for p in proposals]
    assert all(len(v) == 0 for v in _fields_of([]).values())
    scores = np.array([0.9, 0.5, 0.2, 0.5])
    labels = [p.confidence for p in proposals]
    for conservative in (False, True):
        read = accept_many(proposals, scores, labels, 0.6, conservative=conservative, fields=fields)
        assert read == accept_many(proposals, scores, labels, 0.6, conservative=conservative)


def test_proposals_made_in_bulk_equal_proposals_made_one_by_one() -> None:
    rows = [
        ("l.weight", "m.weight", {"name": 1.0}, IDENTITY, "exact", True, "high", (2, 2), (2, 2),
         None, ""),
        ("bn.running_mean", "n.running_mean", {}, IDENTITY, "buffer", False, "low", (2,), (2,),
         "l.weight", "a note"),
    ]  # fmt: skip
    bulk = proposals_of(rows)
    assert bulk == [Proposal(*row) for row in rows]
    assert [p.to_dict() for p in bulk] == [Proposal(*row).to_dict() for row in rows]
    assert copy.deepcopy(bulk) == bulk and bulk[1].relabelled({}, "high").confidence == "high"
    # each proposal holds its fields in the dataclass's order, as one made by __init__ does
    assert [list(vars(p)) for p in bulk] == [list(vars(Proposal(*row))) for row in rows]
    assert list(vars(bulk[0])) == list(Proposal.__dataclass_fields__)


def test_increasing_and_signature_fit() -> None:
    assert increasing([(0, 0), (1, 5), (2, 1), (3, 2)]) == [(0, 0), (2, 1), (3, 2)]
    assert increasing([]) == []
    named = (("bias", (4,)), ("weight", (4, 4)))
    unnamed = (("*", (4,)), ("*", (4, 4)))
    assert signatures_fit(named, unnamed)
    assert not signatures_fit(named, (("bias", (4,)), ("bias", (4, 4))))
    assert not signatures_fit(named, (("*", (5,)), ("*", (4, 4))))


def test_agreeing_orders_keep_what_the_general_search_keeps() -> None:
    # Pairs whose two orders agree (several keys per position) take a shortcut; it must
    # keep exactly the pairs the longest-increasing search keeps, and disagreement still
    # goes through that search.
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = np.sort(rng.integers(0, 8, 30)).astype(np.float64)
        y = x * 0.5 + rng.integers(0, 2, 30) * 0.01 * (x > 3)
        rank_y = np.unique(y, return_inverse=True)[1]
        order = np.lexsort((rank_y, x))
        general = [i for i, _ in increasing([(int(i), int(rank_y[i])) for i in order])]
        assert _agreeing(x, y).tolist() == general
    assert _agreeing(np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 1.0])).tolist() == [0, 2]


def test_scoring_never_changes_its_inputs() -> None:
    src = Inventory.from_state_dict(
        {"module.enc.0.w": torch.zeros(4, 4), "module.enc.1.w": torch.zeros(4, 4),
         "module.head.w": torch.zeros(2, 4), "module.head.b": torch.zeros(2)}
    )  # fmt: skip
    tgt = Inventory.from_state_dict(
        {"blocks.0.weight": torch.zeros(4, 4), "blocks.1.weight": torch.zeros(4, 4),
         "fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(2)}
    )  # fmt: skip
    before = copy.deepcopy((src, tgt))
    score_inventories(src, tgt, ScoreSettings(shape_tolerance=0.1))
    assert (src.tensors, src.groups, tgt.tensors, tgt.groups) == (
        before[0].tensors, before[0].groups, before[1].tensors, before[1].groups,
    )  # fmt: skip
    side = prepare_side(src)
    tokens, buckets = list(side.tokens), list(side.bucket)
    st = MatchState(side, prepare_side(tgt), ScoreSettings(shape_tolerance=0.1))
    assert side.tokens == tokens and side.bucket == buckets  # the state works on copies
    assert st.s.bucket != buckets  # with the tolerance applied there


def test_assignment_leaves_its_candidates_as_they_were_and_its_pairs_pickle() -> None:
    src = Inventory.from_state_dict(
        {"enc.0.w": torch.zeros(4, 4), "enc.1.w": torch.zeros(4, 4), "head.b": torch.zeros(2)}
    )
    tgt = Inventory.from_state_dict(
        {"blocks.0.w": torch.zeros(4, 4), "blocks.1.w": torch.zeros(4, 4), "fc.b": torch.zeros(2)}
    )
    cands = score_inventories(src, tgt)
    before = cands.to_dict()
    low, high = assign(cands, AssignSettings(threshold=0.0)), assign(cands, AssignSettings())
    assert dict(low) == {"enc.0.w": "blocks.0.w", "enc.1.w": "blocks.1.w", "head.b": "fc.b"}
    assert all("raw" in p.breakdown for p in low.pairs)
    assert cands.to_dict() == before  # no raw score written into the candidates
    assert pickle.loads(pickle.dumps(high)).to_json() == high.to_json()
    assert set(high) | {u.name for u in high.unmatched_source} == set(low)


def test_a_square_kernel_is_transposed_by_its_name() -> None:
    src = Inventory.from_state_dict(
        {"dense.kernel": torch.zeros(4, 4), "dense.bias": torch.zeros(4), "out.w": torch.zeros(3)}
    )
    tgt = Inventory.from_module(torch.nn.ModuleDict({"dense": torch.nn.Linear(4, 4)}))
    by_source = {p.source: p for p in score_inventories(src, tgt).proposals}
    assert by_source["dense.kernel"].transform.name == "transpose"  # Flax/Keras: (in, out)
    assert by_source["dense.bias"].transform.is_identity
