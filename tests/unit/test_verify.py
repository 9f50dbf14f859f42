"""Functional proof: GPT-2 (Conv1D, fused qkv) → a Linear re-implementation with equal outputs."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from weightmapper.engine import propose_multi
from weightmapper.errors import MappingError
from weightmapper.result import MappingResult, MatchedPair
from weightmapper.tensor_info import TensorInfo
from weightmapper.transforms import IDENTITY, TransformSpec, chain, infer_transform
from weightmapper.verify import FunctionalCheck, check_outputs, settle_ambiguous
from zoo.nets_linear_gpt import LAYERS, VOCAB, LinearGPT, gpt2

pytest.importorskip("transformers")

_RENAMES = {
    "wte": "tok",
    "wpe": "pos",
    "ln_f": "norm",
    "h.{i}.ln_1": "layers.{i}.ln_1",
    "h.{i}.ln_2": "layers.{i}.ln_2",
    "h.{i}.attn.c_proj": "layers.{i}.attn.o_proj",
    "h.{i}.mlp.c_fc": "layers.{i}.mlp.fc",
    "h.{i}.mlp.c_proj": "layers.{i}.mlp.proj",
}


def _types(m: nn.Module) -> dict[str, str]:
    return {n: type(x).__name__ for n, x in m.named_modules()}


def gpt2_mapping(
    src: nn.Module, tgt: nn.Module, *, break_square: str | None = None
) -> MappingResult:
    """GPT-2 → LinearGPT mapping: renames with inferred transforms, plus proposed qkv splits."""
    s_sd, t_sd = src.state_dict(), tgt.state_dict()
    s_types, t_types = _types(src), _types(tgt)
    modules = {}
    for i in range(LAYERS):
        for a, b in _RENAMES.items():
            modules[a.format(i=i)] = b.format(i=i)
    pairs = []
    for key, tensor in s_sd.items():
        mod, _, param = key.rpartition(".")
        if mod not in modules:
            continue
        t_mod = modules[mod]
        t_key = f"{t_mod}.{param}"
        spec, conf = infer_transform(
            tensor.shape,
            t_sd[t_key].shape,
            source_type=s_types[mod],
            target_type=t_types[t_mod],
            param=param,
        )
        if key == break_square:
            spec, conf = IDENTITY, "low"  # the wrong guess a shape-only tool makes
        pairs.append(MatchedPair(key, t_key, 1.0, transform=spec, confidence=conf))
    done_s = {p.source for p in pairs}
    done_t = {p.target for p in pairs}
    multi = propose_multi(
        {k: TensorInfo.from_tensor(k, v) for k, v in s_sd.items() if k not in done_s},
        {k: TensorInfo.from_tensor(k, v) for k, v in t_sd.items() if k not in done_t},
        source_types=s_types,
        target_types=t_types,
    )
    return MappingResult(pairs, multi=multi)


def test_gpt2_conv1d_to_linear_reimplementation_has_equal_outputs() -> None:
    src, tgt = gpt2(), LinearGPT()
    mapping = gpt2_mapping(src, tgt)
    assert len(mapping.multi) == 2 * LAYERS  # c_attn weight and bias, per layer
    assert all(m.confidence == "high" for m in mapping.multi)
    assert mapping.splits["h.0.attn.c_attn.weight"] == [
        "layers.0.attn.q_proj.weight",
        "layers.0.attn.k_proj.weight",
        "layers.0.attn.v_proj.weight",
    ]
    ids = torch.randint(0, VOCAB, (2, 10))
    check = check_outputs(src, tgt, mapping, ids)
    assert isinstance(check, FunctionalCheck)
    assert check.equal, check.summary()
    assert check.max_abs_diff < 1e-5
    assert check.first_diverging is None
    assert check.compared_modules > 10
    # the library's own conversion gives the same outputs as a hand-made load
    loaded = LinearGPT()
    loaded.load_state_dict(mapping.convert(src.state_dict()))
    torch.testing.assert_close(loaded(ids), src(ids).last_hidden_state, atol=1e-5, rtol=1e-4)
    assert check.to_dict()["equal"] is True


def test_wrong_square_transpose_is_caught_and_located() -> None:
    src, tgt = gpt2(), LinearGPT()
    mapping = gpt2_mapping(src, tgt, break_square="h.1.attn.c_proj.weight")
    check = check_outputs(src, tgt, mapping, torch.randint(0, VOCAB, (2, 10)))
    assert not check.equal
    assert check.max_abs_diff > 1e-3
    assert check.first_diverging_target == "layers.1.attn.o_proj"
    assert check.first_diverging_source == "h.1.attn.c_proj"
    assert "layers.1.attn.o_proj (source: h.1.attn.c_proj)" in check.summary()


def test_reference_output_without_source_module() -> None:
    src, tgt = gpt2(), LinearGPT()
    mapping = gpt2_mapping(src, tgt)
    ids = torch.randint(0, VOCAB, (1, 8))
    reference = src(ids).last_hidden_state
    converted = LinearGPT()
    converted.load_state_dict(mapping.convert(src.state_dict()))
    check = check_outputs(None, converted, {}, ids, reference_output=reference)
    assert check.equal
    bad = check_outputs(None, LinearGPT(), {}, ids, reference_output=reference)
    assert not bad.equal and bad.first_diverging is None


def test_outputs_as_tuples_and_dicts() -> None:
    class TupleOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> tuple[str, torch.Tensor]:
            return ("meta", self.lin(x))

    class DictOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"hidden": x, "logits": self.proj(x)}

    mapping = {"lin.weight": "proj.weight", "lin.bias": "proj.bias"}
    check = check_outputs(TupleOut(), DictOut(), mapping, {"x": torch.randn(2, 3)})
    assert check.equal and check.compared_modules == 1


def test_mapping_onto_missing_target_keys_is_bad_input() -> None:
    src, tgt = nn.Linear(2, 2), nn.Linear(2, 2)
    with pytest.raises(MappingError, match="does not have"):
        check_outputs(src, tgt, {"weight": "nope.weight"}, torch.randn(1, 2))
    with pytest.raises(MappingError, match="source module or a reference"):
        check_outputs(None, tgt, {}, torch.randn(1, 2))


def test_functional_check_settles_ambiguous_layouts() -> None:
    src, tgt = gpt2(), LinearGPT()
    mapping = gpt2_mapping(src, tgt, break_square="h.1.attn.c_proj.weight")
    # Layer 0's split made wrong and unsure too: every q/k/v chunk transposed once more.
    multi = [
        replace(m, transform=chain(m.transform, TransformSpec("transpose", {})), confidence="low")
        if m.sources == ("h.0.attn.c_attn.weight",)
        else m
        for m in mapping.multi
    ]
    broken = MappingResult(list(mapping.pairs), multi=multi)
    ids = torch.randint(0, VOCAB, (2, 10))
    assert not check_outputs(src, tgt, broken, ids).equal
    settled, check = settle_ambiguous(src, tgt, broken, ids)
    assert check.equal, check.summary()
    fixed = settled.pair("h.1.attn.c_proj.weight")
    assert fixed.transform.name == "transpose"
    assert fixed.confidence == "high" and fixed.breakdown["functional_check"] == 1.0
    assert all(m.confidence == "high" for m in settled.multi)
    again = check_outputs(src, tgt, settled, ids)
    assert again.equal


class ConvScaleBlock(nn.Module):
    """1×1 conv + (C,1,1) layer scale on NCHW input."""

    def __init__(self, c: int = 6, o: int = 5) -> None:
        super().__init__()
        self.pw = nn.Conv2d(c, o, 1)
        self.gamma = nn.Parameter(torch.randn(o, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(x) * self.gamma


class LinearScaleBlock(nn.Module):
    """The same function channels-last: a Linear and a (C,) layer scale."""

    def __init__(self, c: int = 6, o: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(c, o)
        self.scale = nn.Parameter(torch.randn(o))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.fc(x.permute(0, 2, 3, 1)) * self.scale).permute(0, 3, 1, 2)


def test_layer_scale_and_pointwise_conv_reshapes_give_equal_outputs() -> None:
    src, tgt = ConvScaleBlock(), LinearScaleBlock()
    names = {"pw.weight": "fc.weight", "pw.bias": "fc.bias", "gamma": "scale"}
    s_sd, t_sd = src.state_dict(), tgt.state_dict()
    pairs = []
    for s, t in names.items():
        spec, conf = infer_transform(s_sd[s].shape, t_sd[t].shape)
        pairs.append(MatchedPair(s, t, 1.0, transform=spec, confidence=conf))
    mapping = MappingResult(pairs)
    assert mapping.pair("gamma").transform.name == "reshape"  # (5,1,1) → (5,)
    assert mapping.pair("pw.weight").transform.name == "reshape"  # (5,6,1,1) → (5,6)
    check = check_outputs(src, tgt, mapping, torch.randn(2, 6, 4, 4))
    assert check.equal, check.summary()
