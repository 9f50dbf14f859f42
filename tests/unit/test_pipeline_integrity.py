"""Pipeline integrity: only checked outputs are placed, corrupt artifacts are never
delivered, inputs are never overwritten, bad stores and patterns are our errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline_jobs import CNN, NOTHING_IS_CERTAIN, cnn_job_data, write_job_file
from weightmapper.cli.main import main
from weightmapper.errors import ConfigError, OutputError
from weightmapper.examples.cnn import OldCNN
from weightmapper.pipeline.batch import run_batch
from weightmapper.pipeline.config import JobConfig, load_job, parse_job, with_threshold
from weightmapper.pipeline.store import ArtifactStore


def job_data(**extra: Any) -> dict[str, Any]:
    return cnn_job_data(**{"name": "t", "mapper": {"threshold": 0.5}, **extra})


def cnn_job(root: Path, **extra: Any) -> JobConfig:
    return parse_job(job_data(**extra), base_dir=root)


def write_job(root: Path, **extra: Any) -> Path:
    return write_job_file(root, job_data(**extra))


def outputs(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "out").iterdir())}


# --- the export rule ----------------------------------------------------------------------


def test_a_failing_rerun_keeps_the_previous_good_output(tmp_path: Path) -> None:
    job = cnn_job(tmp_path)
    assert run_batch(job).ok
    good = outputs(tmp_path)
    failing = run_batch(with_threshold(job, NOTHING_IS_CERTAIN))
    assert {i.status for i in failing.items} == {"check_failed"}
    for item in failing.items:
        assert item.export == "kept" and "kept the previous output" in (item.export_note or "")
        assert item.output and Path(item.output).exists()
        # The failing report stays in the store for inspection, not beside the output.
        assert item.report and Path(item.report).is_relative_to(job.store)
    assert outputs(tmp_path) == good  # every byte of every output and report unchanged


def test_a_failing_first_run_places_nothing(tmp_path: Path) -> None:
    summary = run_batch(with_threshold(cnn_job(tmp_path), NOTHING_IS_CERTAIN))
    assert {i.export for i in summary.items} == {"withheld"}
    assert all(i.output is None for i in summary.items)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_require_none_places_outputs_that_failed_their_checks(tmp_path: Path) -> None:
    job = with_threshold(cnn_job(tmp_path, checks={"require": "none"}), NOTHING_IS_CERTAIN)
    summary = run_batch(job)
    assert {(i.status, i.export) for i in summary.items} == {("check_failed", "placed")}
    assert all(Path(i.output or "").exists() for i in summary.items)


def test_checks_require_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        cnn_job(tmp_path, checks={"require": "sometimes"})
    assert "require: expected one of ['none', 'loads', 'proven']" in str(err.value)
    with pytest.raises(ConfigError) as err:
        cnn_job(tmp_path, checks={"validate": False})
    assert "needs the validation check" in str(err.value)


def test_threshold_only_reruns_leave_no_temporary_files(tmp_path: Path) -> None:
    job = cnn_job(tmp_path)
    for threshold in (0.5, 0.55, 0.6, 0.5):
        assert run_batch(with_threshold(job, threshold)).ok
    names = [p.name for p in (tmp_path / "out").iterdir()]
    assert not [n for n in names if n.endswith(".tmp")], names
    assert len(names) == 6


# --- corrupt artifacts ----------------------------------------------------------------------


def _flip_bytes(path: Path) -> None:
    """Overwrite bytes inside the tensor data, keeping the size (and the header readable)."""
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(b ^ 0xFF for b in data[-64:])
    with open(path, "r+b") as fh:  # in place: a hard link to it sees the change too
        fh.write(data)


def test_a_corrupted_artifact_is_recomputed_and_never_delivered(tmp_path: Path) -> None:
    job = cnn_job(tmp_path)
    first = run_batch(job)
    good = outputs(tmp_path)
    item = first.items[0]
    key = next(s.key for s in item.stages if s.name == "convert")
    artifact = ArtifactStore(job.store).artifact_path("convert", key, "safetensors")
    _flip_bytes(artifact)
    second = run_batch(job)
    again = next(i for i in second.items if i.source == item.source)
    assert again.status == "ok" and not next(s for s in again.stages if s.name == "convert").cached
    assert outputs(tmp_path) == good  # the delivered file is the recomputed, verified one
    assert load_file(str(artifact)).keys() == load_file(again.output or "").keys()


def test_a_warm_rerun_rereads_no_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import weightmapper.pipeline.store as store_module

    job = cnn_job(tmp_path)
    assert run_batch(job).ok  # outputs are hard links: placing them changed the ctimes
    reread: list[Path] = []
    real = store_module.digest_file

    def counting(path: Any) -> str:
        reread.append(Path(path))
        return real(path)

    monkeypatch.setattr(store_module, "digest_file", counting)
    again = run_batch(job)
    assert again.ok and sum(again.recomputed().values()) == 0
    assert reread == []


def test_export_refuses_an_artifact_altered_after_it_was_read(tmp_path: Path) -> None:
    from weightmapper.pipeline.export import ExportStage
    from weightmapper.pipeline.store import CorruptArtifactError

    store = ArtifactStore(tmp_path / "store")
    src = tmp_path / "a.safetensors"
    save_file({"w": torch.arange(4096, dtype=torch.float32)}, str(src))
    conv = store.produce(
        "convert", "k1", "safetensors", lambda tmp: tmp.write_bytes(src.read_bytes()) and None
    )
    rep = store.produce_json("report", "k2", lambda: {"ok": True})
    _flip_bytes(Path(conv.path))
    out = tmp_path / "out" / "a.safetensors"
    with pytest.raises(CorruptArtifactError, match="altered since it was written"):
        ExportStage(conv, rep, str(out), require="none").run(store)
    assert not out.exists() and not Path(conv.path).exists()


def test_verify_store_finds_and_removes_corrupt_artifacts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_job(tmp_path)
    assert main(["migrate", str(path), "--no-prefect", "--json"]) == 0
    capsys.readouterr()
    victim = next((tmp_path / "store" / "artifacts" / "convert").glob("*.safetensors"))
    st = victim.stat()
    _flip_bytes(victim)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as before
    assert main(["migrate", str(path), "--verify-store", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["checked"] > 10 and len(report["bad"]) == 1
    assert str(victim) in report["bad"][0] and not victim.exists()
    assert main(["migrate", str(path), "--verify-store"]) == 0
    assert "0 bad" in capsys.readouterr().out


# --- never overwrite an input ---------------------------------------------------------------


def test_an_output_that_is_a_source_is_refused_before_any_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "ckpts" / "model.safetensors"
    src.parent.mkdir(parents=True)
    save_file(OldCNN(**CNN).state_dict(), str(src))
    before = src.read_bytes()
    path = write_job(
        tmp_path,
        examples=None,
        sources=["ckpts/*.safetensors"],
        output={"dir": "ckpts", "naming": "{stem}.safetensors"},
    )
    assert main(["migrate", str(path), "--no-prefect"]) == 2
    assert "would destroy an input" in capsys.readouterr().err
    assert src.read_bytes() == before
    assert not (tmp_path / "store" / "artifacts").exists()  # nothing ran


def test_an_output_that_is_a_link_to_a_source_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "ckpts" / "a.safetensors"
    src.parent.mkdir(parents=True)
    save_file(OldCNN(**CNN).state_dict(), str(src))
    (tmp_path / "out").mkdir()
    os.link(src, tmp_path / "out" / "a.safetensors")
    job = cnn_job(tmp_path, examples=None, sources=["ckpts/a.safetensors"])
    with pytest.raises(OutputError, match="would destroy an input"):
        run_batch(job)


def test_an_output_over_a_file_a_module_spec_reads_is_refused(tmp_path: Path) -> None:
    """The weights of a model folder named as the target (only its config is read) and the
    file of a ``file.py:callable`` spec are the user's: never replaced by an output."""
    src = tmp_path / "ckpts" / "a.safetensors"
    src.parent.mkdir(parents=True)
    save_file(OldCNN(**CNN).state_dict(), str(src))
    folder = tmp_path / "target_hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    weights = folder / "a.safetensors"
    weights.write_bytes(b"the user's weights")
    job = cnn_job(
        tmp_path,
        examples=None,
        sources=["ckpts/a.safetensors"],
        target={"module": "./target_hf"},
        output={"dir": "target_hf", "naming": "{stem}.safetensors"},
    )
    with pytest.raises(OutputError, match="would destroy an input"):
        run_batch(job)
    assert weights.read_bytes() == b"the user's weights"
    nets = tmp_path / "nets" / "a.report.json"  # a report lands beside its output
    nets.parent.mkdir()
    nets.write_text("{}")
    job = cnn_job(
        tmp_path,
        examples=None,
        sources=["ckpts/a.safetensors"],
        source_module={"spec": "weightmapper.examples.cnn:OldCNN", "config": "nets/a.report.json"},
        output={"dir": "nets", "naming": "{stem}.safetensors"},
    )
    with pytest.raises(OutputError, match="would destroy an input"):
        run_batch(job)
    assert nets.read_text() == "{}"
    assert not (tmp_path / "store" / "artifacts").exists()  # nothing ran


def test_a_checkpoint_without_tensors_fails_with_our_message(tmp_path: Path) -> None:
    """The rest of the batch completes; the empty one says why, not the engine's ValueError."""
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    save_file(OldCNN(**CNN).state_dict(), str(ckpts / "a.safetensors"))
    save_file({}, str(ckpts / "empty.safetensors"))
    job = cnn_job(tmp_path, examples=None, sources=["ckpts/*.safetensors"])
    summary = run_batch(job)
    by_name = {Path(item.source).name: item for item in summary.items}
    assert by_name["a.safetensors"].status == "ok"
    failed = by_name["empty.safetensors"]
    assert failed.status == "failed" and "holds no tensors" in (failed.error or "")


def test_an_output_folder_that_is_a_file_is_a_job_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Said once, exit 2, before any stage runs; not a NotADirectoryError per checkpoint."""
    (tmp_path / "out").write_text("a file where the output folder goes")
    path = write_job(tmp_path)
    assert main(["migrate", str(path), "--no-prefect"]) == 2
    err = capsys.readouterr().err
    assert "out is a file, not a folder" in err and "Traceback" not in err
    assert not (tmp_path / "store" / "artifacts").exists()  # nothing ran


# --- job loading ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "naming", ["{stem:>999999999}.safetensors", "{index:0999999999d}.safetensors"]
)
def test_naming_with_a_huge_width_is_refused_at_load(tmp_path: Path, naming: str) -> None:
    with pytest.raises(ConfigError, match="expected at most 255"):
        cnn_job(tmp_path, output={"dir": "out", "naming": naming})


def test_naming_with_a_format_spec_works(tmp_path: Path) -> None:
    job = cnn_job(tmp_path, output={"dir": "out", "naming": "{index:03d}-{stem}.safetensors"})
    (m,) = job.migrations
    (tmp_path / "x.pt").write_bytes(b"")
    assert m.output_path(tmp_path / "x.pt", 7).name == "007-x.safetensors"


def test_a_recursive_glob_does_not_follow_symlink_loops(tmp_path: Path) -> None:
    root = tmp_path / "ckpts"
    (root / "run1").mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(root / "run1" / "a.safetensors"))
    os.symlink(".", root / "loop1")
    os.symlink(".", root / "loop2")
    os.symlink("..", root / "run1" / "up")
    job = cnn_job(tmp_path, examples=None, sources=["ckpts/**/*.safetensors"])
    found, empty = job.migrations[0].expand_sources()
    assert found == [root / "run1" / "a.safetensors"] and empty == []


# --- bad stores -----------------------------------------------------------------------------


@pytest.mark.parametrize("prefect", [False, True])
def test_a_store_that_is_a_file_is_our_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prefect: bool
) -> None:
    (tmp_path / "store").write_text("not a folder")
    path = write_job(tmp_path)
    argv = ["migrate", str(path)] + ([] if prefect else ["--no-prefect"])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is a file; expected a folder" in err and "Traceback" not in err


@pytest.mark.parametrize("prefect", [False, True])
def test_a_read_only_store_is_our_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prefect: bool
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    store.chmod(0o500)
    try:
        probe = store / "probe"
        try:
            probe.write_text("x")  # the superuser writes anyway: point at a read-only mount
            probe.unlink()
            ro = Path("/proc/weightmapper-store")
        except OSError:
            ro = store
        path = write_job(tmp_path, store=str(ro))
        argv = ["migrate", str(path)] + ([] if prefect else ["--no-prefect"])
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "not writable" in err and "Traceback" not in err
    finally:
        store.chmod(0o700)


def test_max_workers_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", str(write_job(tmp_path)), "--no-prefect", "--max-workers", "-1"]) == 2
    assert "--max-workers must be a positive integer" in capsys.readouterr().err


# --- a checkpoint's identity -------------------------------------------------------------------


def test_files_beside_a_checkpoint_folder_are_not_part_of_it(tmp_path: Path) -> None:
    folder = tmp_path / "ckpts" / "run"
    folder.mkdir(parents=True)
    save_file(OldCNN(**CNN).state_dict(), str(folder / "model.safetensors"))
    (folder / "README.md").write_text("first")
    log = folder / "train.log"
    log.write_text("step 1\n")
    job = cnn_job(tmp_path, examples=None, sources=["ckpts/run"])
    assert run_batch(job).ok
    (folder / "README.md").write_text("edited")
    with log.open("a") as fh:
        fh.write("step 2\n")
    again = run_batch(job)
    assert again.ok and again.recomputed()["load"] == 0 and again.recomputed()["convert"] == 0


def test_a_log_growing_during_the_run_does_not_fail_the_item(tmp_path: Path) -> None:
    folder = tmp_path / "ckpts" / "run"
    folder.mkdir(parents=True)
    save_file(OldCNN(**CNN).state_dict(), str(folder / "model.safetensors"))
    log = folder / "train.log"
    log.write_text("start\n")
    job = cnn_job(tmp_path, examples=None, sources=["ckpts/run"])

    def grow(_: object) -> None:
        with log.open("a") as fh:
            fh.write("more\n")

    from weightmapper.pipeline import stages

    original = stages.LoadStage.run

    def load_then_grow(self: stages.LoadStage, store: ArtifactStore) -> Any:
        ref = original(self, store)
        grow(None)  # the trainer writes its log after the weights were hashed
        return ref

    stages.LoadStage.run = load_then_grow  # type: ignore[method-assign]
    try:
        summary = run_batch(job)
    finally:
        stages.LoadStage.run = original  # type: ignore[method-assign]
    assert summary.ok, summary.to_dict()


def test_lightning_checkpoints_pass_the_functional_check(tmp_path: Path) -> None:
    src = tmp_path / "ckpts" / "epoch=3.ckpt"
    src.parent.mkdir(parents=True)
    state = {f"model.{k}": v for k, v in OldCNN(**CNN).state_dict().items()}
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.4.0", "epoch": 3}, src)
    summary = run_batch(cnn_job(tmp_path, examples=None, sources=["ckpts/*.ckpt"]))
    (item,) = summary.items
    assert item.status == "ok", item.to_dict()
    assert item.functional == "passed" and item.validation == "passed"


# --- a target that cannot be imported ----------------------------------------------------------


def test_a_target_that_cannot_be_imported_is_reported_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_job(tmp_path, target={"module": "no_such_package.models:Net"})
    assert main(["migrate", str(path), "--no-prefect"]) == 1
    out = capsys.readouterr().out
    assert out.count("cannot import") == 1, out
    summary = run_batch(load_job(path))
    assert list(summary.errors) == ["t"] and "no_such_package" in summary.errors["t"]
    assert {(i.status, i.failed_stage) for i in summary.items} == {("failed", "target")}
    assert all("no_such_package" not in (i.error or "") for i in summary.items)
