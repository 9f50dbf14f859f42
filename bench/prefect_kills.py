"""SIGKILL `weightmapper migrate` (through Prefect) at random points of the demo job, then check.

An uninterrupted plain-Python run of the demo job (``configs/example.yaml``, copied into a
temporary directory) gives the reference outputs and its duration D. A second copy is then
run through Prefect again and again, each run SIGKILLed (the migrate process only, as the
OOM killer would) after a random delay in [0.2 s, 2·D] (a Prefect run also starts its
server). After each kill every process the run had
started must end by itself (its temporary Prefect server included). When a run finishes
before its kill, its artifacts and outputs are wiped so that the next kills land in real
work again. Finally one run is left to finish: it must exit 0, leave no temporary file
(``*.tmp``, ``*.work``) and no Prefect lock behind, and its outputs must be byte-identical
to the reference.

    python bench/prefect_kills.py --kills 20          # prints a table, exit 1 if a check failed
    python bench/prefect_kills.py --kills 3 --seed 7  # what the reliability test runs
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The demo's migrations this harness runs: small models, no optional packages.
MIGRATIONS = ("cnn", "transformer")
# Seconds every process of a killed run gets to end by itself.
SETTLE_S = 30.0


@dataclass
class KillRecord:
    after_s: float
    processes: int
    left: list[str]


@dataclass
class KillReport:
    seed: int
    reference_s: float
    kills: list[KillRecord] = field(default_factory=list)
    finished_first: int = 0
    final_rc: int | None = None
    final_s: float = 0.0
    temps: list[str] = field(default_factory=list)
    locks: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)

    @property
    def left_behind(self) -> list[str]:
        return [p for k in self.kills for p in k.left]

    @property
    def ok(self) -> bool:
        return (
            self.final_rc == 0
            and not self.left_behind
            and not self.temps
            and not self.locks
            and not self.differing
        )


def demo_job(root: Path) -> Path:
    """Directory → a copy of the demo job in ``root/configs`` (paths resolve inside root)."""
    data = yaml.safe_load((ROOT / "configs" / "example.yaml").read_text())
    kept = [m for m in data.get("migrations", []) if m.get("name") in MIGRATIONS]
    if kept:
        data["migrations"] = kept
    path = root / "configs" / "example.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Run with: weightmapper migrate configs/example.yaml\n" + yaml.dump(data))
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return env


def _start(job: Path, *flags: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "weightmapper", "migrate", str(job), "--json", *flags]
    # Its own session: the kill is aimed at this one process, never at the caller's group.
    return subprocess.Popen(
        cmd,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def outputs(root: Path) -> dict[str, str]:
    """Job root → {output path relative to the output dir: sha256 of its bytes}."""
    out = root / ".demo" / "out"
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def leftovers(root: Path) -> tuple[list[str], list[str]]:
    """Job root → (temporary files and work folders, Prefect lock files) found under it."""
    temps = [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name.endswith(".tmp") or (p.is_dir() and p.name.endswith(".work"))
    ]
    locks_dir = root / ".weightmapper" / "locks" / "prefect"
    locks = [str(p.relative_to(root)) for p in locks_dir.glob("*")] if locks_dir.exists() else []
    return temps, locks


def _run_to_end(job: Path, *flags: str, timeout: float = 900) -> tuple[int, float]:
    t0 = time.monotonic()
    proc = _start(job, *flags)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    return rc, time.monotonic() - t0


def _kill_once(job: Path, delay: float) -> KillRecord | None:
    """Start a run, SIGKILL it after ``delay`` s → what it left, or None if it finished first."""
    proc = _start(job)
    seen: dict[int, psutil.Process] = {}
    t0 = time.monotonic()
    while time.monotonic() - t0 < delay and proc.poll() is None:
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.Error:
            pass
        time.sleep(0.05)
    if proc.poll() is not None:
        return None
    after = time.monotonic() - t0
    try:
        for child in psutil.Process(proc.pid).children(recursive=True):
            seen.setdefault(child.pid, child)
    except psutil.Error:
        pass
    proc.kill()
    proc.wait()
    _, alive = psutil.wait_procs(list(seen.values()), timeout=SETTLE_S)
    left = []
    for p in alive:
        try:
            left.append(" ".join(p.cmdline())[:200])
            p.kill()
        except psutil.Error:
            pass
    return KillRecord(after, len(seen), left)


def kill_runs(
    root: Path, kills: int, seed: int, say: Callable[[str], None] = lambda _: None
) -> KillReport:
    """Reference run, ``kills`` SIGKILLed runs, a final run → what was checked and found."""
    rng = random.Random(seed)
    ref_job = demo_job(root / "reference")
    rc, duration = _run_to_end(ref_job, "--no-prefect")
    if rc != 0:
        raise RuntimeError(f"the uninterrupted reference run exited {rc}")
    report = KillReport(seed=seed, reference_s=duration)
    say(f"reference run (plain Python): {duration:.1f} s")
    victim = root / "victim"
    job = demo_job(victim)
    attempts = 0
    while len(report.kills) < kills and attempts < 4 * kills:
        attempts += 1
        delay = rng.uniform(0.2, 2 * duration)
        record = _kill_once(job, delay)
        if record is None:
            report.finished_first += 1
            # Let the next kills land in real work again (Prefect's database stays).
            shutil.rmtree(victim / ".weightmapper" / "artifacts", ignore_errors=True)
            shutil.rmtree(victim / ".demo" / "out", ignore_errors=True)
            say(f"run finished before its kill at {delay:.1f} s; artifacts wiped")
            continue
        report.kills.append(record)
        say(
            f"kill {len(report.kills)}/{kills} at {record.after_s:.1f} s: "
            f"{record.processes} child process(es), {len(record.left)} left"
        )
    report.final_rc, report.final_s = _run_to_end(job)
    report.temps, report.locks = leftovers(victim)
    want, got = outputs(root / "reference"), outputs(victim)
    report.differing = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
    return report


def print_report(r: KillReport) -> None:
    """KillReport → a table on stdout."""
    print(
        f"\nSIGKILL under Prefect, demo job ({', '.join(MIGRATIONS)}), seed {r.seed}: "
        f"uninterrupted plain-Python run {r.reference_s:.1f} s\n"
    )
    print("| kill | after (s) | child processes | left running |")
    print("|---:|---:|---:|---|")
    for i, k in enumerate(r.kills, 1):
        print(f"| {i} | {k.after_s:.1f} | {k.processes} | {len(k.left) or 'none'} |")
    print(
        f"\nkills landed: {len(r.kills)}; runs that finished before their kill: "
        f"{r.finished_first}\nprocesses left behind: {len(r.left_behind)}\n"
        f"final run: exit {r.final_rc} in {r.final_s:.1f} s; temporary files left: "
        f"{len(r.temps)}; Prefect locks left: {len(r.locks)}; outputs differing from the "
        f"uninterrupted run: {len(r.differing)}"
    )
    for what in (r.left_behind, r.temps, r.locks, r.differing):
        for line in what[:20]:
            print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs that land in a run")
    p.add_argument("--seed", type=int, default=0, help="seed of the random kill points")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="wm-prefect-kills-"))
    try:
        report = kill_runs(root, args.kills, args.seed, say=lambda m: print(m, flush=True))
        print_report(report)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
