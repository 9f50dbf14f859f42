"""Every view explains a flagged pair in words: the terminal, Markdown and HTML reports show
why it is flagged (``ambiguous``, ``low confidence``, read from the pair's ``confidence``)
and what it rests on (its note, e.g. a layout assumed from names)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from safetensors.torch import save_file

from weightmapper.examples.llama import HFLlama, MetaLlama
from weightmapper.html_report import render_html
from weightmapper.mapper import WeightMapper
from weightmapper.report import build_report, render_markdown
from weightmapper.visualize import visualize_mapping

NOTE = "layout assumed from names: RoPE interleaved → rotate_half"
AMBIGUOUS = "ambiguous: an alternative scored nearly as well"


def _report(tmp_path: Path) -> dict:
    path = tmp_path / "meta.safetensors"
    save_file({k: v.contiguous() for k, v in MetaLlama().state_dict().items()}, path)
    result = WeightMapper.from_checkpoint(path, HFLlama()).suggest_mapping()
    return build_report(result, hash_inputs=False)


def test_terminal_lists_the_pairs_to_check_with_why(tmp_path: Path) -> None:
    console = Console(record=True, width=400)
    visualize_mapping(_report(tmp_path), console=console)
    text = console.export_text()
    assert "Pairs to check (4)" in text
    row = next(
        line
        for line in text.splitlines()
        if "layers.0.attention.wq.weight" in line and AMBIGUOUS in line
    )
    assert "model.layers.0.self_attn.q_proj.weight" in row
    assert text.count(NOTE) == 4


def test_markdown_lists_the_pairs_to_check_with_why(tmp_path: Path) -> None:
    text = render_markdown(_report(tmp_path))
    section = text.split("## Pairs to check (4)", 1)[1].split("\n## ", 1)[0]
    assert section.count(AMBIGUOUS) == 4
    assert section.count(NOTE.replace("_", "\\_")) == 4


def test_html_says_ambiguous_and_shows_the_note_as_text(tmp_path: Path) -> None:
    page = render_html(_report(tmp_path))
    assert page.count(f"<li>{AMBIGUOUS}</li>") == 4
    assert page.count(f"<li>{NOTE}") == 4
    assert "\\u2192" not in page  # the note is words, not JSON-escaped code
    assert f'title="{AMBIGUOUS}; {NOTE}' in page
