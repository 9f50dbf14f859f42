"""Shifted blocks: a block inserted mid-stack leaves no pair of the shifted blocks ``high``."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from tiny_nets import timm_vit_stack, torchvision_vit_stack
from weightmapper.engine.block_shift import (
    _path_blocks,
    bare_heads,
    numbered_blocks,
    path_blocks,
    record_block_shifts,
    side_blocks,
)
from weightmapper.engine.candidates import Proposal
from weightmapper.engine.margins import is_ambiguous
from weightmapper.engine.side import prepare_side
from weightmapper.inventory import Inventory
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


_PARTS = [
    *("0", "1", "2", "07", "12", "٣"),  # bare numbers (leading zero, a non-ASCII digit)
    *("layer_1", "layer_2", "layer_3", "layer_10", "ln_1", "ln_2", "conv2", "stage2"),
    *("attn", "mlp", "q_proj", "blk#", "a", "b", ""),  # words, a literal '#', an empty part
]


def _random_paths(rng: random.Random, n: int) -> list[str]:
    return [".".join(rng.choice(_PARTS) for _ in range(rng.randint(0, 5))) for _ in range(n)]


def test_blocks_read_per_head_are_those_read_per_path() -> None:
    rng = random.Random(0)
    for _ in range(200):
        paths = _random_paths(rng, rng.randint(1, 30))
        code, blocks = path_blocks(paths)
        got = [blocks[c] if c >= 0 else None for c in code.tolist()]
        assert got == _path_blocks(paths), paths
    # a path with a line break in it is read whole, with the same result
    paths = ["layers.3.attn", "h.1\n.mlp", "h.2\n", "layer_1.x", "layer_2.x", "layer_3"]
    assert bare_heads(paths) is None
    code, blocks = path_blocks(paths)
    assert [blocks[c] if c >= 0 else None for c in code.tolist()] == _path_blocks(paths)


def test_blocks_read_per_group_are_those_of_the_keys() -> None:
    rng = random.Random(1)
    for _ in range(40):
        paths = _random_paths(rng, rng.randint(1, 40))
        keys = list(dict.fromkeys(f"{p}.weight" if p else "weight" for p in paths))
        side = prepare_side(Inventory.from_state_dict({k: torch.zeros(1) for k in keys}))
        rows = np.array(sorted(rng.sample(range(len(side)), rng.randint(0, len(side)))))
        code, blocks = side_blocks(side, rows.astype(np.int64))
        got = [blocks[c] if c >= 0 else None for c in code.tolist()]
        assert got == _path_blocks([side.keys[i].rpartition(".")[0] for i in rows.tolist()]), keys
