"""The matching cascade: two Inventories + ScoreSettings → Candidates; the stage order lives here.

Cheapest evidence first, each stage working only on what the previous ones left:

1. ``exact``       identical keys (after a shared wrapper prefix is dropped), compatible
                   shapes (:mod:`.exact`)
2. ``normalized``  identical canonical names (synonyms folded, layer indices dense-ranked),
                   unique on both sides (:mod:`.normalized`)
3. ``template``    parameter groups bucketed by (name template, shape signature); a bucket
                   that pairs unambiguously with one on the other side is matched instance
                   by instance along its layer indices (this settles 10k-expert MoE layers)
                   (:mod:`.template`)
   Then the ``index map`` is learned (:mod:`.index_map`): which number (or chain letter)
   of a source name becomes which of a target name, with what offset, from the pairs made
   so far and the groups holding each shape; the ``name`` signal, the structural alignment
   and the ``index`` evidence read agreement with it from here on.
4. ``gap``         open groups between two matched neighbours (in execution or registration
                   order) pair position by position when both gaps hold the same sequence of
                   group signatures; unequal gaps (an inserted or removed block) are split
                   by which neighbour each group shares the longer module path with, so the
                   inserted block is skipped (:mod:`.gaps`; run again after ``structural``)
5. ``structural``  the remaining group sequences (execution or registration order) aligned
                   like sequences with gaps, under equal shape signatures, by dynamic
                   programming: a group with no partner is skipped, not shifting the rest
                   (:mod:`.structural`)
6. ``assignment``  leftovers, per shape bucket: fuzzy score matrices and an optimal
                   one-to-one assignment, weights first, then everything else
                   (:mod:`.optimal`); the order and hierarchy evidence is refreshed first
7. ``context``     pairs against the block their siblings' anchors went to re-paired there,
                   per shape and prefix (:mod:`.context`)

After every stage the rest of each matched group follows (``group``), and buffers follow
their module when the partner has the same buffer with the same shape (``buffer``), see
:mod:`.groups`; after the last, a pair left alone of its shape once all others paired among
themselves gets the structure of a unique shape (``promote_lone_pairs``). Then :mod:`.collect` reads the proposals and a note for every leftover key
out, :mod:`.layouts` settles square weights of a bare checkpoint, and :mod:`.splits` proposes
splits and merges among what is left. Every pair is scored with the signals of
:mod:`.signals`, whichever stage made it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
from collections.abc import Callable, Iterator

from weightmapper.engine.assign import assign
from weightmapper.engine.block_shift import record_block_shifts
from weightmapper.engine.candidates import Candidates
from weightmapper.engine.collect import collect_notes, collect_pairs
from weightmapper.engine.context import record_context, stage_context
from weightmapper.engine.evidence import record_evidence
from weightmapper.engine.exact import stage_exact
from weightmapper.engine.gaps import stage_gaps
from weightmapper.engine.groups import fill_groups, promote_lone_pairs
from weightmapper.engine.index_map import stage_index_map
from weightmapper.engine.layouts import settle_role_layouts, settle_square_layouts
from weightmapper.engine.margins import record_margins
from weightmapper.engine.normalized import stage_normalized
from weightmapper.engine.optimal import stage_assignment
from weightmapper.engine.side import prepare_side
from weightmapper.engine.signals import update_anchors, update_coherence
from weightmapper.engine.splits import ambiguous_rivals, mark_ambiguous, propose_leftovers
from weightmapper.engine.state import MatchState
from weightmapper.engine.structural import stage_structural
from weightmapper.engine.template import stage_template
from weightmapper.errors import MappingError
from weightmapper.inventory import Inventory
from weightmapper.result import MappingResult
from weightmapper.roles import side_roles
from weightmapper.settings import MapperSettings, ScoreSettings

log = logging.getLogger(__name__)


def _assignment_with_fresh_evidence(st: MatchState) -> None:
    """The first assignment run, after the order and hierarchy evidence is brought up to date."""
    update_anchors(st)
    update_coherence(st)
    stage_assignment(st, weights_first=True)


CASCADE: tuple[tuple[str, Callable[[MatchState], None]], ...] = (
    ("exact", stage_exact),
    ("normalized", stage_normalized),
    ("template", stage_template),
    ("index map", stage_index_map),
    ("gap", stage_gaps),
    ("structural", stage_structural),
    ("gap", stage_gaps),
    ("assignment (weights)", _assignment_with_fresh_evidence),
    ("assignment (rest)", functools.partial(stage_assignment, weights_first=False)),
    ("context", stage_context),
)
"""The stages in the order they run; after each one, matched groups are completed."""


def run_cascade(st: MatchState) -> None:
    """MatchState → the same state with every stage of :data:`CASCADE` run in order, then
    the last pair of each shape promoted (:func:`promote_lone_pairs`)."""
    for _name, stage in CASCADE:
        stage(st)
        fill_groups(st)
    promote_lone_pairs(st)


def require_tensors(source: Inventory, target: Inventory) -> None:
    """Both inventories → None, or MappingError naming a side that holds no tensors.

    Nothing can be mapped from or onto an empty side (a safetensors file saved from an
    empty dict, a module without parameters or buffers): said before any stage runs.
    """
    for side, inv in (("source", source), ("target", target)):
        if not inv.tensors:
            raise MappingError(
                f"the {side} {inv.name or ''} holds no tensors, so there is nothing to map "
                f"{'from' if side == 'source' else 'onto'}. Expected a checkpoint or module "
                "with weights: check that the right file or spec was given."
            )


def score_inventories(
    source: Inventory, target: Inventory, settings: ScoreSettings | None = None
) -> Candidates:
    """Source and target Inventory + ScoreSettings → Candidates (proposals and notes, no threshold).

    Deterministic: the same inventories and settings give the same Candidates on every run.
    Neither inventory is changed. Raises MappingError when either holds no tensors.
    """
    require_tensors(source, target)
    settings = settings if settings is not None else ScoreSettings()
    # One inventory on both sides (a checkpoint checked against itself): its roles and its
    # prepared Side are computed once; neither is changed by the stages.
    same = source is target
    s_roles = side_roles(source.tensors, source.roles, head_dims=source.head_dims)
    t_roles = (
        s_roles if same else side_roles(target.tensors, target.roles, head_dims=target.head_dims)
    )
    roles = (s_roles, t_roles)
    with paused_gc():
        s_side = prepare_side(source)
        st = MatchState(s_side, s_side if same else prepare_side(target), settings, roles)
        run_cascade(st)
        proposals, tied, columns = collect_pairs(st)
        leftovers = collect_notes(st, tied, score=False)
    multi = propose_leftovers(source, target, leftovers, roles)
    multi, rivals = ambiguous_rivals(multi, leftovers)
    with paused_gc():
        # splits and merges are anchors too, and the keys they take are no open slots
        placed = record_context(st, proposals, columns, multi)
        record_margins(st, proposals, columns, placed)
        record_block_shifts(proposals, st, columns)
    proposals = settle_square_layouts(proposals, source, target)
    proposals = settle_role_layouts(proposals, roles)
    proposals = record_evidence(st, proposals, columns)
    used = {("source", k) for m in multi for k in m.sources}
    used |= {("target", k) for m in multi for k in m.targets}
    # Notes are scored only for the keys no split or merge uses: a deep fused stack leaves
    # thousands of q/k/v keys over, and comparing each with its candidates is the costly part.
    with paused_gc():
        notes = mark_ambiguous(collect_notes(st, tied, skip=used), rivals)
    pairs = settings.incompatible_pairs
    recorded = {
        "shape_tolerance": settings.shape_tolerance,
        "buffer_matching_mode": settings.buffer_matching_mode,
        "incompatible_pairs": [list(p) for p in pairs] if pairs else None,
        "source_traced": source.traced,
        "target_traced": target.traced,
        "source_roles": roles[0].source,
        "target_roles": roles[1].source,
    }
    stages = st.stage_counts()
    log.info(
        "scored %s (%d tensors) against %s (%d tensors): %d proposals, stages %s",
        source.name, len(source), target.name, len(target), len(proposals), stages,
    )  # fmt: skip
    return Candidates(
        source_name=source.name,
        target_name=target.name,
        proposals=proposals,
        notes=notes,
        weights=dict(settings.weights or {}),
        settings=recorded,
        source_count=len(source),
        target_count=len(target),
        tied=tied,
        multi=multi,
        metadata={"stages": stages},
    )


def map_inventories(
    source: Inventory, target: Inventory, settings: MapperSettings | None = None
) -> MappingResult:
    """Source and target Inventory + MapperSettings → MappingResult (score, then assign)."""
    settings = settings if settings is not None else MapperSettings()
    candidates = score_inventories(source, target, settings.score)
    with paused_gc():
        return assign(candidates, settings.assign)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a block that allocates many small objects.

    The matching stages create no reference cycles; collections triggered by their
    allocations would rescan every live object (a large model's modules included) again
    and again.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    # Objects that exist now (the user's models) are set aside, so a collection that our
    # allocations trigger later does not rescan them.
    gc.freeze()
    try:
        yield
    finally:
        # What the block allocated goes straight to the oldest generation (as survivors of
        # collections would): left young, the first collection after the block would scan
        # every one of them (millions of small objects for a 100k-tensor checkpoint).
        gc.freeze()
        gc.unfreeze()
        if was_enabled:
            gc.enable()
