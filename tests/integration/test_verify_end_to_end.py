"""End to end on GPT-2 → its Linear re-implementation: map, save, convert, validate, prove."""

from __future__ import annotations

import json

import pytest
import torch

from weightmapper.result import MappingResult
from weightmapper.verify import check_outputs
from zoo.nets_linear_gpt import VOCAB, LinearGPT, gpt2

pytest.importorskip("transformers")


@pytest.mark.integration
def test_end_to_end_map_apply_validate_prove(tmp_path) -> None:
    from safetensors.torch import save_file

    from weightmapper.convert import convert_checkpoint, load_converted
    from weightmapper.mapper import WeightMapper
    from weightmapper.validate import validate_state_dict

    src, tgt = gpt2(), LinearGPT()
    ids = torch.randint(0, VOCAB, (1, 8))
    mapping = WeightMapper(src, tgt, dummy_input=ids).suggest_mapping(verify=True)
    assert mapping.metadata["functional_check"]["equal"] is True
    save_file(
        {k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "gpt2.safetensors"
    )
    (tmp_path / "mapping.json").write_text(mapping.to_json())
    again = MappingResult.from_dict(json.loads((tmp_path / "mapping.json").read_text()))
    report = convert_checkpoint(tmp_path / "gpt2.safetensors", again, tmp_path / "out")
    assert validate_state_dict(tmp_path / "out", LinearGPT()).ok
    proven = LinearGPT()
    proven.load_state_dict(load_converted(tmp_path / "out"), strict=True)
    reference = src(ids).last_hidden_state
    check = check_outputs(None, proven, {}, ids, reference_output=reference)
    assert check.equal, check.summary()
    assert report.dropped_source_keys == ()
