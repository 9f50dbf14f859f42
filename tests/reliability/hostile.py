"""Hand-built hostile pickles and the checkpoint files that carry them.

Each payload is raw pickle bytes that, when unpickled by plain ``pickle.loads``, leaves a
visible trace (creates a marker file, or deletes a victim directory). The bytes are
written opcode by opcode, so the payloads do not depend on any class of this test suite
being importable, just as a real attacker's file would not.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

# --- opcode builders ------------------------------------------------------------------------


def glob(module: str, name: str) -> bytes:
    """GLOBAL opcode pushing ``module.name``."""
    return b"c" + f"{module}\n{name}\n".encode()


def text(s: str) -> bytes:
    """BINUNICODE opcode pushing a str."""
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def binbytes(b: bytes) -> bytes:
    """BINBYTES opcode pushing bytes."""
    return b"B" + struct.pack("<I", len(b)) + b


def call(fn: bytes, *args: bytes) -> bytes:
    """Callable expression + argument expressions → REDUCE (the call happens on load)."""
    return fn + b"(" + b"".join(args) + b"tR"


def str_list(items: list[str]) -> bytes:
    """A list of str built with APPENDS."""
    return b"](" + b"".join(text(i) for i in items) + b"e"


def as_state_dict(payload: bytes, *, proto: int = 2) -> bytes:
    """Payload expression → a complete pickle of {"weight": 1.0, "evil": <payload>}."""
    return (
        bytes([0x80, proto]) + b"}(" + text("weight") + b"G" + struct.pack(">d", 1.0)
        + text("evil") + payload + b"u."
    )  # fmt: skip


# --- payloads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """One hostile pickle: its bytes and the globals our error must name (any one of them)."""

    name: str
    blob: bytes
    names: frozenset[str]


def payloads(marker: Path, victim: Path, script: Path) -> list[Payload]:
    """Paths the payloads touch → every payload; each creates ``marker`` or deletes ``victim``."""
    touch = f"touch {marker}"
    py_touch = f"open({str(marker)!r}, 'w').close()"
    os_system = call(glob("os", "system"), text(touch))
    chain = call(
        call(glob("builtins", "getattr"), call(glob("builtins", "__import__"), text("os")),
             text("system")),
        text(touch),
    )  # fmt: skip
    import_module_chain = call(
        call(glob("builtins", "getattr"), call(glob("importlib", "import_module"), text("os")),
             text("system")),
        text(touch),
    )  # fmt: skip
    # Protocol 4: module and name are memoized strings fetched back before STACK_GLOBAL.
    stack_global = (
        text("os") + b"\x94" + text("system") + b"\x94" + b"h\x00h\x01\x93"
        + b"(" + text(touch) + b"tR"
    )  # fmt: skip
    # STACK_GLOBAL whose module name is computed at load time: no scanner can read it.
    computed = (
        call(glob("builtins", "str"), text("os")) + text("system") + b"\x93"
        + b"(" + text(touch) + b"tR"
    )  # fmt: skip
    inst = b"(" + b"S'" + touch.encode() + b"'\n" + b"ios\nsystem\n"  # protocol 0 INST
    nested = call(glob("pickle", "loads"), binbytes(pickle.dumps(_Touch(str(marker)))))
    items = [
        ("os.system", as_state_dict(os_system), {"os.system"}),
        ("posix.system", as_state_dict(call(glob("posix", "system"), text(touch))),
         {"posix.system"}),
        ("subprocess.Popen", as_state_dict(call(glob("subprocess", "Popen"),
                                                str_list(["touch", str(marker)]))),
         {"subprocess.Popen"}),
        ("subprocess.check_output", as_state_dict(call(glob("subprocess", "check_output"),
                                                       str_list(["touch", str(marker)]))),
         {"subprocess.check_output"}),
        ("builtins.eval", as_state_dict(call(glob("builtins", "eval"), text(py_touch))),
         {"builtins.eval"}),
        ("builtins.exec", as_state_dict(call(glob("builtins", "exec"), text(py_touch))),
         {"builtins.exec"}),
        ("__builtin__.eval (py2 name)",
         as_state_dict(call(glob("__builtin__", "eval"), text(py_touch))), {"builtins.eval"}),
        ("__reduce__ chain getattr(__import__)", as_state_dict(chain),
         {"builtins.getattr", "builtins.__import__"}),
        ("__reduce__ chain importlib", as_state_dict(import_module_chain),
         {"importlib.import_module", "builtins.getattr"}),
        ("STACK_GLOBAL from memo", as_state_dict(stack_global, proto=4), {"os.system"}),
        ("STACK_GLOBAL computed", as_state_dict(computed, proto=4),
         {"<unresolved STACK_GLOBAL>", "builtins.str"}),
        ("INST opcode", as_state_dict(inst), {"os.system"}),
        ("pickle inside a pickle", as_state_dict(nested), {"pickle.loads", "_pickle.loads"}),
        ("runpy.run_path", as_state_dict(call(glob("runpy", "run_path"), text(str(script)))),
         {"runpy.run_path"}),
        ("shutil.rmtree", as_state_dict(call(glob("shutil", "rmtree"), text(str(victim)))),
         {"shutil.rmtree"}),
    ]  # fmt: skip
    return [Payload(n, b, frozenset(g)) for n, b, g in items]


class _Touch:
    """Used only to build the inner pickle of the nested payload (pickled by reference)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        import os

        return (os.system, (f"touch {self.path}",))


# --- carriers: the files a user would be handed ---------------------------------------------


def _torch_zip(data_pkl: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    """data.pkl bytes → a zip laid out like torch.save's (archive/data.pkl, version, ...)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", b"little")
        for name, data in (extra or {}).items():
            zf.writestr(f"archive/{name}", data)
        zf.writestr("archive/version", b"3\n")
    return buf.getvalue()


def _lightning_pickle(payload_pickle: bytes) -> bytes:
    """Hostile state-dict pickle → a Lightning checkpoint dict hiding it in hyper_parameters."""
    body = payload_pickle[2:-1]  # strip PROTO and STOP: reuse the dict expression
    proto = payload_pickle[:2]
    return (
        proto + b"}(" + text("pytorch-lightning_version") + text("2.4.0")
        + text("epoch") + b"K\x03"
        + text("state_dict") + b"}(" + text("layer.weight") + b"G" + struct.pack(">d", 0.5) + b"u"
        + text("hyper_parameters") + body + b"u."
    )  # fmt: skip


def write_carriers(payload: Payload, root: Path) -> dict[str, Path]:
    """Payload + directory → {carrier name: checkpoint path} for every way a file can hide it."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    raw = root / "raw.pkl"
    raw.write_bytes(payload.blob)
    out["raw pickle (.pkl)"] = raw
    pt = root / "model.pt"
    pt.write_bytes(_torch_zip(payload.blob))
    out["torch zip (.pt)"] = pt
    ckpt = root / "epoch=3.ckpt"
    ckpt.write_bytes(_torch_zip(_lightning_pickle(payload.blob)))
    out["Lightning (.ckpt)"] = ckpt
    named = root / "disguised.safetensors"  # a pickle wearing the safe format's extension
    named.write_bytes(_torch_zip(payload.blob))
    out["zip named .safetensors"] = named
    shards = root / "sharded"
    shards.mkdir(exist_ok=True)
    torch.save({"a.weight": torch.ones(2)}, shards / "pytorch_model-00001-of-00002.bin")
    (shards / "pytorch_model-00002-of-00002.bin").write_bytes(_torch_zip(payload.blob))
    index = {
        "weight_map": {
            "a.weight": "pytorch_model-00001-of-00002.bin",
            "weight": "pytorch_model-00002-of-00002.bin",
            "evil": "pytorch_model-00002-of-00002.bin",
        }
    }
    (shards / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    out["shard of a sharded .bin"] = shards / "pytorch_model.bin.index.json"
    return out
