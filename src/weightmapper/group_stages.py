"""Group-level stages of the cascade: template buckets matched instance by instance, and
equal-signature group sequences aligned with gaps.

:class:`GroupStages` is a mixin of :class:`weightmapper.engine.Engine`; it reads and writes
the engine's matching state through ``self``.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np

from weightmapper.matching import align, index_eq, mutual_best
from weightmapper.side import Side

if TYPE_CHECKING:
    from weightmapper.scoring import ShapeRelation

log = logging.getLogger(__name__)

DP_MAX_CELLS = 4_000_000
"""Largest group × group alignment of one signature solved by dynamic programming."""
STRUCTURE = {"exact": 1.0, "normalized": 1.0, "template_unique": 1.0, "template": 0.9}
STRUCTURE_DP = 0.85
STRUCTURE_BY_ORDER = 0.75
STRUCTURE_UNIQUE_SHAPE = 0.9
UNTRACED_MIN_EVIDENCE = 0.3
"""Least name/index evidence a structural pair needs when execution order was not traced."""


class GroupStages:
    """Template and structural stages.

    Relies on the Engine's arrays and its ``pair``, ``pair_groups``, ``compat_many`` and
    ``predict_position`` methods (a mixin, never used alone).
    """

    # Provided by Engine (declared for readers and type checkers).
    s: Side
    t: Side
    s_match: np.ndarray
    t_match: np.ndarray
    s_scorable: np.ndarray
    t_scorable: np.ndarray
    s_strict_role: np.ndarray
    t_strict_role: np.ndarray
    s_fam: np.ndarray
    t_fam: np.ndarray
    rec: dict[int, tuple[ShapeRelation, str, bool, float, int]]
    _fam_table: np.ndarray
    _bucket_counts: tuple[Counter, Counter] | None
    group_space: Any
    anchor_x: np.ndarray
    anchor_y: np.ndarray

    def _open_groups(self, side: Side, match: np.ndarray, scorable: np.ndarray) -> list[int]:
        """Groups with no matched key and at least one scorable key, in order."""
        n_g = len(side.group_paths)
        has_match = np.bincount(side.group[match >= 0], minlength=n_g) > 0
        has_scorable = np.bincount(side.group[scorable], minlength=n_g) > 0
        return np.nonzero(~has_match & has_scorable)[0].tolist()

    def _signature(
        self, side: Side, g: int, scorable: np.ndarray, strict_role: np.ndarray
    ) -> tuple:
        items = []
        for k in side.group_keys[g]:
            if not scorable[k]:
                continue
            role = side.role[k] if strict_role[k] else "*"
            items.append((role, side.bucket[k]))
        return tuple(sorted(items))

    def stage_template(self) -> None:
        """Buckets of (template, signature) that pair unambiguously → instance by instance."""
        s_open = self._open_groups(self.s, self.s_match, self.s_scorable)
        t_open = self._open_groups(self.t, self.t_match, self.t_scorable)
        s_b = self._template_buckets(self.s, s_open, self.s_scorable, self.s_strict_role)
        t_b = self._template_buckets(self.t, t_open, self.t_scorable, self.t_strict_role)
        for sig, s_tpls in s_b.items():
            t_tpls = t_b.get(sig)
            if not t_tpls:
                continue
            s_names, t_names = list(s_tpls), list(t_tpls)
            unique = len(s_names) == 1 and len(t_names) == 1
            sim = self.group_space.matrix(
                np.array([s_tpls[n][0] for n in s_names]), np.array([t_tpls[n][0] for n in t_names])
            )
            chosen = [(0, 0)] if unique else mutual_best(sim, margin=0.15, floor=0.5)
            by_order = set()
            if not unique:
                # Names left some templates undecided: pair those whose instance count and
                # place among their siblings agree and single each other out.
                extra = self._pair_by_sibling_rank(s_tpls, t_tpls, s_names, t_names, chosen)
                by_order = set(extra)
                chosen = chosen + extra
            for a, b in chosen:
                gs_list, gt_list = s_tpls[s_names[a]], t_tpls[t_names[b]]
                if len(gs_list) != len(gt_list):
                    continue
                if self._fam_table[self.s_fam[gs_list[0]], self.t_fam[gt_list[0]]] <= 0:
                    continue
                # A unique signature alone is shape evidence; names make it structure.
                structure = STRUCTURE["template_unique" if unique else "template"]
                structure *= 0.5 + 0.5 * float(sim[a, b])
                if unique and len(gs_list) == 1 and self._unique_shape(gs_list[0], gt_list[0]):
                    # The only tensor of its shape on either side: strong evidence by itself.
                    structure = max(structure, STRUCTURE_UNIQUE_SHAPE)
                if (a, b) in by_order:
                    structure = STRUCTURE_BY_ORDER
                s_sorted = sorted(gs_list, key=lambda g: (self.s.group_ranked[g], g))
                t_sorted = sorted(gt_list, key=lambda g: (self.t.group_ranked[g], g))
                if [self.s.group_ranked[g] for g in s_sorted] != [
                    self.t.group_ranked[g] for g in t_sorted
                ]:
                    s_sorted, t_sorted = sorted(gs_list), sorted(gt_list)  # position order
                self._pair_instances(s_sorted, t_sorted, structure)

    def _unique_shape(self, gs: int, gt: int) -> bool:
        """Two groups → True when one tensor shape of theirs occurs once on each side."""
        if self._bucket_counts is None:
            self._bucket_counts = (Counter(self.s.bucket), Counter(self.t.bucket))
        sc, tc = self._bucket_counts
        t_buckets = {self.t.bucket[j] for j in self.t.group_keys[gt]}
        return any(
            sc[self.s.bucket[i]] == 1 and tc.get(self.s.bucket[i], 0) == 1
            for i in self.s.group_keys[gs]
            if self.s.bucket[i] in t_buckets
        )

    def _pair_by_sibling_rank(
        self,
        s_tpls: dict[str, list[int]],
        t_tpls: dict[str, list[int]],
        s_names: list[str],
        t_names: list[str],
        chosen: list[tuple[int, int]],
    ) -> list[tuple[int, int]]:
        """Undecided templates → pairs whose (instance count, sibling rank) is unique on both sides."""
        taken_a = {a for a, _ in chosen}
        taken_b = {b for _, b in chosen}

        def key(side: Side, groups: list[int]) -> tuple[int, int]:
            ranks = Counter(side.group_sibrank[g] for g in groups)
            return len(groups), ranks.most_common(1)[0][0]

        s_keys: dict[tuple[int, int], list[int]] = {}
        t_keys: dict[tuple[int, int], list[int]] = {}
        for a, n in enumerate(s_names):
            if a not in taken_a:
                s_keys.setdefault(key(self.s, s_tpls[n]), []).append(a)
        for b, n in enumerate(t_names):
            if b not in taken_b:
                t_keys.setdefault(key(self.t, t_tpls[n]), []).append(b)
        out = []
        for k, a_list in s_keys.items():
            b_list = t_keys.get(k)
            # One-instance templates are left to the structural stage: a lone coincidence of
            # sibling rank is weak evidence; a whole repeated template agreeing is not.
            if k[0] >= 2 and len(a_list) == 1 and b_list is not None and len(b_list) == 1:
                out.append((a_list[0], b_list[0]))
        return out

    def _pair_instances(self, s_groups: list[int], t_groups: list[int], structure: float) -> None:
        """Aligned instance lists of two templates → every instance pair matched.

        The first pair is matched by role (:meth:`pair_groups`); its local-name pattern is
        then applied to all other instances at once, falling back to :meth:`pair_groups`
        for any instance that does not fit the pattern.
        """
        if not s_groups:
            return
        g0s, g0t = s_groups[0], t_groups[0]
        self.pair_groups(g0s, g0t, "template", structure)
        s_path, t_path = self.s.group_paths, self.t.group_paths
        pattern: list[tuple[str, str, str, bool, str | None]] = []
        for i in self.s.group_keys[g0s]:
            j = int(self.s_match[i])
            if j < 0 or self.t.group[j] != g0t:
                continue
            _rel, stage, group, _st, follows = self.rec[i]
            lead = self.s.keys[follows].rpartition(".")[2] if follows >= 0 else None
            pattern.append(
                (
                    self.s.keys[i].rpartition(".")[2],
                    self.t.keys[j].rpartition(".")[2],
                    stage,
                    group,
                    lead,
                )
            )
        if len(s_groups) == 1:
            return
        if not pattern:
            for gs, gt in zip(s_groups[1:], t_groups[1:], strict=True):
                self.pair_groups(gs, gt, "template", structure)
            return
        rows, cols, meta = [], [], []
        misfits = []
        s_index, t_index = self.s.index, self.t.index
        for gs, gt in zip(s_groups[1:], t_groups[1:], strict=True):
            ps, pt = s_path[gs], t_path[gt]
            found = []
            for ls, lt, stage, group, lead in pattern:
                i = s_index.get(f"{ps}.{ls}" if ps else ls)
                j = t_index.get(f"{pt}.{lt}" if pt else lt)
                if i is None or j is None:
                    break
                fi = -1
                if lead is not None:
                    fi = s_index.get(f"{ps}.{lead}" if ps else lead, -1)
                found.append((i, j, stage, group, fi))
            if len(found) != len(pattern):
                misfits.append((gs, gt))
                continue
            for i, j, stage, group, fi in found:
                rows.append(i)
                cols.append(j)
                meta.append((stage, group, fi, gs, gt))
        rels = self.compat_many(np.array(rows, np.int64), np.array(cols, np.int64))
        for i, j, rel, (stage, group, fi, gs, gt) in zip(rows, cols, rels, meta, strict=True):
            if rel is None or self.s_match[i] >= 0 or self.t_match[j] >= 0:
                misfits.append((gs, gt))
                continue
            self.pair(i, j, rel, stage, group, structure, follows=fi)
        for gs, gt in dict.fromkeys(misfits):
            self.pair_groups(gs, gt, "template", structure)

    def _template_buckets(
        self, side: Side, groups: list[int], scorable: np.ndarray, strict_role: np.ndarray
    ) -> dict[tuple, dict[str, list[int]]]:
        out: dict[tuple, dict[str, list[int]]] = {}
        for g in groups:
            sig = self._signature(side, g, scorable, strict_role)
            tpl = side.group_template[g] or side.group_tokens[g] or "<root>"
            out.setdefault(sig, {}).setdefault(tpl, []).append(g)
        return out

    def stage_structural(self) -> None:
        """Align the open group sequences by dynamic programming under equal signatures."""
        s_open = self._open_groups(self.s, self.s_match, self.s_scorable)
        t_open = self._open_groups(self.t, self.t_match, self.t_scorable)
        if not s_open or not t_open:
            return
        sigs: dict[tuple, int] = {}
        s_sig = np.array(
            [sigs.setdefault(self._signature(self.s, g, self.s_scorable, self.s_strict_role), len(sigs)) for g in s_open]
        )  # fmt: skip
        t_sig = np.array(
            [sigs.get(self._signature(self.t, g, self.t_scorable, self.t_strict_role), -1) for g in t_open]
        )  # fmt: skip
        s_arr, t_arr = np.array(s_open), np.array(t_open)
        # Each signature's groups are aligned on their own: only equal signatures can pair,
        # and how two libraries interleave different layers (or a sorted checkpoint's key
        # order) must not stop a run of equal layers from lining up.
        for sig in np.unique(s_sig):
            rows = np.nonzero(s_sig == sig)[0]
            cols = np.nonzero(t_sig == sig)[0]
            if not len(cols):
                continue
            if len(rows) * len(cols) > DP_MAX_CELLS:
                log.info(
                    "structural stage skipped %d × %d groups of one signature", len(rows), len(cols)
                )
                continue
            gs, gt = s_arr[rows], t_arr[cols]
            name = self.group_space.matrix(gs, gt)
            idx = index_eq(
                [self.s.group_index_key[g] for g in gs], [self.t.group_index_key[g] for g in gt]
            )
            fam = self._fam_table[self.s_fam[gs][:, None], self.t_fam[gt][None, :]]
            pred = self.predict_position(self.s.group_pos[gs])
            near = 1.0 - np.minimum(
                1.0, 4.0 * np.abs(pred[:, None] - self.t.group_pos[gt][None, :])
            )
            evidence = 0.5 * name + 0.5 * idx
            sub = 1.0 + evidence + 0.25 * (fam >= 1.0) + 0.3 * near
            sub[fam <= 0] = -np.inf
            # A pair whose names clearly lose to another candidate of the same row or column
            # may not be aligned: the order would then overrule what the names say.
            sub[evidence < evidence.max(axis=1, keepdims=True) - 0.2] = -np.inf
            sub[evidence < evidence.max(axis=0, keepdims=True) - 0.2] = -np.inf
            # Registration order is each library's own choice (a shortcut registered first
            # here, last there): untraced, order alone may not pick among look-alikes.
            traced = self.s.inv.traced and self.t.inv.traced
            rivals = np.isfinite(sub)
            n_row, n_col = rivals.sum(axis=1), rivals.sum(axis=0)
            for r, c in align(sub.astype(np.float64)):
                weak = evidence[r, c] < UNTRACED_MIN_EVIDENCE
                if not traced and weak and (n_row[r] > 1 or n_col[c] > 1):
                    continue
                self.pair_groups(int(gs[r]), int(gt[c]), "structural", STRUCTURE_DP)

    def stage_gaps(self) -> None:
        """Open groups between two matched neighbours → paired when both gaps agree exactly.

        Matched groups (kept only where source and target order agree) are anchors; a run of
        open source groups between two consecutive anchors and the run of open target groups
        between their partners pair position by position when the runs have the same length
        and every position has the same signature (multiset of role and shape). Execution
        or registration order then decides what names cannot (``features.3.conv.0.1`` vs
        ``blocks.1.1.bn1``), and anything less than an exact fit is left to later stages.
        """
        n_s, n_t = len(self.s.group_paths), len(self.t.group_paths)
        s_order = np.argsort(self.s.group_pos, kind="stable")
        t_order = np.argsort(self.t.group_pos, kind="stable")
        t_rank = np.empty(n_t, np.int64)
        t_rank[t_order] = np.arange(n_t)
        partner = self._group_partners()
        anchors = [(r, int(t_rank[partner[g]])) for r, g in enumerate(s_order) if partner[g] >= 0]
        anchors = _increasing(anchors)
        if len(anchors) < 2:
            return
        s_open = np.zeros(n_s, bool)
        s_open[self._open_groups(self.s, self.s_match, self.s_scorable)] = True
        t_open = np.zeros(n_t, bool)
        t_open[self._open_groups(self.t, self.t_match, self.t_scorable)] = True
        s_has = np.bincount(self.s.group[self.s_scorable], minlength=n_s) > 0
        t_has = np.bincount(self.t.group[self.t_scorable], minlength=n_t) > 0
        for (r0, c0), (r1, c1) in pairwise(anchors):
            gs = [int(g) for g in s_order[r0 + 1 : r1] if s_has[g]]
            gt = [int(g) for g in t_order[c0 + 1 : c1] if t_has[g]]
            if not gs or not gt:
                continue
            if not all(s_open[g] for g in gs) or not all(t_open[g] for g in gt):
                continue
            if len(gs) == len(gt):
                runs = [(gs, gt)]
            else:
                # Unequal gaps (a block inserted or removed): split each gap by which anchor
                # its groups belong with (the longer shared module path), so that a block
                # whose other layers were matched on one side keeps its layers together.
                a0, a1 = int(s_order[r0]), int(s_order[r1])
                b0, b1 = int(partner[a0]), int(partner[a1])
                s_lab = _kinship(self.s.group_paths, gs, a0, a1)
                t_lab = _kinship(self.t.group_paths, gt, b0, b1)
                if s_lab is None or t_lab is None:
                    continue
                runs = [(s_lab[k], t_lab[k]) for k in (0, 2)]
            for run_s, run_t in runs:
                if run_s and len(run_s) == len(run_t) and self._same_signatures(run_s, run_t):
                    for a, b in zip(run_s, run_t, strict=True):
                        self.pair_groups(a, b, "gap", STRUCTURE_DP)

    def _same_signatures(self, gs: list[int], gt: list[int]) -> bool:
        """Equal-length group lists → True when each position has equal signature and kind."""
        return all(
            _signatures_fit(
                self._signature(self.s, a, self.s_scorable, self.s_strict_role),
                self._signature(self.t, b, self.t_scorable, self.t_strict_role),
            )
            and self._fam_table[self.s_fam[a], self.t_fam[b]] > 0
            for a, b in zip(gs, gt, strict=True)
        )

    def _group_partners(self) -> np.ndarray:
        """Source group → the target group of its first matched key, or -1."""
        partner = np.full(len(self.s.group_paths), -1, dtype=np.int64)
        rows = np.nonzero(self.s_match >= 0)[0]
        if len(rows):
            gs_all = self.s.group[rows]
            gt_all = self.t.group[self.s_match[rows]]
            first = np.unique(gs_all, return_index=True)[1]
            partner[gs_all[first]] = gt_all[first]
        return partner


def _signatures_fit(a: tuple, b: tuple) -> bool:
    """Two group signatures → True when their shapes agree and their roles do where both
    sides name a strict role (``*`` stands for a role the naming does not reveal)."""
    if len(a) != len(b) or sorted(x[1] for x in a) != sorted(x[1] for x in b):
        return False
    if a == b:
        return True
    a_strict = sorted(x for x in a if x[0] != "*")
    b_strict = sorted(x for x in b if x[0] != "*")
    if len(a_strict) == len(a) and len(b_strict) == len(b):
        return False  # both fully named, and the names differ
    # Each strictly named (role, shape) of one side must find room on the other.
    for mine, other in ((a_strict, b), (b_strict, a)):
        pool = Counter(other)
        for role, shape in mine:
            if pool[(role, shape)] > 0:
                pool[(role, shape)] -= 1
            elif pool[("*", shape)] > 0:
                pool[("*", shape)] -= 1
            else:
                return False
    return True


def _shared_depth(a: str, b: str) -> int:
    """Two module paths → how many leading path components they share."""
    n = 0
    for x, y in zip(a.split("."), b.split("."), strict=False):
        if x != y:
            break
        n += 1
    return n


def _kinship(
    paths: list[str], gap: list[int], before: int, after: int
) -> tuple[list[int], list[int], list[int]] | None:
    """Groups of a gap between anchor groups before/after → (closer to before, as close to
    both, closer to after), or None when the three runs are not in that order."""
    runs: tuple[list[int], list[int], list[int]] = ([], [], [])
    last = 0
    for g in gap:
        d0 = _shared_depth(paths[g], paths[before])
        d1 = _shared_depth(paths[g], paths[after])
        k = 0 if d0 > d1 else (2 if d1 > d0 else 1)
        if k < last:
            return None
        last = k
        runs[k].append(g)
    return runs


def _increasing(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(row, col) pairs sorted by row → the longest subsequence increasing in both."""
    tails: list[int] = []
    tail_idx: list[int] = []
    prev = [-1] * len(pairs)
    for n, (_r, c) in enumerate(pairs):
        k = bisect.bisect_left(tails, c)
        if k == len(tails):
            tails.append(c)
            tail_idx.append(n)
        else:
            tails[k] = c
            tail_idx[k] = n
        prev[n] = tail_idx[k - 1] if k > 0 else -1
    out = []
    n = tail_idx[-1] if tail_idx else -1
    while n >= 0:
        out.append(pairs[n])
        n = prev[n]
    return out[::-1]
