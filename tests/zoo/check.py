"""Running zoo cases: randomized weights, model outputs, and the load-then-compare check.

Default initializations are too regular to prove a mapping (every LayerNorm weight is 1, every
bias 0, so swapping two norms changes nothing); :func:`randomize_` gives every floating tensor
distinct values first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from zoo.case import ModelInput, ZooCase

_VARIANCE_SUFFIXES = ("running_var", "moving_variance")
_BIAS_SUFFIXES = ("bias", "beta", "running_mean", "moving_mean")


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Module → the same module with every floating parameter and buffer redrawn, in place.

    Matrices get a He-scaled normal (signals neither die nor explode through ReLUs); 1-d
    weights 1 ± 0.2; biases and running means ± 0.1; variances in [0.5, 1.5]. Layers that
    set ``out_axis_last = True`` (Keras layouts) get their fan-in from the other axes. Tied
    tensors stay tied (each storage is drawn once). Integer buffers stay.
    """
    g = torch.Generator().manual_seed(seed)
    out_last = {
        id(t)
        for m in module.modules()
        if getattr(m, "out_axis_last", False)
        for t in (*m._parameters.values(), *m._buffers.values())
        if t is not None
    }
    seen: set[int] = set()
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if not t.is_floating_point() or t.device.type == "meta":
                continue
            ptr = t.data_ptr()
            if ptr in seen:
                continue
            seen.add(ptr)
            if name.endswith(_VARIANCE_SUFFIXES):
                new = torch.rand(t.shape, generator=g) + 0.5
            elif name.endswith(_BIAS_SUFFIXES):
                new = torch.randn(t.shape, generator=g) * 0.1
            elif t.dim() <= 1 or (t.dim() == 3 and t.shape[1:] == (1, 1)):
                # norm weights and layer scales, (C,) or (C, 1, 1)
                new = 1.0 + torch.randn(t.shape, generator=g) * 0.2
            else:
                keras = id(t) in out_last
                fan_in = max(1, t.numel() // t.shape[-1] if keras else t[0].numel())
                new = torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5
            t.copy_(new.to(t.dtype))
    return module


def model_output(model: nn.Module, inputs: ModelInput) -> tuple[torch.Tensor, ...]:
    """Model + input → every output tensor, in order (HF ModelOutputs and tuples flattened)."""
    with torch.no_grad():
        out = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
    if isinstance(out, torch.Tensor):
        return (out,)
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, (tuple, list)):
        return tuple(o for o in out if isinstance(o, torch.Tensor))
    raise TypeError(f"cannot read tensors from a model output of type {type(out).__name__}")


def source_with_weights(case: ZooCase, seed: int = 0) -> nn.Module:
    """Case → its source model, randomized, in eval mode."""
    return randomize_(case.build_source(), seed).eval()


@dataclass
class OutputCheck:
    """Result of loading a converted state dict into the target and comparing outputs."""

    loaded: bool
    """True when ``load_state_dict`` accepted the converted state dict."""
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    error: str = ""
    max_abs_diff: float | None = None
    """Largest absolute difference over all output tensors; None when not compared."""
    reference_scale: float = 1.0
    """Largest absolute value of the source's outputs (the tolerance scales with it)."""

    @property
    def equal(self) -> bool:
        """True when the outputs were compared and agree to float32 round-off."""
        tol = 1e-4 * max(1.0, self.reference_scale)
        return self.max_abs_diff is not None and self.max_abs_diff <= tol


def convert_and_compare(
    case: ZooCase,
    convert: Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]],
    *,
    strict: bool = True,
    seed: int = 0,
) -> OutputCheck:
    """Case + a source→target state-dict converter → load result and output difference.

    Builds the randomized source, converts its state dict, loads it into a fresh target and,
    when the case computes the same function (or declares shared features), compares outputs.
    """
    source = source_with_weights(case, seed)
    target = case.build_target().eval()
    try:
        converted = dict(convert(source.state_dict()))
        res = target.load_state_dict(converted, strict=strict)
    except (RuntimeError, KeyError, ValueError) as e:
        return OutputCheck(loaded=False, error=f"{type(e).__name__}: {e}"[:2000])
    check = OutputCheck(
        loaded=True, missing=list(res.missing_keys), unexpected=list(res.unexpected_keys)
    )
    x = case.dummy_input()
    if case.same_function:
        a, b = model_output(source, x), model_output(target, x)
    elif case.shared_features is not None:
        with torch.no_grad():
            a = (case.shared_features[0](source, x),)
            b = (case.shared_features[1](target, x),)
    else:
        return check
    if len(a) != len(b) or any(u.shape != v.shape for u, v in zip(a, b, strict=False)):
        check.error = "outputs differ in number or shape"
        return check
    check.max_abs_diff = max(float((u - v).abs().max()) for u, v in zip(a, b, strict=True))
    check.reference_scale = max(float(u.abs().max()) for u in a)
    return check
