"""Shifted blocks: a block inserted mid-stack leaves no pair of the shifted blocks ``high``."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from tiny_nets import timm_vit_stack, torchvision_vit_stack
from weightmapper.engine.block_shift import numbered_blocks, record_block_shifts
from weightmapper.engine.candidates import Proposal
from weightmapper.engine.margins import is_ambiguous
from weightmapper.mapper import WeightMapper
from weightmapper.transforms import TransformSpec


def test_inserted_block_leaves_no_wrong_pair_high(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source, target = (
        torchvision_vit_stack((4, 4, 4, 4)),
        timm_vit_stack((4, 4, 2, 4, 4)),
    )  # target block 2 inserted, its MLP narrower
    path = tmp_path / "source.safetensors"  # keys stored sorted: positions say little
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    result = WeightMapper.from_checkpoint(path, target).suggest_mapping(threshold=0.0)
    truth = {0: 0, 1: 1, 2: 3, 3: 4}
    high = [p for p in result.pairs if p.confidence == "high"]
    assert {p.source.split(".")[1] for p in high} >= {"encoder_layer_0", "encoder_layer_1"}
    for p in high:
        s, t = int(p.source.split(".")[1].rpartition("_")[2]), int(p.target.split(".")[1])
        assert truth[s] == t, f"{p.source} -> {p.target} is wrong yet labelled high"
    # the context (engine/context.py) moved layers 2, 3 after their MLPs: nothing is shifted
    assert not [p for p in result.pairs if p.breakdown.get("block_shift")]


def _pair(source: str, target: str, runner_up: float = 0.5) -> Proposal:
    return Proposal(
        source,
        target,
        {"runner_up": runner_up},
        TransformSpec(),
        "exact",
        False,
        "high",
        (4,),
        (4,),
    )


def test_a_block_split_across_two_target_blocks_is_marked() -> None:
    pairs = [
        _pair(f"layers.{i}.{part}", f"layers.{j}.{part}")
        for i, part, j in [
            (0, "attn.w", 0), (0, "mlp.w", 0), (1, "attn.w", 1), (1, "mlp.w", 2),
            (2, "attn.w", 2), (2, "mlp.w", 3),
        ]
    ]  # fmt: skip
    record_block_shifts(pairs)
    marked = [p.source for p in pairs if is_ambiguous(p.breakdown)]
    assert marked == ["layers.1.attn.w", "layers.1.mlp.w", "layers.2.attn.w", "layers.2.mlp.w"]


def test_a_part_moved_by_the_same_offset_everywhere_is_a_convention() -> None:
    # a downsampling layer at the end of stage N read as the start of stage N + 1
    pairs = [
        _pair(f"layers.{i}.{part}", f"stages.{i + off}.{part}")
        for i in range(3)
        for part, off in (("blocks.0.w", 0), ("downsample.w", 1))
    ]
    record_block_shifts(pairs)
    assert not any(is_ambiguous(p.breakdown) for p in pairs)


def test_stages_nesting_blocks_differently_are_not_marked() -> None:
    pairs = [_pair(f"features.{i}.conv.w", f"blocks.{i // 2}.{i % 2}.conv.w") for i in range(6)]
    record_block_shifts(pairs)
    assert not any(is_ambiguous(p.breakdown) for p in pairs)


def test_numbered_blocks_need_digits_or_numbered_siblings() -> None:
    keys = [f"enc.layer_{i}.ln_{j}.w" for i in range(3) for j in (1, 2)] + ["h.4.mlp.w", "ln_1.w"]
    blocks = numbered_blocks(keys)
    assert blocks["enc.layer_2.ln_1.w"] == ("enc.layer_2", 2)
    assert blocks["h.4.mlp.w"] == ("h.4", 4)
    assert "ln_1.w" not in blocks


def test_named_blocks_count_their_siblings_at_any_depth() -> None:
    keys = [
        "layer_1.w",
        "layer_2.x.w",
        "layer_10.w",  # numbers of other lengths are siblings too
        "layer_1.x.stage2.12.w",
        "ln_1.0.w",
        "ln_2.0.w",
    ]
    blocks = numbered_blocks(keys)
    # three numbered siblings at the top: a named block, before the bare number below it
    assert blocks["layer_1.x.stage2.12.w"] == ("layer_1", 1)
    assert blocks["layer_2.x.w"] == ("layer_2", 2)
    # two siblings are the parts of one block: the bare number below them is the block
    assert blocks["ln_1.0.w"] == ("ln_1.0", 0)
