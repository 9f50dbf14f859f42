"""Fuzz one checkpoint format in a child process: N mutated files → outcome counts as JSON.

Run by ``test_fuzz_formats.py`` as ``python fuzz_worker.py FORMAT N SEED OUT.json``. The
process caps its own address space (a reader that trusts a length field and allocates it
fails here instead of swapping the machine) and arms an alarm per input (a reader that
loops forever is reported, not waited for). Each input is opened with ``open_checkpoint``
and all its tensors are read; the outcome is ``loaded`` (every tensor matches its header),
``refused`` (a ``WeightMapperError``), or a failure with its traceback. The input being
tried is written to ``OUT.json.current`` first, so a crash of the interpreter itself still
names the input that caused it. ``--replay INDEX`` re-runs one input and prints its label.
"""

from __future__ import annotations

import contextlib
import json
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from fuzz_mutate import mutate
from fuzz_seeds import Seed, seeds

from weightmapper.checkpoint import open_checkpoint
from weightmapper.doctor import inspect_checkpoint
from weightmapper.errors import WeightMapperError
from weightmapper.tensor_info import dtype_name

HEADROOM_BYTES = 3 << 30
"""Address space allowed above what the interpreter holds after importing torch."""
ALARM_SECONDS = 10
"""Longest one input may take before it counts as a hang."""


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` swallows it."""


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise Hang(f"input took longer than {ALARM_SECONDS} s")


def limit_memory() -> int:
    """() → the address-space cap set on this process (current size + headroom), bytes."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    cap = pages * resource.getpagesize() + HEADROOM_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return cap


def write_files(root: Path, files: dict[str, bytes]) -> None:
    """Fresh directory + {relative name: bytes} → the files written there."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Two tensors → True when dtype, shape and raw bytes agree (works for fp8 and bool)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(torch.equal(_raw(a), _raw(b)))


def _raw(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def try_input(path: Path, expected: dict[str, torch.Tensor] | None) -> str:
    """Checkpoint path (+ tensors it must hold, for an unmutated seed) → ``loaded``/``refused``.

    The file goes through ``inspect_checkpoint`` (the ``inspect`` command's report, JSON
    encoded) and through ``open_checkpoint`` with every tensor read.

    Raises AssertionError when a file loads but disagrees with its own header or the seed.
    Any other exception escapes: it is the bug the fuzzer looks for.
    """
    with contextlib.suppress(WeightMapperError):  # what `weightmapper inspect --json` does
        json.dumps(inspect_checkpoint(path))
    try:
        table = open_checkpoint(path)
        state = table.to_state_dict()
    except WeightMapperError:
        return "refused"
    for name, t in state.items():
        info = table[name]
        if tuple(t.shape) != info.shape or dtype_name(t.dtype) != info.dtype:
            raise AssertionError(f"{name}: loaded {tuple(t.shape)} {t.dtype}, header {info}")
    if expected is not None:
        if sorted(state) != sorted(expected):
            raise AssertionError(f"keys {sorted(state)} != seed keys {sorted(expected)}")
        bad = [k for k in expected if not same_bytes(state[k], expected[k])]
        if bad:
            raise AssertionError(f"tensors differ from the seed: {bad}")
    return "loaded"


def run(fmt: str, n: int, base_seed: int, out: Path) -> dict[str, Any]:
    """Format, input count, seed, result path → counts and failures (also written to ``out``)."""
    corpus: list[Seed] = seeds(fmt)
    cap = limit_memory()
    signal.signal(signal.SIGALRM, _on_alarm)
    current = out.with_name(out.name + ".current")
    counts = {"inputs": 0, "loaded": 0, "refused": 0, "seeds_loaded": 0, "seeds_refused": 0}
    failures: list[dict[str, str]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wm-fuzz-") as tmp:
        root = Path(tmp) / "case"
        # The unmutated seeds first: each must load and give back exactly its tensors.
        cases: list[tuple[str, Seed, int | None]] = [("seed", s, None) for s in corpus]
        cases += [("mutant", corpus[i % len(corpus)], i) for i in range(n)]
        for kind, seed, i in cases:
            if i is None:
                files, label, expected = seed.files, "unmutated seed", seed.tensors
            else:
                rng = random.Random(f"{fmt}:{base_seed}:{i}")
                others = [s for s in corpus if s is not seed]
                files, label = mutate(fmt, seed, others, rng)
                expected = None
            current.write_text(json.dumps({"format": fmt, "index": i, "label": label}))
            write_files(root, files)
            signal.alarm(ALARM_SECONDS)
            try:
                outcome = try_input(root / seed.entry, expected)
                counts[outcome if kind == "mutant" else f"seeds_{outcome}"] += 1
            except (Exception, Hang) as e:
                failures.append(
                    {
                        "format": fmt,
                        "index": str(i),
                        "label": label,
                        "error": f"{type(e).__name__}: {e}"[:500],
                        "traceback": "".join(traceback.format_exception(e)[-3:])[-1500:],
                    }
                )
            finally:
                signal.alarm(0)
            counts["inputs"] += kind == "mutant"
    result = {
        "format": fmt,
        "counts": counts,
        "failures": failures,
        "address_space_cap": cap,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    out.write_text(json.dumps(result, indent=1))
    current.unlink(missing_ok=True)
    return result


def main(argv: list[str]) -> int:
    """Command line → exit code 0 (the result JSON says whether anything failed)."""
    torch.set_num_threads(1)
    if argv and argv[0] == "--replay":
        fmt, base_seed, index = argv[1], int(argv[2]), int(argv[3])
        corpus = seeds(fmt)
        seed = corpus[index % len(corpus)]
        rng = random.Random(f"{fmt}:{base_seed}:{index}")
        files, label = mutate(fmt, seed, [s for s in corpus if s is not seed], rng)
        root = Path(tempfile.mkdtemp(prefix="wm-replay-"))
        write_files(root, files)
        print(label, root / seed.entry)
        print(try_input(root / seed.entry, None))
        return 0
    fmt, n, base_seed, out = argv[0], int(argv[1]), int(argv[2]), Path(argv[3])
    run(fmt, n, base_seed, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
