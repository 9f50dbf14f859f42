"""The engine against the zoo: equal outputs after its own mapping, traps left unmapped.

Each test maps a zoo case with ``WeightMapper(...).suggest_mapping()`` and checks what the
zoo's ground truth proves: same-function pairs must load strictly and give equal outputs,
refactors must be mapped exactly, and keys without a true partner must stay unmapped.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from weightmapper.mapper import WeightMapper
from weightmapper.result import MappingResult
from zoo import ZooCase, cases, convert_and_compare, get_case, source_with_weights
from zoo.check import randomize_

pytestmark = pytest.mark.integration


# Cases the engine cannot pass yet, with what it lacks; remove an entry once it passes.
ENGINE_GAPS: dict[str, str] = {}
"""Case name → why the engine cannot pass it yet (marked xfail); empty: every case passes."""


def _params(selected: list[ZooCase], *, gaps: bool = False) -> list[Any]:
    out = []
    for c in selected:
        marks = [pytest.mark.skipif(not c.available(), reason=f"needs {', '.join(c.requires)}")]
        if gaps and c.name in ENGINE_GAPS:
            marks.append(pytest.mark.xfail(strict=False, reason=ENGINE_GAPS[c.name]))
        out.append(pytest.param(c, id=c.name, marks=marks))
    return out


def _map(case: ZooCase, *, dummy: bool = True) -> MappingResult:
    source = source_with_weights(case)
    target = case.build_target().eval()
    mapper = WeightMapper(source, target, dummy_input=case.dummy_input() if dummy else None)
    return mapper.suggest_mapping()


def _mapped_keys(result: MappingResult) -> tuple[set[str], set[str]]:
    src = set(result) | {s for m in result.multi for s in m.sources}
    tgt = set(result.values()) | {t for m in result.multi for t in m.targets}
    return src, tgt


@pytest.mark.parametrize("case", _params([c for c in cases() if c.same_function], gaps=True))
def test_engine_mapping_loads_strictly_and_gives_equal_outputs(case: ZooCase) -> None:
    result = _map(case)
    check = convert_and_compare(case, result.convert, strict=True)
    assert check.loaded, check.error
    assert check.equal, f"max abs diff {check.max_abs_diff} (scale {check.reference_scale})"


@pytest.mark.parametrize("case", _params(cases("refactor")))
@pytest.mark.parametrize("dummy", [True, False], ids=["dummy", "no_dummy"])
def test_refactors_are_mapped_exactly(case: ZooCase, dummy: bool) -> None:
    result = _map(case, dummy=dummy)
    assert dict(result) == case.ground_truth
    assert not result.multi
    for p in result.pairs:
        assert p.transform.is_identity, p


@pytest.mark.parametrize("case", _params(cases("trap")))
def test_traps_leave_partnerless_keys_unmapped(case: ZooCase) -> None:
    result = _map(case)
    src, tgt = _mapped_keys(result)
    lone = case.must_stay_unmapped
    assert not src & lone["source"], sorted(src & lone["source"])
    assert not tgt & lone["target"], sorted(tgt & lone["target"])
    wrong = {s: t for s, t in result.items() if case.ground_truth.get(s) != t}
    assert not wrong, wrong


@pytest.mark.parametrize("case", _params([c for c in cases("trap") if c.shared_features]))
def test_traps_shared_part_computes_the_same(case: ZooCase) -> None:
    result = _map(case)
    check = convert_and_compare(case, result.convert, strict=False)
    assert check.loaded, check.error
    assert check.equal, f"max abs diff {check.max_abs_diff}"


@pytest.mark.parametrize("case", _params([c for c in cases() if c.expected_transforms]))
def test_transforms_produce_the_true_tensors(case: ZooCase) -> None:
    result = _map(case)
    sd = source_with_weights(case).state_dict()
    converted = result.convert(sd)
    expected = case.convert_with_ground_truth(sd)
    for s in case.expected_transforms:
        t = case.ground_truth[s]
        assert t in converted, f"{s} → {t} not mapped"
        assert torch.equal(converted[t], expected[t]), f"{s} → {t}: wrong tensor"


def test_zoo_cross_library_pairs_convert_to_equal_outputs() -> None:
    for name in ("resnet_tv_to_timm_names", "bert_hf_to_fairseq_names"):
        case = get_case(name)
        src, tgt = randomize_(case.build_source()).eval(), case.build_target().eval()
        result = WeightMapper(src, tgt, dummy_input=case.dummy_input()).suggest_mapping()
        tgt.load_state_dict(result.convert(src.state_dict()), strict=False)
        truth = case.ground_truth
        assert {s: t for s, t in result.items() if s in truth} == truth, name
