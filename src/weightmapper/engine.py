"""Engine: the state of one matching run (who is matched to whom) and the cascade's stages.

Stages are documented in :mod:`weightmapper.assign`; this module holds their mechanics.
All loops run over groups or buckets, never over all source × target pairs in Python;
score matrices are numpy/rapidfuzz and bounded in size.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np
from rapidfuzz import fuzz, process
from scipy.optimize import linear_sum_assignment

from weightmapper.candidates import KeyNote, Proposal
from weightmapper.group_stages import STRUCTURE, STRUCTURE_DP, GroupStages
from weightmapper.matching import (
    by_bucket,
    codes,
    index_sim,
    index_sim_one,
    nearest,
    split_large,
)
from weightmapper.names import TokenSpace, similarity_matrix, tokenize
from weightmapper.result import UnmatchedReason
from weightmapper.scoring import (
    STRICT_ROLES,
    ShapeRelation,
    cached_relation,
    combine_matrix,
    shape_bucket,
    shape_relation,
    type_compat,
)
from weightmapper.side import Side, drop_tokens, side_specific_tokens
from weightmapper.transforms import refine_by_param_names

log = logging.getLogger(__name__)

BUFFER_MODES: tuple[str, ...] = ("exclude", "lenient", "strict")
MIN_PROPOSAL = 0.3
"""Pairs the assignment scores below this are not proposed at all."""
NOTE_MAX_CANDIDATES = 4096
_BLOCK = -1.0
ANCHOR_MIN_NAME = 0.5
NAME_MIX = (0.6, 0.15, 0.25)
HIER_MIX = (0.3, 0.4, 0.3)
"""Weights of parent-path similarity, module-type compatibility and sibling coherence."""
"""Weights of IDF token cosine, character similarity and layer-index agreement in ``name``."""


class Engine(GroupStages):
    """Mutable matching state over two Sides; ``run`` fills it, ``collect`` reads it out."""

    def __init__(
        self,
        src: Side,
        tgt: Side,
        *,
        weights: dict[str, float],
        tolerance: float,
        incompatible: Sequence[tuple[frozenset[str], frozenset[str]]],
        mode: str,
    ) -> None:
        self.s, self.t = src, tgt
        self.weights = weights
        self.tol = tolerance
        self.incompatible = list(incompatible)
        self.mode = mode
        self.s_match = np.full(len(src), -1, dtype=np.int64)
        self.t_match = np.full(len(tgt), -1, dtype=np.int64)
        # source key → (relation, stage, group flag, structure, follows-source-key or -1)
        self.rec: dict[int, tuple[ShapeRelation, str, bool, float, int]] = {}
        self.s_scorable = np.array([mode != "exclude" or not b for b in src.stat_buffer], bool)
        self.t_scorable = np.array([mode != "exclude" or not b for b in tgt.stat_buffer], bool)
        if tolerance > 0:
            src.bucket = [shape_bucket(s, tolerance) for s in src.shape]
            tgt.bucket = [shape_bucket(s, tolerance) for s in tgt.shape]
        fams = sorted({f or "" for f in src.group_family + tgt.group_family})
        self._fam_code = {f: i for i, f in enumerate(fams)}
        self._fam_table = np.array(
            [[type_compat(a or None, b or None) for b in fams] for a in fams], dtype=np.float32
        )
        self.s_fam = np.array([self._fam_code[f or ""] for f in src.group_family], np.int64)
        self.t_fam = np.array([self._fam_code[f or ""] for f in tgt.group_family], np.int64)
        roles = sorted(set(src.role) | set(tgt.role))
        rcode = {r: i for i, r in enumerate(roles)}
        self.s_role = np.array([rcode[r] for r in src.role], np.int64)
        self.t_role = np.array([rcode[r] for r in tgt.role], np.int64)
        self.s_strict_role = np.array([r in STRICT_ROLES for r in src.role], bool)
        self.t_strict_role = np.array([r in STRICT_ROLES for r in tgt.role], bool)
        self.s_stat = np.array(src.stat_buffer, bool)
        self.t_stat = np.array(tgt.stat_buffer, bool)
        self.s_parent = [_parent_tokens(p, src) for p in range(len(src.group_paths))]
        self.t_parent = [_parent_tokens(p, tgt) for p in range(len(tgt.group_paths))]
        # Component families are judged on the full names, before wrapper tokens are dropped.
        self._inc_s, self._inc_t = self._incompatible_masks()
        drop_s, drop_t = side_specific_tokens(src, tgt)
        drop_tokens(src, drop_s)
        drop_tokens(tgt, drop_t)
        self.key_space = TokenSpace(src.tokens, tgt.tokens)
        self.group_space = TokenSpace(src.group_tokens, tgt.group_tokens)
        self.parent_space = TokenSpace(self.s_parent, self.t_parent)
        self.s_parent_empty = np.array([not p for p in self.s_parent], bool)
        self.t_parent_empty = np.array([not p for p in self.t_parent], bool)
        self._bucket_counts: tuple[Counter, Counter] | None = None
        self._partner = np.full(len(src.group_paths), -1, dtype=np.int64)
        self._coh_keys = np.zeros(0, dtype=np.int64)
        self._coh_vals = np.zeros(0, dtype=np.int64)
        self.s_parent_id = _parent_ids(src.group_paths)
        self.t_parent_id = _parent_ids(tgt.group_paths)
        self.anchor_x = np.array([0.0, 1.0])
        self.anchor_y = np.array([0.0, 1.0])

    # --- bookkeeping ------------------------------------------------------------------------
    def _incompatible_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """Per incompatible pair and side: does each key belong to family a / family b?"""
        if not self.incompatible:
            return np.zeros((0, 2, len(self.s)), bool), np.zeros((0, 2, len(self.t)), bool)

        def masks(side: Side) -> np.ndarray:
            toks = _family_token_sets(side)
            out = np.zeros((len(self.incompatible), 2, len(side)), bool)
            for p, (a, b) in enumerate(self.incompatible):
                for i, ts in enumerate(toks):
                    out[p, 0, i] = a <= ts
                    out[p, 1, i] = b <= ts
            return out

        return masks(self.s), masks(self.t)

    def _blocked_by_user(self, rows_s: np.ndarray, cols_t: np.ndarray) -> np.ndarray:
        """Source keys rows_s × target keys cols_t → bool matrix, True where incompatible_pairs forbid."""
        out = np.zeros((len(rows_s), len(cols_t)), bool)
        for p in range(self._inc_s.shape[0]):
            a_s, b_s = self._inc_s[p, 0, rows_s], self._inc_s[p, 1, rows_s]
            a_t, b_t = self._inc_t[p, 0, cols_t], self._inc_t[p, 1, cols_t]
            out |= (a_s & ~b_s)[:, None] & b_t[None, :]
            out |= (b_s & ~a_s)[:, None] & a_t[None, :]
        return out

    def compat(self, i: int, j: int, *, exact_shape: bool = False) -> ShapeRelation | None:
        """Source key i, target key j → their ShapeRelation, or None when they may not pair."""
        s, t = self.s, self.t
        if self.s_stat[i] != self.t_stat[j]:
            return None
        if self.s_strict_role[i] and self.t_strict_role[j] and self.s_role[i] != self.t_role[j]:
            return None
        gs, gt = s.group[i], t.group[j]
        if self._fam_table[self.s_fam[gs], self.t_fam[gt]] <= 0:
            return None
        if self.incompatible and self._blocked_by_user(np.array([i]), np.array([j]))[0, 0]:
            return None
        if exact_shape:
            return ShapeRelation(_identity(), 1.0) if s.shape[i] == t.shape[j] else None
        return cached_relation(s.shape[i], t.shape[j], s.group_type[gs], t.group_type[gt], self.tol)

    def compat_many(self, rows_s: np.ndarray, cols_t: np.ndarray) -> list[ShapeRelation | None]:
        """Equal-length source and target key numbers → ShapeRelation (or None) of each pair."""
        s, t = self.s, self.t
        gs, gt = s.group[rows_s], t.group[cols_t]
        ok = self.s_stat[rows_s] == self.t_stat[cols_t]
        both = self.s_strict_role[rows_s] & self.t_strict_role[cols_t]
        ok &= ~both | (self.s_role[rows_s] == self.t_role[cols_t])
        ok &= self._fam_table[self.s_fam[gs], self.t_fam[gt]] > 0
        for p in range(self._inc_s.shape[0]):
            a_s, b_s = self._inc_s[p, 0, rows_s], self._inc_s[p, 1, rows_s]
            a_t, b_t = self._inc_t[p, 0, cols_t], self._inc_t[p, 1, cols_t]
            ok &= ~((a_s & ~b_s & b_t) | (b_s & ~a_s & a_t))
        out: list[ShapeRelation | None] = []
        for k, (i, j) in enumerate(zip(rows_s.tolist(), cols_t.tolist(), strict=True)):
            if not ok[k]:
                out.append(None)
                continue
            out.append(
                cached_relation(
                    s.shape[i], t.shape[j], s.group_type[gs[k]], t.group_type[gt[k]], self.tol
                )
            )
        return out

    def pair(
        self, i: int, j: int, rel: ShapeRelation, stage: str, group: bool, structure: float,
        follows: int = -1,
    ) -> None:  # fmt: skip
        """Record source key i ↔ target key j."""
        self.s_match[i] = j
        self.t_match[j] = i
        self.rec[i] = (rel, stage, group, structure, follows)

    def stage_counts(self) -> dict[str, int]:
        """Stage name → number of pairs it settled."""
        return dict(sorted(Counter(r[1] for r in self.rec.values()).items()))

    # --- the cascade ------------------------------------------------------------------------
    def run(self) -> None:
        """Run every stage in order."""
        self.stage_exact()
        self.fill_groups()
        self.stage_normalized()
        self.fill_groups()
        self.stage_template()
        self.fill_groups()
        self.stage_gaps()
        self.fill_groups()
        self.stage_structural()
        self.fill_groups()
        self.stage_gaps()
        self.fill_groups()
        self.update_anchors()
        self.update_coherence()
        self.stage_assignment(weights_first=True)
        self.fill_groups()
        self.stage_assignment(weights_first=False)
        self.fill_groups()

    def stage_exact(self) -> None:
        """Identical keys (raw, or without the shared wrapper prefix) with compatible shapes."""
        t_raw = {k: j for j, k in enumerate(self.t.keys)}
        t_strip = {k: j for j, k in enumerate(self.t.stripped)}
        rows, cols = [], []
        for i, key in enumerate(self.s.keys):
            j = t_raw.get(key)
            if j is None:
                j = t_strip.get(self.s.stripped[i])
            if j is not None:
                rows.append(i)
                cols.append(j)
        rels = self.compat_many(np.array(rows, np.int64), np.array(cols, np.int64))
        for i, j, rel in zip(rows, cols, rels, strict=True):
            if rel is not None and self.t_match[j] < 0:
                self.pair(i, j, rel, "exact", False, STRUCTURE["exact"])

    def stage_normalized(self) -> None:
        """Canonical names (synonyms folded, indices ranked) unique on both sides."""
        s_open = np.nonzero((self.s_match < 0) & self.s_scorable)[0].tolist()
        t_open = np.nonzero((self.t_match < 0) & self.t_scorable)[0].tolist()
        s_key, t_key = self.s.norm_key, self.t.norm_key
        s_count = Counter(s_key[i] for i in s_open)
        t_by: dict[str, list[int]] = {}
        for j in t_open:
            t_by.setdefault(t_key[j], []).append(j)
        # Dense-ranked layer indices are comparable only when both sides hold as many
        # instances of the name: with a block inserted or removed, rank 2 is not block 2.
        s_inst = _instance_counts(self.s.tokens, s_key)
        t_inst = _instance_counts(self.t.tokens, t_key)
        rows, cols = [], []
        for i in s_open:
            k = s_key[i]
            js = t_by.get(k)
            if self.s.ranked[i] and s_inst[self.s.tokens[i]] != t_inst.get(
                self.t.tokens[js[0]] if js else "", -1
            ):
                continue
            if js is not None and len(js) == 1 and s_count[k] == 1:
                rows.append(i)
                cols.append(js[0])
        rels = self.compat_many(np.array(rows, np.int64), np.array(cols, np.int64))
        for i, j, rel in zip(rows, cols, rels, strict=True):
            if rel is not None:
                self.pair(i, j, rel, "normalized", False, STRUCTURE["normalized"])

    def _group_partner(self, gs: int) -> int:
        """Source group → the target group most of its matched keys went to, or -1."""
        hits = [
            int(self.t.group[self.s_match[i]])
            for i in self.s.group_keys[gs]
            if self.s_match[i] >= 0
        ]
        if not hits:
            return -1
        return Counter(hits).most_common(1)[0][0]

    def fill_groups(self) -> None:
        """For every matched group pair, pair the rest of the group (and its buffers)."""
        matched = self.s_match >= 0
        n_g = len(self.s.group_paths)
        has_match = np.bincount(self.s.group[matched], minlength=n_g) > 0
        has_open = np.bincount(self.s.group[~matched], minlength=n_g) > 0
        t_open = np.bincount(self.t.group[self.t_match < 0], minlength=len(self.t.group_paths))
        for gs in np.nonzero(has_match & has_open)[0]:
            gt = self._group_partner(int(gs))
            if gt >= 0 and t_open[gt]:
                self.pair_groups(int(gs), gt, "group", None)

    def pair_groups(self, gs: int, gt: int, stage: str, structure: float | None) -> None:
        """Pair the open keys of source group gs with those of target group gt, by role."""
        s_keys = [i for i in self.s.group_keys[gs] if self.s_match[i] < 0]
        t_keys = [j for j in self.t.group_keys[gt] if self.t_match[j] < 0]
        if not s_keys or not t_keys:
            return
        lead = next((i for i in self.s.group_keys[gs] if self.s_match[i] >= 0), -1)
        if structure is None:
            structure = self.rec[lead][3] if lead >= 0 else STRUCTURE_DP
        # Learned tensors first (they can become the lead), then statistic buffers.
        for want_stat in (False, True):
            for i in s_keys:
                if self.s_stat[i] != want_stat or self.s_match[i] >= 0:
                    continue
                free = [j for j in t_keys if self.t_match[j] < 0 and self.t_stat[j] == want_stat]
                same_role = [j for j in free if self.t_role[j] == self.s_role[i]]
                choice = -1
                rel = None
                for pool in (same_role, [] if want_stat else free):
                    fits = [
                        (j, r)
                        for j in pool
                        if (r := self.compat(i, j, exact_shape=want_stat)) is not None
                    ]
                    if len(fits) == 1:
                        choice, rel = fits[0]
                        break
                    if len(fits) > 1:
                        break
                if choice < 0 or rel is None:
                    continue
                if want_stat and not self.s_scorable[i]:
                    if lead < 0:
                        continue
                    self.pair(i, choice, rel, "buffer", True, structure, follows=lead)
                else:
                    self.pair(i, choice, rel, stage, True, structure)
                    if lead < 0:
                        lead = i

    # --- group-level stages -----------------------------------------------------------------

    # --- key-level assignment ---------------------------------------------------------------
    def update_anchors(self) -> None:
        """Matched groups → a monotone map from source position to expected target position.

        Only pairs whose names agree serve as anchors (when there are enough of them), so a
        pair matched on shape alone never vouches for its own position.
        """
        rows = np.nonzero(self.s_match >= 0)[0]
        if not len(rows):
            return
        cols = self.s_match[rows]
        name = self._pair_name(rows, cols)
        trusted = name >= ANCHOR_MIN_NAME
        if trusted.sum() >= 2:
            rows, cols = rows[trusted], cols[trusted]
        x = self.s.group_pos[self.s.group[rows]]
        y = self.t.group_pos[self.t.group[cols]]
        ux, inv = np.unique(x, return_inverse=True)
        uy = np.bincount(inv, weights=y) / np.bincount(inv)
        uy = np.maximum.accumulate(uy)  # execution order is monotone: keep the map so
        self.anchor_x, self.anchor_y = ux, uy

    def update_coherence(self) -> None:
        """Matched groups → how many go from each source parent module to each target parent."""
        partner = np.full(len(self.s.group_paths), -1, dtype=np.int64)
        rows = np.nonzero(self.s_match >= 0)[0]
        # one partner per source group: the target group of its first matched key
        gs_all = self.s.group[rows]
        gt_all = self.t.group[self.s_match[rows]]
        first = np.unique(gs_all, return_index=True)[1]
        partner[gs_all[first]] = gt_all[first]
        self._partner = partner
        matched = np.nonzero(partner >= 0)[0]
        if not len(matched):
            self._coh_keys = np.zeros(0, dtype=np.int64)
            self._coh_vals = np.zeros(0, dtype=np.int64)
            return
        m = int(self.t_parent_id.max()) + 1
        keys = self.s_parent_id[matched] * m + self.t_parent_id[partner[matched]]
        self._coh_keys, self._coh_vals = np.unique(keys, return_counts=True)

    def _coherence(self, gs: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """Source × target groups (broadcastable) → 1 where other children of the source's
        parent went to children of the target's parent (siblings stay siblings), else 0."""
        gs_b, gt_b = np.broadcast_arrays(gs, gt)
        if not len(self._coh_keys):
            return np.zeros(gs_b.shape, dtype=np.float32)
        m = int(self.t_parent_id.max()) + 1
        q = self.s_parent_id[gs_b] * m + self.t_parent_id[gt_b]
        pos = np.clip(np.searchsorted(self._coh_keys, q), 0, len(self._coh_keys) - 1)
        n = np.where(self._coh_keys[pos] == q, self._coh_vals[pos], 0)
        n = n - (self._partner[gs_b] == gt_b)  # the pair itself does not vouch for itself
        return (n > 0).astype(np.float32)

    def predict_position(self, pos: np.ndarray) -> np.ndarray:
        """Source positions → expected target positions, interpolated between anchors.

        Beyond the first and last anchor the map continues with slope 1 (what lies past the
        last shared module keeps its distance to it) rather than collapsing onto it.
        """
        x, y = self.anchor_x, self.anchor_y
        pred = np.interp(pos, x, y)
        pred = np.where(pos < x[0], y[0] + (pos - x[0]), pred)
        pred = np.where(pos > x[-1], y[-1] + (pos - x[-1]), pred)
        return np.clip(pred, 0.0, 1.0)

    def signals(
        self, rows_s: np.ndarray, cols_t: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Source keys rows_s × target keys cols_t → (signal matrices, blocked mask)."""
        s, t = self.s, self.t
        gs, gt = s.group[rows_s], t.group[cols_t]
        cos = self.key_space.matrix(rows_s, cols_t)
        fz = similarity_matrix([s.tokens[i] for i in rows_s], [t.tokens[j] for j in cols_t])
        s_ik, t_ik = s.group_index_key, t.group_index_key
        idx = index_sim([s_ik[g] for g in s.group[rows_s]], [t_ik[g] for g in t.group[cols_t]])
        name = NAME_MIX[0] * cos + NAME_MIX[1] * fz + NAME_MIX[2] * idx
        parent = self.parent_space.matrix(gs, gt)
        parent[self.s_parent_empty[gs][:, None] & self.t_parent_empty[gt][None, :]] = 1.0
        fam = self._fam_table[self.s_fam[gs][:, None], self.t_fam[gt][None, :]]
        coherent = self._coherence(gs[:, None], gt[None, :])
        hierarchy = HIER_MIX[0] * parent + HIER_MIX[1] * fam + HIER_MIX[2] * coherent
        pred = self.predict_position(s.group_pos[gs])
        order = 1.0 - np.minimum(1.0, 4.0 * np.abs(pred[:, None] - t.group_pos[gt][None, :]))
        shape = np.zeros((len(rows_s), len(cols_t)), dtype=np.float32)
        blocked = fam <= 0
        # Shape relations depend only on (shape, type) pairs: compute each distinct one once.
        s_kind = [(s.shape[i], s.group_type[g]) for i, g in zip(rows_s, gs, strict=True)]
        t_kind = [(t.shape[j], t.group_type[g]) for j, g in zip(cols_t, gt, strict=True)]
        s_codes, s_uni = codes(s_kind)
        t_codes, t_uni = codes(t_kind)
        rel_score = np.zeros((len(s_uni), len(t_uni)), dtype=np.float32)
        for a, (sh_a, ty_a) in enumerate(s_uni):
            for b, (sh_b, ty_b) in enumerate(t_uni):
                rel = shape_relation(sh_a, sh_b, ty_a, ty_b, self.tol)
                rel_score[a, b] = rel.score if rel is not None else -1.0
        shape = rel_score[s_codes[:, None], t_codes[None, :]]
        blocked |= shape < 0
        shape = np.maximum(shape, 0.0)
        blocked |= self.s_stat[rows_s][:, None] != self.t_stat[cols_t][None, :]
        both_strict = self.s_strict_role[rows_s][:, None] & self.t_strict_role[cols_t][None, :]
        blocked |= both_strict & (self.s_role[rows_s][:, None] != self.t_role[cols_t][None, :])
        if self.incompatible:
            blocked |= self._blocked_by_user(rows_s, cols_t)
        sig = {"shape": shape, "name": name, "hierarchy": hierarchy, "order": order}
        return sig, blocked

    def score_matrix(self, rows_s: np.ndarray, cols_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source keys rows_s × target keys cols_t → (combined score without ``structure``, blocked)."""
        sig, blocked = self.signals(rows_s, cols_t)
        w = {k: v for k, v in self.weights.items() if k != "structure"}
        if sum(w.values()) <= 0:
            w = {"shape": 1.0}
        return combine_matrix(sig, w), blocked

    def stage_assignment(self, *, weights_first: bool) -> None:
        """Leftover keys, per shape bucket: optimal one-to-one assignment on score matrices."""
        s_open = [i for i in range(len(self.s)) if self.s_match[i] < 0 and self.s_scorable[i]]
        t_open = [j for j in range(len(self.t)) if self.t_match[j] < 0 and self.t_scorable[j]]
        if weights_first:
            # Weights (and other non-bias roles) decide the module pairing; biases then follow.
            s_open = [i for i in s_open if self.s.role[i] != "bias"]
            t_open = [j for j in t_open if self.t.role[j] != "bias"]
        s_by = by_bucket(self.s.bucket, s_open)
        t_by = by_bucket(self.t.bucket, t_open)
        for key, rows_s in s_by.items():
            cols_t = t_by.get(key)
            if cols_t is None:
                continue
            for rows_sub, cols_sub in split_large(self.s, self.t, rows_s, cols_t):
                self._assign_block(np.array(rows_sub), np.array(cols_sub))

    def _assign_block(self, rows_s: np.ndarray, cols_t: np.ndarray) -> None:
        M, blocked = self.score_matrix(rows_s, cols_t)
        cost = np.where(blocked, _BLOCK, M)
        rows, cols = linear_sum_assignment(cost, maximize=True)
        ok = ~blocked[rows, cols] & (M[rows, cols] >= MIN_PROPOSAL)
        masked = np.where(blocked, -np.inf, M)
        for r, c in zip(rows[ok], cols[ok], strict=True):
            i, j = int(rows_s[r]), int(cols_t[c])
            rel = self.compat(i, j)
            if rel is None:
                continue
            row = np.delete(masked[r], c)
            col = np.delete(masked[:, c], r)
            others = np.concatenate([row, col])
            runner_up = (
                float(others.max()) if others.size and np.isfinite(others).any() else -np.inf
            )
            margin = float(M[r, c]) - runner_up if np.isfinite(runner_up) else 1.0
            structure = float(np.clip(0.45 + 2.0 * margin, 0.0, 1.0))
            self.pair(i, j, rel, "assignment", False, structure)

    # --- output -----------------------------------------------------------------------------
    def collect(self) -> tuple[list[Proposal], list[KeyNote], dict[str, dict[str, str]]]:
        """Engine state → (proposals with breakdowns, notes for unmatched keys, tied keys)."""
        self.update_anchors()
        self.update_coherence()
        src_idx = np.array(sorted(self.rec), dtype=np.int64)
        tgt_idx = self.s_match[src_idx] if len(src_idx) else np.zeros(0, np.int64)
        breakdowns = self._pair_breakdowns(src_idx, tgt_idx)
        proposals = []
        for n, i in enumerate(src_idx):
            i = int(i)
            j = int(tgt_idx[n])
            rel, stage, group, structure, follows = self.rec[i]
            bd = breakdowns[n]
            bd["structure"] = structure
            bd["shape"] = rel.score
            # Square matrices: parameter names (a Flax/Keras ``kernel`` is (in, out)) can
            # settle a layout that shapes cannot.
            transform, confidence = refine_by_param_names(
                rel.transform, rel.confidence, self.s.keys[i], self.t.keys[j],
                self.s.shape[i], self.t.shape[j],
                source_type=self.s.group_type[self.s.group[i]],
                target_type=self.t.group_type[self.t.group[j]],
            )  # fmt: skip
            proposals.append(
                Proposal(
                    source=self.s.keys[i],
                    target=self.t.keys[j],
                    breakdown=bd,
                    transform=transform,
                    stage=stage,
                    group=group,
                    confidence=confidence,
                    source_shape=self.s.shape[i],
                    target_shape=self.t.shape[j],
                    follows=self.s.keys[follows] if follows >= 0 else None,
                )
            )
        tied = {
            "source": self._tied(self.s, self.s_match),
            "target": self._tied(self.t, self.t_match),
        }
        notes = self._notes("source", tied["source"]) + self._notes("target", tied["target"])
        return proposals, notes, tied

    def _pair_name(self, rows_s: np.ndarray, cols_t: np.ndarray) -> np.ndarray:
        """Equal-length source and target key numbers → the ``name`` signal of each pair."""
        s, t = self.s, self.t
        cos = self.key_space.pairwise(rows_s, cols_t)
        fz = process.cpdist(
            [s.tokens[i] for i in rows_s], [t.tokens[j] for j in cols_t], scorer=fuzz.ratio
        )
        idx = np.array(
            [
                index_sim_one(s.group_index_key[a], t.group_index_key[b])
                for a, b in zip(s.group[rows_s], t.group[cols_t], strict=True)
            ]
        )
        fz = np.asarray(fz, dtype=np.float64) / 100.0
        return NAME_MIX[0] * cos + NAME_MIX[1] * fz + NAME_MIX[2] * idx

    def _pair_breakdowns(self, rows_s: np.ndarray, cols_t: np.ndarray) -> list[dict[str, float]]:
        if not len(rows_s):
            return []
        s, t = self.s, self.t
        gs, gt = s.group[rows_s], t.group[cols_t]
        name = self._pair_name(rows_s, cols_t)
        parent = self.parent_space.pairwise(gs, gt)
        parent[self.s_parent_empty[gs] & self.t_parent_empty[gt]] = 1.0
        fam = self._fam_table[self.s_fam[gs], self.t_fam[gt]]
        coherent = self._coherence(gs, gt)
        hierarchy = HIER_MIX[0] * parent + HIER_MIX[1] * fam + HIER_MIX[2] * coherent
        pred = self.predict_position(s.group_pos[gs])
        order = 1.0 - np.minimum(1.0, 4.0 * np.abs(pred - t.group_pos[gt]))
        return [
            {"name": float(a), "hierarchy": float(b), "order": float(c)}
            for a, b, c in zip(name, hierarchy, order, strict=True)
        ]  # fmt: skip

    def _tied(self, side: Side, match: np.ndarray) -> dict[str, str]:
        out: dict[str, str] = {}
        for tie in side.inv.tied:
            members = [k for k in tie if k in side.index]
            matched = [k for k in members if match[side.index[k]] >= 0]
            primary = matched[0] if matched else (members[0] if members else None)
            for k in members:
                if k != primary and match[side.index[k]] < 0:
                    out[k] = primary
        return out

    def _notes(self, which: str, tied: dict[str, str]) -> list[KeyNote]:
        me, other = (self.s, self.t) if which == "source" else (self.t, self.s)
        my_match = self.s_match if which == "source" else self.t_match
        other_match = self.t_match if which == "source" else self.s_match
        my_scorable = self.s_scorable if which == "source" else self.t_scorable
        open_keys = [k for k in range(len(me)) if my_match[k] < 0 and me.keys[k] not in tied]
        notes: list[KeyNote] = []
        other_by = by_bucket(other.bucket, range(len(other)))
        pending: dict[tuple, list[int]] = {}
        for k in open_keys:
            name, shape = me.keys[k], me.shape[k]
            if not my_scorable[k]:
                notes.append(
                    KeyNote(name, which, shape, UnmatchedReason.BUFFER_EXCLUDED,
                            "buffer without a same-named, same-shaped buffer in a matched "
                            "module (buffer_matching_mode='exclude')")
                )  # fmt: skip
            elif not len(other):
                notes.append(
                    KeyNote(
                        name,
                        which,
                        shape,
                        UnmatchedReason.NO_CANDIDATES,
                        f"the {_flip(which)} has no tensors",
                    )
                )
            elif me.bucket[k] not in other_by:
                notes.append(
                    KeyNote(name, which, shape, UnmatchedReason.NO_SHAPE_PARTNER,
                            f"no {_flip(which)} tensor has shape {list(shape)} or a transposed "
                            "or reshaped form of it")
                )  # fmt: skip
            else:
                pending.setdefault(me.bucket[k], []).append(k)
        for bucket, keys in pending.items():
            cands = np.array(other_by[bucket])
            for start in range(0, len(keys), 256):
                rows = np.array(keys[start : start + 256])
                cols = nearest(me, other, rows, cands, NOTE_MAX_CANDIDATES)
                if which == "source":
                    sig, blocked = self.signals(rows, cols)
                    M = self.score_matrix(rows, cols)[0]
                else:
                    sig_t, blocked_t = self.signals(cols, rows)
                    sig = {k: v.T for k, v in sig_t.items()}
                    blocked = blocked_t.T
                    M = self.score_matrix(cols, rows)[0].T
                for r, k in enumerate(rows):
                    notes.append(
                        self._note_for(which, int(k), cols, sig, blocked, M, r, other_match)
                    )
        return notes

    def _note_for(
        self, which: str, k: int, cols: np.ndarray, sig: dict[str, np.ndarray],
        blocked: np.ndarray, M: np.ndarray, r: int, other_match: np.ndarray,
    ) -> KeyNote:  # fmt: skip
        me, other = (self.s, self.t) if which == "source" else (self.t, self.s)
        name, shape = me.keys[k], me.shape[k]
        allowed = ~blocked[r]
        if not allowed.any():
            best = int(np.argmax(sig["name"][r]))
            return KeyNote(
                name, which, shape, UnmatchedReason.INCOMPATIBLE,
                f"every same-shaped {_flip(which)} tensor is of an incompatible kind (module "
                f"type, role or incompatible_pairs), e.g. {other.keys[cols[best]]}",
                other.keys[cols[best]],
            )  # fmt: skip
        scores = np.where(allowed, M[r], -np.inf)
        c = int(np.argmax(scores))
        partner = int(cols[c])
        bd = {key: round(float(v[r, c]), 6) for key, v in sig.items()}
        bd["structure"] = 0.0
        taken = int(other_match[partner])
        if taken >= 0:
            taker = me.keys[taken]
            return KeyNote(
                name, which, shape, UnmatchedReason.LOST_TO_BETTER,
                f"its best candidate {other.keys[partner]} went to {taker}",
                other.keys[partner], bd, taker,
            )  # fmt: skip
        return KeyNote(
            name, which, shape, UnmatchedReason.BELOW_THRESHOLD,
            f"best candidate {other.keys[partner]} scored too low to propose",
            other.keys[partner], bd,
        )  # fmt: skip


# --- helpers --------------------------------------------------------------------------------
def _instance_counts(tokens: list[str], norm: list[str]) -> Counter:
    """Keys' canonical tokens and normalized keys → tokens → number of distinct instances."""
    return Counter(t for t, _ in dict.fromkeys(zip(tokens, norm, strict=True)))


def _identity():  # type: ignore[no-untyped-def]
    from weightmapper.transforms import IDENTITY

    return IDENTITY


def _flip(which: str) -> str:
    return "target" if which == "source" else "source"


def _parent_ids(paths: list[str]) -> np.ndarray:
    codes: dict[str, int] = {}
    return np.array([codes.setdefault(p.rpartition(".")[0], len(codes)) for p in paths], np.int64)


def _parent_tokens(g: int, side: Side) -> str:
    toks = side.group_tokens[g].split()
    return " ".join(toks[:-1])


def _family_token_sets(side: Side) -> list[frozenset[str]]:
    """Key → canonical tokens of its name, its module type and its ancestors' types."""
    from weightmapper.names import fold

    out = []
    types = side.inv.module_types
    for k in range(len(side.keys)):
        toks = set(side.tokens[k].split())
        path = side.group_paths[side.group[k]]
        while True:
            ty = types.get(path)
            if ty:
                toks.update(fold(t) for t in tokenize(ty))
            if not path:
                break
            path = path.rpartition(".")[0]
        fam = side.group_family[side.group[k]]
        if fam:
            toks.add(fam)
        out.append(frozenset(toks))
    return out
