"""WeightMapper facade: every API call of the user guide on tiny renamed/refactored models."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from weightmapper.engine import Candidates, assign, map_inventories, score_inventories
from weightmapper.errors import MappingError
from weightmapper.inventory import Inventory
from weightmapper.mapper import WeightMapper
from weightmapper.result import MappingResult, UnmatchedReason
from weightmapper.settings import AssignSettings


class OldNet(nn.Module):
    """Flat names, BatchNorm with statistics, same-shaped convs in a row."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = torch.relu(bn(conv(x)))
        return self.fc(x.mean((2, 3)))


class NewNet(nn.Module):
    """The same network refactored: Sequential stages, other names."""

    def __init__(self, classes: int = 10, norm: str = "bn") -> None:
        super().__init__()

        def norm_layer() -> nn.Module:
            return nn.BatchNorm2d(8) if norm == "bn" else nn.GroupNorm(2, 8)

        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm_layer(), nn.ReLU())
        self.blocks = nn.Sequential(
            *[
                nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), norm_layer(), nn.ReLU())
                for _ in range(2)
            ]
        )
        self.classifier = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(self.stem(x)).mean((2, 3)))


def _trained_old() -> OldNet:
    net = OldNet()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.num_batches_tracked.fill_(7)
    return net.eval()


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8)


def test_refactored_model_loads_strictly_and_computes_the_same() -> None:
    old, new = _trained_old(), NewNet().eval()
    result = WeightMapper(old, new).suggest_mapping()
    assert isinstance(result, MappingResult)
    assert len(result) == len(old.state_dict())  # running statistics included
    new.load_state_dict(result.convert(old.state_dict()), strict=True)
    x = _x()
    torch.testing.assert_close(new(x), old(x))
    assert result.get_unmatched() == {"source": [], "target": []}
    assert result["bn2.running_mean"] == "blocks.0.1.running_mean"
    assert result.coverage()["source_coverage"] == 1.0


def test_mapping_protocol_scores_and_reasons() -> None:
    old, new = _trained_old(), NewNet(classes=1000)
    mapper = WeightMapper(old, new)
    result = mapper.suggest_mapping()
    # The resized head stays unmapped, with a reason; the rest still lines up.
    assert "fc.weight" not in result
    reasons = result.unmatched_reasons()
    assert reasons["source"]["fc.weight"].reason is UnmatchedReason.NO_SHAPE_PARTNER
    assert "classifier.weight" in mapper.get_unmatched()["target"]
    scores = result.get_mapping_with_scores()
    assert scores["conv1.weight"][0] == "stem.0.weight"
    assert 0.0 <= scores["conv1.weight"][1] <= 1.0
    pair = result.pair("conv2.weight")
    signals = {"shape", "name", "hierarchy", "order", "structure"}
    evidence = {
        "raw",
        "runner_up",
        "margin",
        "name_margin",
        "roles",
        "unique",
        "index",
        "order_known",
        "context",
    }
    assert set(pair.breakdown) == signals | evidence
    assert pair.stage
    # A module settled at group level carries the group flag (conv2 vs conv3 is decided by
    # registration order only, so it is left to the key-level assignment).
    assert result.pair("conv1.weight").group
    ranked = mapper.get_mapping_with_scores()
    assert ranked == scores  # one method name, one return type: the mapper asks its result
    listed = [(s, t, score) for s, (t, score) in ranked.items()]
    assert listed == sorted(listed, key=lambda t: (-t[2], t[0]))
    assert mapper.get_mapping_dict() == dict(result)
    with pytest.raises(TypeError):
        result["conv1.weight"] = "x"  # type: ignore[index]


def test_from_state_dict_and_target_as_state_dict_on_meta() -> None:
    old = _trained_old()
    with torch.device("meta"):
        target = NewNet()
    mapper = WeightMapper.from_state_dict(old.state_dict(), target)
    assert mapper.source_module is None and mapper.target_module is target
    result = mapper.suggest_mapping()
    assert result["conv3.weight"] == "blocks.1.0.weight"
    # names and shapes are enough on the target side too
    sd_target = {k: torch.empty(v.shape, device="meta") for k, v in target.state_dict().items()}
    again = WeightMapper.from_state_dict(old.state_dict(), sd_target).suggest_mapping()
    assert dict(again) == dict(result)
    with pytest.raises(MappingError):
        WeightMapper.from_state_dict([1, 2], target)  # type: ignore[arg-type]


def test_from_checkpoint_reads_headers_and_converts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    old, new = _trained_old(), NewNet().eval()
    # torch.save keeps registration order; safetensors files sort their keys.
    path = tmp_path / "old.pt"
    torch.save(old.state_dict(), path)
    mapper = WeightMapper.from_checkpoint(path, new)
    assert mapper.source_path == path
    converted = mapper.convert()
    new.load_state_dict(converted, strict=True)
    x = _x()
    torch.testing.assert_close(new(x), old(x))


def test_sorted_safetensors_checkpoint_still_lines_up(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import save_file

    old, new = _trained_old(), NewNet().eval()
    path = tmp_path / "old.safetensors"  # safetensors stores keys sorted: no layer order
    save_file({k: v.contiguous() for k, v in old.state_dict().items()}, str(path))
    mapper = WeightMapper.from_checkpoint(path, new)
    new.load_state_dict(mapper.convert(), strict=True)
    x = _x()
    torch.testing.assert_close(new(x), old(x))


def test_strategies_weights_and_errors() -> None:
    old, new = _trained_old(), NewNet()
    mapper = WeightMapper(old, new)
    best = mapper.suggest_mapping(strategy="best_match")
    conservative = mapper.suggest_mapping(strategy="conservative")
    assert set(conservative) <= set(best)
    assert all(p.score >= 0.85 for p in conservative.pairs)
    shape_only = mapper.suggest_mapping(strategy="shape_only")
    assert all(p.score == p.breakdown["shape"] for p in shape_only.pairs)
    name_heavy = mapper.suggest_mapping(threshold=0.0, weights={"name": 1.0})
    p = name_heavy.pair("conv1.weight")
    assert p.score == pytest.approx(p.breakdown["name"])
    assert mapper.suggest_mapping(threshold=1.0).coverage()["mapped_pairs"] < len(best)
    with pytest.raises(MappingError, match="unknown strategy"):
        mapper.suggest_mapping(strategy="greedy")
    with pytest.raises(MappingError, match="unknown scoring weight"):
        mapper.suggest_mapping(weights={"shape": 1.0, "colour": 1.0})
    with pytest.raises(MappingError, match="threshold"):
        mapper.suggest_mapping(threshold=1.5)
    with pytest.raises(MappingError, match="buffer_matching_mode"):
        WeightMapper(old, new, buffer_matching_mode="sometimes")


def test_buffer_modes() -> None:
    old = _trained_old()
    # exclude: statistics follow their module, so nothing is lost
    res = WeightMapper(old, NewNet(), buffer_matching_mode="exclude").suggest_mapping()
    assert res["bn1.running_var"] == "stem.1.running_var"
    assert res.pair("bn1.running_var").stage == "buffer"
    # a GroupNorm target has no statistics: they stay unmatched as excluded buffers
    gn = WeightMapper(old, NewNet(norm="gn")).suggest_mapping()
    why = gn.unmatched_reasons()["source"]["bn1.running_mean"]
    assert why.reason is UnmatchedReason.BUFFER_EXCLUDED
    # lenient and strict score buffers themselves and still keep the statistics
    for mode in ("lenient", "strict"):
        r = WeightMapper(old, NewNet(), buffer_matching_mode=mode).suggest_mapping()
        assert r["bn3.running_mean"] == "blocks.1.1.running_mean", mode
    strict_gn = WeightMapper(old, NewNet(norm="gn"), buffer_matching_mode="strict")
    assert "bn1.running_mean" not in strict_gn.suggest_mapping()


def test_incompatible_pairs_block_component_families() -> None:
    class Src(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.Linear(4, 4)

    class Tgt(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = nn.Linear(4, 4)

    free = WeightMapper(Src(), Tgt(), incompatible_pairs=None).suggest_mapping(threshold=0.0)
    assert free.get("attn.weight") == "mlp.weight"
    blocked = WeightMapper(Src(), Tgt(), incompatible_pairs=[("attention", "mlp")])
    r = blocked.suggest_mapping(threshold=0.0)
    assert "attn.weight" not in r
    assert r.unmatched_reasons()["source"]["attn.weight"].reason is UnmatchedReason.INCOMPATIBLE
    with pytest.raises(MappingError, match="incompatible pair"):
        WeightMapper(Src(), Tgt(), incompatible_pairs=[("attention",)])


def test_dummy_input_traces_both_sides_and_failing_forward_falls_back(caplog) -> None:  # type: ignore[no-untyped-def]
    old, new = _trained_old(), NewNet()
    traced = WeightMapper(old, new, dummy_input=_x())
    assert traced.source_inventory.traced and traced.target_inventory.traced
    with caplog.at_level(logging.WARNING):
        broken = WeightMapper(old, new, dummy_input=torch.randn(2, 5, 8, 8))
    assert "forward pass" in caplog.text
    assert not broken.source_inventory.traced
    assert dict(broken.suggest_mapping()) == dict(traced.suggest_mapping())


def test_print_analysis_and_export_report(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    mapper = WeightMapper(_trained_old(), NewNet(classes=1000))
    mapper.suggest_mapping()
    mapper.print_analysis(top_n=3)
    out = capsys.readouterr().out
    assert "OldNet → NewNet" in out and "Unmatched source keys" in out
    assert "no_shape_partner" in out
    path = mapper.export_mapping_report(tmp_path / "report.json")
    data = json.loads(path.read_text())
    mapping = data.get("mapping", data)
    assert any(p["source"] == "conv1.weight" for p in mapping["pairs"])
    assert mapping["unmatched"]["source"][0]["reason"]


def test_score_then_assign_and_candidates_round_trip() -> None:
    src = Inventory.from_module(_trained_old())
    tgt = Inventory.from_module(NewNet())
    cands = score_inventories(src, tgt)
    again = Candidates.from_dict(json.loads(json.dumps(cands.to_dict())))
    a = assign(cands, AssignSettings(threshold=0.6))
    b = assign(again, AssignSettings(threshold=0.6))
    assert a.to_dict()["pairs"] == b.to_dict()["pairs"]
    assert dict(map_inventories(src, tgt)) == dict(a)
    stricter = assign(cands, AssignSettings(threshold=0.95))
    assert len(stricter) <= len(a)
    for u in stricter.unmatched_source:
        assert u.reason is not None and u.detail


def test_transposed_shapes_record_their_transform() -> None:
    class A(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(3, 5)

    sd = {"proj.weight": torch.randn(3, 5), "proj.bias": torch.randn(5)}  # stored (in, out)
    r = WeightMapper.from_state_dict(sd, A()).suggest_mapping()
    assert r["proj.weight"] == "proj.weight"
    assert r.pair("proj.weight").transform.name == "transpose"
    out = r.convert(sd)
    torch.testing.assert_close(out["proj.weight"], sd["proj.weight"].t())


def test_shape_tolerance_allows_near_shapes_with_low_confidence() -> None:
    src = {"head.weight": torch.zeros(10, 8)}
    tgt = {"head.weight": torch.zeros(11, 8)}
    assert len(WeightMapper(src, tgt).suggest_mapping()) == 0
    r = WeightMapper(src, tgt, shape_tolerance=0.2).suggest_mapping(threshold=0.0)
    assert r.pair("head.weight").confidence == "low"
    with pytest.raises(MappingError, match="shape_tolerance"):
        WeightMapper(src, tgt, shape_tolerance=-1)


@pytest.mark.parametrize("empty", ["source", "target"])
def test_a_side_without_tensors_is_our_error_in_the_library_too(empty: str) -> None:
    """The engine's entry says it (not a numpy error from deep inside), for every caller:
    the Python API, the CLI and the pipeline alike."""
    full, bare = nn.Linear(2, 2), nn.ReLU()
    source, target = (bare, full) if empty == "source" else (full, bare)
    with pytest.raises(MappingError, match=f"the {empty} ReLU holds no tensors"):
        WeightMapper(source, target).suggest_mapping()
