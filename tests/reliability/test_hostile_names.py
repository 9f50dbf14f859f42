"""Crafted tensor names reach every renderer intact and inert.

Rich markup (``[/]`` closes a tag that was never opened: a traceback), ANSI and OSC escape
sequences, a carriage return, a bidi override, and a name that closes a Markdown code span to
plant ``<img onerror>``: each must show as its literal characters (controls as visible
escapes) in ``inspect``, ``map``, ``report`` and the ``migrate`` summary, and the Markdown
rendered by a CommonMark parser must contain no HTML tag of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import markdown_it
import pytest
import torch
from safetensors.torch import save_file

from weightmapper.cli.main import main
from weightmapper.sanitize import md_code, md_text, visible

pytestmark = pytest.mark.reliability

KIND = "crafted names in renderers"
NAMES = [
    "[/]",
    "[bold red]x[/bold red].weight",
    "a\x1b[31mred\x1b[0m.weight",
    "osc\x1b]8;;https://example.invalid\x1b\\link.weight",
    "b` <img src=x onerror=alert(1)> `c.weight",
    "cr\rover\x07.weight",
    "e[link=https://example.invalid]f[/link].bias",
    "\u202eevil.weight",
    "pipe|cell.weight",
]


@pytest.fixture
def evil(tmp_path: Path) -> Path:
    path = tmp_path / "evil.safetensors"
    save_file({n: torch.ones(i + 1) for i, n in enumerate(NAMES)}, str(path))
    return path


def _no_controls(text: str) -> None:
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert "\u202e" not in text


def test_inspect_shows_names_literally(evil: Path, capsys: pytest.CaptureFixture[str], tally):
    with tally.attack(KIND):
        assert main(["inspect", str(evil), "--depth", "1"]) == 0
        out, err = capsys.readouterr()
        _no_controls(out)
        assert "[/]" not in err and "Traceback" not in err
        assert "[bold red]x[/bold red]" in out and "\\x1b[31m" in out and "\\u202e" in out


def test_map_and_report_show_names_literally_and_markdown_stays_inert(
    evil: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], tally
) -> None:
    with tally.attack(KIND):
        md, report = tmp_path / "m.md", tmp_path / "r.json"
        argv = ["map", str(evil), "--target", str(evil), "--report", str(report),
                "--markdown", str(md), "--hierarchy"]  # fmt: skip
        assert main(argv) == 0
        out, err = capsys.readouterr()
        _no_controls(out)
        assert "Traceback" not in err
        for name in ("[/]", "[bold red]x[/bold red].weight", "pipe|cell.weight"):
            assert name in out
    with tally.attack(KIND):
        assert main(["report", str(report), "--view", "all"]) == 0
        out, _ = capsys.readouterr()
        _no_controls(out)
        assert "e[link=https://example.invalid]f[/link].bias" in out
    with tally.attack(KIND):
        html = markdown_it.MarkdownIt("commonmark").enable("table").render(md.read_text())
        assert "<img" not in html and "<a " not in html
        assert "b` &lt;img src=x onerror=alert(1)&gt; `c.weight" in html  # shown, inside <code>


def _migrate_one(tmp_path: Path, file_name: str, capsys: pytest.CaptureFixture[str]) -> str:
    """A checkpoint saved under ``file_name`` → what ``migrate`` prints for a job over it."""
    folder = tmp_path / "src"
    folder.mkdir()
    torch.save({"w": torch.ones(2, 2)}, folder / file_name)
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: names\nstore: store\nrunner: {kind: sequential}\noutput: {dir: out}\n"
        "migrations:\n  - name: m\n    sources: ['src/*.pt']\n"
        "    target: {module: 'torch.nn:Linear', kwargs: {in_features: 2, out_features: 2}}\n"
    )
    code = main(["migrate", str(job), "--no-prefect"])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    return out


def test_migrate_summary_shows_names_literally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tally
) -> None:
    with tally.attack(KIND):
        out = _migrate_one(tmp_path, "[bold]x[red]\x1b[2J.pt", capsys)
        _no_controls(out)
        assert "[bold]x[red]" in out and "\\x1b[2J" in out


def test_migrate_summary_keeps_a_name_with_a_newline_on_its_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tally
) -> None:
    """A newline in a file name drew a second row, as if another checkpoint were listed."""
    with tally.attack(KIND):
        out = _migrate_one(tmp_path, "ok\nfake.pt", capsys)
        assert "ok\\x0afake.pt" in out


@pytest.mark.parametrize("name", NAMES)
def test_the_sanitizer_is_lossless_and_inert(name: str) -> None:
    shown = visible(name)
    _no_controls(shown)
    html = (
        markdown_it.MarkdownIt("commonmark")
        .enable("table")
        .render(f"| a | b |\n|---|---|\n| {md_code(name)} | {md_text(name)} |\n")
    )
    assert "<img" not in html and "<a " not in html and "<script" not in html
    assert json.loads(json.dumps(shown)) == shown
