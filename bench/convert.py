"""Conversion speed and memory: convert_checkpoint against `cp` of the same bytes.

Cases (data generated in a temporary directory, deleted at the end):
  rename-1file   a single safetensors file of --size-gb (default 2.1 GB), every key renamed,
                 written to one new file; wall time relative to `cp`, peak RSS relative to
                 the largest shard (the file itself).
  rename-shards  the same bytes as --shards safetensors shards + index, renamed into shards
                 of the same size; peak RSS relative to one shard.
  transpose-shards  as above, but every tensor transposed (data passes through torch).

Each conversion runs in a fresh process that reports its own peak RSS (ru_maxrss) and its
RSS after imports (the Python + torch baseline). Times are the best of --repeat runs.

Run:  python bench/convert.py [--size-gb 2.1] [--shards 8] [--repeat 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TENSOR_ROWS = 4096  # each tensor is (4096, cols) float32
_LOAD: list[str] = []  # load average when the run started, printed with the table


def _worker(src: str, mapping: str, out: str, shard_size: str, known_hash: str) -> None:
    """Child process: run one conversion, print {seconds, peak_rss, baseline_rss} as JSON."""
    from weightmapper.convert import convert_checkpoint
    from weightmapper.result import MappingResult

    result = MappingResult.from_dict(json.loads(Path(mapping).read_text()))
    baseline = _peak_rss()
    t0 = time.perf_counter()
    report = convert_checkpoint(
        src, result, out, shard_size=shard_size, source_sha256=known_hash or None
    )
    seconds = time.perf_counter() - t0
    peak = _peak_rss()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss": peak,
                "baseline_rss": baseline,
                "files": len(report.files),
                "raw_copied": report.raw_copied,
                "source_sha256": report.source_sha256,
            }
        )
    )


def _peak_rss() -> int:
    """→ this process's peak resident set in bytes (VmHWM; unlike ru_maxrss it is not
    inherited from the parent across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _make_checkpoint(folder: Path, total_bytes: int, shards: int) -> tuple[Path, list[str], int]:
    """→ (checkpoint path, tensor names, largest file size) of random float32 tensors."""
    import torch
    from safetensors.torch import save_file

    n_tensors = max(shards, 16)
    cols = max(1, total_bytes // (n_tensors * TENSOR_ROWS * 4))
    names = [f"model.layers.{i}.mlp.weight" for i in range(n_tensors)]
    gen = torch.Generator().manual_seed(0)
    per_shard = -(-n_tensors // shards)
    weight_map: dict[str, str] = {}
    for s in range(shards):
        chunk = names[s * per_shard : (s + 1) * per_shard]
        file = (
            "model.safetensors" if shards == 1 else f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        )
        tensors = {n: torch.randn(TENSOR_ROWS, cols, generator=gen) for n in chunk}
        save_file(tensors, folder / file)
        del tensors
        weight_map.update(dict.fromkeys(chunk, file))
    if shards == 1:
        path = folder / "model.safetensors"
    else:
        path = folder / "model.safetensors.index.json"
        path.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    largest = max(f.stat().st_size for f in folder.glob("*.safetensors"))
    return path, names, largest


def _write_mapping(path: Path, names: list[str], transpose: bool) -> None:
    from weightmapper.result import MappingResult, MatchedPair
    from weightmapper.transforms import IDENTITY, TransformSpec

    spec = TransformSpec("transpose", {"dim0": 0, "dim1": 1}) if transpose else IDENTITY
    pairs = [
        MatchedPair(n, n.replace("model.layers", "blocks"), 1.0, transform=spec) for n in names
    ]
    path.write_text(MappingResult(pairs).to_json())


def _run_convert(
    src: Path, mapping: Path, out: Path, shard_size: str, known_hash: str = ""
) -> dict[str, object]:
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    cmd = [sys.executable, __file__, "--worker", str(src), str(mapping), str(out), shard_size]
    cmd.append(known_hash)
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_cp(src_folder: Path, dst: Path, *, sync: bool) -> float:
    """`cp` of the checkpoint's files (then `sync` of the copies: durable, like our writer)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir()
    files = sorted(str(f) for f in src_folder.glob("*.safetensors"))
    t0 = time.perf_counter()
    subprocess.run(["cp", *files, str(dst)], check=True)
    if sync:
        subprocess.run(["sync", *(str(dst / Path(f).name) for f in files)], check=True)
    return time.perf_counter() - t0


def _case(
    name: str,
    folder: Path,
    work: Path,
    names: list[str],
    src: Path,
    largest: int,
    args,
    *,
    transpose: bool,
    shard_size: str,
) -> dict[str, object]:
    mapping = work / f"{name}.json"
    _write_mapping(mapping, names, transpose)
    out = work / f"{name}-out" if src.suffix == ".json" else work / f"{name}.safetensors"
    cp_times, sync_times, runs, known = [], [], [], []
    for _ in range(args.repeat):
        cp_times.append(_run_cp(folder, work / "cp-out", sync=False))
        sync_times.append(_run_cp(folder, work / "cp-out", sync=True))
        runs.append(_run_convert(src, mapping, out, shard_size))
        # the source hash handed in, as a pipeline that already hashed the source does
        known.append(_run_convert(src, mapping, out, shard_size, str(runs[-1]["source_sha256"])))
    shutil.rmtree(work / "cp-out", ignore_errors=True)
    best = min(runs, key=lambda r: r["seconds"])
    peak = max(r["peak_rss"] for r in runs)
    return {
        "case": name,
        "bytes": sum(f.stat().st_size for f in folder.glob("*.safetensors")),
        "largest": largest,
        "cp_s": min(cp_times),
        "convert_s": best["seconds"],
        "ratio": best["seconds"] / min(cp_times),
        "known_s": min(r["seconds"] for r in known),
        "cp_sync_s": min(sync_times),
        "ratio_sync": best["seconds"] / min(sync_times),
        "peak_rss": peak,
        "baseline_rss": max(r["baseline_rss"] for r in runs),
        "rss_vs_shard": peak / largest,
        "work_vs_shard": (peak - max(r["baseline_rss"] for r in runs)) / largest,
        "files": best["files"],
        "raw": best["raw_copied"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gb", type=float, default=2.1)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", help="where to put the temporary data (default: system temp)")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
        return
    _LOAD.append(f"{os.getloadavg()[0]:.2f}")
    total = int(args.size_gb * 1e9)
    rows = []
    with tempfile.TemporaryDirectory(prefix="wm-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        one, sharded, work = root / "one", root / "sharded", root / "work"
        for d in (one, sharded, work):
            d.mkdir()
        print(f"generating {args.size_gb:g} GB of checkpoints in {root} ...", file=sys.stderr)
        src1, names1, largest1 = _make_checkpoint(one, total, 1)
        rows.append(
            _case(
                "rename-1file",
                one,
                work,
                names1,
                src1,
                largest1,
                args,
                transpose=False,
                shard_size="1000GB",
            )
        )
        shutil.rmtree(one)
        src8, names8, largest8 = _make_checkpoint(sharded, total, args.shards)
        shard_size = str(largest8)
        for name, transpose in (("rename-shards", False), ("transpose-shards", True)):
            rows.append(
                _case(
                    name,
                    sharded,
                    work,
                    names8,
                    src8,
                    largest8,
                    args,
                    transpose=transpose,
                    shard_size=shard_size,
                )
            )
    _print_table(rows)


def _print_table(rows: list[dict[str, object]]) -> None:
    gb = 1e9
    print(
        f"load average before/after: {_LOAD[0]} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    header = (
        f"{'case':<17}{'data GB':>8}{'shard GB':>9}{'out':>4}{'raw':>5}"
        f"{'cp s':>7}{'cp+sync s':>10}{'convert s':>10}{'× cp':>6}{'× cp+sync':>10}"
        f"{'hash known s':>13}{'× cp':>6}{'× cp+sync':>10}"
        f"{'base RSS GB':>12}{'peak RSS GB':>12}{'peak/shard':>11}{'(peak-base)/shard':>18}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['case']:<17}{r['bytes'] / gb:>8.2f}{r['largest'] / gb:>9.2f}{r['files']:>4}"
            f"{r['raw']:>5}{r['cp_s']:>7.2f}{r['cp_sync_s']:>10.2f}{r['convert_s']:>10.2f}"
            f"{r['ratio']:>6.2f}{r['ratio_sync']:>10.2f}{r['known_s']:>13.2f}"
            f"{r['known_s'] / r['cp_s']:>6.2f}{r['known_s'] / r['cp_sync_s']:>10.2f}"
            f"{r['baseline_rss'] / gb:>12.2f}{r['peak_rss'] / gb:>12.2f}"
            f"{r['rss_vs_shard']:>11.2f}{r['work_vs_shard']:>18.2f}"
        )
    print(
        "targets: rename-1file convert ≤ 1.30 × cp; peak RSS ≤ largest shard + 10% "
        "(peak/shard ≤ 1.10).\n'convert' includes a sha256 of the whole source (recorded in "
        "the metadata); 'hash known' is given it, as a pipeline that already hashed the source. "
        "Both fsync the output (crash-safe); plain cp does not, cp+sync does."
    )


if __name__ == "__main__":
    main()
