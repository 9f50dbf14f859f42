"""Conversion speed and memory: convert_checkpoint against `cp` of the same bytes.

Cases (data generated in a temporary directory, deleted at the end):
  rename-1file   a single safetensors file of --size-gb (default 2.1 GB), every key renamed,
                 written to one new file; wall time relative to `cp`, peak RSS relative to
                 the largest shard (the file itself).
  rename-shards  the same bytes as --shards safetensors shards + index, renamed into shards
                 of the same size; peak RSS relative to one shard.
  transpose-shards  as above, but every tensor transposed (data passes through torch).

Each conversion runs in a fresh process that reports its own peak RSS (VmHWM) and its RSS
after imports (the Python + torch baseline). Every case is timed three ways: durable (the
default: outputs and folder fsynced; against `cp` + `sync`), --no-fsync with the source
hashed during the conversion (first sight of a file), and --no-fsync with the source hash
already in the hash cache (every later conversion of that file; against plain `cp`). The
page cache is flushed (`sync`) and the source read once before each timed run, so none pays
for another's writeback and all find the source cached (the case where `cp` is fastest).
Times are the best of --repeat runs.

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


def _worker(src: str, mapping: str, out: str, shard_size: str, durable: str) -> None:
    """Child process: run one conversion, print {seconds, peak_rss, baseline_rss} as JSON."""
    from weightmapper.convert import convert_checkpoint
    from weightmapper.result import MappingResult

    result = MappingResult.from_dict(json.loads(Path(mapping).read_text()))
    baseline = _peak_rss()
    t0 = time.perf_counter()
    report = convert_checkpoint(src, result, out, shard_size=shard_size, durable=durable == "1")
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
    src: Path, mapping: Path, out: Path, shard_size: str, *, durable: bool, cache: Path
) -> dict[str, object]:
    """One conversion in a fresh process, its source-hash cache at ``cache`` → its facts."""
    _remove(out)
    _settle(src.parent)
    cmd = [sys.executable, __file__, "--worker", str(src), str(mapping), str(out), shard_size]
    cmd.append("1" if durable else "0")
    env = {**os.environ, "WEIGHTMAPPER_CACHE_DIR": str(cache)}
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    _remove(out)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _remove(path: Path) -> None:
    """Delete an output right after its run: every timed run then starts with the same files
    in the page cache (the source only). On the 2-core VM this was written on, a 2 GB copy
    left lying around made the next run up to 2.5× slower, whichever tool ran next."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _settle(folder: Path) -> None:
    """Flush every dirty page and read the source once, so every timed run starts alike: no
    run pays for the previous run's writeback, and every run finds the source in the page
    cache (the kernel here reclaims idle cache on its own, which made cold and warm runs
    alternate by chance)."""
    os.sync()
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass
    time.sleep(0.2)


def _run_cp(src_folder: Path, dst: Path, *, sync: bool) -> float:
    """`cp` of the checkpoint's files (then `sync` of the copies: durable, like our writer)."""
    _remove(dst)
    dst.mkdir()
    files = sorted(str(f) for f in src_folder.glob("*.safetensors"))
    _settle(src_folder)
    t0 = time.perf_counter()
    subprocess.run(["cp", *files, str(dst)], check=True)
    if sync:
        subprocess.run(["sync", *(str(dst / Path(f).name) for f in files)], check=True)
    seconds = time.perf_counter() - t0
    _remove(dst)
    return seconds


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
    cp_times, sync_times = [], []
    runs: dict[str, list[dict[str, object]]] = {"durable": [], "first": [], "cached": []}
    for i in range(args.repeat):
        cp_times.append(_run_cp(folder, work / "cp-out", sync=False))
        sync_times.append(_run_cp(folder, work / "cp-out", sync=True))
        # A fresh hash cache: the source is hashed during the conversion, as on first sight.
        runs["durable"].append(
            _run_convert(src, mapping, out, shard_size, durable=True, cache=work / f"c{i}a")
        )
        runs["first"].append(
            _run_convert(src, mapping, out, shard_size, durable=False, cache=work / f"c{i}b")
        )
        # The cache the previous run filled: the source hash is known, only bytes move.
        runs["cached"].append(
            _run_convert(src, mapping, out, shard_size, durable=False, cache=work / f"c{i}b")
        )
    every = [r for rs in runs.values() for r in rs]
    best = {k: min(float(r["seconds"]) for r in rs) for k, rs in runs.items()}
    peak = max(int(r["peak_rss"]) for r in every)
    base = max(int(r["baseline_rss"]) for r in every)
    return {
        "case": name,
        "bytes": sum(f.stat().st_size for f in folder.glob("*.safetensors")),
        "largest": largest,
        "cp_s": min(cp_times),
        "cp_sync_s": min(sync_times),
        **{f"{k}_s": v for k, v in best.items()},
        "peak_rss": peak,
        "baseline_rss": base,
        "files": every[0]["files"],
        "raw": every[0]["raw_copied"],
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
        f"{'case':<17}{'GB':>5}{'shard GB':>9}{'out':>4}{'raw':>4}"
        f"{'cp s':>6}{'cp+sync s':>10}"
        f"{'durable s':>10}{'×cp+sync':>9}"
        f"{'no-fsync s':>11}{'×cp':>6}"
        f"{'cached s':>9}{'×cp':>6}"
        f"{'base GB':>8}{'peak GB':>8}{'peak/shard':>11}{'(peak-base)/shard':>18}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        largest = float(r["largest"])
        print(
            f"{r['case']:<17}{r['bytes'] / gb:>5.2f}{largest / gb:>9.2f}{r['files']:>4}"
            f"{r['raw']:>4}{r['cp_s']:>6.2f}{r['cp_sync_s']:>10.2f}"
            f"{r['durable_s']:>10.2f}{r['durable_s'] / r['cp_sync_s']:>9.2f}"
            f"{r['first_s']:>11.2f}{r['first_s'] / r['cp_s']:>6.2f}"
            f"{r['cached_s']:>9.2f}{r['cached_s'] / r['cp_s']:>6.2f}"
            f"{r['baseline_rss'] / gb:>8.2f}{r['peak_rss'] / gb:>8.2f}"
            f"{r['peak_rss'] / largest:>11.2f}{(r['peak_rss'] - r['baseline_rss']) / largest:>18.2f}"
        )
    print(
        "durable: the default (fsync of every output file and the folder; compare cp+sync, "
        "which is as durable).\nno-fsync: --no-fsync, the source hashed during the "
        "conversion (a fresh hash cache).\ncached: --no-fsync with the source hash in the "
        "cache (any later conversion of the same file); compare cp.\ntargets: rename-1file "
        "cached ≤ 1.30 × cp; peak RSS ≤ largest shard + 10% (peak/shard ≤ 1.10)."
    )


if __name__ == "__main__":
    main()
