"""Remembered architecture identities: a rerun builds no module, and any change to what the
build depends on (the model's code, its arguments, its config) builds it again."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from weightmapper.pipeline import graph, recall, stages
from weightmapper.pipeline.config import ModuleSpec, TargetSpec
from weightmapper.pipeline.store import ArtifactStore

MODEL = """
from torch import nn


class Net(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Linear(3, width)
        self.head = nn.Linear(width, {out})
"""


@pytest.fixture
def model_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path holding ``recall_net.py`` (a two-layer model), removed after."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "recall_net.py").write_text(textwrap.dedent(MODEL.format(out=2)))
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("recall_net", None)


def _edit(folder: Path, out: int) -> None:
    """Rewrite the model file (another head size) and reimport it, as a new process would."""
    path = folder / "recall_net.py"
    path.write_text(textwrap.dedent(MODEL.format(out=out)) + "\n# edited\n")
    sys.modules.pop("recall_net", None)
    importlib.invalidate_caches()


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    built: list[str] = []
    real = stages.build_architecture

    def counting(spec: ModuleSpec, *, meta: bool = False):  # type: ignore[no-untyped-def]
        built.append(spec.spec)
        return real(spec, meta=meta)

    monkeypatch.setattr(stages, "build_architecture", counting)
    return built


def test_a_rerun_reuses_the_architecture_without_building_it(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(tmp_path / "store")
    stage = stages.ArchitectureStage(TargetSpec(module=ModuleSpec("recall_net:Net")))
    built = _count_builds(monkeypatch)
    first = stage.run(store)
    assert not first.cached and built == ["recall_net:Net"]
    again = stage.run(store)
    assert again.cached and again.digest == first.digest and built == ["recall_net:Net"]
    assert stage.key(store) == first.key and built == ["recall_net:Net"]
    assert graph.reuse(store, stage) == first and built == ["recall_net:Net"]


def test_an_edited_model_file_is_built_again_and_keyed_anew(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(tmp_path / "store")
    spec = ModuleSpec("recall_net:Net")
    first = stages.ArchitectureStage(TargetSpec(module=spec)).run(store)
    _edit(model_dir, out=5)
    assert recall.recall(store, spec) is None
    built = _count_builds(monkeypatch)
    second = stages.ArchitectureStage(TargetSpec(module=spec)).run(store)
    assert built == ["recall_net:Net"] and not second.cached
    assert second.key != first.key  # the head has another shape: another architecture
    assert recall.recall(store, spec) is not None


def test_other_arguments_are_another_record(tmp_path: Path, model_dir: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    narrow, wide = (
        ModuleSpec("recall_net:Net", {"width": 4}),
        ModuleSpec("recall_net:Net", {"width": 8}),
    )
    a = stages.ArchitectureStage(TargetSpec(module=narrow)).run(store)
    assert recall.recall(store, wide) is None
    b = stages.ArchitectureStage(TargetSpec(module=wide)).run(store)
    assert a.key != b.key
    assert recall.recall(store, narrow) != recall.recall(store, wide)


def test_a_record_names_the_model_file_and_a_damaged_record_is_a_miss(
    tmp_path: Path, model_dir: Path
) -> None:
    store = ArtifactStore(tmp_path / "store")
    spec = ModuleSpec("recall_net:Net")
    stages.ArchitectureStage(TargetSpec(module=spec)).run(store)
    (record_path,) = (store.root / "memo" / "architectures").glob("*.json")
    record = json.loads(record_path.read_text())
    assert str((model_dir / "recall_net.py").resolve()) in record["files"]
    record_path.write_text("{not json")
    assert recall.recall(store, spec) is None
    record["site"] = "another set of installed packages"
    record_path.write_text(json.dumps(record))
    assert recall.recall(store, spec) is None


def test_reuse_finds_stored_results_only_while_they_verify(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    stage = stages.ArchitectureStage(
        TargetSpec(module=ModuleSpec("weightmapper.examples.cnn:RefactoredCNN"))
    )
    assert graph.reuse(store, stage) is None  # nothing stored: the stage must run
    ref = stage.run(store)
    hit = graph.reuse(store, stage)
    assert hit is not None and hit.cached and hit.digest == ref.digest
    Path(ref.path).write_text(Path(ref.path).read_text().replace("weight", "w8ight"))
    assert graph.reuse(store, stage) is None  # altered bytes are never reused
