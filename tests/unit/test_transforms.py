"""Tensor transforms: every registered transform round-trips bit-exactly through its inverse."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightmapper.errors import MappingError, TransformError
from weightmapper.transforms import (
    IDENTITY,
    TransformSpec,
    apply_one,
    apply_transform,
    available_transforms,
    chain,
    infer_transform,
    invert,
    output_shapes,
    refine_by_param_names,
)

T = TransformSpec


def _bytes(ts: list[torch.Tensor]) -> list[bytes]:
    return [t.contiguous().view(torch.uint8).numpy().tobytes() for t in ts]


def _round_trip(spec: TransformSpec, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    out = apply_transform(spec, inputs)
    # the inverse must survive the JSON a mapping file stores it as
    inverse = TransformSpec.from_dict(json.loads(json.dumps(invert(spec).to_dict())))
    back = apply_transform(inverse, out)
    assert [tuple(t.shape) for t in back] == [tuple(t.shape) for t in inputs]
    assert [t.dtype for t in back] == [t.dtype for t in inputs]
    assert _bytes(back) == _bytes(inputs)
    return out


CASES = [
    ("identity", IDENTITY, [torch.randn(3, 4)]),
    ("transpose", T("transpose", {"dim0": 0, "dim1": 1}), [torch.randn(3, 5)]),
    ("permute", T("permute", {"dims": [2, 0, 1]}), [torch.randn(2, 3, 4)]),
    ("reshape", T("reshape", {"shape": [6], "from_shape": [6, 1, 1]}), [torch.randn(6, 1, 1)]),
    ("split", T("split", {"dim": 0, "sizes": [4, 2, 2]}), [torch.randn(8, 3)]),
    ("merge", T("merge", {"dim": 1, "sizes": [1, 3]}), [torch.randn(2, 1), torch.randn(2, 3)]),
    ("stack", T("stack", {"dim": 0}), [torch.randn(3, 2) for _ in range(4)]),
    ("unstack", T("unstack", {"dim": 1, "count": 3}), [torch.randn(2, 3, 4)]),
    (
        "chain",
        chain(T("transpose", {"dim0": 0, "dim1": 1}), T("split", {"dim": 0, "sizes": [4, 4, 4]})),
        [torch.randn(4, 12)],
    ),
    (
        "merge_group",
        T("merge", {"dim": 0, "sizes": [3, 3], "group": 2}),
        [torch.randn(3, 4) for _ in range(6)],
    ),
    (
        "split_each",
        T("split", {"dim": 1, "sizes": [1, 2], "each": True}),
        [torch.randn(2, 3) for _ in range(3)],
    ),
    (
        "chain_merge_group_stack",
        chain(T("merge", {"dim": 0, "sizes": [3, 3], "group": 2}), T("stack", {"dim": 0})),
        [torch.randn(3, 4) for _ in range(8)],
    ),
    ("rope_permute", T("rope_permute", {"head_dim": 4, "to": "rotate_half"}), [torch.randn(8, 3)]),
    (
        "rope_permute_back",
        T("rope_permute", {"head_dim": 6, "to": "interleaved"}),
        [torch.randn(12)],
    ),
    (
        "interleave_heads",
        T("interleave_heads", {"heads": 2, "parts": 3, "to": "concat"}),
        [torch.randn(12, 5)],
    ),
    (
        "interleave_kv_groups",
        T("interleave_kv_groups", {"groups": 2, "sizes": [4, 2, 2], "to": "interleaved"}),
        [torch.randn(16, 3)],
    ),
    # values on a coarse grid, where adding and subtracting 1 is exact
    ("offset", T("offset", {"value": 1.0}), [torch.arange(-8, 8, dtype=torch.float32) / 4]),
]


@pytest.mark.parametrize(("name", "spec", "inputs"), CASES, ids=[c[0] for c in CASES])
def test_each_transform_round_trips_bit_exactly(name, spec, inputs) -> None:
    out = _round_trip(spec, inputs)
    assert [tuple(t.shape) for t in out] == output_shapes(spec, [t.shape for t in inputs])


def test_every_registered_transform_is_covered() -> None:
    assert set(available_transforms()) <= {c[0] for c in CASES}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.int64, torch.bool])
def test_round_trip_keeps_every_dtype(dtype) -> None:
    t = (torch.randn(6, 4) * 10).to(dtype)
    _round_trip(T("split", {"dim": 0, "sizes": [2, 4]}), [t])
    _round_trip(chain(T("transpose", {}), T("reshape", {"shape": [24], "from_shape": [4, 6]})), [t])


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    other=st.integers(1, 4),
    dim=st.integers(0, 1),
)
def test_split_merge_property(sizes, other, dim) -> None:
    shape = [sum(sizes), other] if dim == 0 else [other, sum(sizes)]
    t = torch.randn(shape)
    parts = _round_trip(T("split", {"dim": dim, "sizes": sizes}), [t])
    assert [p.shape[dim] for p in parts] == sizes


def test_split_outputs_do_not_share_storage() -> None:
    fused = torch.randn(6, 2)
    q, k, v = apply_transform(T("split", {"dim": 0, "sizes": [2, 2, 2]}), [fused])
    ptrs = {
        fused.untyped_storage().data_ptr(),
        *(x.untyped_storage().data_ptr() for x in (q, k, v)),
    }
    assert len(ptrs) == 4  # safetensors refuses tensors that share memory


def test_gpt2_conv1d_c_attn_chain_equals_manual_slicing() -> None:
    d = 4
    c_attn = torch.randn(d, 3 * d)  # Conv1D stores (in, out)
    spec = chain(T("transpose", {"dim0": 0, "dim1": 1}), T("split", {"dim": 0, "sizes": [d] * 3}))
    q, k, v = apply_transform(spec, [c_attn])
    assert torch.equal(q, c_attn[:, :d].T) and torch.equal(k, c_attn[:, d : 2 * d].T)
    assert torch.equal(v, c_attn[:, 2 * d :].T)


@pytest.mark.parametrize(
    ("spec", "inputs", "match"),
    [
        (T("split", {"dim": 0, "sizes": [2, 2]}), [torch.randn(5, 2)], "add up to 4"),
        (T("reshape", {"shape": [5], "from_shape": [4]}), [torch.randn(4)], "needs 5 elements"),
        (T("reshape", {"shape": [4], "from_shape": [2, 2]}), [torch.randn(4)], "expects a tensor"),
        (
            T("merge", {"dim": 0, "sizes": [1, 1]}),
            [torch.randn(2), torch.randn(1)],
            "expects sizes",
        ),
        (T("unstack", {"dim": 0, "count": 3}), [torch.randn(2, 2)], "expects 3 entries"),
        (T("transpose", {}), [torch.randn(2, 2), torch.randn(2, 2)], "exactly one tensor"),
        (T("stack", {}), [torch.randn(2), torch.randn(3)], "cannot apply"),
        (
            T("merge", {"dim": 0, "sizes": [1, 1], "group": 2}),
            [torch.randn(1), torch.randn(1), torch.randn(1)],
            "multiple of 2",
        ),
    ],
)
def test_bad_input_raises_transform_error(spec, inputs, match) -> None:
    with pytest.raises(TransformError, match=match):
        apply_transform(spec, inputs)


def test_uninvertible_specs_say_what_to_record() -> None:
    with pytest.raises(MappingError, match="from_shape"):
        invert(T("reshape", {"shape": [4]}))
    with pytest.raises(MappingError, match="sizes"):
        invert(T("merge", {"dim": 0}))


def test_chain_drops_identities_and_collapses_single_steps() -> None:
    assert chain(IDENTITY, IDENTITY) == IDENTITY
    tr = T("transpose", {"dim0": 0, "dim1": 1})
    assert chain(IDENTITY, tr) == tr


@pytest.mark.parametrize(
    ("src", "tgt", "kw", "expected"),
    [
        ((8, 1, 1), (8,), {}, ("reshape", "high")),  # layer scale
        ((8, 4, 1, 1), (8, 4), {}, ("reshape", "high")),  # 1×1 conv → linear
        ((8, 4), (4, 8), {}, ("transpose", "high")),  # non-square: shape settles it
        ((8, 8), (8, 8), {"source_type": "Conv1D", "target_type": "Linear"}, ("transpose", "high")),
        ((8, 8), (8, 8), {"source_type": "Conv1D"}, ("identity", "low")),  # square, ambiguous
        ((8, 8), (8, 8), {"source_type": "Linear", "target_type": "Linear"}, ("identity", "high")),
        (
            (8,),
            (8,),
            {"source_type": "Conv1D", "target_type": "Linear", "param": "bias"},
            ("identity", "high"),
        ),
        (  # Flax/Keras Dense kernel (in, out) → Linear weight (out, in), square
            (8, 8),
            (8, 8),
            {"source_param": "kernel", "target_param": "weight", "target_type": "Linear"},
            ("transpose", "high"),
        ),
        ((8, 8), (8, 8), {"source_param": "kernel"}, ("identity", "low")),  # other side unknown
    ],
)
def test_infer_transform(src, tgt, kw, expected) -> None:
    spec, conf = infer_transform(src, tgt, **kw)
    assert (spec.name, conf) == expected
    assert output_shapes(spec, [src]) == [tgt]


def test_infer_transform_gives_up_on_incompatible_shapes() -> None:
    assert infer_transform((8, 4), (8, 5)) is None
    assert infer_transform((4, 8), (4, 8), source_type="Conv1D", target_type="Linear") is None


def test_gate_up_experts_chain_equals_manual_cat_then_stack() -> None:
    w1 = [torch.randn(3, 4) for _ in range(4)]
    w3 = [torch.randn(3, 4) for _ in range(4)]
    inputs = [t for pair in zip(w1, w3, strict=True) for t in pair]
    spec = chain(T("merge", {"dim": 0, "sizes": [3, 3], "group": 2}), T("stack", {"dim": 0}))
    (out,) = _round_trip(spec, inputs)
    want = torch.stack([torch.cat([a, b]) for a, b in zip(w1, w3, strict=True)])
    assert torch.equal(out, want)


@pytest.mark.parametrize(
    ("keys", "types", "expected"),
    [
        (("attn.query.kernel", "attn.q.weight"), ("Dense", "Linear"), ("transpose", "high")),
        (("attn.query.kernel", "attn.q.weight"), (None, None), ("identity", "low")),
        (("attn.query.kernel", "attn.q.kernel"), (None, None), ("identity", "high")),
        (("attn.query.weight", "attn.q.weight"), (None, "Linear"), ("identity", "high")),
    ],
)
def test_refine_by_param_names_settles_square_kernels(keys, types, expected) -> None:
    spec, conf = refine_by_param_names(
        IDENTITY, "high", *keys, (8, 8), (8, 8), source_type=types[0], target_type=types[1]
    )
    assert (spec.name, conf) == expected
    if spec.name == "transpose":
        x = torch.randn(8, 8)
        assert torch.equal(apply_one(spec, x), x.t())


def test_rope_permute_matches_hf_llama_conversion() -> None:
    # HF's convert_llama_weights_to_hf: w.view(h, d // 2, 2, n).transpose(1, 2).reshape(h * d, n)
    heads, d, n = 2, 6, 5
    w = torch.randn(heads * d, n)
    expected = w.view(heads, d // 2, 2, n).transpose(1, 2).reshape(heads * d, n)
    got = apply_one(T("rope_permute", {"head_dim": d, "to": "rotate_half"}), w)
    assert torch.equal(got, expected)
    # rows of one head: x0 y0 x1 y1 x2 y2 → x0 x1 x2 y0 y1 y2
    rows = apply_one(T("rope_permute", {"head_dim": 6, "to": "rotate_half"}), torch.arange(6.0))
    assert rows.tolist() == [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]


def test_interleave_heads_and_groups_orders() -> None:
    # per head: q0 k0 v0 q1 k1 v1 (blocks of one row) → q0 q1 k0 k1 v0 v1
    per_head = apply_one(
        T("interleave_heads", {"heads": 2, "parts": 3, "to": "concat"}), torch.arange(6.0)
    )
    assert per_head.tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    # per key/value group with two query rows per group: q q k v | q q k v → q q q q k k v v
    grouped = apply_one(
        T("interleave_kv_groups", {"groups": 2, "sizes": [2, 1, 1], "to": "concat"}),
        torch.arange(8.0),
    )
    assert grouped.tolist() == [0.0, 1.0, 4.0, 5.0, 2.0, 6.0, 3.0, 7.0]


@pytest.mark.parametrize(
    ("spec", "shape", "match"),
    [
        (T("rope_permute", {"head_dim": 3, "to": "rotate_half"}), (6, 2), "even head_dim"),
        (T("rope_permute", {"head_dim": 4, "to": "sideways"}), (8, 2), "'to' must be"),
        (T("interleave_heads", {"heads": 4, "parts": 3, "to": "concat"}), (10, 2), "multiple"),
        (T("interleave_kv_groups", {"groups": 2, "sizes": [2, 1], "to": "concat"}), (7,), "rows"),
    ],
)
def test_layout_transforms_reject_shapes_that_do_not_fit(spec, shape, match) -> None:
    with pytest.raises(TransformError, match=match):
        apply_one(spec, torch.randn(*shape))
