"""One external-truth case: a source, a target, and the converter another project ships.

A case is built at run time from the other project's own code (tiny configuration, random
weights, nothing downloaded). Its ground truth is never written by hand: it is read back from
the converter with :func:`bench.external.truth.derive`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.external.truth import Converter

Forward = Callable[[nn.Module, Any], torch.Tensor]


@dataclass
class Built:
    """A case made concrete: modules, weights, converter, input and how to call each side."""

    source_sd: dict[str, torch.Tensor]
    """The source checkpoint (random weights, distinct values), keys in the source's own order."""
    build_target: Callable[[], nn.Module]
    """A fresh target module; deterministic, so two calls hold the same initial values."""
    converter: Converter
    """The other project's converter, source state dict → target state dict."""
    inputs: Any
    """One input accepted by the target (and by the source module when there is one)."""
    run_target: Forward
    source_module: nn.Module | None = None
    """The source network when its code exists (``None``: the source is a checkpoint layout)."""
    run_source: Forward | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExternalCase:
    """A named conversion that another project defines, with what it needs to build."""

    name: str
    family: str
    """``llama``, ``gqa``, ``neox``, ``phi``, ``moe``, ``encoder``, ``vision``, ..."""
    converter_name: str
    """The other project's function, as ``package.module:function``."""
    build: Callable[[], Built]
    requires: tuple[str, ...] = ()
    description: str = ""

    def available(self) -> str | None:
        """None when every required module imports, else the first one missing."""
        for mod in self.requires:
            try:
                if importlib.util.find_spec(mod) is None:
                    return mod
                importlib.import_module(mod)
            except Exception:  # a broken install counts as missing
                return mod
        return None


CASES: dict[str, ExternalCase] = {}


def register(case: ExternalCase) -> ExternalCase:
    """Add a case to :data:`CASES`; a second case with the same name is a programming error."""
    if case.name in CASES:
        raise ValueError(f"external case {case.name!r} is registered twice")
    CASES[case.name] = case
    return case


def register_converted(
    rows: Iterable[tuple[str, str, str, Callable[[str], Built], str]],
    requires: tuple[str, ...],
    more: Mapping[str, tuple[str, ...]] | None = None,
) -> None:
    """Rows (name, family, converter as ``package.module:function``, builder taking that name,
    description) + the modules they need (``more``: by case name, beyond ``requires``) → each
    row registered, built by the very converter it names."""
    for name, family, convert, make, description in rows:
        register(
            ExternalCase(
                name=name,
                family=family,
                converter_name=convert,
                build=functools.partial(make, convert),
                requires=requires + (more or {}).get(name, ()),
                description=description,
            )
        )


# --- helpers shared by the case modules -------------------------------------------------------


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Module → the same module with every floating tensor redrawn (distinct values), in place.

    Matrices get a fan-in scaled normal, 1-d tensors named like biases ± 0.1, other 1-d tensors
    (norm weights) 1 ± 0.2, so swapping any two tensors changes the network's outputs. Tied
    tensors stay tied.
    """
    g = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if not t.is_floating_point() or t.data_ptr() in seen:
                continue
            seen.add(t.data_ptr())
            if t.dim() <= 1:
                base = 0.0 if name.endswith("bias") else 1.0
                new = base + torch.randn(t.shape, generator=g) * (0.1 if base == 0 else 0.2)
            else:
                fan_in = max(1, t[0].numel())
                new = torch.randn(t.shape, generator=g) * (1.0 / fan_in) ** 0.5
            t.copy_(new.to(t.dtype))
    return module


def seeded(factory: Callable[[], nn.Module], seed: int = 1) -> Callable[[], nn.Module]:
    """Module factory → a factory whose modules are built under a fixed seed, in eval mode."""

    def build() -> nn.Module:
        torch.manual_seed(seed)
        return factory().eval()

    return build


def token_ids(vocab: int, length: int = 7, seed: int = 0) -> torch.Tensor:
    """Vocabulary size → a (1, length) tensor of token ids."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (1, length), generator=g)


def logits(module: nn.Module, x: Any) -> torch.Tensor:
    """Module + input → its first output tensor (``.logits``, ``last_hidden_state`` or a tensor)."""
    with torch.no_grad():
        out = module(x)
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("logits", "last_hidden_state"):
        v = getattr(out, attr, None)
        if isinstance(v, torch.Tensor):
            return v
    if isinstance(out, (tuple, list)) and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"cannot read a tensor from a {type(out).__name__}")


def state_dict_of(module: nn.Module) -> dict[str, torch.Tensor]:
    """Module → a detached copy of its state dict (persistent entries, own storage each)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def select(sd: Mapping[str, torch.Tensor], keys: list[str]) -> dict[str, torch.Tensor]:
    """State dict + keys → the entries of those keys."""
    return {k: sd[k] for k in keys}


def function(path: str) -> Any:
    """``package.module:function`` → that function, imported now (case modules import lazily)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def hf_model(cls: str, config: str, **kwargs: Any) -> tuple[Any, Any]:
    """transformers class and config class names + config fields → (model class, config)."""
    import transformers as tf

    return getattr(tf, cls), getattr(tf, config)(**kwargs)


def from_module(
    src: nn.Module,
    build_target: Callable[[], nn.Module],
    converter: Converter,
    inputs: Any,
    run_source: Forward = logits,
    notes: tuple[str, ...] = (),
) -> Built:
    """Source module + target factory + converter + input → a case whose source network runs
    (its state dict is the checkpoint; the target's first output tensor is compared with what
    ``run_source`` reads from the source)."""
    return Built(
        source_sd=state_dict_of(src),
        build_target=build_target,
        converter=converter,
        inputs=inputs,
        run_target=logits,
        source_module=src,
        run_source=run_source,
        notes=list(notes),
    )
