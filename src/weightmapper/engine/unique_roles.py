"""Roles a network has once: a pair whose two tensors play such a role, each the only one of
it whose shape fits the other, is evidence however different their names.

A network has one head, one final norm, one token embedding, one relative-position bias.
When the source's ``fc`` and the target's ``Logits.Conv2d_1c_1x1`` are both the head, and no
other head on either side has a shape that fits, the pair is right whatever its names share;
its signals alone (names, path, position all disagree) would leave it resting on its shape.
Roles come from the side's :class:`~weightmapper.roles.SideRoles` (a forward pass or a naming
convention) and, for keys neither gave a role, from the words libraries use for these modules
(:mod:`weightmapper.conventions.singletons`).

Each proposal whose two tensors both have such a role gets ``role_unique`` in its breakdown:
1 when the roles agree, each side has one module of that role (counted by module, so a
head's bias follows its weight), and the shapes fit (equal, transposed, or equal once the
size-1 dimensions are dropped: a linear head onto a 1×1 convolution); else 0. A side with
several modules of the role gets none: a detector's box classifier, box regressor and
proposal heads all end the network, and none of them is *the* head an image classifier's
``fc`` was. The modules that may play such a role are found per chain of numbered siblings
(:func:`~weightmapper.engine.path_fold.group_words`), and only the pairs whose two modules
both play one are looked at.
"""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np

from weightmapper.conventions.singletons import FAMILY, SingletonWords, singleton_words
from weightmapper.engine.candidates import Proposal
from weightmapper.engine.path_fold import group_words
from weightmapper.engine.side import Side
from weightmapper.engine.state import MatchState
from weightmapper.roles import SideRoles

Shape = tuple[int, ...]
RIVALS: dict[str, str] = {"head.conv": "head"}
"""Roles that never earn the evidence but count against it: a convolution after the last
block is a head of its own kind (a detector's proposal and feature-pyramid heads are), so a
side that has one has no single head."""


def record_unique_roles(
    st: MatchState, proposals: list[Proposal], gs: np.ndarray, gt: np.ndarray
) -> None:
    """Finished MatchState + its proposals + their source and target groups → ``role_unique``
    in the breakdown of every proposal whose two tensors both play a one-per-network role."""
    src, count_s = _modules(st.s, st.roles[0])
    tgt, count_t = _modules(st.t, st.roles[1])
    if not src or not tgt:
        return
    # only the pairs whose two groups both play such a role are looked at
    s_has = np.zeros(len(st.s.group_paths), bool)
    s_has[list(src)] = True
    t_has = np.zeros(len(st.t.group_paths), bool)
    t_has[list(tgt)] = True
    both = np.flatnonzero(s_has[gs] & t_has[gt]).tolist()
    for n, g, h in zip(both, gs[both].tolist(), gt[both].tolist(), strict=True):
        p = proposals[n]
        (fa, lead_a), (fb, lead_b) = src[g], tgt[h]
        lone = (
            fa == fb
            and count_s[fa] == 1
            and count_t[fb] == 1
            and fits(p.source_shape, p.target_shape)
            and fits(lead_a, lead_b)
        )
        p.breakdown["role_unique"] = float(lone)


def _modules(side: Side, roles: SideRoles) -> tuple[dict[int, tuple[str, Shape]], Counter[str]]:
    """One side + its roles → (group number → (one-per-network role, main tensor's shape) of
    every module that plays one, how many modules play each such role, :data:`RIVALS`
    included). A module's main tensor is its largest learned one; a role a forward pass or
    convention gave wins over words."""
    words = singleton_words()
    out: dict[int, tuple[str, Shape]] = {}
    count: Counter[str] = Counter()
    for g in _role_groups(side, roles, words):
        members = side.group_keys[g]
        learned = [i for i in members if not side.stat_buffer[i]] or members
        lead = max(learned, key=lambda i: (_numel(side.shape[i]), -i))
        key = side.keys[lead]
        role = roles.roles.get(key) or words.role_of(key) or ""
        if role in RIVALS:
            count[RIVALS[role]] += 1
        elif role in FAMILY:
            count[FAMILY[role]] += 1
            out[g] = (FAMILY[role], side.shape[lead])
    return out, count


def _role_groups(side: Side, roles: SideRoles, words: SingletonWords) -> list[int]:
    """One side + its roles + the singleton words → in order, the groups that may play a
    one-per-network role: those whose module path names one, those holding a key whose
    given role is one (or a rival), and the root module's (its keys' own names are read).
    Every other group's main tensor has no such role whichever tensor it is."""
    wanted = FAMILY.keys() | RIVALS.keys()
    vocabulary = (*words.anywhere, *words.top)
    code, named = group_words(side, functools.partial(_named_role, words), None, vocabulary)
    has_role = np.array([role is not None for role in named], bool)
    found = set(np.flatnonzero(has_role[code]).tolist())
    if "" in side.group_paths:  # the root's keys name themselves
        found.add(side.group_paths.index(""))
    index, group = side.index, side.group
    for key, role in roles.roles.items():
        if role in wanted and key in index:
            found.add(int(group[index[key]]))
    return sorted(found)


def _named_role(words: SingletonWords, parent: str | None, path: str, own: str) -> str | None:
    """Singleton words + the role the parent path names + a module path and its own component
    → the role the path names: its own word wins over its parent's (innermost first), as
    :meth:`~weightmapper.conventions.singletons.SingletonWords.role_of` reads it."""
    return words.component_role(own, first=len(own) == len(path)) or parent


def fits(a: Shape, b: Shape) -> bool:
    """Two shapes → True when one tensor becomes the other as it is, transposed (2-d), or
    reshaped by adding or dropping size-1 dimensions."""
    if a == b:
        return True
    sa, sb = _squeezed(a), _squeezed(b)
    return sa == sb or (len(sa) == 2 and sa == sb[::-1])


def _squeezed(shape: Shape) -> Shape:
    return tuple(d for d in shape if d != 1)


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
