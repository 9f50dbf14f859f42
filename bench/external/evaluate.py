"""An external case through the engine: truth read back, verified, mapped twice, scored.

Modes: ``file`` maps a ``.safetensors`` file written from the source weights (keys sorted, as
most users start); ``module`` maps the source module with a dummy input (the in-memory state
dict when the source is only a checkpoint layout). The unit is one target tensor: correct iff
the engine names exactly its true source keys AND its transform gives exactly the true tensor.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.external.case import Built, ExternalCase
from bench.external.truth import Truth, derive
from bench.rates import PrecisionRecall

MODES = ("file", "module")


@dataclass
class Unit:
    """One predicted target tensor and the verdict on it."""

    target: str
    sources: tuple[str, ...]
    score: float
    confidence: str
    stage: str
    transform: dict[str, Any]
    true_sources: tuple[str, ...] | None
    keys_right: bool = False
    tensor_right: bool = False
    violates_unmapped: bool = False
    mechanism: str = ""
    """For a wrong unit: ``layout``, ``swap``, ``wrong partner``, ``must stay unmapped``."""

    @property
    def correct(self) -> bool:
        """Keys and tensor both right."""
        return self.keys_right and self.tensor_right


@dataclass
class ModeRun(PrecisionRecall):
    """One case mapped in one mode."""

    mode: str
    source_kind: str = ""
    """``safetensors file``, ``module`` or ``state dict``."""
    truth_units: int = 0
    target_total: int = 0
    units: list[Unit] = field(default_factory=list)
    missed: list[dict[str, Any]] = field(default_factory=list)
    unmapped_wrong: list[str] = field(default_factory=list)
    output: str = "-"
    """``equal``, ``differs (max abs …)``, ``load failed: …`` or ``-``."""
    equal: bool = False
    seconds: float = 0.0
    error: str = ""

    @property
    def predicted(self) -> int:
        return len(self.units)

    @property
    def correct(self) -> int:
        return sum(u.correct for u in self.units)

    @property
    def high(self) -> list[Unit]:
        return [u for u in self.units if u.confidence == "high"]

    @property
    def confident_coverage(self) -> float:
        """Fraction of the true target tensors mapped by a pair labelled ``high``."""
        n = sum(u.true_sources is not None for u in self.high)
        return n / self.truth_units if self.truth_units else 1.0

    @property
    def coverage(self) -> float:
        """Fraction of the true target tensors mapped at all (right or wrong)."""
        n = sum(u.true_sources is not None for u in self.units)
        return n / self.truth_units if self.truth_units else 1.0

    @property
    def wrong_high(self) -> int:
        return sum(not u.correct for u in self.high)


@dataclass
class CaseRun:
    """A case: its truth, the truth's verification, and the engine's runs."""

    case: ExternalCase
    truth: Truth | None = None
    truth_check: str = ""
    """How the truth was verified: ``outputs equal``, ``converter only`` (no source module)."""
    truth_ok: bool = False
    runs: dict[str, ModeRun] = field(default_factory=dict)
    error: str = ""
    notes: list[str] = field(default_factory=list)


# --- outputs ---------------------------------------------------------------------------------


def _close(a: torch.Tensor, b: torch.Tensor) -> tuple[bool, float]:
    if a.shape != b.shape:
        return False, float("inf")
    diff = float((a.float() - b.float()).abs().max())
    return diff <= 1e-4 * max(1.0, float(a.abs().max())), diff


def load_and_run(built: Built, truth: Truth, converted: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Case + truth + a converted state dict → the target's output (strict load; keys the truth
    leaves to the target keep the target's own values, as they do for the reference)."""
    target = built.build_target()
    own = target.state_dict()
    sd = dict(converted)
    for k in truth.unmapped_target:
        if k not in sd:
            sd[k] = own[k]
    target.load_state_dict(sd, strict=True)
    return built.run_target(target, built.inputs)


def verify_truth(built: Built, truth: Truth) -> tuple[bool, str, torch.Tensor]:
    """Built case + truth → (verified, how, reference output of the target).

    The truth must reproduce the converter's output exactly on the real weights; where the
    source network exists, the target loaded with it must also compute the source's outputs.
    """
    real = built.converter({k: v.clone() for k, v in built.source_sd.items()})
    mine = truth.convert(built.source_sd)
    for k, t in mine.items():
        if not torch.equal(t, real[k].to(t.dtype)):
            return False, f"truth differs from the converter on {k}", torch.empty(0)
    ref = load_and_run(built, truth, mine)
    if built.source_module is None or built.run_source is None:
        return True, "converter only", ref
    ok, diff = _close(built.run_source(built.source_module.eval(), built.inputs), ref)
    return ok, ("outputs equal" if ok else f"outputs differ ({diff:.1e})"), ref


# --- the engine --------------------------------------------------------------------------


def _engine_result(built: Built, mode: str, workdir: Path) -> tuple[Any, str]:
    from weightmapper.mapper import WeightMapper

    target = built.build_target()
    if mode == "file":
        from safetensors.torch import save_file

        path = workdir / "source.safetensors"
        save_file({k: v.detach().contiguous().clone() for k, v in built.source_sd.items()}, path)
        return WeightMapper.from_checkpoint(path, target).suggest_mapping(), "safetensors file"
    if built.source_module is not None:
        mapper = WeightMapper(built.source_module, target, dummy_input=built.inputs)
        return mapper.suggest_mapping(), "module"
    return WeightMapper.from_state_dict(built.source_sd, target).suggest_mapping(), "state dict"


def _predicted(
    result: Any, sd: Mapping[str, torch.Tensor]
) -> list[tuple[Any, torch.Tensor | None]]:
    """MappingResult + source weights → ((target, sources, pair info), produced tensor)."""
    from weightmapper.transforms import apply_one, apply_transform

    out: list[tuple[Any, torch.Tensor | None]] = []
    for p in result.pairs:
        try:
            t: torch.Tensor | None = apply_one(p.transform, sd[p.source])
        except Exception:  # a transform that cannot apply is a wrong unit, not a crash
            t = None
        out.append(((p.target, (p.source,), p.score, p.confidence, p.stage, p.transform), t))
    for m in result.multi:
        try:
            made = list(apply_transform(m.transform, [sd[s] for s in m.sources]))
        except Exception:
            made = []
        if len(made) != len(m.targets):
            made = [None] * len(m.targets)
        for tk, t in zip(m.targets, made, strict=True):
            out.append(((tk, tuple(m.sources), m.score, m.confidence, "multi", m.transform), t))
    return out


def score_result(truth: Truth, result: Any, sd: Mapping[str, torch.Tensor], run: ModeRun) -> None:
    """Truth + MappingResult + source weights → the units, misses and violations of ``run``."""
    got: dict[str, Unit] = {}
    for (tk, sources, score, conf, stage, tf), tensor in _predicted(result, sd):
        tu = truth.units.get(tk)
        u = Unit(
            target=tk,
            sources=sources,
            score=float(score),
            confidence=str(conf),
            stage=stage,
            transform=tf.to_dict(),
            true_sources=tu.sources if tu else None,
        )
        u.violates_unmapped = tk in truth.unmapped_target or bool(
            set(sources) & truth.unmapped_source
        )
        if tu is not None and set(tu.sources) == set(sources):
            u.keys_right = True
            exp = tu.expected(sd)
            u.tensor_right = (
                tensor is not None and tensor.shape == exp.shape and torch.equal(tensor, exp)
            )
        run.units.append(u)
        got[tk] = u
    source_of = {s: u.target for u in run.units for s in u.sources}
    true_target_of = {s: t for t, tu in truth.units.items() for s in tu.sources}
    for u in run.units:
        if u.correct:
            continue
        if u.violates_unmapped:
            u.mechanism = "must stay unmapped"
        elif u.keys_right:
            u.mechanism = "layout"
        elif len(u.sources) == 1 and u.true_sources and len(u.true_sources) == 1:
            # a swap: my source's true target got my true source
            mine_true = true_target_of.get(u.sources[0])
            other = got.get(mine_true) if mine_true else None
            u.mechanism = (
                "swap" if other is not None and other.sources == u.true_sources else "wrong partner"
            )
        else:
            u.mechanism = "wrong split/merge"
    run.unmapped_wrong = sorted(
        {u.target for u in run.units if u.target in truth.unmapped_target}
        | {s for u in run.units for s in u.sources if s in truth.unmapped_source}
    )
    unmatched = {x.name: x for x in result.unmatched_source}
    for t, tu in truth.units.items():
        u = got.get(t)
        if u is not None and u.correct:
            continue
        fate = []
        for s in tu.sources:
            if s in source_of:
                fate.append(f"{s} → {source_of[s]}")
            elif s in unmatched:
                fate.append(f"{s}: {unmatched[s].reason.value}")
            else:
                fate.append(f"{s}: not reported")
        run.missed.append(
            {
                "target": t,
                "true_sources": list(tu.sources),
                "layout": tu.layout,
                "got": None if u is None else list(u.sources),
                "fate": fate,
            }
        )


def run_mode(built: Built, truth: Truth, ref: torch.Tensor, mode: str) -> ModeRun:
    """Built case + verified truth + reference output + mode → ModeRun (errors recorded)."""
    run = ModeRun(mode=mode, truth_units=len(truth.units))
    run.target_total = len(truth.units) + len(truth.unmapped_target)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        try:
            result, run.source_kind = _engine_result(built, mode, Path(d))
        except Exception as e:
            run.error = f"{type(e).__name__}: {e}"[:300]
            return run
        run.seconds = time.perf_counter() - t0
    score_result(truth, result, built.source_sd, run)
    try:
        converted = result.convert(built.source_sd)
        out = load_and_run(built, truth, converted)
        run.equal, diff = _close(ref, out)
        run.output = "equal" if run.equal else f"differs {diff:.1e}"
    except Exception as e:
        run.output = f"load failed: {type(e).__name__}"
        run.error_output = str(e)[:300]  # type: ignore[attr-defined]
    return run


def run_case(case: ExternalCase, modes: tuple[str, ...] = MODES) -> CaseRun:
    """Case → its truth (derived and verified) and the engine's run in each mode."""
    cr = CaseRun(case=case)
    torch.manual_seed(0)
    try:
        built = case.build()
        cr.notes = list(built.notes)
        target: nn.Module = built.build_target()
        shapes = {k: v.shape for k, v in built.source_sd.items()}
        cr.truth = derive(shapes, built.converter, list(target.state_dict()))
        cr.truth_ok, cr.truth_check, ref = verify_truth(built, cr.truth)
    except Exception:
        cr.error = traceback.format_exc(limit=4)
        return cr
    for mode in modes:
        cr.runs[mode] = run_mode(built, cr.truth, ref, mode)
    return cr
