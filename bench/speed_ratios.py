"""Two speed ratios, each measured in CPU time (``time.process_time``) in a fresh process.

  checkpoint  a 100k-tensor safetensors file mapped onto an identically named one
              (``WeightMapper.from_checkpoint(path, path).suggest_mapping()``) against the
              time to parse its header (read the length, ``json.loads`` the header);
              goal: map ≤ 5× parse.
  fused       a Llama-like stack (separate q/k/v and gate/up projections) mapped onto the
              same stack with fused ``qkv_proj`` and ``gate_up_proj``, at 400 and 100 layers;
              goal: 400 layers ≤ 4.5× 100 layers (near-linear growth).

CPU time, not wall time, because other processes share the machine; each number is the
smallest of --repeat runs (the least disturbed one). Before each mapping run the engine's
caches keyed by names and shapes are emptied (:data:`NAME_CACHES`), so a repeat does not
find the 100k names of the run before already read.
"""

from __future__ import annotations

import json
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

D, INTER = 16, 32
CHECKPOINT_TENSORS = 100_000
FUSED_LAYERS = (100, 400)
GOALS = {"checkpoint": 5.0, "fused": 4.5}


def build_llama(layers: int, fused: bool) -> Any:
    """Layer count + fused? → a Llama-like stack on the current device (tiny widths)."""
    from torch import nn

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if fused:
                self.qkv_proj = nn.Linear(D, 3 * D, bias=False)
            else:
                self.q_proj = nn.Linear(D, D, bias=False)
                self.k_proj = nn.Linear(D, D, bias=False)
                self.v_proj = nn.Linear(D, D, bias=False)
            self.o_proj = nn.Linear(D, D, bias=False)

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if fused:
                self.gate_up_proj = nn.Linear(D, 2 * INTER, bias=False)
            else:
                self.gate_proj = nn.Linear(D, INTER, bias=False)
                self.up_proj = nn.Linear(D, INTER, bias=False)
            self.down_proj = nn.Linear(INTER, D, bias=False)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_layernorm = nn.LayerNorm(D)
            self.self_attn = Attention()
            self.post_attention_layernorm = nn.LayerNorm(D)
            self.mlp = Mlp()

    root = nn.Module()
    root.embed_tokens = nn.Embedding(100, D)
    root.layers = nn.ModuleList(Layer() for _ in range(layers))
    root.norm = nn.LayerNorm(D)
    return root


NAME_CACHES = {
    "weightmapper.engine.names": ("split_module", "_module_words", "_inner_parts", "_component",
                                  "local_tokens", "local_role"),
    "weightmapper.engine.side": ("_local_words", "_bucket"),
    "weightmapper.engine.index_map": ("_component_shape", "_first_names", "_component_items"),
    "weightmapper.engine.shapes": ("cached_relation",),
}  # fmt: skip
"""The engine's caches keyed by names or shapes. Emptied before every run, so each run reads
its 100k names as a first (or another file's) mapping does; the data files (conventions,
calibration) stay loaded, as in any process that maps more than once."""


def forget_names() -> None:
    """() → None; every cache of :data:`NAME_CACHES` emptied."""
    import importlib

    for module, names in NAME_CACHES.items():
        loaded = importlib.import_module(module)
        for name in names:
            getattr(loaded, name).cache_clear()


def _cpu(fn: Any, repeat: int, *, cold: bool = False) -> float:
    """Callable + repeats → the smallest CPU time of one call (``cold``: with the engine's
    name caches emptied before each call, outside the timed part)."""
    best = float("inf")
    for _ in range(repeat):
        if cold:
            forget_names()
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def parse_header(path: Path) -> dict[str, Any]:
    """Safetensors path → its header as a dict (the bare parse, no checks)."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return dict(json.loads(fh.read(n)))


def measure_checkpoint(repeat: int) -> dict[str, Any]:
    """Repeats → header parse vs map CPU time of a 100k-tensor safetensors file onto itself."""
    import torch
    from safetensors.torch import save_file

    from speed import build_synthetic
    from weightmapper.mapper import WeightMapper

    model = build_synthetic(CHECKPOINT_TENSORS)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file({k: torch.zeros(v.shape) for k, v in model.state_dict().items()}, str(path))
        del model
        tensors = len([k for k in parse_header(path) if k != "__metadata__"])
        base = _cpu(lambda: parse_header(path), repeat)
        result: list[Any] = []
        mapped = _cpu(
            lambda: result.append(WeightMapper.from_checkpoint(path, path).suggest_mapping()),
            repeat,
            cold=True,
        )
        pairs = dict(result[-1])
        correct = sum(1 for s, t in pairs.items() if s == t)
    return {
        "case": "checkpoint",
        "what": f"{tensors} tensors, identical names ({correct} mapped to themselves)",
        "base_label": "parse header",
        "base_s": base,
        "case_label": "map",
        "case_s": mapped,
    }


def measure_fused(repeat: int) -> dict[str, Any]:
    """Repeats → CPU time of separate → fused Llama mapping at 100 and 400 layers."""
    import torch

    from weightmapper.mapper import WeightMapper

    times, correct = [], []
    for layers in FUSED_LAYERS:
        with torch.device("meta"):
            source, target = build_llama(layers, False), build_llama(layers, True)
        result: list[Any] = []
        times.append(
            _cpu(
                lambda s=source, t=target, r=result: r.append(WeightMapper(s, t).suggest_mapping()),
                repeat,
                cold=True,
            )
        )
        # q/k/v and gate/up of every layer must become one merge each
        correct.append(f"{len(result[-1].multi)}/{2 * layers}")
    return {
        "case": "fused",
        "what": f"separate → fused q/k/v, gate/up ({' / '.join(correct)} merges)",
        "base_label": f"{FUSED_LAYERS[0]} layers",
        "base_s": times[0],
        "case_label": f"{FUSED_LAYERS[1]} layers",
        "case_s": times[1],
    }


MEASURES = {"checkpoint": measure_checkpoint, "fused": measure_fused}


def render(rows: list[dict[str, Any]], console: Any, boxed: Any) -> None:
    """Ratio rows → a rich table on ``console`` with box style ``boxed``."""
    from rich.table import Table

    t = Table(title="speed ratios (CPU time, best of --repeat runs)", box=boxed)
    for c in ("case", "what", "baseline", "baseline s", "measured", "measured s", "ratio"):
        t.add_column(
            c, justify="left" if c in ("case", "what", "baseline", "measured") else "right"
        )
    t.add_column("goal")
    for r in rows:
        if "error" in r:
            t.add_row(r["case"], r["error"], "-", "-", "-", "-", "-", "-")
            continue
        ratio = r["case_s"] / r["base_s"] if r["base_s"] > 0 else float("inf")
        goal = GOALS[r["case"]]
        t.add_row(
            r["case"],
            r["what"],
            r["base_label"],
            f"{r['base_s']:.3f}",
            r["case_label"],
            f"{r['case_s']:.3f}",
            f"{ratio:.2f}×",
            f"≤ {goal:g}×: {'yes' if ratio <= goal else 'NO'}",
        )
    console.print(t)
