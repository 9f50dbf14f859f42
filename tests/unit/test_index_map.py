"""Index tuples with learned offsets (``engine.index_map``): numbers and letter chains in
names read as index slots, their correspondence learned from anchors, and mappings read from
a sorted ``.safetensors`` file that only this correspondence can decide."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tiny_nets import randomized
from weightmapper.engine.index_map import learn_index_map, learned_index, read_slots
from weightmapper.mapper import WeightMapper


# --- reading slots ----------------------------------------------------------------------------
def _slots(paths: list[str]) -> list[dict[str, int]]:
    side = read_slots(paths)
    out = []
    for g in range(len(paths)):
        p = int(side.pattern[g])
        vals = side.values[p][side.row[g]].tolist()
        out.append(dict(zip(side.names[p], vals, strict=True)))
    return out


def test_numbers_inside_names_and_after_hyphens_are_slots() -> None:
    got = _slots(
        ["s.block1-0.f", "s.block1-1.f", "s.block2-0.f", "conv3_block3_1_bn", "conv2_block1_0_bn"]
    )
    assert got[1] == {"s.block": 1, "s.block#-": 1}
    assert got[2] == {"s.block": 2, "s.block#-": 0}
    assert got[3] == {"conv": 3, "conv#_block": 3, "conv#_block#_": 1}


def test_letters_are_slots_only_in_a_consecutive_chain() -> None:
    chain = _slots(["f.a", "f.b", "f.c", "f.se", "head"])
    assert [c.get("f.") for c in chain] == [0, 1, 2, None, None]
    # q, k, v are roles, not a chain
    assert _slots(["attn.q", "attn.k", "attn.v", "head"]) == [{}, {}, {}, {}]
    digit_letter = _slots(["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"])
    # ``0a, 0b, 0c`` is a letter chain; kernel sizes and the constant ``2d`` are names
    assert [c for c in digit_letter] == [{"Conv#d_#": 0}, {"Conv#d_#": 1}, {"Conv#d_#": 2}]


# --- learning offsets -------------------------------------------------------------------------
def _learn(src: list[str], tgt: list[str], anchors: list[tuple[list[int], list[int]]]):  # type: ignore[no-untyped-def]
    return learn_index_map(src, tgt, anchors)


def test_zero_based_hyphen_against_one_based_block_learns_an_offset() -> None:
    src = [f"trunk.block{s}.block{s}-{b}.f" for s in (1, 2) for b in (0, 1)]
    tgt = [f"s{s}.b{b}.conv" for s in (1, 2) for b in (1, 2)]
    # one anchor group per stage: a shape both blocks of the stage share
    im = _learn(src, tgt, [([0, 1], [0, 1]), ([2, 3], [2, 3])])
    assert im.relations[("s#.b", "block#.block#-")] == 1  # the shared "trunk." is dropped
    idx, whole = learned_index(im, np.arange(4), np.arange(4), matrix=True)
    assert whole.all()
    np.testing.assert_array_equal(np.diag(idx), 1.0)
    assert (idx[~np.eye(4, dtype=bool)] < 0.5).all()


def test_flat_keras_names_against_nested_numbering_learn_offsets_per_position() -> None:
    src = [
        f"features.denseblock{b}.denselayer{layer}.norm{n}"
        for b in (1, 2)
        for layer in (1, 2, 3)
        for n in (1, 2)
    ]
    tgt = [
        f"conv{b + 1}_block{layer}_{n - 1}_bn"
        for b in (1, 2)
        for layer in (1, 2, 3)
        for n in (1, 2)
    ]
    # the first norms (unique shapes here) are anchors one by one; the second norms are not
    firsts = [k for k, p in enumerate(src) if p.endswith("norm1")]
    im = _learn(src, tgt, [([k], [k]) for k in firsts])
    seconds = np.array([k for k, p in enumerate(src) if p.endswith("norm2")])
    idx, whole = learned_index(im, seconds, seconds, matrix=True)
    assert whole.all()
    np.testing.assert_array_equal(np.diag(idx), 1.0)
    assert (idx[~np.eye(len(seconds), dtype=bool)] < 0.5).all()


def test_chain_member_onto_the_odd_one_out_disagrees() -> None:
    src = [f"block{b}.{x}" for b in (1, 2, 3) for x in ("proj", "f.a", "f.b", "f.c")]
    tgt = [f"b{b}.{x}" for b in (1, 2, 3) for x in ("conv1", "conv2", "conv3", "downsample")]
    s_of = {p: k for k, p in enumerate(src)}
    t_of = {p: k for k, p in enumerate(tgt)}
    # the middle convolutions (a shape of their own) and the last ones anchor the chain
    anchors = [
        ([s_of[f"block{b}.f.{x}"]], [t_of[f"b{b}.conv{n}"]])
        for b in (1, 2, 3)
        for x, n in (("b", 2), ("c", 3))
    ]
    im = _learn(src, tgt, anchors)
    gs = np.array([s_of["block2.f.a"], s_of["block2.proj"]])
    gt = np.array([t_of["b2.conv1"], t_of["b2.downsample"]])
    idx, _ = learned_index(im, gs, gt, matrix=True)
    assert idx[0, 0] == 1.0 and idx[1, 1] == 1.0  # chain ↔ chain, odd ↔ odd
    assert idx[0, 1] < 0.5 and idx[1, 0] < 0.5  # a chain member onto the odd one out


def test_contradicting_anchors_learn_nothing() -> None:
    src = ["layers.0", "layers.1", "layers.2"]
    tgt = ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    # an inserted block: 0 → 0 but 2 → 3
    im = _learn(src, tgt, [([0], [0]), ([1], [1]), ([2], [3])])
    assert not im.relations
    idx, _ = learned_index(im, np.arange(3), np.arange(4), matrix=True)
    assert np.isnan(idx).all()  # no evidence: the plain comparison decides


# --- end to end: a sorted .safetensors file ---------------------------------------------------
def _save(sd: dict[str, torch.Tensor], path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, str(path))


def _cbn(cin: int, cout: int, k: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


class LetterBlock(nn.Module):
    """``f.a, f.b, f.c`` beside a shortcut ``proj`` registered first."""

    def __init__(self, cin: int, w: int) -> None:
        super().__init__()
        if cin != w:
            self.proj = _cbn(cin, w)
        self.f = nn.Module()
        self.f.a = _cbn(cin, w)
        self.f.b = _cbn(w, w, 3, groups=2)
        self.f.c = _cbn(w, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.f.c(torch.relu(self.f.b(torch.relu(self.f.a(x)))))
        return torch.relu(y + (self.proj(x) if hasattr(self, "proj") else x))


class NumberBlock(nn.Module):
    """``conv1, conv2, conv3`` and a shortcut ``downsample`` registered last."""

    def __init__(self, cin: int, w: int) -> None:
        super().__init__()
        self.conv1 = _cbn(cin, w)
        self.conv2 = _cbn(w, w, 3, groups=2)
        self.conv3 = _cbn(w, w)
        if cin != w:
            self.downsample = _cbn(cin, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        return torch.relu(y + (self.downsample(x) if hasattr(self, "downsample") else x))


WIDTHS = ((4, 8), (8, 16))
"""(input width, width) per stage; the first stage has one block, the second two."""


class LetterNet(nn.Module):
    """torchvision-style: ``trunk.block1.block1-0`` (0-based, after a hyphen)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Module()
        for s, (cin, w) in enumerate(WIDTHS, start=1):
            stage = nn.Module()
            for b in range(s):
                stage.add_module(f"block{s}-{b}", LetterBlock(cin if b == 0 else w, w))
            self.trunk.add_module(f"block{s}", stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.trunk.children():
            for block in stage.children():
                x = block(x)
        return x


class NumberNet(nn.Module):
    """timm-style: ``s1.b1`` (1-based)."""

    def __init__(self) -> None:
        super().__init__()
        for s, (cin, w) in enumerate(WIDTHS, start=1):
            stage = nn.Module()
            for b in range(1, s + 1):
                stage.add_module(f"b{b}", NumberBlock(cin if b == 1 else w, w))
            self.add_module(f"s{s}", stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.children():
            for block in stage.children():
                x = block(x)
        return x


def _truth_letter_to_number(key: str) -> str:
    """LetterNet key → the NumberNet key holding the same tensor."""
    parts = key.split(".")
    s = parts[1].removeprefix("block")
    b = int(parts[2].rpartition("-")[2]) + 1
    rest = parts[3:]
    if rest[0] == "proj":
        mod, rest = "downsample", rest[1:]
    else:
        mod, rest = "conv" + str("abc".index(rest[1]) + 1), rest[2:]
    return ".".join([f"s{s}", f"b{b}", mod, *rest])


@pytest.mark.parametrize("flip", [False, True])
def test_letter_chain_with_shortcut_maps_by_position_from_a_sorted_file(
    tmp_path, flip: bool
) -> None:
    """a, b, c ↔ conv1, conv2, conv3 and proj ↔ downsample, whichever side is the source."""
    letters = randomized(LetterNet(), 0)
    numbers = randomized(NumberNet(), 1)
    truth = {k: _truth_letter_to_number(k) for k in letters.state_dict()}
    if flip:
        source, target, truth = numbers, LetterNet(), {v: k for k, v in truth.items()}
    else:
        source, target = letters, NumberNet()
    path = tmp_path / "source.safetensors"
    _save(source.state_dict(), path)
    result = WeightMapper.from_checkpoint(path, target).suggest_mapping()
    got = {p.source: p.target for p in result.pairs}
    learned = {k for k in truth if not k.endswith("num_batches_tracked")}
    assert {k: got.get(k) for k in learned} == {k: truth[k] for k in learned}
    # the chain members the names alone cannot tell apart agree with the learned offsets
    chain = [p for p in result.pairs if ".f." in p.source + p.target]
    assert chain and all(p.breakdown["index"] == 1.0 for p in chain)
    wrong_high = [
        p for p in result.pairs if truth.get(p.source) != p.target and p.confidence == "high"
    ]
    assert not wrong_high


def _dense_shapes() -> dict[str, tuple[int, ...]]:
    """A tiny DenseNet's torchvision keys → shapes (growth 4, bottleneck 8, 8 stem channels,
    two dense blocks of 2 and 3 layers, one transition halving 16 channels)."""
    out: dict[str, tuple[int, ...]] = {"features.conv0.weight": (8, 3, 7, 7)}
    norm = {"features.norm0": 8}
    cin = 8
    for b, layers in ((1, 2), (2, 3)):
        for layer in range(1, layers + 1):
            p = f"features.denseblock{b}.denselayer{layer}"
            norm[f"{p}.norm1"], norm[f"{p}.norm2"] = cin, 8
            out[f"{p}.conv1.weight"] = (8, cin, 1, 1)
            out[f"{p}.conv2.weight"] = (4, 8, 3, 3)
            cin += 4
        if b == 1:
            norm["features.transition1.norm"] = cin
            out["features.transition1.conv.weight"] = (cin // 2, cin, 1, 1)
            cin //= 2
    norm["features.norm5"] = cin
    for n, c in norm.items():
        out[f"{n}.weight"] = out[f"{n}.bias"] = (c,)
    out["classifier.weight"] = (10, cin)
    return out


def _keras_name(key: str) -> str:
    """torchvision DenseNet key → the Keras layer name holding the same tensor (flat)."""
    mod, _, local = key.rpartition(".")
    parts = mod.split(".")
    if parts[0] == "classifier":
        return f"predictions.{local}"
    if len(parts) == 2:
        name = {"conv0": "conv1_conv", "norm0": "conv1_bn", "norm5": "bn"}[parts[1]]
        return f"{name}.{local}"
    if parts[1].startswith("transition"):
        stage = int(parts[1].removeprefix("transition")) + 1
        return f"pool{stage}_{'bn' if parts[2] == 'norm' else 'conv'}.{local}"
    stage = int(parts[1].removeprefix("denseblock")) + 1
    layer = int(parts[2].removeprefix("denselayer"))
    kind, n = parts[3][:-1], int(parts[3][-1])
    tail = f"{n - 1}_bn" if kind == "norm" else f"{n}_conv"
    return f"conv{stage}_block{layer}_{tail}.{local}"


def test_nested_numbering_onto_flat_keras_names_from_a_sorted_file(tmp_path) -> None:
    """``denseblock2.denselayer3.norm2`` ↔ ``conv3_block3_1_bn``: block + 1, norm n → n - 1,
    learned from the shapes only some layers have; the rest (equal shapes) follow."""
    g = torch.Generator().manual_seed(0)
    shapes = _dense_shapes()
    source = {k: torch.rand(s, generator=g) for k, s in shapes.items()}
    target = {_keras_name(k): torch.zeros(s) for k, s in shapes.items()}
    path = tmp_path / "source.safetensors"
    _save(source, path)
    result = WeightMapper.from_checkpoint(path, target).suggest_mapping()
    got = {p.source: p.target for p in result.pairs}
    assert got == {k: _keras_name(k) for k in shapes}


def test_a_letter_chain_keeps_its_place_in_a_sorted_file() -> None:
    """Sorted keys: ``f.a, f.b, f.c`` are in their real order, like numbered siblings;
    ``attn.k, attn.q, attn.v`` and a lone ``proj`` sort alphabetically, so their places say
    nothing."""
    from weightmapper.engine.side import prepare_side
    from weightmapper.inventory import Inventory

    keys = ["attn.k", "attn.q", "attn.v", "blk.f.a", "blk.f.b", "blk.f.c", "blk.proj"]
    sd = {f"{k}.weight": torch.zeros(2, 2) for k in keys}
    inv = Inventory.from_state_dict(sd)
    assert inv.sorted_keys
    side = prepare_side(inv)
    known = dict(zip(side.group_paths, side.group_pos_known.tolist(), strict=True))
    assert known == {k: k.startswith("blk.f.") for k in keys}
    linked = dict(zip(side.group_paths, side.group_linked.tolist(), strict=True))
    assert linked["blk.f.b"] and linked["blk.f.c"] and not linked["blk.proj"]
