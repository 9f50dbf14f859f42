"""A layout names cannot reveal is an assumption written on the pair: a Meta-named checkpoint
read alone gets the RoPE row permutation, says so, and is ``ambiguous`` (a re-implementation
under Meta's names may rotate halves); given the source module, the layout is read from its
forward pass, the pair is right and ``high`` either way and says what showed the layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightmapper.engine.calibration import load
from weightmapper.examples.llama import HFLlama, MetaLlama
from weightmapper.mapper import WeightMapper
from zoo.nets_rope import RopeAttention

QK = [f"layers.{i}.attention.{w}.weight" for i in range(2) for w in ("wq", "wk")]


def test_a_rope_layout_read_from_names_is_assumed_and_never_high(tmp_path: Path) -> None:
    path = tmp_path / "meta.safetensors"
    save_file({k: v.contiguous() for k, v in MetaLlama().state_dict().items()}, path)
    result = WeightMapper.from_checkpoint(path, HFLlama()).suggest_mapping()
    for key in QK:
        pair = result.pair(key)
        assert pair is not None and pair.transform.name == "rope_permute"
        assert pair.note.startswith("layout assumed from names: RoPE interleaved → rotate_half")
        assert pair.note.endswith("give the source module to prove it")
        assert pair.confidence == "ambiguous"
        assert pair.score <= load().assumed_p + 1e-9
    assert result.pair("layers.0.attention.wv.weight").confidence == "high"  # nothing assumed
    assert result.coverage()["confident_pairs"] == len(result.pairs) - len(QK)


@pytest.mark.parametrize("interleaved", [True, False])
def test_given_the_source_module_the_layout_is_read_and_the_pair_is_high(
    interleaved: bool,
) -> None:
    """Either RoPE layout in the source, rotate-half in the target: read, not assumed."""
    torch.manual_seed(0)
    source, target = RopeAttention(interleaved).eval(), RopeAttention(False).eval()
    x = torch.randn(2, 5, 16)
    result = WeightMapper(source, target, dummy_input=x).suggest_mapping()
    for key in ("q.weight", "k.weight"):
        pair = result.pair(key)
        assert pair.confidence == "high" and "assumed" not in pair.note
        proved = "RoPE interleaved → rotate_half, read from both forward passes (source: rows "
        assert pair.note.startswith(proved) if interleaved else pair.note == ""
        assert pair.transform.name == ("rope_permute" if interleaved else "identity")
    target.load_state_dict(result.convert(source.state_dict()), strict=True)
    torch.testing.assert_close(target(x), source(x), rtol=1e-5, atol=1e-5)
