"""Sorted key order (as safetensors stores it) is never read as the architecture's order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tiny_nets import randomized
from weightmapper.inventory import Inventory, is_sorted_order
from weightmapper.mapper import WeightMapper


def _save(sd: dict[str, torch.Tensor], path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, str(path))


class TorchvisionBlock(nn.Module):
    """Main branch first, the shortcut registered last (``downsample``)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.downsample = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.downsample(x))


class LetteredBlock(nn.Module):
    """The same block, shortcut registered first, convs lettered ``a``, ``b``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.shortcut = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
        self.conv_a = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.norm_a = nn.BatchNorm2d(c)
        self.conv_b = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.norm_b = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm_a(self.conv_a(x)))
        return torch.relu(self.norm_b(self.conv_b(y)) + self.shortcut(x))


class Net(nn.Module):
    def __init__(self, block: type[nn.Module], names: tuple[str, str]) -> None:
        super().__init__()
        setattr(self, names[0], nn.Sequential(*[block(4) for _ in range(3)]))
        setattr(self, names[1], nn.Linear(4, 3))
        self.names = names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = getattr(self, self.names[0])(x).mean((2, 3))
        return getattr(self, self.names[1])(feats)


def test_sorted_and_natural_orders_are_recognised() -> None:
    assert is_sorted_order(["a.weight", "b.bias", "b.weight"])
    assert is_sorted_order(["layers.2.w", "layers.10.w"])  # natural order
    assert not is_sorted_order(["conv1.weight", "bn1.weight", "conv2.weight"])
    sd = {k: torch.zeros(1) for k in ("bn1.weight", "bn2.weight", "conv1.weight", "conv2.weight")}
    assert Inventory.from_state_dict(sd).sorted_keys
    registered = {k: sd[k] for k in ("conv1.weight", "bn1.weight", "conv2.weight", "bn2.weight")}
    assert not Inventory.from_state_dict(registered).sorted_keys
    assert not Inventory.from_module(nn.Linear(2, 2)).sorted_keys


@pytest.mark.parametrize("source_from", ["file", "registration order"])
def test_alphabetical_siblings_are_not_aligned_by_position(source_from: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Sorted, a block reads bn1, bn2, conv1, conv2, downsample; the target registers
    # shortcut, conv_a, norm_a, conv_b, norm_b: aligned by position, every pair is wrong.
    old = randomized(Net(TorchvisionBlock, ("layer", "fc")), 0)
    new = Net(LetteredBlock, ("blocks", "head")).eval()
    if source_from == "file":
        path = tmp_path / "old.safetensors"
        _save(old.state_dict(), path)
        mapper = WeightMapper.from_checkpoint(path, new)
        assert mapper.source_inventory.sorted_keys
    else:
        mapper = WeightMapper.from_state_dict(old.state_dict(), new)
        assert not mapper.source_inventory.sorted_keys
    result = mapper.suggest_mapping()
    assert result["layer.1.bn1.weight"] == "blocks.1.norm_a.weight"
    assert result["layer.1.downsample.0.weight"] == "blocks.1.shortcut.0.weight"
    new.load_state_dict(result.convert(old.state_dict()), strict=True)
    x = torch.rand(2, 4, 5, 5)
    torch.testing.assert_close(new(x), old(x))


def test_numbered_siblings_keep_their_order_in_a_sorted_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # conv1 < conv2 < conv3 is real order even in a sorted file: it lines the convs up
    # with a Sequential's stages though no name says which is which.
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for i in (1, 2, 3):
                setattr(self, f"conv{i}", nn.Conv2d(4, 4, 3, padding=1))
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for i in (1, 2, 3):
                x = torch.relu(getattr(self, f"conv{i}")(x))
            return self.fc(x.mean((2, 3)))

    class Staged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(4, 4, 3, padding=1)
            self.stages = nn.Sequential(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(2)])
            self.classifier = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.stem(x))
            for conv in self.stages:
                x = torch.relu(conv(x))
            return self.classifier(x.mean((2, 3)))

    old, new = randomized(Flat(), 1), Staged().eval()
    path = tmp_path / "old.safetensors"
    _save(old.state_dict(), path)
    result = WeightMapper.from_checkpoint(path, new).suggest_mapping()
    assert result["conv2.weight"] == "stages.0.weight"
    assert result["conv3.weight"] == "stages.1.weight"


def test_a_lone_head_sorted_away_from_its_place_pairs_by_its_role(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # GPT-NeoX's hub checkpoints name the head ``embed_out``: sorted, it comes first, far
    # from ``lm_head`` at the end of the target, and its name shares nothing with it; the
    # naming conventions give both the LM head's role.
    transformers = pytest.importorskip("transformers")
    config = transformers.GPTNeoXConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(config).eval()
    sd = {
        ("embed_out.weight" if k == "lm_head.weight" else k): v
        for k, v in model.state_dict().items()
    }
    path = tmp_path / "hub.safetensors"
    _save(sd, path)
    target = transformers.GPTNeoXForCausalLM(config).eval()
    result = WeightMapper.from_checkpoint(path, target).suggest_mapping()
    assert result["embed_out.weight"] == "lm_head.weight"
    assert result["gpt_neox.embed_in.weight"] == "gpt_neox.embed_in.weight"


def test_only_trailing_numbers_order_a_sorted_checkpoint() -> None:
    from weightmapper.engine.side import prepare_side

    paths = [
        "Mixed_5b.branch3x3_1",  # kernel sizes are part of a name, not an index
        "Mixed_5b.branch5x5_1",
        "Mixed_5b.branch5x5_2",  # …but a trailing number is one
        "bn1",
        "bn2",
        "conv1",  # bn2 → conv1: alphabetical
        "features.3.conv.0",
        "features.3.conv.1",  # numbers all the way: natural order is real order
        "features.10.conv.0",
    ]
    inv = Inventory.from_state_dict({f"{p}.weight": torch.zeros(2) for p in paths})
    assert inv.sorted_keys
    side = prepare_side(inv)
    linked = dict(zip(side.group_paths, side.group_linked.tolist(), strict=True))
    assert not linked["Mixed_5b.branch5x5_1"]
    assert linked["Mixed_5b.branch5x5_2"]
    assert linked["bn2"] and not linked["conv1"]
    assert linked["features.3.conv.1"] and linked["features.10.conv.0"]
    chain = dict(zip(side.group_paths, side.group_chain.tolist(), strict=True))
    assert chain["bn1"] == chain["bn2"] != chain["conv1"]
    assert chain["Mixed_5b.branch3x3_1"] != chain["Mixed_5b.branch5x5_1"]
    assert chain["features.3.conv.0"] == chain["features.10.conv.0"]


def test_the_last_pair_of_a_shape_is_forced_by_elimination(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # GPT-2's token and position tables against a port's: once the token tables pair by
    # name, the position tables are the only ones of their shape left, however little
    # their names share (``wpe``, ``pos_emb``).
    from zoo import get_case
    from zoo.check import source_with_weights

    case = get_case("gpt2_hf_to_linear_fused")
    path = tmp_path / "gpt2.safetensors"
    _save(source_with_weights(case, 0).state_dict(), path)
    result = WeightMapper.from_checkpoint(path, case.build_target()).suggest_mapping()
    assert result["transformer.wpe.weight"] == "pos_emb.weight"
    assert result.pair("transformer.wpe.weight").breakdown["structure"] >= 0.9


def test_a_lone_numbered_name_is_not_placed_by_a_sorted_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Sorted, Inception's auxiliary head (AuxLogits.conv0, .conv1) comes first; each of its
    # convolutions is the only one of its chain in its shape, so no order places it, and
    # with no partner by name it stays unmapped.
    from zoo import get_case
    from zoo.check import source_with_weights

    case = get_case("heldout_trap_inception_aux_to_slim")
    path = tmp_path / "inception.safetensors"
    _save(source_with_weights(case, 0).state_dict(), path)
    result = WeightMapper.from_checkpoint(path, case.build_target()).suggest_mapping()
    assert not [k for k in result if k.startswith("AuxLogits.")]
