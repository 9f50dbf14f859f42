"""Hostile pickles: no payload runs, through the library, the CLI or the pipeline.

Every payload is first shown to be live (plain ``pickle.loads`` in a child process runs
it), then every carrier of it (raw pickle, torch zip, Lightning ``.ckpt``, a zip named
``.safetensors``, one shard of a sharded checkpoint) is handed to every entry point. Each
must raise ``UnsafeCheckpointError`` naming the offending globals, and the payload's trace
(a marker file, a deleted directory) must never appear.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hostile import Payload, payloads, write_carriers
from torch import nn

from weightmapper.checkpoint import load_checkpoint_as_dict, open_checkpoint
from weightmapper.cli.main import main
from weightmapper.convert import convert_checkpoint
from weightmapper.errors import UnsafeCheckpointError
from weightmapper.mapper import WeightMapper
from weightmapper.renamer import WeightRenamer
from weightmapper.result import MappingResult

pytestmark = pytest.mark.reliability


class World:
    """The files every payload touches, and the hostile checkpoints that carry them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.marker = root / "PWNED"
        self.victim = root / "victim"
        self.victim.mkdir()
        (self.victim / "precious.txt").write_text("keep me")
        self.script = root / "script.py"
        self.script.write_text(f"open({str(self.marker)!r}, 'w').close()\n")
        self.payloads = payloads(self.marker, self.victim, self.script)
        self.carriers: list[tuple[Payload, str, Path]] = []
        for i, p in enumerate(self.payloads):
            for carrier, path in write_carriers(p, root / f"p{i:02d}").items():
                self.carriers.append((p, carrier, path))

    def untouched(self) -> bool:
        """() → True when no payload has left its trace."""
        return not self.marker.exists() and (self.victim / "precious.txt").exists()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("hostile"))


def test_every_payload_is_live(world: World, tally: dict[str, dict[str, int]]) -> None:
    """Control: plain pickle.loads (in a child) runs each payload; the suite tests real ones."""
    for p in world.payloads:
        code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
        subprocess.run([sys.executable, "-c", code], input=p.blob, capture_output=True, check=False)
        ran = world.marker.exists() or not (world.victim / "precious.txt").exists()
        assert ran, f"payload {p.name!r} did nothing under pickle.loads; it tests nothing"
        world.marker.unlink(missing_ok=True)
        world.victim.mkdir(exist_ok=True)
        (world.victim / "precious.txt").write_text("keep me")
        tally["hostile: payloads (each verified live)"][p.name] += 1


def _check_refusal(error: UnsafeCheckpointError, payload: Payload) -> None:
    assert set(error.globals) & payload.names, (payload.name, error.globals)
    assert any(g in str(error) for g in error.globals), str(error)
    assert "trusted=True" in str(error)


LIBRARY_CALLS: dict[str, Callable[[Path, Path], Any]] = {
    "open_checkpoint": lambda path, out: open_checkpoint(path),
    "load_checkpoint_as_dict": lambda path, out: load_checkpoint_as_dict(path),
    "WeightRenamer": lambda path, out: WeightRenamer(path),
    "WeightMapper.from_checkpoint": lambda path, out: WeightMapper.from_checkpoint(
        path, nn.Linear(2, 2)
    ),
    "convert_checkpoint": lambda path, out: convert_checkpoint(
        path, {"weight": "weight"}, out / "converted.safetensors"
    ),
}


@pytest.mark.parametrize("entry", sorted(LIBRARY_CALLS))
def test_library_refuses_every_carrier(
    entry: str, world: World, tmp_path: Path, tally: dict[str, dict[str, int]]
) -> None:
    for payload, carrier, path in world.carriers:
        with pytest.raises(UnsafeCheckpointError) as info:
            LIBRARY_CALLS[entry](path, tmp_path)
        _check_refusal(info.value, payload)
        assert world.untouched(), f"{payload.name} in {carrier} ran through {entry}"
        assert not (tmp_path / "converted.safetensors").exists()
        tally["hostile: refusals by entry point"][f"library {entry}"] += 1
    tally["hostile: carriers"]["files (payloads x carriers)"] = len(world.carriers)


CLI_CALLS: dict[str, tuple[Callable[[Path, Path], list[str]], int]] = {
    "inspect": (lambda path, out: ["inspect", str(path)], 1),
    "map": (lambda path, out: ["map", str(path), "--target", "torch.nn:Identity", "--quiet"], 2),
    "apply": (lambda path, out: ["apply", str(path), str(out), "--out", str(out.parent / "o")], 2),
}


@pytest.mark.parametrize("command", sorted(CLI_CALLS))
def test_cli_refuses_every_carrier(
    command: str,
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tally: dict[str, dict[str, int]],
) -> None:
    mapping = tmp_path / "mapping.json"
    mapping.write_text(MappingResult.from_simple({"weight": "weight"}).to_json())
    build, expected_code = CLI_CALLS[command]
    for payload, carrier, path in world.carriers:
        code = main(build(path, mapping))
        out, err = capsys.readouterr()
        assert code == expected_code, (command, carrier, payload.name, err)
        assert "Traceback" not in out + err
        assert any(g in out + err for g in payload.names), (command, payload.name, out, err)
        assert world.untouched(), f"{payload.name} in {carrier} ran through `{command}`"
        tally["hostile: refusals by entry point"][f"cli {command}"] += 1


def test_cli_subprocess_prints_one_line_not_a_traceback(world: World) -> None:
    payload, _carrier, path = next(c for c in world.carriers if c[1] == "Lightning (.ckpt)")
    proc = subprocess.run(
        [sys.executable, "-m", "weightmapper", "map", str(path), "--target", "torch.nn:Identity"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and any(g in proc.stderr for g in payload.names)
    assert world.untouched()


def _job(world: World, root: Path) -> Path:
    job = {
        "name": "hostile",
        "store": str(root / "store"),
        "sources": [str(p) for _pl, _c, p in world.carriers],
        "target": {"module": "torch.nn:Linear", "kwargs": {"in_features": 2, "out_features": 2}},
        "output": {"dir": str(root / "out"), "naming": "{index}-{stem}.safetensors"},
        "runner": {"kind": "sequential"},
    }
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _check_summary(world: World, summary: dict[str, Any], out_dir: Path) -> None:
    items = summary["checkpoints"]
    assert len(items) == len(world.carriers)
    by_source = {str(p): pl for pl, _c, p in world.carriers}
    for item in items:
        assert item["status"] == "failed" and item["failed_stage"] == "load", item
        assert any(g in item["error"] for g in by_source[item["source"]].names), item
        assert "Traceback" not in item["error"]
    assert not list(out_dir.rglob("*.safetensors")) if out_dir.exists() else True
    assert world.untouched()


def test_pipeline_refuses_every_carrier(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], tally: dict[str, Any]
) -> None:
    """The plain-Python batch runner, through the CLI: every item fails at load, none runs."""
    code = main(["migrate", str(_job(world, tmp_path)), "--no-prefect", "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err
    _check_summary(world, json.loads(out), tmp_path / "out")
    tally["hostile: refusals by entry point"]["pipeline (plain)"] += len(world.carriers)


@pytest.mark.integration
def test_prefect_pipeline_refuses_every_carrier(
    world: World, tmp_path: Path, tally: dict[str, Any]
) -> None:
    """The Prefect flow (embedded server, own PREFECT_HOME) in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    # The embedded server's default 20 s start-up limit is too short on a loaded CI machine.
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "240"
    proc = subprocess.run(
        [sys.executable, "-m", "weightmapper", "migrate", str(_job(world, tmp_path)), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[:3000]
    _check_summary(world, json.loads(proc.stdout), tmp_path / "out")
    tally["hostile: refusals by entry point"]["pipeline (Prefect flow)"] += len(world.carriers)


def test_trusted_is_the_only_way_in(world: World, tmp_path: Path) -> None:
    """Control: with trusted=True (in a child) the payload does run; the refusal is the guard."""
    _payload, _carrier, path = next(c for c in world.carriers if c[0].name == "os.system")
    code = (
        "import sys; from weightmapper.checkpoint import open_checkpoint\n"
        "try:\n    open_checkpoint(sys.argv[1], trusted=True)\nexcept Exception:\n    pass\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=120)
    assert world.marker.exists()
    world.marker.unlink()
