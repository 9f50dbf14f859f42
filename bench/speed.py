"""Mapping speed and memory at 1k, 10k and 100k tensors, on the meta device.

Two model families, each mapped onto a renamed copy of itself (other prefixes and synonyms,
layers registered in shuffled order), so the true mapping is known exactly:

  synthetic  L transformer-like blocks of 16 tensors (norms, q/k/v/o, two MLP layers)
  moe        L layers × E experts × 3 linears of identical shape, plus router and norms

Each (family, size) runs in a fresh process: the models are built on the meta device (no
tensor memory), then ``WeightMapper(source, target)`` (inventories) and ``suggest_mapping()``
are timed: the median of --repeat runs up to 10k tensors, one run above (wall time, and CPU
time of the process, which other processes sharing the machine disturb less). Peak memory is the
largest RSS seen during mapping (sampled every 5 ms) minus the RSS before it. Accuracy is
checked against the known renaming. The growth exponent is the log-log slope of total time
between consecutive sizes (1.0 = linear).

Goals: 10k tensors ≤ 1 s, 100k ≤ 15 s on 2 cores, accuracy unchanged.

A second table gives two ratios in CPU time (see ``bench/speed_ratios.py``): a 100k-tensor
safetensors file mapped onto an identically named one against parsing its header (goal
≤ 5×), and a 400-layer against a 100-layer Llama mapped onto fused q/k/v and gate/up
projections (goal ≤ 4.5×).

Run:  python bench/speed.py [--sizes 1k,10k,100k] [--models synthetic,moe] [--repeat 3]
                            [--ratios checkpoint,fused] [--json]
      (``--sizes none`` or ``--ratios none`` skips a table)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

SIZES = {"1k": 1_000, "10k": 10_000, "100k": 100_000}
D = 16  # tensors are tiny: on the meta device only names and shapes matter


# --- model families ------------------------------------------------------------------------


def build_synthetic(n_tensors: int) -> Any:
    """Approximate tensor count → a deep transformer-like net on the meta device."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(D)
            self.attn = nn.Module()
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(self.attn, n, nn.Linear(D, D))
            self.norm2 = nn.LayerNorm(D)
            self.mlp = nn.Module()
            self.mlp.fc1 = nn.Linear(D, 4 * D)
            self.mlp.fc2 = nn.Linear(4 * D, D)

    layers = max(1, round(n_tensors / 16))
    root = nn.Module()
    root.embed = nn.Embedding(100, D)
    root.layers = nn.ModuleList(Block() for _ in range(layers))
    root.norm = nn.LayerNorm(D)
    return root


def build_moe(n_tensors: int) -> Any:
    """Approximate tensor count → an MoE net (L layers × E experts × 3 linears) on meta."""
    from torch import nn

    layers = max(1, round(math.sqrt(n_tensors / 3) / 8))
    experts = max(2, round(n_tensors / (3 * layers)))

    class Expert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w1 = nn.Linear(D, 2 * D, bias=False)
            self.w2 = nn.Linear(2 * D, D, bias=False)
            self.w3 = nn.Linear(D, 2 * D, bias=False)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_norm = nn.LayerNorm(D)
            self.gate = nn.Linear(D, experts, bias=False)
            self.experts = nn.ModuleList(Expert() for _ in range(experts))

    root = nn.Module()
    root.embed = nn.Embedding(100, D)
    root.layers = nn.ModuleList(Layer() for _ in range(layers))
    return root


_RENAMES = (
    ("layers.", "blocks."),
    ("embed", "tok_embeddings"),
    (".attn.", ".attention."),
    ("q_proj", "wq"),
    ("k_proj", "wk"),
    ("v_proj", "wv"),
    ("o_proj", "wo"),
    (".mlp.", ".feed_forward."),
    ("fc1", "linear1"),
    ("fc2", "linear2"),
    ("norm1", "attention_norm"),
    ("norm2", "ffn_norm"),
    ("input_norm", "pre_norm"),
    (".gate", ".router"),
    (".w1", ".gate_proj"),
    (".w2", ".down_proj"),
    (".w3", ".up_proj"),
)


def rename(path: str) -> str:
    """Module path → the renamed target's module path."""
    for old, new in _RENAMES:
        path = path.replace(old, new)
    return f"model.{path}" if path else "model"


def build_pair(family: str, n: int) -> tuple[Any, Any, dict[str, str]]:
    """Family + size → (source, renamed shuffled target, true key map), all on meta."""
    import torch

    import zoo_path  # noqa: F401  (the reference zoo lives in tests/)
    from zoo.relocate import Relocated

    build = build_synthetic if family == "synthetic" else build_moe
    with torch.device("meta"):
        source = build(n)
        target = Relocated(build(n), rename, order_seed=0)
    return source, target, target.key_map


# --- one measurement, in its own process ---------------------------------------------------


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # Linux fallback
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler:
    """Samples RSS in a thread; ``peak`` is the largest value seen while running."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s, self.peak, self._stop = every_s, _rss(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.every_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def worker(family: str, size: str, repeat: int) -> dict[str, Any]:
    """Family + size label + repeats → timings, peak memory and accuracy (JSON-ready)."""
    import torch

    from weightmapper.mapper import WeightMapper

    torch.set_num_threads(int(os.environ.get("WM_BENCH_THREADS", "2")))
    t0 = time.perf_counter()
    source, target, truth = build_pair(family, SIZES[size])
    build_s = time.perf_counter() - t0
    n_src = len(source.state_dict())
    runs = repeat if SIZES[size] <= 10_000 else 1
    inv_times, sug_times, cpu_times, peak = [], [], [], 0
    result = None
    for _ in range(runs):
        base = _rss()
        with PeakSampler() as sampler:
            c0, t0 = time.process_time(), time.perf_counter()
            mapper = WeightMapper(source, target)
            t1 = time.perf_counter()
            result = mapper.suggest_mapping()
            t2, c2 = time.perf_counter(), time.process_time()
        inv_times.append(t1 - t0)
        sug_times.append(t2 - t1)
        cpu_times.append(c2 - c0)
        peak = max(peak, sampler.peak - base)
        del mapper
    assert result is not None
    pred = dict(result)
    correct = sum(1 for s, t in pred.items() if truth.get(s) == t)
    return {
        "family": family,
        "size": size,
        "tensors": n_src,
        "build_s": build_s,
        "runs": runs,
        "inventory_s": statistics.median(inv_times),
        "suggest_s": statistics.median(sug_times),
        "total_s": statistics.median(a + b for a, b in zip(inv_times, sug_times, strict=True)),
        "cpu_s": statistics.median(cpu_times),
        "peak_mb": peak / 2**20,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "precision": correct / len(pred) if pred else 1.0,
        "recall": correct / len(truth) if truth else 1.0,
        "multi": len(result.multi),
    }


def run_one(family: str, size: str, repeat: int, timeout: float) -> dict[str, Any]:
    """Family + size → the worker's measurements, from a fresh interpreter."""
    cmd = [sys.executable, __file__, "--_worker", family, size, "--repeat", str(repeat)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"family": family, "size": size, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"family": family, "size": size, "error": " | ".join(tail)[:300]}
    return json.loads(lines[-1])


def add_exponents(rows: list[dict[str, Any]]) -> None:
    """Rows of one family, ascending size → each gets the log-log slope from the previous."""
    prev = None
    for r in rows:
        if "error" in r:
            prev = None
            continue
        if prev is not None and r["total_s"] > 0 and prev["total_s"] > 0:
            r["growth_exponent"] = math.log(r["total_s"] / prev["total_s"]) / math.log(
                r["tensors"] / prev["tensors"]
            )
        prev = r


def run_ratio(case: str, repeat: int, timeout: float) -> dict[str, Any]:
    """Ratio case name → its measurements (speed_ratios), from a fresh interpreter."""
    cmd = [sys.executable, __file__, "--_ratio", case, "--repeat", str(repeat)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"case": case, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"case": case, "error": " | ".join(tail)[:300]}
    return json.loads(lines[-1])


def render(rows: list[dict[str, Any]], ratios: list[dict[str, Any]]) -> None:
    """Measurement rows + ratio rows → rich tables (plain boxes when piped)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    import speed_ratios

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    boxed = box.SIMPLE_HEAVY if console.is_terminal else box.ASCII
    if ratios:
        speed_ratios.render(ratios, console, boxed)
    if not rows:
        return
    t = Table(
        title=f"suggest_mapping speed on the meta device ({os.cpu_count()} CPUs visible)",
        box=boxed,
    )
    cols = ("family", "size", "tensors", "runs", "inventory s", "suggest s", "total s", "cpu s")
    cols += ("growth exp.", "peak MB", "precision %", "recall %", "goal")
    for c in cols:
        t.add_column(c, justify="left" if c in ("family", "size") else "right")
    goal_s = {"10k": 1.0, "100k": 15.0}
    for r in rows:
        if "error" in r:
            t.add_row(r["family"], r["size"], *["-"] * 10, r["error"])
            continue
        g = goal_s.get(r["size"])
        goal = "-" if g is None else f"≤ {g:g} s: {'yes' if r['total_s'] <= g else 'NO'}"
        exp = r.get("growth_exponent")
        t.add_row(
            r["family"],
            r["size"],
            str(r["tensors"]),
            str(r["runs"]),
            f"{r['inventory_s']:.3f}",
            f"{r['suggest_s']:.3f}",
            f"{r['total_s']:.3f}",
            f"{r['cpu_s']:.3f}" if "cpu_s" in r else "-",
            "-" if exp is None else f"{exp:.2f}",
            f"{r['peak_mb']:.0f}",
            f"{100 * r['precision']:.2f}",
            f"{100 * r['recall']:.2f}",
            goal,
        )
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    """Command line → exit code 0 (a benchmark reports, it does not assert)."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1k,10k,100k", help="comma list of 1k, 10k, 100k")
    ap.add_argument("--models", default="synthetic,moe", help="comma list of synthetic, moe")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size up to 10k (median)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement")
    ap.add_argument(
        "--ratios", default="checkpoint,fused", help="comma list of checkpoint, fused (or none)"
    )
    ap.add_argument("--json", action="store_true", help="print machine-readable JSON")
    ap.add_argument("--_worker", nargs=2, metavar=("FAMILY", "SIZE"), help=argparse.SUPPRESS)
    ap.add_argument("--_ratio", metavar="CASE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        print(json.dumps(worker(*args._worker, args.repeat)))
        return 0
    if args._ratio:
        import speed_ratios

        print(json.dumps(speed_ratios.MEASURES[args._ratio](args.repeat)))
        return 0
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip() and s.strip() != "none"]
    families = [m.strip() for m in args.models.split(",") if m.strip()]
    cases = [c.strip() for c in args.ratios.split(",") if c.strip() and c.strip() != "none"]
    bad = [s for s in sizes if s not in SIZES] + [
        m for m in families if m not in ("synthetic", "moe")
    ]
    bad += [c for c in cases if c not in ("checkpoint", "fused")]
    if bad:
        print(
            f"unknown size, model or ratio {bad}; sizes: {list(SIZES)}, models: synthetic, moe; "
            "ratios: checkpoint, fused"
        )
        return 0
    ratios = []
    for case in cases:
        if not args.json:
            print(f"  ratio {case} ...", file=sys.stderr, flush=True)
        ratios.append(run_ratio(case, args.repeat, args.timeout))
    sizes.sort(key=SIZES.__getitem__)
    rows: list[dict[str, Any]] = []
    for fam in families:
        fam_rows = []
        for size in sizes:
            if not args.json:
                print(f"  {fam} {size} ...", file=sys.stderr, flush=True)
            fam_rows.append(run_one(fam, size, args.repeat, args.timeout))
        add_exponents(fam_rows)
        rows += fam_rows
    if args.json:
        print(json.dumps({"scaling": rows, "ratios": ratios}, indent=2))
    else:
        render(rows, ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
