"""Ctrl-C at any point (start-up, an extension module's import, the run) → one line, exit 130."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from weightmapper.cli import main as cli


def _interrupted_import(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Importing ``module`` fails as an extension module does when Ctrl-C hits its init."""
    real = builtins.__import__

    def fake(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == module:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as e:
                raise ImportError("initialization failed") from e
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    assert len(captured.err.splitlines()) == 1
    return captured.err.strip()


def test_ctrl_c_while_the_command_module_loads(monkeypatch, capsys) -> None:
    def stopped(name: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_command_module", stopped)
    assert cli.main(["inspect", "x.safetensors"]) == cli.EXIT_INTERRUPTED == 130
    assert _one_line(capsys) == "interrupted; nothing written"


def test_ctrl_c_inside_an_extension_import_at_start_up(monkeypatch, capsys) -> None:
    monkeypatch.delitem(__import__("sys").modules, "weightmapper.cli.apply", raising=False)
    _interrupted_import(monkeypatch, "weightmapper.cli")
    assert cli.main(["apply", "a.safetensors", "m.json", "--out", "o"]) == 130
    assert _one_line(capsys) == "interrupted; nothing written"


def test_ctrl_c_inside_a_lazy_import_of_the_run(monkeypatch, capsys, tmp_path: Path) -> None:
    _interrupted_import(monkeypatch, "torch")
    out = tmp_path / "bigout"
    code = cli.main(["apply", str(tmp_path / "big.safetensors"), "m.json", "--out", str(out)])
    assert code == 130
    assert _one_line(capsys) == "interrupted; no output left half-written"
    assert not out.exists()


def test_an_import_error_of_another_cause_is_not_an_interrupt(monkeypatch) -> None:
    real = builtins.__import__

    def broken(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "torch":
            raise ImportError("libtorch.so: cannot open shared object file")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ImportError, match="libtorch"):
        cli.main(["apply", "a.safetensors", "m.json", "--out", "o"])
