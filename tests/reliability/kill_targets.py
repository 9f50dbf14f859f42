"""Work run in a forked child that a test SIGKILLs: a conversion, a batch, a CLI apply.

The functions live in a plain module (not a test file) so a ``forkserver`` child can import
them; the fork server imports torch and weightmapper once, and every killed child starts
in milliseconds instead of paying the imports again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from weightmapper.convert import convert_checkpoint
from weightmapper.result import MappingResult, MatchedPair
from weightmapper.transforms import TransformSpec

PRELOAD = ["torch", "safetensors.torch", "weightmapper.convert", "weightmapper.pipeline.batch"]


def write_source(path: Path, *, tensors: int = 24, side: int = 256, seed: int = 0) -> None:
    """Path → a safetensors checkpoint of ``tensors`` float32 side x side matrices (~6 MB)."""
    g = torch.Generator().manual_seed(seed)
    sd = {f"blocks.{i}.proj.weight": torch.randn(side, side, generator=g) for i in range(tensors)}
    sd["head.bias"] = torch.randn(side, generator=g)
    save_file(sd, str(path))


def mapping_for(source_keys: list[str]) -> MappingResult:
    """Source keys → renames, every third one transposed (so both write paths are used)."""
    pairs = []
    for i, key in enumerate(sorted(source_keys)):
        spec = TransformSpec("transpose") if i % 3 == 0 and "weight" in key else TransformSpec()
        target = key.replace("blocks.", "layers.").replace("proj", "linear")
        pairs.append(MatchedPair(key, target, 1.0, transform=spec, stage="user"))
    return MappingResult(pairs)


def noop() -> None:
    """Nothing: starting one child brings the fork server up before anything is timed."""


def convert(source: str, mapping_json: str, out: str, shard_size: int, throttle: float) -> None:
    """Run one conversion; ``throttle`` seconds of sleep per tensor stand in for a slow disk."""
    mapping = MappingResult.from_dict(json.loads(Path(mapping_json).read_text()))

    def slow(done: int, total: int) -> None:
        time.sleep(throttle)

    convert_checkpoint(source, mapping, out, shard_size=shard_size, progress=slow)


def batch(job_yaml: str) -> None:
    """Run a YAML job with the plain-Python batch runner."""
    from weightmapper.pipeline.batch import run_batch
    from weightmapper.pipeline.config import load_job

    summary = run_batch(load_job(job_yaml))
    if not summary.ok:
        raise SystemExit(f"batch failed: {summary.to_dict()}")


def limit_file_size(limit: int) -> None:
    """Cap the size of any file this process writes; writes past it fail with EFBIG.

    SIGXFSZ is ignored so the write returns an error instead of killing the process: the
    same path a full disk takes through the code.
    """
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))


def convert_on_full_disk(
    source: str, mapping_json: str, out: str, shard_size: int, limit: int, report: str
) -> None:
    """Convert with files capped at ``limit`` bytes; record the error raised in ``report``."""
    from weightmapper.errors import WeightMapperError

    mapping = MappingResult.from_dict(json.loads(Path(mapping_json).read_text()))
    limit_file_size(limit)
    try:
        convert_checkpoint(source, mapping, out, shard_size=shard_size)
        outcome = {"raised": None}
    except WeightMapperError as e:
        outcome = {"raised": type(e).__name__, "message": str(e)}
    limit_file_size(resource_unlimited())
    Path(report).write_text(json.dumps(outcome))


def batch_on_full_disk(job_yaml: str, limit: int, report: str) -> None:
    """Run a YAML job with files capped at ``limit`` bytes; record its summary in ``report``."""
    from weightmapper.pipeline.batch import run_batch
    from weightmapper.pipeline.config import load_job

    job = load_job(job_yaml)
    limit_file_size(limit)
    summary = run_batch(job)
    limit_file_size(resource_unlimited())
    Path(report).write_text(json.dumps(summary.to_dict()))


def resource_unlimited() -> int:
    """() → the RLIMIT_FSIZE hard limit (normally unlimited), to lift the cap again."""
    import resource

    return resource.getrlimit(resource.RLIMIT_FSIZE)[1]
