"""The matching engine: score two inventories into candidates, then assign them.

Public surface (everything else in the package is internal):

- :func:`score_inventories`: source and target Inventory + ScoreSettings → Candidates
  (the cascade of :mod:`.cascade`; threshold-free, cacheable);
- :func:`assign`: Candidates + AssignSettings → MappingResult (the threshold applied);
- :func:`map_inventories`: both at once, with MapperSettings;
- :class:`Candidates` (with :class:`Proposal` and :class:`KeyNote`) between the two, and
  :func:`propose_multi` for split/merge proposals on their own.

Where things live: the stage order and its documentation in :mod:`.cascade`; one module
per stage (:mod:`.exact`, :mod:`.normalized`, :mod:`.template`, :mod:`.gaps`,
:mod:`.structural`, :mod:`.optimal`) plus the group carry (:mod:`.groups`); the state they
share in :mod:`.state`; the scoring signals in :mod:`.signals`; shapes, module families
and names in :mod:`.shapes`, :mod:`.families` and :mod:`.names`; alignment and other
primitives in :mod:`.primitives`.
"""

from __future__ import annotations

from weightmapper.engine.assign import assign
from weightmapper.engine.candidates import Candidates, KeyNote, Proposal
from weightmapper.engine.cascade import map_inventories, paused_gc, score_inventories
from weightmapper.engine.multi import propose_multi

__all__ = [
    "Candidates",
    "KeyNote",
    "Proposal",
    "assign",
    "map_inventories",
    "paused_gc",
    "propose_multi",
    "score_inventories",
]
