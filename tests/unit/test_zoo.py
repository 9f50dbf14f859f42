"""The reference zoo: every case's ground truth is complete and proven by equal outputs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from weightmapper.errors import MappingError
from weightmapper.result import MappingResult, MatchedPair
from weightmapper.transforms import IDENTITY, TransformSpec
from zoo import (
    CATEGORIES,
    ExpectedMulti,
    Truth,
    ZooCase,
    apply_truth_multi,
    cases,
    convert_and_compare,
    get_case,
    model_output,
    randomize_,
    source_with_weights,
)
from zoo.case import CASES, CATALOGUE, declare
from zoo.relocate import Relocated, Wrapped, rename_leaf_tensors

TESTS = Path(__file__).resolve().parents[1]
"""Holds the reference zoo package, imported as ``zoo``."""


def _params(selected: list[ZooCase]) -> list[Any]:
    return [
        pytest.param(
            c,
            id=c.name,
            marks=pytest.mark.skipif(not c.available(), reason=f"needs {', '.join(c.requires)}"),
        )
        for c in selected
    ]


ALL = _params(cases())


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # tiny models: thread start-up costs more than it saves on a shared machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_zoo_imports_without_transformers() -> None:
    code = (
        "import sys; import zoo as z; "
        "assert 'transformers' not in sys.modules, 'zoo imported transformers'; "
        "print(len(z.cases(split=None)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=TESTS
    )
    assert int(out.stdout) == len(cases(split=None))


def test_registry_lookup_and_categories() -> None:
    for cat in CATEGORIES:
        assert cases(cat), f"no case in category {cat}"
        assert all(c.category == cat for c in cases(cat))
    assert sum(len(cases(c)) for c in CATEGORIES) == len(cases())
    assert get_case("resnet_tv_to_timm_names").category == "cross_library"
    with pytest.raises(MappingError, match="known cases"):
        get_case("no_such_case")
    with pytest.raises(MappingError, match="category"):
        cases("nonsense")


def test_the_catalogue_describes_every_case_and_nothing_else() -> None:
    described = yaml.safe_load(CATALOGUE.read_text(encoding="utf-8"))
    assert list(described) == list(CASES)
    with pytest.raises(MappingError, match=r"no entry in cases\.yaml"):
        declare("no_such_case", nn.Identity, nn.Identity, lambda: torch.zeros(1), lambda: Truth({}))


def test_bad_case_and_truth_are_rejected() -> None:
    with pytest.raises(MappingError, match="category"):
        ZooCase(
            "x", "other", nn.Identity, nn.Identity, lambda: torch.zeros(1), lambda: Truth({}), True
        )
    with pytest.raises(MappingError, match="several sources"):
        Truth({"a": "t", "b": "t"})
    with pytest.raises(MappingError, match="unpaired"):
        Truth({"a": "t"}, transforms={"b": ("transpose", {})})


@pytest.mark.parametrize("case", ALL)
def test_truth_covers_both_state_dicts_exactly(case: ZooCase) -> None:
    src = case.build_source().state_dict()
    tgt = case.build_target().state_dict()
    multi_src = [s for m in case.expected_multi for s in m.sources]
    multi_tgt = [t for m in case.expected_multi for t in m.targets]
    lone = case.must_stay_unmapped
    src_claimed = list(case.ground_truth) + multi_src + sorted(lone["source"])
    tgt_claimed = list(case.ground_truth.values()) + multi_tgt + sorted(lone["target"])
    assert len(src_claimed) == len(set(src_claimed)), "a source key is claimed twice"
    assert len(tgt_claimed) == len(set(tgt_claimed)), "a target key is claimed twice"
    assert set(src_claimed) == set(src), set(src_claimed) ^ set(src)
    assert set(tgt_claimed) == set(tgt), set(tgt_claimed) ^ set(tgt)
    # every true pair produces exactly the target's shape and dtype
    converted = case.convert_with_ground_truth(src)
    for k, v in converted.items():
        assert v.shape == tgt[k].shape, (k, v.shape, tgt[k].shape)
        assert v.dtype == tgt[k].dtype, k


@pytest.mark.parametrize("case", ALL)
def test_ground_truth_gives_equal_outputs(case: ZooCase) -> None:
    complete = not case.must_stay_unmapped["target"]
    check = convert_and_compare(case, case.convert_with_ground_truth, strict=complete)
    assert check.loaded, check.error
    # BatchNorm quietly fills in a missing num_batches_tracked, so load never reports it
    lone = {k for k in case.must_stay_unmapped["target"] if not k.endswith("num_batches_tracked")}
    assert set(check.missing) == lone
    assert not check.unexpected
    if case.same_function or case.shared_features is not None:
        assert check.max_abs_diff is not None, check.error
        assert check.equal, f"max abs diff {check.max_abs_diff}"


def _two_same_shape_targets(case: ZooCase, sd: dict[str, torch.Tensor]) -> tuple[str, str]:
    """Two target matrices of equal shape whose sources are distinct (untied) tensors."""
    converted = case.convert_with_ground_truth(sd)
    ptrs = [t.data_ptr() for t in sd.values()]
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for s, t in case.ground_truth.items():
        v = converted[t]
        if v.is_floating_point() and v.dim() >= 2 and ptrs.count(sd[s].data_ptr()) == 1:
            by_shape.setdefault(tuple(v.shape), []).append(t)
    a, b = next(v[:2] for v in by_shape.values() if len(v) >= 2)
    return a, b


SAME_FUNCTION = _params([c for c in cases() if c.same_function])


@pytest.mark.parametrize("case", SAME_FUNCTION)
def test_a_wrong_mapping_changes_the_outputs(case: ZooCase) -> None:
    # proves the equal-output check has teeth: randomized weights make any swap visible
    a, b = _two_same_shape_targets(case, source_with_weights(case).state_dict())

    def convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = case.convert_with_ground_truth(state)
        out[a], out[b] = out[b], out[a]
        return out

    check = convert_and_compare(case, convert)
    assert check.loaded, check.error
    assert check.max_abs_diff is not None and not check.equal, (a, b)


@pytest.mark.parametrize("case", ALL)
def test_outputs_depend_on_the_input(case: ZooCase) -> None:
    # dead activations would make every equal-output proof vacuous
    model, x = source_with_weights(case), case.dummy_input()
    for out in model_output(model, x):
        assert float((out[0] - out[1]).abs().max()) > 1e-2 * max(1.0, float(out.abs().max()))


def test_dummy_inputs_are_deterministic() -> None:
    for case in cases():
        a, b = case.dummy_input(), case.dummy_input()
        assert torch.equal(a, b), case.name


def test_randomize_keeps_ties_and_integer_buffers() -> None:
    case = get_case("refactor_compiled_orig_mod_prefix")
    m = randomize_(case.build_target(), seed=3)
    assert m.lm_head.weight is m.transformer.wte.weight
    bn = nn.BatchNorm2d(4)
    randomize_(bn)
    assert int(bn.num_batches_tracked) == 0
    assert bool((bn.running_var >= 0.5).all()) and not torch.equal(bn.weight, torch.ones(4))


def test_split_and_merge_truth_ops_round_trip() -> None:
    w = torch.arange(24.0).reshape(4, 6)
    q, k, v = apply_truth_multi("split", {"dim": 1, "sizes": [2, 2, 2], "transpose": True}, [w])
    assert q.shape == (2, 4) and torch.equal(q, w[:, :2].t())
    (back,) = apply_truth_multi("merge", {"dim": 1, "transpose": True}, [q, k, v])
    assert torch.equal(back, w)
    assert ExpectedMulti(("a",), ("b", "c"), "split").transform == "split"


def test_relocated_shares_layers_and_fires_hooks_in_execution_order() -> None:
    base = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    moved = Relocated(base, lambda p: f"renamed.l{p}", order_seed=1)
    assert moved.key_map == {
        "0.weight": "renamed.l0.weight",
        "0.bias": "renamed.l0.bias",
        "2.weight": "renamed.l2.weight",
        "2.bias": "renamed.l2.bias",
    }
    assert list(moved.state_dict()) == [
        "renamed.l2.weight",
        "renamed.l2.bias",
        "renamed.l0.weight",
        "renamed.l0.bias",
    ]
    seen: list[str] = []
    for name, mod in moved.named_modules():
        if isinstance(mod, nn.Linear):
            mod.register_forward_hook(lambda m, i, o, n=name: seen.append(n))
    moved.eval()
    assert not base[1].training, "eval() must reach the dropout in the original graph"
    x = torch.randn(5, 3)
    out = moved(x)
    assert seen == ["renamed.l0", "renamed.l2"]
    torch.testing.assert_close(out, base(x))


def test_wrapper_and_tf_style_renames_keep_the_function() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    randomize_(net).eval()
    x = torch.randn(1, 3, 6, 6)
    expected = net(x)
    wrapped = Wrapped(net, "module.inner")
    assert set(wrapped.state_dict()) == {f"module.inner.{k}" for k in net.state_dict()}
    key_map = rename_leaf_tensors(net)
    assert key_map["0.weight"] == "0.kernel" and key_map["1.running_var"] == "1.moving_variance"
    assert set(net.state_dict()) == set(key_map.values())
    net.eval()
    torch.testing.assert_close(net(x), expected)


def test_model_output_flattens_tuples() -> None:
    case = get_case("refactor_model_prefix")
    outs = model_output(source_with_weights(case), case.dummy_input())
    assert len(outs) == 2 and outs[0].dim() == 3 and outs[1].dim() == 2


def _accuracy_bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "accuracy.py"
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # as when the script runs: its siblings import
    spec = importlib.util.spec_from_file_location("zoo_accuracy_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def _truth_result(case: ZooCase, drop_transform: str | None = None) -> MappingResult:
    t = case._truth
    pairs = [
        MatchedPair(
            s,
            tgt,
            0.95,
            transform=IDENTITY
            if s == drop_transform
            else TransformSpec(*t.transforms.get(s, ("identity", {}))),
        )
        for s, tgt in t.pairs.items()
    ]
    return MappingResult(pairs)


def test_accuracy_bench_scores_a_perfect_and_a_flawed_mapping() -> None:
    bench = _accuracy_bench()
    case = get_case("convnext_linear_to_conv_mlp")
    sd = source_with_weights(case).state_dict()
    perfect = bench.evaluate(case, _truth_result(case), sd)
    assert (perfect.precision, perfect.recall, perfect.unmapped_wrong) == (1.0, 1.0, 0)
    assert perfect.transforms["reshape"] == [12, 12] and not perfect.missed

    # keys right but the reshape forgotten: counted wrong, and said why
    gamma = "stages.0.0.gamma"
    flawed = bench.evaluate(case, _truth_result(case, drop_transform=gamma), sd)
    assert flawed.keys_right_tensor_wrong == 1 and flawed.correct == flawed.predicted - 1
    (miss,) = flawed.missed
    assert miss["true_sources"] == [gamma] and miss["keys_right_tensor_wrong"]

    # a partnerless key mapped anyway: a trap violation on both sides
    trap = get_case("trap_resized_head")
    sd = source_with_weights(trap).state_dict()
    extra = MatchedPair("fc.bias", "head.fc.bias", 0.99)
    res = bench.evaluate(trap, MappingResult([*_truth_result(trap).pairs, extra]), sd)
    assert res.violations == ["fc.bias", "head.fc.bias"] and res.unmapped_wrong == 2
    assert res.recall == 1.0 and res.precision == res.correct / (res.correct + 1)
    calib = bench.calibration([(trap, {"dummy": res})], "dummy")
    assert calib[-1]["count"] == res.predicted and calib[-1]["correct"] == res.correct
