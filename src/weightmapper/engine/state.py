"""MatchState: the state of one matching run, passed explicitly to every stage of the cascade.

It holds the two prepared Sides (never changed once built), the per-key and per-group
arrays the stages look up, and what the stages have decided so far (who is matched to
whom, by which stage, with what structure score). Stages read it and record pairs with
:meth:`MatchState.pair`; nothing else writes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np

from weightmapper.engine.columns import distinct_pairs
from weightmapper.engine.families import (
    STRICT_ROLES,
    allowed_pairs,
    blocked_by_user,
    incompatible_masks,
    incompatible_token_pairs,
    type_compat,
)
from weightmapper.engine.names import TokenSpace
from weightmapper.engine.shapes import ShapeRelation, cached_relation, shape_bucket
from weightmapper.engine.side import Side, drop_tokens, side_specific_tokens
from weightmapper.roles import SideRoles, roles_conflict, roles_same, stacks_conflict
from weightmapper.settings import ScoreSettings
from weightmapper.transforms import IDENTITY

if TYPE_CHECKING:
    from weightmapper.engine.index_map import IndexMap

Record = tuple[ShapeRelation, str, bool, float, int]
"""What is recorded for a matched source key: (relation, stage, group flag, structure,
follows-source-key or -1)."""


class MatchState:
    """Two Sides + settings → matching state; the stages of :mod:`.cascade` fill it."""

    def __init__(
        self,
        src: Side,
        tgt: Side,
        settings: ScoreSettings,
        func_roles: tuple[SideRoles, SideRoles] | None = None,
    ) -> None:
        self.settings = settings
        self.order_real = not (src.inv.sorted_keys or tgt.inv.sorted_keys)
        """False when a side's keys came sorted or shuffled: positions then say nothing of
        the architecture beyond the order of numbered siblings (``Side.group_chain``,
        ``Side.group_linked``), and the stages that read order read only that."""
        self.weights = dict(settings.weights or {})
        self.tol = settings.shape_tolerance
        self.mode = settings.buffer_matching_mode
        if self.tol > 0:
            src = replace(src, bucket=_tolerant_buckets(src, self.tol))
            tgt = replace(tgt, bucket=_tolerant_buckets(tgt, self.tol))
        # --- per key and per group, fixed for the run ----------------------------------------
        self.s_stat = np.array(src.stat_buffer, bool)
        self.t_stat = np.array(tgt.stat_buffer, bool)
        self.s_scorable = ~self.s_stat if self.mode == "exclude" else np.ones(len(src), bool)
        self.t_scorable = ~self.t_stat if self.mode == "exclude" else np.ones(len(tgt), bool)
        fams, (self.s_fam, self.t_fam) = _joint_codes(src.family_codes, tgt.family_codes)
        self.fam_table = np.array(
            [[type_compat(a or None, b or None) for b in fams] for a in fams], dtype=np.float32
        )
        """Family code × family code → compatibility (0: may never pair)."""
        roles, (self.s_role, self.t_role) = _joint_codes(src.role_codes, tgt.role_codes)
        strict = np.array([r in STRICT_ROLES for r in roles], bool)
        self.s_strict_role = strict[self.s_role]
        self.t_strict_role = strict[self.t_role]
        # What each tensor does (roles.py): keys whose roles exclude each other never pair.
        s_roles, t_roles = func_roles or (SideRoles(), SideRoles())
        self.roles = (s_roles, t_roles)
        labels, (self.s_func, self.t_func) = _label_codes(
            src.keys, tgt.keys, s_roles.roles, t_roles.roles
        )
        self.func_conflict = _table(labels, roles_conflict)
        self.func_same = _table(labels, roles_same)
        """Role code × role code → True where both name one role (a ``name`` signal)."""
        self.s_named = _named(src.keys, s_roles.named)
        self.t_named = _named(tgt.keys, t_roles.named)
        """Key → True when a naming convention gave its role (name knowledge, not function)."""
        labels, (self.s_stack, self.t_stack) = _label_codes(
            src.keys, tgt.keys, s_roles.stacks, t_roles.stacks
        )
        self.stack_conflict = _table(labels, stacks_conflict)
        self.s_gfunc = _group_codes(src, self.s_func)
        self.t_gfunc = _group_codes(tgt, self.t_func)
        # Parents and component families are judged on the full names, before wrapper
        # tokens are dropped.
        s_parent = _parent_codes(src)
        t_parent = _parent_codes(tgt)
        pairs = incompatible_token_pairs(settings.incompatible_pairs)
        self.has_incompatible = bool(pairs)
        self.inc_s = incompatible_masks(src, pairs)
        self.inc_t = incompatible_masks(tgt, pairs)
        drop_s, drop_t = side_specific_tokens(src, tgt)
        self.s: Side = drop_tokens(src, drop_s)
        self.t: Side = drop_tokens(tgt, drop_t)
        self.key_space = TokenSpace(
            self.s.tokens, self.t.tokens, codes=(self.s.token_codes, self.t.token_codes)
        )
        self.s_index = self.s.group_index_columns
        self.t_index = self.t.group_index_columns
        """Each side's group index keys as arrays (the ``index`` agreement of many pairs)."""
        self.group_space = TokenSpace(
            self.s.group_tokens,
            self.t.group_tokens,
            codes=(self.s.group_token_codes, self.t.group_token_codes),
        )
        self.parent_space = TokenSpace([], [], codes=(s_parent, t_parent))
        self.s_parent_empty = np.array([not p for p in s_parent[1]], bool)[s_parent[0]]
        self.t_parent_empty = np.array([not p for p in t_parent[1]], bool)[t_parent[0]]
        self.s_parent_id = src.group_parent
        self.t_parent_id = tgt.group_parent
        self.bucket_counts = (_bucket_counts(self.s), _bucket_counts(self.t))
        # --- decided so far ------------------------------------------------------------------
        self.s_match = np.full(len(src), -1, dtype=np.int64)
        self.t_match = np.full(len(tgt), -1, dtype=np.int64)
        self.rec: dict[int, Record] = {}
        """Matched source key → its Record."""
        # Evidence the order and hierarchy signals read, refreshed from the matches so far
        # (see signals.update_anchors and signals.update_coherence).
        self.anchor_x = np.array([0.0, 1.0])
        self.anchor_y = np.array([0.0, 1.0])
        self.anchors_for: np.ndarray | None = None
        """The source matches the anchors were last read from (None: not read yet)."""
        self.chain_anchors: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        """Chain of numbered siblings → its own anchors (source positions, target positions),
        for a sorted checkpoint, whose positions compare only within one chain."""
        self.index_map: IndexMap | None = None
        """Learned relations between the two sides' index slots (``engine.index_map``), set
        once the name stages ran; None before."""
        self.partner = np.full(len(src.group_paths), -1, dtype=np.int64)
        self.coh_keys = np.zeros(0, dtype=np.int64)
        self.coh_vals = np.zeros(0, dtype=np.int64)

    # --- recording ---------------------------------------------------------------------------
    def pair(
        self, i: int, j: int, rel: ShapeRelation, stage: str, group: bool, structure: float,
        follows: int = -1,
    ) -> None:  # fmt: skip
        """Record source key i ↔ target key j."""
        self.s_match[i] = j
        self.t_match[j] = i
        self.rec[i] = (rel, stage, group, structure, follows)

    def pair_many(
        self, pairs: list[tuple[int, int, ShapeRelation]], stage: str, group: bool,
        structure: float,
    ) -> None:  # fmt: skip
        """(source key, target key, relation) triples → each recorded as :meth:`pair` would,
        in order (the arrays written at once: a 100k-tensor checkpoint pairs here)."""
        if not pairs:
            return
        rows = np.fromiter((p[0] for p in pairs), np.int64, len(pairs))
        cols = np.fromiter((p[1] for p in pairs), np.int64, len(pairs))
        self.pair_arrays(rows, cols, [p[2] for p in pairs], stage, group, structure)

    def pair_arrays(
        self, rows: np.ndarray, cols: np.ndarray, rels: Sequence[ShapeRelation], stage: str,
        group: bool, structure: float,
    ) -> None:  # fmt: skip
        """Source keys, target keys (equal-length arrays) and their relations → each pair
        recorded as :meth:`pair` would, in order."""
        if not len(rows):
            return
        self.s_match[rows] = cols
        self.t_match[cols] = rows
        rels = rels.tolist() if isinstance(rels, np.ndarray) else rels
        records = zip(rels, repeat(stage), repeat(group), repeat(structure), repeat(-1))
        self.rec.update(zip(rows.tolist(), records, strict=True))

    def stage_counts(self) -> dict[str, int]:
        """Stage name → number of pairs it settled."""
        return dict(sorted(Counter(r[1] for r in self.rec.values()).items()))

    # --- may these pair? ---------------------------------------------------------------------
    def compat(self, i: int, j: int, *, exact_shape: bool = False) -> ShapeRelation | None:
        """Source key i, target key j → their ShapeRelation, or None when they may not pair."""
        s, t = self.s, self.t
        if self.s_stat[i] != self.t_stat[j]:
            return None
        if self.s_strict_role[i] and self.t_strict_role[j] and self.s_role[i] != self.t_role[j]:
            return None
        if self.func_conflict[self.s_func[i], self.t_func[j]]:
            return None
        if self.stack_conflict[self.s_stack[i], self.t_stack[j]]:
            return None
        gs, gt = s.group[i], t.group[j]
        if self.fam_table[self.s_fam[gs], self.t_fam[gt]] <= 0:
            return None
        if self.has_incompatible and self.blocked_by_user(np.array([i]), np.array([j]))[0, 0]:
            return None
        if exact_shape:
            return ShapeRelation(IDENTITY, 1.0) if s.shape[i] == t.shape[j] else None
        return cached_relation(s.shape[i], t.shape[j], s.group_type[gs], t.group_type[gt], self.tol)

    def compat_many(self, rows_s: np.ndarray, cols_t: np.ndarray) -> list[ShapeRelation | None]:
        """Equal-length source and target key numbers → ShapeRelation (or None) of each pair."""
        return self.relations(rows_s, cols_t)[0].tolist()

    def relations(self, rows_s: np.ndarray, cols_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Equal-length source and target key numbers → (each pair's ShapeRelation or None, as
        an object array; True where it is not None).

        Pairs repeat a few (shape, shape, module type, module type) combinations: each
        combination's relation is worked out once.
        """
        s, t = self.s, self.t
        gs, gt = s.group[rows_s], t.group[cols_t]
        ok = self.s_stat[rows_s] == self.t_stat[cols_t]
        both = self.s_strict_role[rows_s] & self.t_strict_role[cols_t]
        ok &= ~both | (self.s_role[rows_s] == self.t_role[cols_t])
        ok &= ~self.roles_block(rows_s, cols_t)
        ok &= self.fam_table[self.s_fam[gs], self.t_fam[gt]] > 0
        ok &= allowed_pairs(self.inc_s, self.inc_t, rows_s, cols_t)
        out = np.full(len(rows_s), None, dtype=object)
        keep = np.nonzero(ok)[0]
        if not len(keep):
            return out, ok
        combo = s.shape_code[rows_s[keep]]
        for codes in (
            t.shape_code[cols_t[keep]],
            s.group_type_code[gs[keep]],
            t.group_type_code[gt[keep]],
        ):
            # renumbered after each step, so the combined codes stay small
            combo = distinct_pairs(combo, codes, int(codes.max()) + 1)[2]
        # One pair of each combination (any one: its relation is the combination's).
        one = np.empty(int(combo.max()) + 1, np.int64)
        one[combo] = keep
        rels = np.empty(len(one), dtype=object)
        for n, k in enumerate(one.tolist()):
            i, j, a, b = int(rows_s[k]), int(cols_t[k]), int(gs[k]), int(gt[k])
            rels[n] = cached_relation(
                s.shape[i], t.shape[j], s.group_type[a], t.group_type[b], self.tol
            )
        out[keep] = rels[combo]
        ok[keep] = np.array([r is not None for r in rels], bool)[combo]
        return out, ok

    def roles_block(self, rows_s: np.ndarray, cols_t: np.ndarray) -> np.ndarray:
        """Source keys, target keys (broadcastable) → True where roles or stacks exclude."""
        return (
            self.func_conflict[self.s_func[rows_s], self.t_func[cols_t]]
            | self.stack_conflict[self.s_stack[rows_s], self.t_stack[cols_t]]
        )

    def blocked_by_user(self, rows_s: np.ndarray, cols_t: np.ndarray) -> np.ndarray:
        """Source keys × target keys → bool matrix, True where ``incompatible_pairs`` forbid."""
        return blocked_by_user(self.inc_s, self.inc_t, rows_s, cols_t)

    # --- groups ------------------------------------------------------------------------------
    def open_groups(self, which: str) -> list[int]:
        """``source``/``target`` → its groups with no matched key and a scorable key, in order."""
        side, match, scorable = self.side(which)
        n_g = len(side.group_paths)
        has_match = np.bincount(side.group[match >= 0], minlength=n_g) > 0
        has_scorable = np.bincount(side.group[scorable], minlength=n_g) > 0
        return np.nonzero(~has_match & has_scorable)[0].tolist()

    def signature(self, which: str, g: int) -> tuple:
        """``source``/``target`` + group → sorted (role or ``*``, shape bucket) of its scorable keys."""
        side, _match, scorable = self.side(which)
        strict = self.s_strict_role if which == "source" else self.t_strict_role
        items = []
        for k in side.group_keys[g]:
            if not scorable[k]:
                continue
            role = side.role[k] if strict[k] else "*"
            items.append((role, side.bucket[k]))
        return tuple(sorted(items))

    def side(self, which: str) -> tuple[Side, np.ndarray, np.ndarray]:
        """``source``/``target`` → (its Side, its match array, its scorable mask)."""
        if which == "source":
            return self.s, self.s_match, self.s_scorable
        return self.t, self.t_match, self.t_scorable

    def families_fit(self, gs: int, gt: int) -> bool:
        """Source group, target group → True when their module families may exchange tensors
        and their roles (what the modules do) do not exclude each other."""
        if self.func_conflict[self.s_gfunc[gs], self.t_gfunc[gt]]:
            return False
        return bool(self.fam_table[self.s_fam[gs], self.t_fam[gt]] > 0)

    def group_partners(self) -> np.ndarray:
        """Source group → the target group of its first matched key, or -1."""
        partner = np.full(len(self.s.group_paths), -1, dtype=np.int64)
        rows = np.nonzero(self.s_match >= 0)[0]
        if len(rows):
            gs_all = self.s.group[rows]
            gt_all = self.t.group[self.s_match[rows]]
            first = np.unique(gs_all, return_index=True)[1]
            partner[gs_all[first]] = gt_all[first]
        return partner


def _tolerant_buckets(side: Side, tol: float) -> list[tuple[int, ...]]:
    """Side + shape tolerance → each key's shape bucket under it, once per distinct shape."""
    buckets = [shape_bucket(side.shape[k], tol) for k in side.shape_firsts]
    return [buckets[c] for c in side.shape_code.tolist()]


def _bucket_counts(side: Side) -> Counter:
    """Side → shape bucket → number of its keys (buckets in order of first appearance),
    counted once per distinct shape."""
    per_shape = np.bincount(side.shape_code).tolist()
    out: Counter = Counter()
    for n, k in zip(per_shape, side.shape_firsts, strict=True):
        out[side.bucket[k]] += n
    return out


def _named(keys: list[str], named: frozenset[str]) -> np.ndarray:
    """Keys + the keys a naming convention gave a role → True for each key among them."""
    if not named:
        return np.zeros(len(keys), bool)
    return np.fromiter(map(named.__contains__, keys), bool, len(keys))


def _joint_codes(
    a: tuple[np.ndarray, list[str]], b: tuple[np.ndarray, list[str]]
) -> tuple[list[str], tuple[np.ndarray, np.ndarray]]:
    """Labels of both sides, each coded (:func:`distinct_codes`) → (their distinct labels
    sorted, (codes of a, codes of b) into that list)."""
    codes_a, uni_a = a
    codes_b, uni_b = b
    labels = sorted(set(uni_a) | set(uni_b))
    code = {lab: i for i, lab in enumerate(labels)}
    to_a = np.array([code[x] for x in uni_a], np.int64)
    to_b = np.array([code[x] for x in uni_b], np.int64)
    return labels, (to_a[codes_a], to_b[codes_b])


def _label_codes(
    s_keys: list[str], t_keys: list[str], s_map: dict[str, str], t_map: dict[str, str]
) -> tuple[list[str | None], tuple[np.ndarray, np.ndarray]]:
    """Keys of both sides + key → label maps → (labels, (source codes, target codes)).

    Code 0 is "unknown" (label None, a key the map leaves out); the others follow the
    sorted labels.
    """
    labels: list[str | None] = [None, *sorted(set(s_map.values()) | set(t_map.values()))]
    code = {lab: i for i, lab in enumerate(labels)}
    codes = []
    for keys, labelled in ((s_keys, s_map), (t_keys, t_map)):
        found = map(labelled.get, keys) if labelled else ()
        codes.append(
            np.fromiter(map(code.__getitem__, found), np.int64, len(keys))
            if labelled
            else np.zeros(len(keys), np.int64)
        )
    return labels, (codes[0], codes[1])


def _table(
    labels: list[str | None], relation: Callable[[str | None, str | None], bool]
) -> np.ndarray:
    """Labels + a relation between two → bool table indexed by two label codes."""
    return np.array([[relation(a, b) for b in labels] for a in labels], bool)


def _group_codes(side: Side, codes: np.ndarray) -> np.ndarray:
    """Key codes → one per group: the code of its first key that has a role (0 if none)."""
    out = np.zeros(len(side.group_paths), np.int64)
    known = np.nonzero(codes)[0]  # keys are numbered group by group, in local order
    groups, first = np.unique(side.group[known], return_index=True)
    out[groups] = codes[known[first]]
    return out


def _parent_codes(side: Side) -> tuple[np.ndarray, list[str]]:
    """Side → per group the code of its parent module's tokens (its own tokens but the last),
    and the distinct parent token strings in order of first appearance; worked out once per
    distinct token string."""
    code, distinct = side.group_token_codes
    parent: dict[str, int] = {}
    to_parent = np.array(
        [parent.setdefault(" ".join(t.split()[:-1]), len(parent)) for t in distinct], np.int64
    )
    return to_parent[code], list(parent)
