"""The matching cascade on hard cases: transposed Conv1D, ties, same-shape runs, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from weightmapper.inventory import Inventory
from weightmapper.mapper import WeightMapper
from weightmapper.result import UnmatchedReason
from weightmapper.tensor_info import TensorInfo


def test_conv1d_against_linear_transposes_square_matrices_too() -> None:
    from transformers.pytorch_utils import Conv1D

    class HF(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c_fc = Conv1D(16, 8)  # weight (in=8, out=16)
            self.c_proj = Conv1D(8, 8)  # square: only the module types tell

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c_proj(torch.relu(self.c_fc(x)))[..., :8]

    class Mine(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 16)
            self.proj = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(torch.relu(self.fc(x)[..., :8]))

    src, tgt = HF(), Mine()
    result = WeightMapper(src, tgt).suggest_mapping()
    for key in ("c_fc.weight", "c_proj.weight"):
        assert result.pair(key).transform.name == "transpose", key
    out = result.convert(src.state_dict())
    torch.testing.assert_close(out["proj.weight"], src.c_proj.weight.t())


def test_tied_weights_are_mapped_or_recorded_never_failures() -> None:
    class LM(nn.Module):
        def __init__(self, names: tuple[str, str]) -> None:
            super().__init__()
            setattr(self, names[0], nn.Embedding(20, 8))
            setattr(self, names[1], nn.Linear(8, 20, bias=False))
            getattr(self, names[1]).weight = getattr(self, names[0]).weight

    src = LM(("wte", "lm_head"))
    both = WeightMapper(src, LM(("embed", "lm_head"))).suggest_mapping()
    assert both["wte.weight"] == "embed.weight" and both["lm_head.weight"] == "lm_head.weight"
    # A target that stores the shared tensor once: the duplicate is a tie, not a failure.
    one = WeightMapper.from_state_dict({"emb.weight": torch.randn(20, 8)}, src).suggest_mapping()
    assert len(one) == 1
    assert one.coverage()["target_coverage"] == 1.0
    assert one.metadata["tied"]["target"]


def test_same_shape_run_with_extra_block_stays_aligned() -> None:
    def blocks(n: int, prefix: str) -> dict[str, torch.Tensor]:
        sd = {f"{prefix}stem.weight": torch.zeros(16, 3, 3, 3)}
        for i in range(n):
            sd[f"{prefix}blocks.{i}.conv.weight"] = torch.zeros(16, 16, 3, 3)
            sd[f"{prefix}blocks.{i}.norm.weight"] = torch.zeros(16)
            sd[f"{prefix}blocks.{i}.norm.bias"] = torch.zeros(16)
        sd[f"{prefix}head.weight"] = torch.zeros(10, 16)
        return sd

    src = {k.replace("blocks.", "layers."): v for k, v in blocks(6, "").items()}
    tgt = blocks(7, "model.")
    result = WeightMapper(src, tgt).suggest_mapping()
    for i in range(6):
        assert result[f"layers.{i}.conv.weight"] == f"model.blocks.{i}.conv.weight"
    unmatched = result.unmatched_reasons()["target"]
    assert "model.blocks.6.conv.weight" in unmatched
    assert unmatched["model.blocks.6.conv.weight"].reason in (
        UnmatchedReason.LOST_TO_BETTER,
        UnmatchedReason.BELOW_THRESHOLD,
    )


def test_batchnorm_to_groupnorm_keeps_affine_drops_statistics() -> None:
    src = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    tgt = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8))
    result = WeightMapper(src, tgt).suggest_mapping()
    assert result["1.weight"] == "1.weight"
    for stat in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert stat not in result
        assert result.unmatched_reasons()["source"][stat].reason is UnmatchedReason.BUFFER_EXCLUDED


def test_meta_device_everywhere() -> None:
    with torch.device("meta"):
        src = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
        tgt = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    mapper = WeightMapper(src, tgt, dummy_input=torch.empty(1, 4, device="meta"))
    result = mapper.suggest_mapping()
    assert len(result) == 6 and all(p.score > 0.9 for p in result.pairs)


def test_large_moe_on_table_is_settled_by_templates() -> None:
    def moe(layer: str, expert: tuple[str, str, str]) -> dict[str, TensorInfo]:
        out = {}
        for lay in range(2):
            for e in range(64):
                for name, shape in zip(expert, ((32, 16), (16, 32), (32, 16)), strict=True):
                    k = f"{layer}.{lay}.moe.experts.{e}.{name}.weight"
                    out[k] = TensorInfo(k, shape, "bfloat16")
        return out

    src = Inventory.from_table(moe("layers", ("w1", "w2", "w3")))
    tgt = Inventory.from_table(moe("model.layers", ("gate_proj", "down_proj", "up_proj")))
    result = WeightMapper(src, tgt).suggest_mapping()
    assert len(result) == len(src)
    assert (
        result["layers.1.moe.experts.63.w3.weight"]
        == "model.layers.1.moe.experts.63.up_proj.weight"
    )
    assert (
        result["layers.0.moe.experts.5.w1.weight"]
        == "model.layers.0.moe.experts.5.gate_proj.weight"
    )


_DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import json, torch
    from torch import nn
    from weightmapper.mapper import WeightMapper
    torch.manual_seed(0)
    def net(names):
        m = nn.Module()
        for i, n in enumerate(names):
            setattr(m, n, nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)))
        return m
    src = net([f"layer{i}" for i in range(6)])
    tgt = net([f"block_{i}" for i in range(6)])
    r = WeightMapper(src, tgt).suggest_mapping()
    print(json.dumps(r.to_dict()["pairs"], sort_keys=True))
    """
)


def test_same_mapping_for_every_hash_seed() -> None:
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", _DETERMINISM_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        outputs.add(proc.stdout)
    assert len(outputs) == 1
    pairs = json.loads(outputs.pop())
    assert {p["source"]: p["target"] for p in pairs}["layer3.0.weight"] == "block_3.0.weight"


class _BlockA(nn.Module):
    """One transformer block, library A's names (``ln_a``, ``attn.inp``, ``mlp.0``)."""

    def __init__(self, c: int, hidden: int) -> None:
        super().__init__()
        self.ln_a = nn.LayerNorm(c)
        self.attn = nn.ModuleDict({"inp": nn.Linear(c, 3 * c), "out": nn.Linear(c, c)})
        self.ln_b = nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, hidden), nn.GELU(), nn.Linear(hidden, c))


class _BlockB(nn.Module):
    """The same block, library B's names (``norm1``, ``attn.qkv``, ``mlp.fc1``)."""

    def __init__(self, c: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(c)
        self.attn = nn.ModuleDict({"qkv": nn.Linear(c, 3 * c), "proj": nn.Linear(c, c)})
        self.norm2 = nn.LayerNorm(c)
        self.mlp = nn.ModuleDict({"fc1": nn.Linear(c, hidden), "fc2": nn.Linear(hidden, c)})


def test_block_inserted_mid_stack_is_a_gap_not_a_shift() -> None:
    c = 16
    src = nn.Module()
    src.encoder = nn.ModuleDict({f"layer_{i}": _BlockA(c, 4 * c) for i in range(4)})
    tgt = nn.Module()
    # Target block 2 is new (narrower MLP); source layers 2, 3 become blocks 3, 4.
    tgt.blocks = nn.ModuleList([_BlockB(c, 2 * c if i == 2 else 4 * c) for i in range(5)])
    result = WeightMapper(src, tgt).suggest_mapping()
    got = dict(result)
    assert got["encoder.layer_2.ln_a.weight"] == "blocks.3.norm1.weight"
    assert got["encoder.layer_2.attn.out.weight"] == "blocks.3.attn.proj.weight"
    assert got["encoder.layer_3.attn.inp.weight"] == "blocks.4.attn.qkv.weight"
    assert got["encoder.layer_1.ln_b.bias"] == "blocks.1.norm2.bias"
    assert not [t for t in got.values() if t.startswith("blocks.2.")]


def test_positional_table_buffer_pairs_with_embedding_weight() -> None:
    class Learned(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_positions = nn.Embedding(12, 8)
            self.proj = nn.Linear(8, 8)

    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("positional_table", torch.zeros(12, 8))
            self.out = nn.Linear(8, 8)

    result = WeightMapper(Learned(), Fixed()).suggest_mapping()
    got = dict(result)
    assert got["embed_positions.weight"] == "positional_table"


def test_split_with_a_same_shaped_sibling_is_left_ambiguous() -> None:
    class Full(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.ModuleDict(
                {n: nn.Linear(16, 16, bias=False) for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
            )

    class Grouped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.ModuleDict(
                {
                    "wq": nn.Linear(16, 16, bias=False),
                    "wk": nn.Linear(16, 8, bias=False),
                    "wv": nn.Linear(16, 8, bias=False),
                    "wo": nn.Linear(16, 16, bias=False),
                }
            )

    result = WeightMapper(Full(), Grouped()).suggest_mapping()
    assert not [m for m in result.multi if set(m.targets) & {"attention.wk.weight"}]
    mapped_targets = set(result.values())
    assert "attention.wk.weight" not in mapped_targets
    assert "attention.wv.weight" not in mapped_targets
    reasons = {u.name: u.reason for u in result.unmatched_source}
    assert reasons["attn.k_proj.weight"] is UnmatchedReason.AMBIGUOUS
    assert reasons["attn.v_proj.weight"] is UnmatchedReason.AMBIGUOUS


def test_square_weights_of_a_bare_conv1d_checkpoint_follow_their_block() -> None:
    """GPT-2 as a bare state dict (no module types) → Linear re-implementation: the square
    c_proj weights take the transpose their non-square block neighbours needed, marked low
    confidence, and the converted model computes the same function."""
    pytest.importorskip("transformers")
    from zoo import get_case
    from zoo.check import convert_and_compare, source_with_weights

    case = get_case("gpt2_hf_to_linear_split")
    source = source_with_weights(case)
    result = WeightMapper.from_state_dict(
        source.state_dict(), case.build_target()
    ).suggest_mapping()
    square = [p for p in result.pairs if p.source.endswith("attn.c_proj.weight")]
    assert len(square) == 2
    assert all(p.transform.name == "transpose" and p.confidence == "low" for p in square)
    check = convert_and_compare(case, result.convert)
    assert check.loaded and check.equal, check
