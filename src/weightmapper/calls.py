"""Inputs and call conventions: how to call a network and which of its outputs to compare.

Libraries differ in signatures (``model(x)``, ``model(input_ids=..., attention_mask=...)``,
``model(pixel_values=...)``) and in what they return (a tensor, a tuple, a dict, a
``ModelOutput``). A :class:`ModelCall` holds one side's arguments and an output selector, so
the source and the target of a proof can be called differently. The builders give
deterministic inputs for common families: token ids, images, encoder–decoder pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from weightmapper.errors import ForwardError

OutputSelector = str | int | Callable[[Any], Any] | None


@dataclass(frozen=True)
class ModelCall:
    """One network's call: positional and keyword arguments, and which output to compare."""

    args: tuple[Any, ...] = ()
    """Positional arguments (tensors usually)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments (``input_ids``, ``attention_mask``, ``pixel_values``, ...)."""
    output: OutputSelector = None
    """A key or attribute (``"logits"``), a tuple index, or a function of the raw output;
    None picks ``logits``, then ``last_hidden_state``, then the first tensor found."""

    def describe(self) -> str:
        """ModelCall → its inputs as text, e.g. ``(1, 8) int64, mask=(1, 8) int64``."""
        parts = [_describe(a) for a in self.args]
        parts += [f"{k}={_describe(v)}" for k, v in self.kwargs.items()]
        return ", ".join(parts) or "no arguments"

    def run(self, module: nn.Module, side: str) -> Any:
        """Module + side name → its raw output; ForwardError naming the side and input shapes."""
        try:
            with torch.no_grad():
                return module(*self.args, **self.kwargs)
        except Exception as e:
            raise ForwardError(
                f"the {side} network's forward failed on input {self.describe()}: "
                f"{type(e).__name__}: {e}. Give an input it accepts (its shape, dtype and "
                f"argument names), or a separate call for the {side} side",
                side=side,
            ) from e

    def select(self, output: Any) -> torch.Tensor | None:
        """Raw output → the tensor to compare, following :attr:`output`."""
        chosen = output
        if callable(self.output):
            chosen = self.output(output)
        elif isinstance(self.output, str):
            chosen = (
                output.get(self.output)
                if isinstance(output, Mapping)
                else getattr(output, self.output, None)
            )
        elif isinstance(self.output, int) and isinstance(output, (tuple, list)):
            chosen = output[self.output] if -len(output) <= self.output < len(output) else None
        return main_tensor(chosen)


def as_call(inputs: Any) -> ModelCall:
    """A tensor, a tuple/list of positional args, a dict of keyword args or a ModelCall → call."""
    if isinstance(inputs, ModelCall):
        return inputs
    if isinstance(inputs, Mapping):
        return ModelCall(kwargs=dict(inputs))
    if isinstance(inputs, (tuple, list)):
        return ModelCall(args=tuple(inputs))
    return ModelCall(args=(inputs,))


def main_tensor(value: Any) -> torch.Tensor | None:
    """Output of any usual form → the tensor to compare (logits / last_hidden_state / first)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):  # dicts and HF ModelOutputs (an OrderedDict subclass)
        for key in ("logits", "last_hidden_state"):
            if isinstance(value.get(key), torch.Tensor):
                return value[key]
        values = list(value.values())
    elif isinstance(value, (tuple, list)):
        values = list(value)
    else:
        return None
    for v in values:
        t = main_tensor(v)
        if t is not None:
            return t
    return None


# --- input builders ------------------------------------------------------------------------


def dummy_input(
    shape: Sequence[int], dtype: str | torch.dtype = "float32", *, high: int = 2
) -> torch.Tensor:
    """Shape + dtype (+ id bound) → a deterministic tensor: normal floats, ids in ``[0, high)``."""
    dt = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    gen = torch.Generator().manual_seed(0)
    if dt.is_floating_point:
        return torch.randn(tuple(shape), generator=gen).to(dt)
    # Varied ids rather than zeros: a wrong layout cannot hide behind a constant input.
    return torch.randint(0, max(1, int(high)), tuple(shape), generator=gen).to(dt)


def vocabulary_bound(*models: nn.Module) -> int:
    """Modules → the smallest embedding table size among them (ids below it fit every one)."""
    sizes = [
        m.num_embeddings for model in models for m in model.modules() if isinstance(m, nn.Embedding)
    ]
    return min(sizes) if sizes else 2


def token_ids(batch: int = 1, seq: int = 8, vocab: int = 32, *, seed: int = 0) -> torch.Tensor:
    """Batch, length, vocabulary size → (batch, seq) int64 token ids in ``[0, vocab)``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq), generator=gen)


def images(
    batch: int = 1, channels: int = 3, size: int | tuple[int, int] = 32, *, seed: int = 0
) -> torch.Tensor:
    """Batch, channels, size → (batch, channels, h, w) float32 standard-normal pixels."""
    h, w = (size, size) if isinstance(size, int) else size
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, h, w, generator=gen)


def encoder_decoder(
    batch: int = 1, seq: int = 8, decoder_seq: int = 4, vocab: int = 32, *, seed: int = 0
) -> ModelCall:
    """Sizes → a keyword call with ``input_ids`` and ``decoder_input_ids`` (T5/BART style)."""
    return ModelCall(
        kwargs={
            "input_ids": token_ids(batch, seq, vocab, seed=seed),
            "decoder_input_ids": token_ids(batch, decoder_seq, vocab, seed=seed + 1),
        }
    )


def keywords(output: OutputSelector = None, **values: Any) -> ModelCall:
    """Keyword arguments (+ an output selector) → a ModelCall passing them by name."""
    return ModelCall(kwargs=values, output=output)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_describe(v) for v in value) + ")"
    return type(value).__name__
