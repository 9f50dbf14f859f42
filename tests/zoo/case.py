"""ZooCase: a source/target model pair with its exact ground-truth mapping, and the registry.

A case knows how to build both models, a deterministic dummy input, which source key becomes
which target key (and with which tensor transform), which keys have no true partner, and
whether converting with the ground truth gives a target that computes the same function.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml
from torch import nn

from weightmapper.errors import MappingError, TransformError

CATEGORIES: tuple[str, ...] = ("refactor", "cross_library", "transform", "trap")
SPLITS: tuple[str, ...] = ("tune", "heldout")
"""``tune``: the cases the engine is developed against; ``heldout``: layouts it was not tuned
on, measured separately (``bench/accuracy.py --heldout``)."""

ModelInput = torch.Tensor | tuple[torch.Tensor, ...]


class ExpectedMulti(NamedTuple):
    """A split (one source → several targets) or merge (several sources → one target)."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    transform: str
    """``split``, ``merge``, ``stack`` or ``unstack``; details in :attr:`Truth.multi_params`."""


@dataclass(frozen=True)
class Truth:
    """The exact answer for one case: pairs, transforms, splits/merges and partnerless keys."""

    pairs: dict[str, str]
    """One-to-one source key → target key."""
    transforms: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    """Source key → (transform name, params) for pairs that are not the identity."""
    multi: tuple[ExpectedMulti, ...] = ()
    multi_params: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)
    """``ExpectedMulti.sources`` → params of its operation (``dim``, ``sizes``, ...)."""
    unmapped_source: frozenset[str] = frozenset()
    """Source keys with no true partner in the target."""
    unmapped_target: frozenset[str] = frozenset()
    """Target keys with no true partner in the source."""

    def __post_init__(self) -> None:
        targets = list(self.pairs.values()) + [t for m in self.multi for t in m.targets]
        dup = {t for t in targets if targets.count(t) > 1}
        if dup:
            raise MappingError(f"ground truth maps several sources onto {sorted(dup)[:5]}")
        bad = set(self.transforms) - set(self.pairs)
        if bad:
            raise MappingError(f"transforms given for unpaired source keys {sorted(bad)[:5]}")


@dataclass(frozen=True)
class ZooCase:
    """A reference pair of models with exact ground truth, for tests and the accuracy benchmark.

    ``truth`` is a function so that building the registry costs nothing; it is evaluated
    once, on first use of :attr:`ground_truth` and friends.
    """

    name: str
    category: str
    """One of :data:`CATEGORIES`."""
    build_source: Callable[[], nn.Module]
    build_target: Callable[[], nn.Module]
    dummy_input: Callable[[], ModelInput]
    """Deterministic input accepted by both models' ``forward``."""
    truth: Callable[[], Truth]
    same_function: bool
    """True when converting with the ground truth makes the target compute the source's function."""
    description: str = ""
    hard_cases: tuple[str, ...] = ()
    """Which hard cases of the design this pair exercises (free text tags)."""
    requires: tuple[str, ...] = ()
    """Optional packages the builders import (``transformers``)."""
    shared_features: tuple[Callable[..., Any], Callable[..., Any]] | None = None
    """For pairs that differ only in a head: (source, input) → tensor and (target, input) →
    tensor computing the part both share, compared after a ground-truth conversion."""
    split: str = "tune"
    """One of :data:`SPLITS`."""

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise MappingError(
                f"zoo case {self.name!r} has category {self.category!r}; expected one of "
                f"{', '.join(CATEGORIES)}"
            )
        if self.split not in SPLITS:
            raise MappingError(
                f"zoo case {self.name!r} has split {self.split!r}; expected one of "
                f"{', '.join(SPLITS)}"
            )

    # --- ground truth views ------------------------------------------------------------------
    @functools.cached_property
    def _truth(self) -> Truth:
        return self.truth()

    @property
    def ground_truth(self) -> dict[str, str]:
        """One-to-one source key → target key."""
        return dict(self._truth.pairs)

    @property
    def expected_transforms(self) -> dict[str, str]:
        """Source key → transform name, for one-to-one pairs that are not the identity."""
        return {k: name for k, (name, _) in self._truth.transforms.items()}

    @property
    def expected_multi(self) -> list[ExpectedMulti]:
        """Splits and merges as (sources, targets, transform name)."""
        return list(self._truth.multi)

    @property
    def must_stay_unmapped(self) -> dict[str, set[str]]:
        """``{"source": keys, "target": keys}`` that have no true partner."""
        return {
            "source": set(self._truth.unmapped_source),
            "target": set(self._truth.unmapped_target),
        }

    def available(self) -> bool:
        """True when every package in :attr:`requires` can be imported."""
        return all(importlib.util.find_spec(p) is not None for p in self.requires)

    @property
    def one_to_one(self) -> bool:
        """True when the ground truth has no splits or merges."""
        return not self._truth.multi

    def expected_tensor(
        self, source_keys: tuple[str, ...], source_sd: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Source key(s) of one true pair + source state dict → {target key: true tensor}."""
        t = self._truth
        if len(source_keys) == 1 and source_keys[0] in t.pairs:
            s = source_keys[0]
            name, params = t.transforms.get(s, ("identity", {}))
            return {t.pairs[s]: apply_truth_transform(name, params, source_sd[s])}
        for m in t.multi:
            if m.sources == source_keys:
                outs = apply_truth_multi(
                    m.transform,
                    t.multi_params.get(m.sources, {}),
                    [source_sd[s] for s in m.sources],
                )
                return dict(zip(m.targets, outs, strict=True))
        raise KeyError(f"{source_keys} is not a true pair of zoo case {self.name!r}")

    def convert_with_ground_truth(
        self, state_dict: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Source state dict → target state dict built from the ground truth alone."""
        out: dict[str, torch.Tensor] = {}
        for s in self._truth.pairs:
            out.update(self.expected_tensor((s,), state_dict))
        for m in self._truth.multi:
            out.update(self.expected_tensor(m.sources, state_dict))
        return out


# --- the exact tensor operations of the ground truth ---------------------------------------


def apply_truth_transform(name: str, params: Mapping[str, Any], t: torch.Tensor) -> torch.Tensor:
    """Ground-truth one-to-one transform name + params + tensor → target tensor."""
    if name == "identity":
        return t
    if name == "transpose":
        return t.transpose(int(params.get("dim0", 0)), int(params.get("dim1", 1))).contiguous()
    if name == "reshape":
        return t.reshape(tuple(params["shape"])).contiguous()
    if name == "permute":
        return t.permute(tuple(params["dims"])).contiguous()
    raise TransformError(f"zoo ground truth uses unknown transform {name!r}")


def apply_truth_multi(
    name: str, params: Mapping[str, Any], ts: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Ground-truth split/merge name + params + source tensors → target tensors.

    ``split``: one tensor cut along ``dim`` into ``sizes``, each then transposed if
    ``transpose``; ``merge``: tensors (each transposed first if ``transpose``) concatenated
    along ``dim``; ``stack``: consecutive groups of ``group`` tensors concatenated along
    ``dim``, the results stacked along a new leading axis (per-expert weights → one tensor);
    ``unstack``: the inverse, one tensor unbound along its leading axis, each slice cut into
    ``group`` equal parts along ``dim``.
    """
    dim = int(params.get("dim", 0))
    transpose = bool(params.get("transpose", False))
    if name == "split":
        parts = torch.split(ts[0], list(params["sizes"]), dim=dim)
        return [(p.t() if transpose else p).contiguous() for p in parts]
    if name == "merge":
        return [torch.cat([t.t() if transpose else t for t in ts], dim=dim).contiguous()]
    if name == "unstack":
        # inverse of stack: one (N, ...) tensor → N slices, each cut into ``group`` parts
        group = int(params.get("group", 1))
        out: list[torch.Tensor] = []
        for piece in ts[0].unbind(0):
            out += [p.contiguous() for p in torch.chunk(piece, group, dim=dim)]
        return out
    if name == "stack":
        group = int(params.get("group", 1))
        chunks = [torch.cat(ts[i : i + group], dim=dim) for i in range(0, len(ts), group)]
        return [torch.stack(chunks, dim=0).contiguous()]
    raise TransformError(f"zoo ground truth uses unknown multi-tensor transform {name!r}")


# --- registry ------------------------------------------------------------------------------

CASES: dict[str, ZooCase] = {}


def register(case: ZooCase) -> ZooCase:
    """Add a case to :data:`CASES`; a second case with the same name is a programming error."""
    if case.name in CASES:
        raise MappingError(f"zoo case {case.name!r} is registered twice")
    CASES[case.name] = case
    return case


CATALOGUE = Path(__file__).with_name("cases.yaml")
"""What each case is, in words: category, split, same function, description, hard cases."""


@functools.cache
def _catalogue() -> dict[str, dict[str, Any]]:
    with CATALOGUE.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def declare(
    name: str,
    build_source: Callable[[], nn.Module],
    build_target: Callable[[], nn.Module],
    dummy_input: Callable[[], ModelInput],
    truth: Callable[[], Truth],
    **code: Any,
) -> ZooCase:
    """Case name + how to build it (models, input, truth, ``shared_features``) → the registered
    ZooCase, with what the case is read from :data:`CATALOGUE` under its name."""
    about = dict(_catalogue().get(name) or {})
    if not about:
        raise MappingError(f"zoo case {name!r} has no entry in {CATALOGUE.name}; add one")
    for key in ("hard_cases", "requires"):
        about[key] = tuple(about.get(key, ()))
    return register(
        ZooCase(name, build_source=build_source, build_target=build_target,
                dummy_input=dummy_input, truth=truth, **about, **code)
    )  # fmt: skip


def get_case(name: str) -> ZooCase:
    """Case name → ZooCase; MappingError listing the known names if unknown."""
    try:
        return CASES[name]
    except KeyError:
        raise MappingError(
            f"unknown zoo case {name!r}; known cases: {', '.join(sorted(CASES))}"
        ) from None


def cases(category: str | None = None, split: str | None = "tune") -> list[ZooCase]:
    """Category and split (None for all) → their cases, in registration order."""
    if category is not None and category not in CATEGORIES:
        raise MappingError(f"unknown zoo category {category!r}; expected one of {CATEGORIES}")
    if split is not None and split not in SPLITS:
        raise MappingError(f"unknown zoo split {split!r}; expected one of {SPLITS}")
    return [
        c
        for c in CASES.values()
        if (category is None or c.category == category) and (split is None or c.split == split)
    ]


def per_layer(
    layers: int, source: str, target: str, names: Mapping[str, str]
) -> list[tuple[str, str]]:
    """Layer count + each side's layer prefix (``{i}`` for the index) + source name → target
    name within a layer → the (source, target) pairs of every layer, layer by layer."""
    return [
        (f"{source.format(i=i)}.{s}", f"{target.format(i=i)}.{t}")
        for i in range(layers)
        for s, t in names.items()
    ]


def truth_from_pairs(
    pairs: Iterable[tuple[str, str]],
    *,
    transforms: Mapping[str, tuple[str, dict[str, Any]]] | None = None,
    multi: Iterable[tuple[ExpectedMulti, dict[str, Any]]] = (),
    unmapped_source: Iterable[str] = (),
    unmapped_target: Iterable[str] = (),
) -> Truth:
    """Pairs, transforms, (multi, params) and partnerless keys → a checked Truth."""
    multi = list(multi)
    return Truth(
        pairs=dict(pairs),
        transforms=dict(transforms or {}),
        multi=tuple(m for m, _ in multi),
        multi_params={m.sources: p for m, p in multi},
        unmapped_source=frozenset(unmapped_source),
        unmapped_target=frozenset(unmapped_target),
    )
