"""Inventory: tensors, groups, buffers, module types, order and ties from every kind of input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from weightmapper.errors import MappingError
from weightmapper.inventory import Inventory, ParameterGroup
from weightmapper.tensor_info import TensorInfo


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)
        self.register_buffer("scratch", torch.zeros(2), persistent=False)
        self.register_buffer("index", torch.arange(3))


def test_from_module_lists_state_dict_tensors_in_order_with_groups_and_types() -> None:
    net = Net()
    inv = Inventory.from_module(net)
    assert list(inv.tensors) == list(net.state_dict())
    assert "scratch" not in inv.tensors  # non-persistent buffers never reach a state dict
    assert list(inv.groups) == ["", "conv", "bn", "head"]
    bn = inv.groups["bn"]
    assert isinstance(bn, ParameterGroup)
    assert bn.module_type == "BatchNorm2d"
    assert set(bn.params) == {"weight", "bias"}
    assert set(bn.buffers) == {"running_mean", "running_var", "num_batches_tracked"}
    assert bn.key("weight") == "bn.weight"
    assert inv.module_types["head"] == "Linear"
    assert inv.is_buffer("index") and not inv.is_buffer("head.weight")
    assert inv.tensors["conv.weight"].shape == (4, 3, 3, 3)
    assert inv.name == "Net"
    assert inv.summary()["buffers"] == 4


def test_meta_module_and_tied_weights() -> None:
    with torch.device("meta"):
        lm = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 50, bias=False))
    lm[1].weight = lm[0].weight
    inv = Inventory.from_module(lm)
    assert inv.tied == [("0.weight", "1.weight")]
    assert inv.tensors["1.weight"].shape == (50, 8)


def test_from_state_dict_guesses_buffers_and_records_shared_storage() -> None:
    w = torch.randn(5, 3)
    sd = {"emb.weight": w, "head.weight": w, "bn.running_mean": torch.zeros(3)}
    inv = Inventory.from_state_dict(sd, name="ckpt")
    assert inv.module_types == {}
    assert inv.is_buffer("bn.running_mean") and not inv.is_buffer("emb.weight")
    assert inv.tied == [("emb.weight", "head.weight")]
    assert inv.order == {"emb": 0, "head": 1, "bn": 2}


def test_from_table_accepts_tensor_info_mappings() -> None:
    table = {"a.weight": TensorInfo("a.weight", (2, 2), "float32")}
    inv = Inventory.from_table(table, name="t")
    assert inv.groups["a"].tensors["weight"].shape == (2, 2)
    with pytest.raises(MappingError, match="TensorInfo"):
        Inventory.from_table({"a": torch.zeros(1)})  # type: ignore[dict-item]


def test_bad_inputs_raise_our_error() -> None:
    with pytest.raises(MappingError, match=r"nn\.Module"):
        Inventory.from_module({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(MappingError, match="no tensors"):
        Inventory.from_state_dict({"epoch": 3})


def test_signature_depends_on_names_shapes_dtypes_only() -> None:
    a = Inventory.from_module(Net())
    with torch.device("meta"):
        b = Inventory.from_module(Net())
    assert a.signature() == b.signature()
    c = Inventory.from_module(nn.Linear(4, 3))
    assert c.signature() != a.signature()


def test_with_order_reorders_groups_and_marks_traced() -> None:
    inv = Inventory.from_module(Net())
    again = inv.with_order({"head": 0, "conv": 1, "bn": 2})
    assert list(again.groups)[:3] == ["head", "conv", "bn"]
    assert again.traced and not inv.traced


def test_groups_from_a_table_equal_groups_built_one_by_one() -> None:
    infos = {
        k: TensorInfo(k, (2,), "float32")
        for k in ("head", "layers.10.w.weight", "layers.2.w.bias", "layers.2.w.weight")
    }
    inv = Inventory.from_table(infos)
    assert list(inv.groups) == ["", "layers.2.w", "layers.10.w"]  # sorted keys: natural order
    expected = ParameterGroup(
        "layers.2.w", None, {"bias": infos["layers.2.w.bias"], "weight": infos["layers.2.w.weight"]}
    )
    assert inv.groups["layers.2.w"] == expected
    assert inv.groups["layers.2.w"].key("bias") == "layers.2.w.bias"
    assert list(inv.groups["layers.2.w"].tensors) == ["bias", "weight"]  # key order kept
