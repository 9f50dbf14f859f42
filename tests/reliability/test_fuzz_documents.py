"""Fuzzed mapping files and YAML jobs: every document is accepted or refused with our error.

Mapping JSON (``weightmapper apply`` reads it) and YAML jobs (``weightmapper migrate``
reads them) are inputs a user may be handed, like checkpoints. Hypothesis replaces random
parts of a valid document with random JSON values; the document must then either work
(the mapping converts, the job plans) or raise a ``WeightMapperError``. A few hostile
documents are pinned as cases: nesting deeper than the parser's recursion limit, and a
YAML alias bomb (a few hundred bytes expanding to a million items).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from weightmapper.cli.apply import read_mapping
from weightmapper.convert import convert_checkpoint
from weightmapper.errors import WeightMapperError
from weightmapper.pipeline.batch import plan_items
from weightmapper.pipeline.config import load_job
from weightmapper.result import MappingResult, MatchedPair, MultiPair, UnmatchedKey, UnmatchedReason
from weightmapper.transforms import TransformSpec

pytestmark = pytest.mark.reliability

MAPPING_EXAMPLES = 300
JOB_EXAMPLES = 500


def _fuzzed(examples: int) -> Any:
    """Example count → the settings every fuzz test here runs under (seeded, no deadline)."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """JSON document → every path (tuple of keys / indices) to a value in it."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[path[0]] = _replace(doc[path[0]], path[1:], value)
    return copy


@st.composite
def mutated(draw: st.DrawFn, doc: Any) -> Any:
    """A valid document → the same with 1-3 random subtrees replaced by random JSON values."""
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        doc = _replace(doc, path, draw(json_values))
    return doc


# --- mapping files ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mapping-fuzz") / "source.safetensors"
    g = torch.Generator().manual_seed(0)
    save_file(
        {
            "a.weight": torch.randn(4, 3, generator=g),
            "a.bias": torch.randn(4, generator=g),
            "qkv.weight": torch.randn(6, 2, generator=g),
        },
        str(path),
    )
    return path


def valid_mapping() -> dict[str, Any]:
    """→ the JSON of a mapping using a transform, a split and an unmatched key."""
    result = MappingResult(
        [
            MatchedPair("a.weight", "b.weight", 0.9, transform=TransformSpec("transpose")),
            MatchedPair("a.bias", "b.bias", 0.8),
        ],
        unmatched_target=[UnmatchedKey("c.bias", "target", UnmatchedReason.NO_SHAPE_PARTNER)],
        multi=[
            MultiPair(
                ("qkv.weight",),
                ("q.weight", "k.weight", "v.weight"),
                TransformSpec("split", {"sizes": [2, 2, 2], "dim": 0}),
                0.95,
            )
        ],
    )
    return result.to_dict()


def _try_mapping(path: Path, source: Path, out: Path) -> str:
    try:
        mapping = read_mapping(path)
        convert_checkpoint(source, mapping, out, overwrite=True)
    except WeightMapperError:
        return "refused"
    return "converted"


@_fuzzed(MAPPING_EXAMPLES)
@given(doc=mutated(valid_mapping()))
def test_mutated_mapping_files(
    doc: Any, source: Path, tmp_path: Path, tally: dict[str, dict[str, int]]
) -> None:
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(doc))
    outcome = _try_mapping(path, source, tmp_path / "out.safetensors")
    tally["documents fuzzed: mapping JSON"][outcome] += 1


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[" * 100_000 + "]" * 100_000, id="nesting-100000"),
        pytest.param('{"pairs": ' + "[" * 5_000 + "]" * 5_000 + "}", id="nested-pairs"),
        pytest.param('{"pairs": [{"source": "a.bias", "target": "x"', id="truncated"),
        pytest.param('{"pairs": [null]}', id="null-pair"),
        pytest.param('{"pairs": "x"}', id="pairs-not-a-list"),
        pytest.param(
            '{"pairs": [{"source": "a.bias", "target": "x", "score": "high"}]}', id="score-str"
        ),
    ],
)
def test_hostile_mapping_files(text: str, source: Path, tmp_path: Path) -> None:
    path = tmp_path / "mapping.json"
    path.write_text(text)
    assert _try_mapping(path, source, tmp_path / "out.safetensors") == "refused"


# --- YAML jobs ------------------------------------------------------------------------------


def valid_job() -> dict[str, Any]:
    """→ a job document using every section: runner, mapper, output, checks, migrations."""
    return {
        "name": "fuzz",
        "store": "store",
        "runner": {"kind": "threads", "max_workers": 2},
        "mapper": {"threshold": 0.5, "strategy": "best_match"},
        "output": {"dir": "out", "naming": "{migration}/{stem}.safetensors"},
        "migrations": [
            {
                "name": "one",
                "sources": ["ckpts/*.safetensors"],
                "target": {
                    "module": "torch.nn:Linear",
                    "kwargs": {"in_features": 2, "out_features": 2},
                },
                "source_module": {
                    "spec": "torch.nn:Linear",
                    "kwargs": {"in_features": 2, "out_features": 2},
                },
                "dummy_input": {"shape": [1, 2]},
                "checks": {"validate": True, "functional": False},
            },
            {
                "name": "two",
                "sources": "ckpts/a.safetensors",
                "target": {"checkpoint": "t.safetensors"},
            },
        ],
    }


@_fuzzed(JOB_EXAMPLES)
@given(doc=mutated(valid_job()))
def test_mutated_jobs(doc: Any, tmp_path: Path, tally: dict[str, dict[str, int]]) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        job = load_job(path)
        plan_items(job)
        outcome = "accepted and planned"
    except WeightMapperError:
        outcome = "refused"
    tally["documents fuzzed: YAML jobs"][outcome] += 1


def _alias_bomb(levels: int) -> str:
    """→ YAML whose target kwargs expand to 10**levels strings through nested aliases."""
    lines = ["      a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"      {cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    return (
        "name: bomb\nstore: store\nsources: [model.pt]\noutput: {dir: out}\nrunner: sequential\n"
        "target:\n  module: torch.nn:Linear\n  kwargs:\n    in_features: 2\n    out_features: 2\n"
        "    extra:\n" + "\n".join(lines) + "\n"
    )


def test_yaml_alias_bomb_is_refused_cheaply(
    tmp_path: Path, tally: dict[str, dict[str, int]]
) -> None:
    """~600 bytes of YAML expanding to 10^8 items: refused, within bounded memory and output."""
    torch.save({"weight": torch.ones(2, 2), "bias": torch.ones(2)}, tmp_path / "model.pt")
    job = tmp_path / "job.yaml"
    job.write_text(_alias_bomb(6))

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY))

    proc = subprocess.run(
        [sys.executable, "-m", "weightmapper", "migrate", str(job), "--no-prefect", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=cap,
        cwd=tmp_path,
    )
    assert "Traceback" not in proc.stderr[-5000:], proc.stderr[-2000:]
    assert "MemoryError" not in proc.stderr[-5000:]
    assert len(proc.stdout) + len(proc.stderr) < 100_000, "the error repeats the expanded document"
    assert proc.returncode in (1, 2)
    tally["documents fuzzed: YAML jobs"]["alias bomb refused"] += 1
