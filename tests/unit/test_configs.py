"""Job configs: every shipped YAML loads; a bad config reports every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from weightmapper.errors import ConfigError
from weightmapper.pipeline.config import load_job, parse_job
from weightmapper.settings import AssignSettings, MapperSettings

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_configs_are_shipped() -> None:
    assert any(p.name == "example.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    assert path.read_text().startswith("#"), "each job starts with a comment on how to run it"
    job = load_job(path)
    assert job.migrations
    for m in job.migrations:
        assert m.sources and all(Path(s).is_absolute() for s in m.sources)
        assert m.output.dir.is_absolute()
    assert job.store.is_absolute()


def test_paths_are_relative_to_the_yaml_file(tmp_path: Path) -> None:
    sub = tmp_path / "jobs"
    sub.mkdir()
    (sub / "j.yaml").write_text(
        "# run: weightmapper migrate j.yaml\n"
        "sources: [ckpts/*.pt]\n"
        "target: {module: 'weightmapper.examples.cnn:RefactoredCNN'}\n"
        "output: {dir: out}\n"
        "store: ../cache\n"
    )
    job = load_job(sub / "j.yaml")
    (m,) = job.migrations
    assert m.sources == (str(sub / "ckpts" / "*.pt"),)
    assert m.output.dir == sub / "out"
    assert job.store == tmp_path / "cache"
    assert job.runner.kind == "threads"
    assert m.name == "j"


def test_migrations_inherit_top_level_settings(tmp_path: Path) -> None:
    data = {
        "mapper": {"threshold": 0.4, "strategy": "conservative"},
        "output": {"dir": "out"},
        "target": {"module": "a.b:C"},
        "migrations": [
            {"name": "one", "sources": ["x.pt"]},
            {"name": "two", "sources": ["y.pt"], "mapper": {"threshold": 0.7}},
        ],
    }
    job = parse_job(data, base_dir=tmp_path)
    one, two = job.migrations
    assert one.mapper == MapperSettings(assign=AssignSettings(0.4, "conservative"))
    assert two.mapper == MapperSettings(assign=AssignSettings(0.7, "conservative"))
    assert one.target.module and one.target.module.spec == "a.b:C"


def test_a_bad_config_reports_every_problem_at_once(tmp_path: Path) -> None:
    bad = {
        "runner": {"kind": "spark", "max_workers": 0},
        "colour": "blue",
        "migrations": [
            {
                "name": "m",
                "sources": [],
                "target": {"module": "not-a-spec"},
                "dummy_input": {"shape": [1, -3]},
                "mapper": {"threshold": 2, "temperature": 1, "strategy": "auto"},
                "output": {"dir": "out", "naming": "{stem}.pt"},
            }
        ],
    }
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as info:
        load_job(tmp_path / "bad.yaml")
    problems = info.value.problems
    text = "\n".join(problems)
    for expected in (
        "runner.kind",
        "runner.max_workers",
        "'colour'",
        "sources",
        "pkg.module:callable",
        "dummy_input.shape",
        "threshold",
        "'temperature'",
        "unknown strategy 'auto'",
        "naming",
    ):
        assert expected in text, f"{expected!r} missing from {problems}"
    assert len(problems) >= 9
    assert "bad.yaml" in str(info.value)


def test_target_needs_exactly_one_of_module_and_checkpoint(tmp_path: Path) -> None:
    base = {"sources": ["a.pt"], "output": {"dir": "o"}}
    with pytest.raises(ConfigError, match="exactly one"):
        parse_job({**base, "target": {"module": "a:b", "checkpoint": "t.pt"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="target: missing"):
        parse_job(base, base_dir=tmp_path)
    job = parse_job({**base, "target": {"checkpoint": "t.safetensors"}}, base_dir=tmp_path)
    assert job.migrations[0].target.checkpoint == tmp_path / "t.safetensors"


def test_missing_or_invalid_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_job(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("sources: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_job(tmp_path / "broken.yaml")


def test_expand_sources_and_output_naming(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    for n in ("b.pt", "a.pt"):
        (tmp_path / "c" / n).write_bytes(b"x")
    job = parse_job(
        {
            "sources": ["c/*.pt", "c/a.pt", "c/*.bin"],
            "target": "a.b:C",
            "output": {"dir": "out", "naming": "{migration}/{index}-{stem}.safetensors"},
            "name": "fam",
        },
        base_dir=tmp_path,
    )
    (m,) = job.migrations
    found, empty = m.expand_sources()
    assert [p.name for p in found] == ["a.pt", "b.pt"]
    assert empty == [str(tmp_path / "c" / "*.bin")]
    assert m.output_path(found[1], 1) == tmp_path / "out" / "fam" / "1-b.safetensors"


def test_dask_runner_settings(tmp_path: Path) -> None:
    base = {"sources": ["a.pt"], "target": "a:b", "output": "o"}
    job = parse_job(
        {**base, "runner": {"kind": "dask", "address": "tcp://h:8786"}}, base_dir=tmp_path
    )
    assert (job.runner.kind, job.runner.address) == ("dask", "tcp://h:8786")
    with pytest.raises(ConfigError, match="only used with kind: dask"):
        parse_job({**base, "runner": {"address": "tcp://h:8786"}}, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("dummy", "problem"),
    [
        ({"shape": [99_999_999_999, 3]}, "dummy_input.shape: [99999999999, 3] has"),
        ({"shape": [1] * 9}, "dummy_input.shape"),
        ({"shape": [1, 8], "dtype": "int64", "high": 10**30}, "dummy_input.high"),
        ({"shape": [1, 8], "dtype": "int32", "high": 2**40}, "does not fit int32"),
        ({"shape": [1, 8], "seed": 2**70}, "dummy_input.seed"),
    ],
)
def test_a_dummy_input_torch_cannot_make_is_a_job_problem(
    tmp_path: Path, dummy: dict[str, object], problem: str
) -> None:
    """Found when the job loads (exit 2), not as an allocator or overflow error in the run."""
    data = {"sources": ["a.pt"], "target": {"module": "a.b:C"}, "output": {"dir": "o"}}
    with pytest.raises(ConfigError) as info:
        parse_job({**data, "dummy_input": dummy}, base_dir=tmp_path)
    assert any(problem in p for p in info.value.problems), info.value.problems


def test_a_bare_folder_name_beside_the_job_is_a_path_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``module: llama-hf`` names the folder beside the job, as ``./llama-hf`` does."""
    folder = tmp_path / "jobs" / "llama-hf"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    monkeypatch.chdir(tmp_path)  # not the job's folder: the spec is relative to the job
    data = {"sources": ["a.pt"], "output": {"dir": "o"}}
    job = parse_job({**data, "target": {"module": "llama-hf"}}, base_dir=tmp_path / "jobs")
    module = job.migrations[0].target.module
    assert module is not None and module.spec == str(folder.resolve())
    with pytest.raises(ConfigError, match="neither an existing checkpoint"):
        parse_job({**data, "target": {"module": "elsewhere"}}, base_dir=tmp_path / "jobs")
