"""The user guide's Python blocks run as written, top to bottom, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "user-guide.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[str]:
    return _BLOCK.findall(GUIDE.read_text(encoding="utf-8"))


def test_guide_has_examples_for_every_api_call() -> None:
    text = "\n".join(_blocks())
    for call in (
        "WeightMapper(",
        "from_state_dict(",
        "from_checkpoint(",
        "suggest_mapping(",
        "get_mapping_with_scores()",
        "get_unmatched()",
        "print_analysis(",
        "export_mapping_report(",
        "convert(",
        "rename_keys(",
        "buffer_matching_mode=",
        "incompatible_pairs=",
        "dummy_input=",
        "strategy=",
        "weights=",
        "load_checkpoint_as_dict(",
        "convert_checkpoint(",
        "load_converted(",
        "visualize_mapping(",
        "visualize_hierarchies(",
        "visualize_score_breakdown(",
        "write_html(",
        "reporting(",
    ):
        assert call in text, call


def test_guide_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "user_guide"}
    for n, block in enumerate(_blocks()):
        try:
            exec(compile(block, f"{GUIDE.name}[block {n}]", "exec"), namespace)
        except Exception as e:  # report which block broke
            pytest.fail(f"user guide block {n} failed: {type(e).__name__}: {e}\n{block}")
    out = capsys.readouterr().out
    assert "stage.0.weight" in out
    assert "no_shape_partner" in out
    assert "['bn1.bias', 'bn1.num_batches_tracked']" in out
    assert "report.html report.md" in out
