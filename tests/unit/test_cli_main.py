"""The entry point: --version and --help import no subcommand, every subcommand's --help
loads no torch, rich or numpy, and the help lines stay true."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from weightmapper._version import __version__
from weightmapper.cli.main import COMMANDS, HELP_LINES, build_parser, main


def test_help_lines_equal_each_modules_help() -> None:
    for name in COMMANDS:
        assert HELP_LINES[name] == importlib.import_module(f"weightmapper.cli.{name}").HELP


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["-v", "--help"]])
def test_version_and_help_import_neither_torch_nor_rich(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from weightmapper.cli.main import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'rich', 'numpy') if m in sys.modules)\n"
        "cmds = sorted(m for m in sys.modules if m.startswith('weightmapper.cli.') "
        "and m != 'weightmapper.cli.main')\n"
        "print(heavy, cmds)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[] []"


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommands_help_imports_neither_torch_nor_rich(command: str) -> None:
    code = (
        "import sys\n"
        "from weightmapper.cli.main import main\n"
        f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'rich', 'numpy', 'yaml') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"usage: weightmapper {command}" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_version_and_top_level_help_list_every_command(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"weightmapper {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_a_subcommand_still_gets_its_full_parser(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["map", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--target" in out and "examples:" in out
    with pytest.raises(SystemExit) as e:
        main(["-v", "nosuch"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_build_parser_without_a_command_builds_every_subcommand() -> None:
    parser = build_parser()
    args = parser.parse_args(["rules", "mapping.json"])
    assert callable(args._run)
