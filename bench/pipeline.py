"""Pipeline benchmark: cold run, warm rerun and a threshold-only change over a batch.

Generates N ResNet-50-shaped checkpoints (about 100 MB each at the default size) into a
temporary directory, migrates them to a refactored ResNet-50 (map, convert, validate,
functional check, report), then reruns the same job (everything should be reused) and
a job that differs only in its threshold (only assignment and later stages may run).
Prints a table. Nothing is asserted: this is a measurement.

    python bench/pipeline.py                      # 20 checkpoints of ~100 MB
    python bench/pipeline.py --n 4 --size-mb 10   # a quick look
    python bench/pipeline.py --prefect            # through the Prefect batch flow
    python bench/pipeline.py --warm-table --n 10 --size-mb 5
        # whole `weightmapper migrate` processes: plain Python vs Prefect, cold and warm
    python bench/pipeline.py --warm-table --job configs/example.yaml
        # the same for the demo job (`make demo`)

The warm-rerun table times what a user waits for: a fresh ``weightmapper migrate``
process (interpreter start, imports, the temporary Prefect server, the run, shutdown),
first on fresh stores (cold: everything computed, a new Prefect database), then on a job
whose every stage is cached (warm), with and without Prefect, alternating, median of
``--repeat`` runs each. Each cell also gives the CPU time the run used (its own and its
server's), which does not grow with other load on the machine, unlike wall time.
"""

from __future__ import annotations

import argparse
import atexit
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from weightmapper.examples.generate import write_resnet_checkpoints
from weightmapper.examples.resnet import width_for_size
from weightmapper.pipeline.config import JobConfig, load_job
from weightmapper.pipeline.summary import BatchSummary


def write_job(root: Path, width: int, threshold: float, workers: int) -> Path:
    """Benchmark root + model width + threshold → path of a YAML job over its checkpoints."""
    kwargs = {"num_classes": 1000, "width": width}
    job = {
        "name": f"bench-t{threshold}",
        "store": "store",
        "runner": {"kind": "threads", "max_workers": workers},
        "sources": ["ckpts/*.safetensors"],
        "source_module": {"spec": "weightmapper.examples.resnet:ResNet50", "kwargs": kwargs},
        "target": {"module": "weightmapper.examples.resnet:RefactoredResNet50", "kwargs": kwargs},
        "dummy_input": {"shape": [1, 3, 64, 64]},
        "mapper": {"threshold": threshold},
        "output": {"dir": "out", "naming": "{stem}.safetensors"},
    }
    path = root / f"job-{threshold}.yaml"
    path.write_text("# benchmark job\n" + yaml.safe_dump(job, sort_keys=False))
    return path


def runner(use_prefect: bool, store_root: Path) -> Callable[[JobConfig], BatchSummary]:
    """Which batch runner to time: the plain-Python one or the Prefect flow.

    The Prefect one runs against a temporary server started here, as ``migrate`` does,
    kept for the whole benchmark (stopped at exit).
    """
    if not use_prefect:
        from weightmapper.pipeline.batch import run_batch

        return run_batch
    from flows.embedded import configure_prefect, prefect_server

    server = prefect_server(configure_prefect(store_root))
    api_url = server.__enter__()
    atexit.register(server.__exit__, None, None, None)
    from flows.migrate import run_batch_flow

    def run(job: JobConfig) -> BatchSummary:
        return run_batch_flow(job, api_url)

    return run


def timed(run: Callable[[JobConfig], BatchSummary], job: JobConfig) -> tuple[float, BatchSummary]:
    t0 = time.perf_counter()
    summary = run(job)
    return time.perf_counter() - t0, summary


def cli_run(job: Path, *extra: str) -> tuple[float, float]:
    """Job file + CLI flags → (wall s, CPU s) of one ``weightmapper migrate`` process.

    CPU is user + system time of the process and of what it waited for (the temporary
    Prefect server included): unlike wall time, it does not grow with other load on the
    machine. The process must exit 0.
    """
    cmd = [sys.executable, "-m", "weightmapper", "migrate", str(job), "--json", *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return secs, cpu


def job_variant(job: Path, root: Path, label: str) -> Path:
    """Job file → a copy beside it whose store and output folder are fresh ones under root.

    The copy lives in the job's folder, so its other relative paths still resolve; the
    caller removes it.
    """
    data = yaml.safe_load(job.read_text())
    data["store"] = str(root / f"store-{label}")
    output = data.get("output")
    if isinstance(output, dict):
        data["output"] = {**output, "dir": str(root / f"out-{label}")}
    else:
        data["output"] = str(root / f"out-{label}")
    path = job.with_name(f".bench-{os.getpid()}-{label}-{job.name}")
    path.write_text("# benchmark copy\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def _cell(xs: list[tuple[float, float]]) -> str:
    wall = statistics.median(x[0] for x in xs)
    cpu = statistics.median(x[1] for x in xs)
    return f"{wall:6.1f} s ({cpu:5.1f} s CPU)"


def warm_table(job: Path, root: Path, repeat: int, cold: bool) -> None:
    """Print wall (and CPU) times of whole CLI processes, plain vs Prefect: cold runs on
    fresh stores (a new Prefect database too), then warm reruns of a fully cached job."""
    load0 = os.getloadavg()[0]
    plain: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
    flow: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
    copies: list[Path] = []
    try:
        for r in range(repeat if cold else 1):  # the last pair of stores serves the warm runs
            a, b = job_variant(job, root, f"plain{r}"), job_variant(job, root, f"prefect{r}")
            copies += [a, b]
            plain["cold"].append(cli_run(a, "--no-prefect"))
            flow["cold"].append(cli_run(b))
        for _ in range(repeat):  # alternate, so both see the same machine load
            plain["warm"].append(cli_run(a, "--no-prefect"))
            flow["warm"].append(cli_run(b))
    finally:
        for c in copies:
            c.unlink(missing_ok=True)
    load1 = os.getloadavg()[0]
    print(
        f"\n`weightmapper migrate {job.name}` as whole processes, median of {repeat} "
        f"(alternating); load average {load0:.1f} → {load1:.1f} on {os.cpu_count()} CPUs\n"
    )
    print(
        f"| {'run':<34} | {'plain Python (--no-prefect)':<28} | {'Prefect (temporary server)':<28} |"
    )
    print(f"|{'-' * 36}|{'-' * 30}|{'-' * 30}|")
    rows = [("cold (fresh store, new Prefect DB)", "cold")] if cold else []
    rows.append(("warm (every stage cached)", "warm"))
    for label, k in rows:
        if cold or k == "warm":
            print(f"| {label:<34} | {_cell(plain[k]):<28} | {_cell(flow[k]):<28} |")
    p = statistics.median(x[0] for x in plain["warm"])
    f = statistics.median(x[0] for x in flow["warm"])
    budget = 2 * p + 3
    verdict = "within" if f <= budget else "OVER"
    print(
        f"\nwarm Prefect / plain: {f / p:.2f}×; budget 2 × plain + 3 s = {budget:.1f} s: {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=20, help="checkpoints in the batch (default 20)")
    p.add_argument(
        "--size-mb",
        type=float,
        default=None,
        help="checkpoint size in MB (default: the real ResNet-50, about 102 MB)",
    )
    p.add_argument("--workers", type=int, default=2, help="checkpoints at once (default 2)")
    p.add_argument("--prefect", action="store_true", help="run through the Prefect batch flow")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument(
        "--warm-table",
        action="store_true",
        help="time whole CLI processes rerunning a cached job: plain Python vs Prefect",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs per side for --warm-table")
    p.add_argument(
        "--job",
        type=Path,
        help="with --warm-table: time this job file (e.g. configs/example.yaml, the demo) "
        "on fresh stores instead of generated ResNet checkpoints",
    )
    p.add_argument("--no-cold", action="store_true", help="with --warm-table: warm runs only")
    args = p.parse_args(argv)

    if args.warm_table:
        root = Path(tempfile.mkdtemp(prefix="wm-bench-warm-"))
        try:
            job = args.job
            if job is None:
                width = 64 if args.size_mb is None else width_for_size(args.size_mb)
                write_resnet_checkpoints(root / "ckpts", args.n, width=width)
                job = write_job(root, width, 0.5, args.workers)
            warm_table(job.resolve(), root, args.repeat, cold=not args.no_cold)
        finally:
            if args.keep:
                print(f"kept {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
        return 0

    root = Path(tempfile.mkdtemp(prefix="wm-bench-pipeline-"))
    if args.prefect and not args.keep:
        # Registered before Prefect is imported, so it runs after Prefect's exit hooks
        # have stopped the temporary server that keeps its database under root.
        atexit.register(shutil.rmtree, root, True)
    try:
        width = 64 if args.size_mb is None else width_for_size(args.size_mb)
        t0 = time.perf_counter()
        paths = write_resnet_checkpoints(root / "ckpts", args.n, width=width)
        gen_s = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in paths) / len(paths) / 1e6
        run = runner(args.prefect, root / "store")
        job_a = load_job(write_job(root, width, 0.5, args.workers))
        job_b = load_job(write_job(root, width, 0.55, args.workers))

        cold_s, cold = timed(run, job_a)
        warm_s, warm = timed(run, job_a)
        thr_s, thr = timed(run, job_b)

        def recomputed(s: BatchSummary) -> str:
            ran = {k: v for k, v in s.recomputed().items() if v}
            return ", ".join(f"{k}×{v}" for k, v in ran.items()) or "none"

        mode = "prefect flow" if args.prefect else "plain python"
        print(
            f"\npipeline benchmark ({mode}): {args.n} checkpoints of {size_mb:.1f} MB "
            f"(ResNet-50 layout, width {width}), {args.workers} at once; "
            f"generated in {gen_s:.1f} s\n"
        )
        rows = [
            ("cold run", cold_s, cold),
            ("warm rerun (same job)", warm_s, warm),
            ("threshold 0.50 → 0.55", thr_s, thr),
        ]
        print(f"| {'run':<24} | {'seconds':>8} | {'vs cold':>7} | {'ok':>5} | stages recomputed")
        print(f"|{'-' * 26}|{'-' * 10}|{'-' * 9}|{'-' * 7}|{'-' * 40}")
        for label, secs, s in rows:
            c = s.counts()
            print(
                f"| {label:<24} | {secs:8.2f} | {secs / cold_s:6.1%} | "
                f"{c['ok']:>2}/{c['total']:<2} | {recomputed(s)}"
            )
        n_warm = sum(warm.recomputed().values())
        print(
            f"\nwarm rerun: {n_warm} stage run(s) recomputed (target 0); warm/cold "
            f"{warm_s / cold_s:.1%} (target ≤ 15%)"
        )
        print(
            "threshold-only change reran: "
            + ", ".join(sorted(k for k, v in thr.recomputed().items() if v))
        )
        if not (cold.ok and warm.ok and thr.ok):
            for s in (cold, warm, thr):
                for i in s.items:
                    if i.status != "ok":
                        print(f"  {i.source}: {i.status} {i.failed_stage or ''} {i.error or ''}")
    finally:
        if args.keep:
            print(f"kept {root}")
        elif not args.prefect:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
