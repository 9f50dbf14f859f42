"""Benchmark: reading a large sharded checkpoint's table costs headers, not tensor data.

Builds a sharded checkpoint of a few GB (safetensors by default, or torch ``.bin`` shards
with ``--format bin``) in a temporary directory, then measures, each in a fresh Python
process, the time and the peak RSS added by:

* ``open_checkpoint`` + listing every name, shape and dtype,
* ``inspect_checkpoint`` (the library side of ``weightmapper inspect``),
* ``weightmapper inspect --json`` through the CLI entry point,
* ``TensorTable.content_hash`` (the pipeline's cache key; reads every byte once),
* ``TensorTable.content_hash`` again, in a new process: each file's digest now comes from
  the hash cache (``weightmapper.hashing``; a fresh cache directory under the temp dir),
* for contrast, loading every tensor (``to_state_dict``).

"Peak RSS added" is the peak RSS during the operation minus the RSS just before it,
with torch, weightmapper and every CLI subcommand already imported. On Linux the peak
counter (VmHWM) is reset first through /proc/self/clear_refs, so the import-time peak
cannot hide the operation's own cost; elsewhere ``ru_maxrss`` is used, which can only
under-report when imports peaked higher (the table says which was used). Times exclude those
imports; the CLI's import time is printed separately. The checkpoint is deleted afterwards.

Run:  python bench/checkpoint_io.py            (about 2.2 GB written to the temp dir)
      python bench/checkpoint_io.py --size-gb 4 --format bin
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RSS_BOUND_MB = 50.0
"""Peak RSS the header-only operations may add."""

CHILD = r"""
import io, json, resource, sys, time, contextlib
import psutil
import torch
from weightmapper.checkpoint import open_checkpoint
from weightmapper.doctor import inspect_checkpoint
from weightmapper.cli.main import build_parser, main

def status_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)

def reset_peak():
    # Linux: writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS, so the
    # import-time peak cannot hide what the operation adds.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False

def peak_kb(exact):
    return status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

t_imports = time.perf_counter()
build_parser()  # imports every subcommand module once, so the timing below is inspect's own
import_seconds = time.perf_counter() - t_imports
op, path = sys.argv[1], sys.argv[2]
exact = reset_peak()
before = psutil.Process().memory_info().rss // 1024
t0 = time.perf_counter()
if op == "open":
    table = open_checkpoint(path)
    listing = [(n, info.shape, info.dtype) for n, info in table.items()]
    count = len(listing)
elif op == "inspect":
    count = inspect_checkpoint(path)["tensor_count"]
elif op == "cli":
    with contextlib.redirect_stdout(io.StringIO()) as out:
        rc = main(["inspect", path, "--json"])
    count = json.loads(out.getvalue())["tensor_count"] if rc == 0 else -1
elif op == "hash":
    table = open_checkpoint(path)
    table.content_hash()
    count = len(table)
elif op == "load_all":
    sd = open_checkpoint(path).to_state_dict()
    checksum = sum(float(t.sum()) for t in sd.values())  # touch every byte (mmap'd pickles)
    count = len(sd)
seconds = time.perf_counter() - t0
added_mb = max(0, peak_kb(exact) - before) / 1024
print(json.dumps({"seconds": seconds, "added_mb": added_mb, "tensors": count,
                  "import_seconds": import_seconds, "exact": exact}))
"""


def build_checkpoint(root: Path, *, size_gb: float, shards: int, hidden: int, fmt: str) -> Path:
    """Target size → a transformer-shaped sharded checkpoint in root; returns its index path."""
    import torch
    from safetensors.torch import save_file

    h = hidden
    per_layer = {
        "attn.q_proj.weight": (h, h),
        "attn.k_proj.weight": (h, h),
        "attn.v_proj.weight": (h, h),
        "attn.o_proj.weight": (h, h),
        "mlp.up_proj.weight": (4 * h, h),
        "mlp.down_proj.weight": (h, 4 * h),
        "input_norm.weight": (h,),
        "input_norm.bias": (h,),
        "post_norm.weight": (h,),
        "post_norm.bias": (h,),
    }
    layer_bytes = 4 * sum(math.prod(s) for s in per_layer.values())
    layers = math.ceil(size_gb * 1e9 / layer_bytes)
    specs = [(f"model.layers.{i}.{n}", s) for i in range(layers) for n, s in per_layer.items()]
    target = math.ceil(len(specs) / shards)
    ext = "safetensors" if fmt == "safetensors" else "bin"
    weight_map: dict[str, str] = {}
    total = 0
    for s in range(shards):
        chunk = specs[s * target : (s + 1) * target]
        if not chunk:
            break
        name = f"model-{s + 1:05d}-of-{shards:05d}.{ext}"
        tensors = {k: torch.full(shape, float(i % 7)) for i, (k, shape) in enumerate(chunk)}
        if fmt == "safetensors":
            save_file(tensors, str(root / name), metadata={"format": "pt"})
        else:
            torch.save(tensors, root / name)
        total += sum(t.numel() * 4 for t in tensors.values())
        weight_map.update(dict.fromkeys(tensors, name))
        del tensors
    index_name = (
        "model.safetensors.index.json" if ext == "safetensors" else "pytorch_model.bin.index.json"
    )
    index = root / index_name
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return index


def measure(op: str, path: Path, cache_dir: Path) -> dict[str, float]:
    """Operation name, checkpoint and hash cache folder → {seconds, added_mb, tensors}, from
    a fresh process."""
    env = {**os.environ, "WEIGHTMAPPER_CACHE_DIR": str(cache_dir)}
    env.pop("WEIGHTMAPPER_HASH_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, op, str(path)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {op} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gb", type=float, default=2.2, help="checkpoint size (default 2.2)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=1024, help="hidden size of the fake layers")
    parser.add_argument("--format", choices=["safetensors", "bin"], default="safetensors")
    parser.add_argument(
        "--skip-load-all", action="store_true", help="skip the full-load contrast row"
    )
    parser.add_argument("--tmp-dir", default=None, help="where to write the checkpoint")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="wm-bench-", dir=args.tmp_dir))
    try:
        t0 = time.perf_counter()
        index = build_checkpoint(
            root, size_gb=args.size_gb, shards=args.shards, hidden=args.hidden, fmt=args.format
        )
        size = sum(f.stat().st_size for f in root.iterdir())
        print(
            f"built {args.format} checkpoint: {size / 1e9:.2f} GB in "
            f"{len(list(root.glob('model-*')))} shards, {time.perf_counter() - t0:.1f} s"
        )
        rows = [
            ("open_checkpoint + list names/shapes", "open", True),
            ("inspect_checkpoint (library)", "inspect", True),
            ("weightmapper inspect --json (CLI main)", "cli", True),
            ("content_hash (reads every byte)", "hash", False),
            ("content_hash again (hash cache)", "hash", False),
        ]
        if not args.skip_load_all:
            rows.append(("to_state_dict (contrast: all data)", "load_all", False))
        print()
        cli_imports = 0.0
        exact = False
        print(f"{'operation':<40} {'tensors':>8} {'seconds':>9} {'peak RSS added':>15}  bound")
        print("-" * 88)
        failed = False
        # Files written within RACY_SECONDS of hashing are never remembered: let them settle,
        # as a checkpoint that was not written a moment ago has.
        from weightmapper.hashing import RACY_SECONDS

        newest = max(max(f.stat().st_mtime, f.stat().st_ctime) for f in root.iterdir())
        time.sleep(max(0.0, newest + RACY_SECONDS + 0.5 - time.time()))
        cache_dir = root / "hash-cache"  # fresh, and never the user's own cache
        for label, op, bounded in rows:
            r = measure(op, index, cache_dir)
            cli_imports = max(cli_imports, r["import_seconds"])
            exact = r["exact"]
            verdict = ""
            if bounded:
                ok = r["added_mb"] <= RSS_BOUND_MB and r["seconds"] < 1.0
                failed |= not ok
                verdict = f"<= {RSS_BOUND_MB:.0f} MB, < 1 s: {'ok' if ok else 'EXCEEDED'}"
            print(
                f"{label:<40} {r['tensors']:>8} {r['seconds']:>9.3f} "
                f"{r['added_mb']:>12.1f} MB  {verdict}"
            )
        print(f"\npeak RSS measured with {'VmHWM reset (exact)' if exact else 'ru_maxrss'}")
        print(
            f"(not timed above: importing torch + weightmapper + all CLI subcommands, "
            f"{cli_imports:.2f} s after torch, paid once per CLI process)"
        )
        return 1 if failed else 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
