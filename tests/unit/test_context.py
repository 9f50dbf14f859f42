"""Context agreement: a tensor whose name and sorted position say little follows its siblings."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from tiny_nets import timm_vit_stack, torchvision_vit_stack
from weightmapper.engine.calibration import FEATURES, features
from weightmapper.engine.candidates import Proposal
from weightmapper.engine.context import AGREE, CONTRADICT, UNKNOWN, _majority_chain, _noted
from weightmapper.mapper import WeightMapper
from weightmapper.result import MappingResult
from weightmapper.transforms import TransformSpec


def _from_file(tmp_path: Path, source: nn.Module, target: nn.Module) -> MappingResult:
    """Source module saved as a ``.safetensors`` file (keys stored sorted) → its mapping."""
    path = tmp_path / "source.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    return WeightMapper.from_checkpoint(path, target).suggest_mapping()


# --- a block inserted or removed mid-stack --------------------------------------------------
def _block_of(key: str) -> int:
    part = key.split(".")[1]
    return int(part.rpartition("_")[2])


def test_an_inserted_block_is_skipped_and_later_blocks_follow_their_mlp(tmp_path: Path) -> None:
    # the target's block 2 is new (its MLP narrower); source layers 2, 3 are blocks 3, 4
    torch.manual_seed(0)
    result = _from_file(
        tmp_path, torchvision_vit_stack((4, 4, 4, 4)), timm_vit_stack((4, 4, 2, 4, 4))
    )
    truth = {0: 0, 1: 1, 2: 3, 3: 4}
    assert len(result.pairs) == 4 * 10
    for p in result.pairs:
        assert int(p.target.split(".")[1]) == truth[_block_of(p.source)], p
    assert not [p.target for p in result.pairs if p.target.startswith("blocks.2.")]
    moved = [p for p in result.pairs if p.stage == "context"]
    assert moved and all("siblings map into blocks." in p.note for p in moved)


def test_a_removed_block_stays_unmapped_and_later_blocks_follow(tmp_path: Path) -> None:
    # the source's layer 2 (its MLP narrower) is gone from the target
    torch.manual_seed(0)
    result = _from_file(
        tmp_path, torchvision_vit_stack((4, 4, 2, 4, 4)), timm_vit_stack((4, 4, 4, 4))
    )
    truth = {0: 0, 1: 1, 3: 2, 4: 3}
    for p in result.pairs:
        assert _block_of(p.source) in truth, f"{p.source} of the removed layer was mapped"
        assert int(p.target.split(".")[1]) == truth[_block_of(p.source)], p
    assert len(result.pairs) == 4 * 10


# --- a renamed wrapper: a block's parameter of its own beside its wrapped layers -------------
class TorchvisionCNBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
            nn.Identity(),
            nn.LayerNorm(dim),
            nn.Linear(dim, 4 * dim),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1))


class TimmCNBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.gamma = nn.Parameter(torch.ones(dim))


def test_a_missed_same_shape_sibling_follows_its_block(tmp_path: Path) -> None:
    # ``layer_scale`` (C,1,1) onto ``gamma`` (C,): no name, no real position in common, and
    # the norms of every block share its shape; every sibling of its block (inside a wrapper
    # the target does not have) is mapped into one target block
    torch.manual_seed(0)
    depths, dims = (3, 2), (8, 16)
    source, target = nn.Module(), nn.Module()
    source.features = nn.Sequential(
        *(
            nn.Sequential(*(TorchvisionCNBlock(c) for _ in range(d)))
            for d, c in zip(depths, dims, strict=True)
        )
    )
    target.stages = nn.Sequential()
    for d, c in zip(depths, dims, strict=True):
        stage = nn.Module()
        stage.blocks = nn.Sequential(*(TimmCNBlock(c) for _ in range(d)))
        target.stages.append(stage)
    result = _from_file(tmp_path, source, target)
    for s, d in enumerate(depths):
        for b in range(d):
            pair = result.pair(f"features.{s}.{b}.layer_scale")
            assert pair.target == f"stages.{s}.blocks.{b}.gamma", pair
            assert pair.breakdown["context"] == AGREE


# --- a norm beside a mapped conv ------------------------------------------------------------
class TorchvisionIR(nn.Module):
    """An inverted residual block with its norms numbered beside their convolutions."""

    def __init__(self, cin: int, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden)),
            nn.Sequential(
                nn.Conv2d(hidden, hidden, 3, groups=hidden, bias=False), nn.BatchNorm2d(hidden)
            ),
            nn.Conv2d(hidden, cin, 1, bias=False),
            nn.BatchNorm2d(cin),
        )


class LayerNorm2d(nn.LayerNorm):
    """A channel norm with only an affine weight and bias: no running statistics."""


class TimmIR(nn.Module):
    def __init__(self, cin: int, hidden: int) -> None:
        super().__init__()
        self.conv_pw = nn.Conv2d(cin, hidden, 1, bias=False)
        self.bn1 = LayerNorm2d(hidden)
        self.conv_dw = nn.Conv2d(hidden, hidden, 3, groups=hidden, bias=False)
        self.bn2 = LayerNorm2d(hidden)
        self.conv_pwl = nn.Conv2d(hidden, cin, 1, bias=False)
        self.bn3 = LayerNorm2d(cin)


def test_norms_follow_the_convolutions_beside_them(tmp_path: Path) -> None:
    # BatchNorm onto a channel LayerNorm under other names: the norms share their shapes with
    # the norms of every other block; the convolutions beside them say which block
    torch.manual_seed(0)
    shapes = [(8, 16), (8, 16), (16, 32), (16, 32)]
    source, target = nn.Module(), nn.Module()
    source.features = nn.Sequential(*(TorchvisionIR(c, h) for c, h in shapes))
    target.blocks = nn.Sequential(
        nn.Sequential(TimmIR(*shapes[0]), TimmIR(*shapes[1])),
        nn.Sequential(TimmIR(*shapes[2]), TimmIR(*shapes[3])),
    )
    result = _from_file(tmp_path, source, target)
    for n in range(4):
        block = f"blocks.{n // 2}.{n % 2}"
        for src, tgt in (("conv.0.1", "bn1"), ("conv.1.1", "bn2"), ("conv.3", "bn3")):
            pair = result.pair(f"features.{n}.{src}.weight")
            assert pair.target == f"{block}.{tgt}.weight", pair
            assert pair.breakdown["context"] == AGREE


# --- the pieces -----------------------------------------------------------------------------
def test_a_clear_majority_goes_one_way_and_a_split_says_nothing() -> None:
    parts = [("blocks", "3", "mlp", "fc1"), ("blocks", "3", "mlp", "fc2"), ("blocks", "3", "attn")]
    assert _majority_chain(parts) == ("", "blocks", "blocks.3")
    split = [("blocks", "3", "mlp"), ("blocks", "4", "mlp")]
    assert _majority_chain(split) == ("", "blocks")


def _proposal(confidence: str = "high", stage: str = "assignment") -> Proposal:
    bd = {"name": 0.2, "hierarchy": 0.2, "order": 1.0, "shape": 1.0}
    return Proposal("a.2.w", "b.2.w", bd, TransformSpec(), stage, False, confidence, (4,), (4,))


def test_a_contradicted_pair_is_never_high_and_says_where_its_siblings_went() -> None:
    p = _noted(_proposal(), CONTRADICT, "b.3")
    assert p.confidence == "low"
    assert p.note == "siblings map into b.3, not here; check it"
    assert _noted(_proposal(), UNKNOWN, "") == _proposal()


def test_context_lifts_the_shape_only_cap_and_a_contradiction_is_a_doubt() -> None:
    bd = {"name": 0.2, "hierarchy": 0.2, "order": 1.0, "order_known": 0.0, "shape": 1.0}
    alone = features({**bd, "context": UNKNOWN}, 0.6, confidence="high")
    placed = features({**bd, "context": AGREE}, 0.6, confidence="high")
    against = features({**bd, "context": CONTRADICT}, 0.6, confidence="high")
    at = FEATURES.index
    assert alone[at("shape_only")] == 1.0 and placed[at("shape_only")] == 0.0
    assert placed[at("context_agrees")] == 1.0 and alone[at("context_agrees")] == 0.0
    assert against[at("context_contradicts")] == 1.0 and against[at("shape_only")] == 1.0


# --- a same-shape key inside blocks whose pair agrees is no place to go ----------------------
class HFLayer(nn.Module):
    def __init__(self, dim: int, inter: int) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.up_proj = nn.Linear(dim, inter, bias=False)
        self.mlp.down_proj = nn.Linear(inter, dim, bias=False)


class LitLayer(nn.Module):
    def __init__(self, dim: int, inter: int) -> None:
        super().__init__()
        self.norm_1 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.fc = nn.Linear(dim, inter, bias=False)
        self.mlp.proj = nn.Linear(inter, dim, bias=False)


def test_an_embedding_shaped_like_the_mlp_is_not_pulled_into_the_blocks(tmp_path: Path) -> None:
    # vocabulary size = MLP width: the embedding's shape is found in every block, where
    # the MLP's own pairs agree with their blocks; the embedding stays where it is, not low
    torch.manual_seed(0)
    dim, vocab = 8, 32
    source, target = nn.Module(), nn.Module()
    source.model = nn.Module()
    source.model.embed_tokens = nn.Embedding(vocab, dim)
    source.model.layers = nn.ModuleList(HFLayer(dim, vocab) for _ in range(3))
    target.transformer = nn.Module()
    target.transformer.wte = nn.Embedding(vocab, dim)
    target.transformer.h = nn.ModuleList(LitLayer(dim, vocab) for _ in range(3))
    result = _from_file(tmp_path, source, target)
    pair = result.pair("model.embed_tokens.weight")
    assert pair.target == "transformer.wte.weight"
    assert pair.breakdown["context"] != CONTRADICT and "check it" not in pair.note
    for n in range(3):
        assert result.pair(f"model.layers.{n}.mlp.up_proj.weight").target == (
            f"transformer.h.{n}.mlp.fc.weight"
        )


def test_a_norm_beside_an_anchor_is_not_sent_into_the_anchor(tmp_path: Path) -> None:
    # the stem's conv is an anchor (a shape of its own) whose bias has the norm's shape; that
    # bias is the anchor's, never an open slot, so the norm beside it agrees with its place
    torch.manual_seed(0)
    source, target = nn.Module(), nn.Module()
    source.features = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.LayerNorm(8)),
        nn.Sequential(TorchvisionCNBlock(8), TorchvisionCNBlock(8)),
    )
    target.stem = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.LayerNorm(8))
    target.stages = nn.Sequential(nn.Sequential(TimmCNBlock(8), TimmCNBlock(8)))
    result = WeightMapper(source, target).suggest_mapping()
    pair = result.pair("features.0.1.weight")
    assert pair.target == "stem.1.weight"
    assert pair.breakdown["context"] != CONTRADICT and pair.confidence != "low"
