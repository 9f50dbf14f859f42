"""WeightMapper: the user-guide facade over inventory → trace → score → assign.

Either side may be an ``nn.Module`` (meta device fine), a state dict, a checkpoint path, a
TensorTable or an Inventory: names and shapes are enough to map; execution order is traced
with forward hooks when ``dummy_input`` is given and both sides are modules.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from weightmapper.dataflow import dataflow_roles
from weightmapper.engine import Candidates, assign, paused_gc, score_inventories
from weightmapper.errors import MappingError
from weightmapper.inventory import Inventory
from weightmapper.progress import stage
from weightmapper.result import CONFIDENT_SCORE, MappingResult, status_of
from weightmapper.settings import DEFAULT_THRESHOLD, MIN_PROPOSAL, AssignSettings, ScoreSettings
from weightmapper.tensor_info import TensorInfo
from weightmapper.trace import trace_execution_order

log = logging.getLogger(__name__)

ModelLike = nn.Module | Mapping[str, Any] | Inventory | str | os.PathLike


def _file_identity(path: Path) -> tuple[int, ...] | None:
    """Path → (device, inode, size, mtime, ctime) of the regular file it names, or None (a
    folder, a missing file): two equal identities are one unchanged file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class WeightMapper:
    """Suggest, explain and export a source → target weight mapping.

    >>> mapper = WeightMapper(old_model, new_model)          # doctest: +SKIP
    >>> result = mapper.suggest_mapping(threshold=0.6)        # doctest: +SKIP
    >>> new_model.load_state_dict(result.convert(old_model.state_dict()))  # doctest: +SKIP
    """

    def __init__(
        self,
        source_module: ModelLike,
        target_module: ModelLike,
        shape_tolerance: float = 0.0,
        dummy_input: Any = None,
        incompatible_pairs: Sequence[Sequence[str]] | None = None,
        buffer_matching_mode: str = "exclude",
        *,
        min_proposal: float = MIN_PROPOSAL,
        trusted: bool = False,
    ) -> None:
        # Every scoring setting is checked now (all problems in one error), not at suggest time.
        self.score_settings = ScoreSettings(
            shape_tolerance=shape_tolerance,
            incompatible_pairs=incompatible_pairs if incompatible_pairs is not None else (),
            buffer_matching_mode=buffer_matching_mode,
            min_proposal=min_proposal,
        )
        self.dummy_input = dummy_input
        self.trusted = trusted
        self.source_path: Path | None = None
        self.target_path: Path | None = None
        self.source_module: nn.Module | None = (
            source_module if isinstance(source_module, nn.Module) else None
        )
        self.target_module: nn.Module | None = (
            target_module if isinstance(target_module, nn.Module) else None
        )
        self._source_read: tuple[tuple[int, ...] | None, Any, Inventory] | None = None
        with stage("read source"):
            self.source_inventory = self._inventory(source_module, "source")
        with stage("read target"):
            self.target_inventory = self._inventory(target_module, "target")
        self.source_name = self.source_inventory.name
        self.target_name = self.target_inventory.name
        if dummy_input is not None:
            with stage("trace execution order"):
                self._trace()
            with stage("read roles from the forward pass"):
                self._read_roles()
        self.result: MappingResult | None = None
        self._candidates: dict[tuple, Candidates] = {}

    # --- constructors -----------------------------------------------------------------------
    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, Any], target_module: ModelLike, **kwargs: Any
    ) -> WeightMapper:
        """Source state dict + target (module, state dict or checkpoint) → WeightMapper."""
        if not isinstance(state_dict, Mapping):
            raise MappingError(
                f"from_state_dict expects a mapping of names to tensors, got "
                f"{type(state_dict).__name__}"
            )
        return cls(state_dict, target_module, **kwargs)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], target_module: ModelLike, **kwargs: Any
    ) -> WeightMapper:
        """Checkpoint path (any format the reader knows) + target → WeightMapper.

        Reads headers only; pass ``trusted=True`` for a pickle whose code you trust.
        """
        return cls(Path(path), target_module, **kwargs)

    def _inventory(self, obj: ModelLike, side: str) -> Inventory:
        if isinstance(obj, Inventory):
            return obj
        if isinstance(obj, nn.Module):
            with paused_gc():
                return Inventory.from_module(obj)
        if isinstance(obj, (str, os.PathLike)):
            from weightmapper.checkpoint import open_checkpoint

            path = Path(obj)
            identity = _file_identity(path)
            shared = self._source_read
            if side == "target" and identity is not None and shared and shared[0] == identity:
                # The same unchanged file on both sides (a checkpoint checked against
                # itself): its header is parsed once, and both sides read one table.
                table, inventory = shared[1], shared[2]
                if inventory.name != path.name:
                    inventory = dataclasses.replace(inventory, name=path.name)
            else:
                with paused_gc():  # a header is 100k small dicts: no cycles, nothing to collect
                    table = open_checkpoint(path, trusted=self.trusted)
                    inventory = Inventory.from_table(table, name=path.name)
            if side == "source":
                self.source_path = path
                self._source_table = table
                # only when the file did not change while it was read
                same = identity is not None and _file_identity(path) == identity
                self._source_read = (identity, table, inventory) if same else None
            else:
                self.target_path = path
            return inventory
        if isinstance(obj, Mapping):
            values = list(obj.values())
            if values and all(isinstance(v, TensorInfo) for v in values):
                return Inventory.from_table(obj)
            return Inventory.from_state_dict(obj)
        raise MappingError(
            f"cannot map a {type(obj).__name__} as the {side}: expected an nn.Module, a state "
            "dict, a checkpoint path, a TensorTable or an Inventory."
        )

    def _trace(self) -> None:
        if self.source_module is None or self.target_module is None:
            log.info("dummy_input given but one side is not a module: using registration order")
            return
        s_order = trace_execution_order(self.source_module, self.dummy_input)
        t_order = trace_execution_order(self.target_module, self.dummy_input)
        if s_order is None or t_order is None:
            return  # trace_execution_order already warned
        self.source_inventory = self.source_inventory.with_order(s_order)
        self.target_inventory = self.target_inventory.with_order(t_order)

    def _read_roles(self) -> None:
        """Each side that is a module → its inventory with roles read from a forward pass.

        A checkpoint side keeps none: the engine reads its roles from naming conventions.
        """
        if self.source_module is not None:
            roles = dataflow_roles(self.source_module, self.dummy_input)
            self.source_inventory = self.source_inventory.with_roles(roles)
        if self.target_module is not None:
            roles = dataflow_roles(self.target_module, self.dummy_input)
            self.target_inventory = self.target_inventory.with_roles(roles)

    # --- mapping ----------------------------------------------------------------------------
    def candidates(self, weights: Mapping[str, float] | None = None) -> Candidates:
        """Scoring weights → Candidates (cached per weights; threshold-free)."""
        settings = dataclasses.replace(self.score_settings, weights=weights)
        key = tuple(sorted((settings.weights or {}).items()))
        if key not in self._candidates:
            with stage("score candidates"):
                self._candidates[key] = score_inventories(
                    self.source_inventory, self.target_inventory, settings
                )
        return self._candidates[key]

    def suggest_mapping(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        strategy: str = "best_match",
        weights: Mapping[str, float] | None = None,
        *,
        verify: bool = False,
    ) -> MappingResult:
        """Threshold + strategy (+ signal weights) → MappingResult (source → target Mapping).

        Strategies: ``best_match`` (every pair scored ≥ threshold), ``conservative`` (only
        high-confidence pairs scored ≥ 0.85), ``shape_only`` (scored by shape alone).
        Scores are calibrated probabilities that a pair is right (``shape_only``: the shape
        signal).
        ``verify=True`` also compares outputs on ``dummy_input`` when both sides are modules
        and stores the check in ``result.metadata["functional_check"]``.
        """
        settings = AssignSettings(threshold=threshold, strategy=strategy)
        cands = self.candidates(weights)
        with stage("assign pairs"), paused_gc():
            result = assign(cands, settings)
        if verify:
            with stage("verify outputs"):
                self._verify(result)
        if self.target_module is None and result.status is None:
            # A checkpoint target cannot be run: the status says what would prove the mapping.
            result.status = status_of(
                unmapped_targets=result.get_unmatched()["target"], target_runs=False
            )
        self.result = result
        return result

    def _verify(self, result: MappingResult) -> None:
        if self.dummy_input is None or self.source_module is None or self.target_module is None:
            log.warning("verify=True needs dummy_input and two modules; functional check skipped")
            return
        from weightmapper.verify import check_outputs  # torch-heavy: only when asked for

        check = check_outputs(self.source_module, self.target_module, result, self.dummy_input)
        result.metadata["functional_check"] = check.to_dict()

    def _ensure_result(self) -> MappingResult:
        """() → the last suggestion, made with the default settings when there is none."""
        return self.result if self.result is not None else self.suggest_mapping()

    def get_mapping_dict(self) -> dict[str, str]:
        """() → {source key: target key} of the last suggestion (made with defaults if none)."""
        return dict(self._ensure_result())

    def get_mapping_with_scores(self) -> dict[str, tuple[str, float]]:
        """() → {source: (target, score)} of the last suggestion, highest score first."""
        return self._ensure_result().get_mapping_with_scores()

    def get_unmatched(self) -> dict[str, list[str]]:
        """() → {"source": [...], "target": [...]} keys left without a partner."""
        return self._ensure_result().get_unmatched()

    def convert(
        self, state_dict: Mapping[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Source state dict (default: the source module's or checkpoint's) → target-named dict."""
        result = self._ensure_result()
        if state_dict is None:
            if self.source_module is not None:
                state_dict = self.source_module.state_dict()
            elif getattr(self, "_source_table", None) is not None:
                state_dict = self._source_table.to_state_dict()
            else:
                raise MappingError(
                    "this mapper was built from a state dict or inventory; pass the source "
                    "state dict to convert(state_dict)"
                )
        return result.convert(state_dict)

    # --- reporting --------------------------------------------------------------------------
    def analysis_text(self, top_n: int = 10, show_unmatched: bool = True) -> str:
        """() → the plain-text analysis that :meth:`print_analysis` prints."""
        r = self._ensure_result()
        cov = r.coverage()
        lines = [
            f"Weight mapping analysis: {self.source_name} → {self.target_name}",
            f"  source tensors: {cov['source_total']}   target tensors: {cov['target_total']}",
            f"  mapped pairs:   {cov['mapped_pairs']}   split/merge: {cov['multi_pairs']}",
            f"  source coverage: {cov['source_coverage']:.1%}   "
            f"target coverage: {cov['target_coverage']:.1%}",
            f"  confident (high, p ≥ {CONFIDENT_SCORE}): {cov['confident_pairs']} pairs, "
            f"source {cov['source_confident_coverage']:.1%}   "
            f"target {cov['target_confident_coverage']:.1%}",
            f"  settings: threshold={r.settings.get('threshold')} "
            f"strategy={r.settings.get('strategy')} "
            f"buffers={r.settings.get('buffer_matching_mode')}",
        ]
        stages = r.metadata.get("stages")
        if stages:
            lines.append("  settled by stage: " + ", ".join(f"{k}={v}" for k, v in stages.items()))
        top = sorted(r.pairs, key=lambda p: (-p.score, p.source))[: max(0, top_n)]
        if top:
            lines.append(f"\nTop {len(top)} mappings by score:")
            for p in top:
                tf = "" if p.transform.is_identity else f"  [{p.transform.name}]"
                lines.append(f"  {p.score:.3f}  {p.source} → {p.target}{tf}")
                lines.append(
                    "         " + "  ".join(f"{k}={v:.2f}" for k, v in sorted(p.breakdown.items()))
                )
        low = sorted((p for p in r.pairs if not p.confident), key=lambda p: (p.score, p.source))
        if low:
            lines.append(
                f"\nNot confident ({len(low)}: ambiguous, low or scored < {CONFIDENT_SCORE}):"
            )
            for p in low[: max(0, top_n)]:
                lines.append(f"  {p.score:.3f}  {p.source} → {p.target}  [{p.confidence}]")
        if r.multi:
            lines.append(f"\nSplits and merges ({len(r.multi)}):")
            for m in r.multi[: max(0, top_n)]:
                lines.append(
                    f"  {m.kind}: {list(m.sources)} → {list(m.targets)} [{m.transform.name}]"
                )
        if show_unmatched:
            for side, items in (("source", r.unmatched_source), ("target", r.unmatched_target)):
                lines.append(f"\nUnmatched {side} keys ({len(items)}):")
                for u in items[: max(0, top_n)]:
                    lines.append(f"  {u.name} {list(u.shape)}: {u.reason.value}")
                    if u.detail:
                        lines.append(f"      {u.detail}")
                if len(items) > top_n:
                    lines.append(f"  ... and {len(items) - top_n} more")
        return "\n".join(lines)

    def print_analysis(self, top_n: int = 10, show_unmatched: bool = True) -> None:
        """Print coverage, the top pairs with their score breakdown, and unmatched keys."""
        print(self.analysis_text(top_n=top_n, show_unmatched=show_unmatched))

    def export_mapping_report(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON report (model names, counts, every pair, unmatched + reasons) atomically."""
        from weightmapper.report import write_report

        self._ensure_result()
        return Path(write_report(self, path))

    def visualize_mapping(self, **kw: Any) -> Any:
        """Render the mapping table (``weightmapper.visualize.visualize_mapping``)."""
        from weightmapper import visualize

        self._ensure_result()
        return visualize.visualize_mapping(self, **kw)

    def visualize_hierarchies(self, **kw: Any) -> Any:
        """Render both module trees side by side (``weightmapper.visualize``)."""
        from weightmapper import visualize

        self._ensure_result()
        return visualize.visualize_hierarchies(self, **kw)

    def visualize_score_breakdown(self, param_name: str, **kw: Any) -> Any:
        """Render one source key's per-signal scores (``weightmapper.visualize``)."""
        from weightmapper import visualize

        self._ensure_result()
        return visualize.visualize_score_breakdown(self, param_name, **kw)

    def __repr__(self) -> str:
        return (
            f"WeightMapper({self.source_name!r} [{len(self.source_inventory)} tensors] → "
            f"{self.target_name!r} [{len(self.target_inventory)} tensors])"
        )
