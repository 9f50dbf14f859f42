"""The embedded server's teardown noise is dropped; anything else still reaches stderr."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from flows import embedded


def _unraisable(filename: str) -> Any:
    """An unraisable-hook argument whose traceback ends in a frame of ``filename``."""
    code = compile(
        "def close():\n    raise RuntimeError('closed mid-teardown')\n", filename, "exec"
    )
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    try:
        namespace["close"]()
    except RuntimeError as e:
        return types.SimpleNamespace(
            exc_type=RuntimeError,
            exc_value=e,
            exc_traceback=e.__traceback__,
            err_msg="Exception ignored in",
            object=namespace["close"],
        )
    raise AssertionError("unreachable")


def test_teardown_unraisables_are_dropped_others_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    embedded._drop_teardown_unraisables()
    embedded._drop_teardown_unraisables()  # installed once, not stacked
    sys.unraisablehook(_unraisable("/site-packages/aiosqlite/core.py"))
    sys.unraisablehook(_unraisable("/site-packages/sqlalchemy/pool/base.py"))
    assert seen == []
    ours = _unraisable("/project/src/weightmapper/convert.py")
    sys.unraisablehook(ours)
    assert seen == [ours]
