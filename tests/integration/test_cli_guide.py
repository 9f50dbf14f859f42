"""Every command shown in docs/cli.md runs, and prints exactly what the guide shows.

The guide's examples are ```console blocks: ``$ weightmapper …`` lines (``\\`` continues a
line, ``export NAME=VALUE`` sets a variable, ``> FILE`` sends the output to a file), each
followed by the output the guide shows for it. The commands run in order, in one
temporary folder, on inputs this test generates (a small transformer checkpoint
``old.safetensors``, its reference ``target.safetensors`` and a job file ``job.yaml``),
through the real entry point. A command must exit 0 and print what the guide shows, line
for line (trailing spaces ignored; paths inside the temporary folder shown relative).

When the tool's output changes on purpose, regenerate the guide's output with
``WEIGHTMAPPER_UPDATE_DOCS=1 python -m pytest tests/integration/test_cli_guide.py`` and
review the diff.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightmapper.cli.main import main
from weightmapper.examples.transformer import NewTransformer, OldTransformer

pytestmark = pytest.mark.integration

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
UPDATE = os.environ.get("WEIGHTMAPPER_UPDATE_DOCS") == "1"
# Commands whose example is a plain ```sh block, not run here, and why (their own tests
# cover them).
NOT_RUN = {"serve": "needs a running Prefect server and serves until stopped"}
_BLOCK = re.compile(r"^```console\n(.*?)^```\n", re.S | re.M)
KW = {"vocab_size": 64, "d_model": 32, "n_layer": 2, "n_head": 4, "max_len": 16}

JOB = """\
name: docs
store: .weightmapper
mapper:
  threshold: 0.6
output:
  dir: out
  naming: "{migration}/{stem}.safetensors"
migrations:
  - name: transformer
    sources: [old.safetensors]
    target:
      module: weightmapper.examples.transformer:NewTransformer
      kwargs: {vocab_size: 64, d_model: 32, n_layer: 2, n_head: 4, max_len: 16}
"""


@dataclass
class Step:
    """One ``$`` command of the guide and the output shown under it."""

    command: str
    shown: list[str]


def parse_block(text: str) -> list[Step]:
    """A console block's text → its commands, each with the output lines shown under it."""
    steps: list[Step] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            if not steps:
                raise AssertionError(f"console block starts with output, not a command: {line!r}")
            steps[-1].shown.append(line)
            i += 1
            continue
        command = line[2:]
        while command.endswith("\\"):
            i += 1
            command = command[:-1].rstrip() + " " + lines[i].strip()
        steps.append(Step(command, []))
        i += 1
    return steps


def _inputs(folder: Path) -> None:
    torch.manual_seed(0)
    old = OldTransformer(**KW)
    save_file({k: v.contiguous() for k, v in old.state_dict().items()}, folder / "old.safetensors")
    new = NewTransformer(**KW)
    save_file(
        {k: v.contiguous() for k, v in new.state_dict().items()}, folder / "target.safetensors"
    )
    (folder / "job.yaml").write_text(JOB)


def _run(step: Step, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One command → the lines it printed on stdout (or [] when sent to a file)."""
    words = shlex.split(step.command)
    if words[0] == "export":
        name, _, value = words[1].partition("=")
        monkeypatch.setenv(name, value)
        return []
    assert words[0] == "weightmapper", f"the guide may only run weightmapper: {step.command}"
    redirect = None
    if ">" in words:
        at = words.index(">")
        redirect, words = words[at + 1], words[:at]
    argv = [os.path.expandvars(w) for w in words[1:]]
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, f"`{step.command}` exited {code}: {err}"
    if redirect is not None:
        Path(redirect).write_text(out)
        return []
    # The guide's folder is wherever the reader runs it: show paths inside it relative.
    here = str(Path.cwd().resolve())
    out = out.replace(here + os.sep, "").replace(here, ".")
    return [line.rstrip() for line in out.splitlines()]


def _render(steps: list[Step], outputs: list[list[str]]) -> str:
    lines = []
    for step, out in zip(steps, outputs, strict=True):
        words = step.command
        lines.append("$ " + _wrap(words))
        lines.extend(out)
    return "\n".join(lines) + "\n"


def _wrap(command: str) -> str:
    # Keep the guide's line breaks readable: break before options once a line is long.
    parts, line = [], ""
    for word in re.split(r" (?=--)", command):
        if line and len(line) + len(word) > 88:
            parts.append(line)
            line = "      " + word
        else:
            line = f"{line} {word}" if line else word
    parts.append(line)
    return " \\\n".join(parts)


def test_every_command_in_the_cli_guide_prints_what_the_guide_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("WEIGHTMAPPER_CACHE_DIR", str(tmp_path / "cache"))
    _inputs(tmp_path)
    text = GUIDE.read_text(encoding="utf-8")
    blocks = list(_BLOCK.finditer(text))
    assert blocks, "docs/cli.md has no console examples"
    commands_seen: set[str] = set()
    new_text, last, mismatches = [], 0, []
    for block in blocks:
        steps = parse_block(block.group(1))
        outputs = [_run(step, capsys, monkeypatch) for step in steps]
        for step, out in zip(steps, outputs, strict=True):
            words = shlex.split(step.command)
            if words[0] == "weightmapper":
                commands_seen.add(words[1])
            shown = [line.rstrip() for line in step.shown]
            if shown != out:
                mismatches.append(
                    f"$ {step.command}\n--- the guide shows\n"
                    + "\n".join(shown)
                    + "\n--- the tool prints\n"
                    + "\n".join(out)
                )
        new_text.append(text[last : block.start(1)])
        new_text.append(_render(steps, outputs))
        last = block.end(1)
    new_text.append(text[last:])
    if UPDATE:
        GUIDE.write_text("".join(new_text), encoding="utf-8")
    else:
        assert not mismatches, (
            "docs/cli.md shows output the tool no longer prints (regenerate with "
            "WEIGHTMAPPER_UPDATE_DOCS=1 and review):\n\n" + "\n\n".join(mismatches)
        )
    from weightmapper.cli.main import COMMANDS

    missing = set(COMMANDS) - set(NOT_RUN) - commands_seen
    assert not missing, f"no example runs {missing}"


def test_the_parser_reads_continuations_exports_and_output() -> None:
    steps = parse_block(
        "$ export KW='{\"a\": 1}'\n$ weightmapper map a \\\n      --target b\nline one\n  two\n"
    )
    assert [s.command for s in steps] == ["export KW='{\"a\": 1}'", "weightmapper map a --target b"]
    assert steps[1].shown == ["line one", "  two"]
    with pytest.raises(AssertionError, match="starts with output"):
        parse_block("orphan output\n")
