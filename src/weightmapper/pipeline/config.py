"""YAML migration jobs: a file → a validated JobConfig, every problem reported at once.

A job names the source checkpoints (paths or globs), the target (``pkg.module:callable``
+ kwargs, or a target checkpoint), optionally the source architecture (for the functional
check), a dummy input, mapper settings, where outputs go and how to run. Relative paths
are resolved against the directory of the YAML file, so a job runs the same from any
working directory.

Top-level ``sources``/``target``/... describe one migration; a ``migrations:`` list
describes several, each inheriting every top-level field it does not set.
"""

from __future__ import annotations

import glob
import math
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from weightmapper.bounded_json import MAX_DEPTH, nesting_depth
from weightmapper.errors import ConfigError, SettingsError
from weightmapper.pipeline import policy
from weightmapper.settings import MAX_DUMMY_DIMS, MAX_DUMMY_ELEMENTS, MapperSettings

RUNNER_KINDS = ("threads", "dask", "sequential")
INPUT_KINDS = ("randn", "randint")
NAMING_FIELDS = ("stem", "name", "migration", "index")
_TOP_KEYS = {"name", "store", "examples", "runner", "migrations", "description"}
_MIGRATION_KEYS = {
    "name",
    "sources",
    "target",
    "source_module",
    "dummy_input",
    "mapper",
    "output",
    "checks",
    "trusted",
}


@dataclass(frozen=True)
class ModuleSpec:
    """A module built from a spec (see ``weightmapper.targets``), its kwargs and config."""

    spec: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    config: Path | None = None
    """Hugging Face config.json (or its folder) for a transformers class spec."""

    def to_dict(self) -> dict[str, Any]:
        """ModuleSpec → JSON-ready dict (a config by its content, never by its path)."""
        out: dict[str, Any] = {"spec": self.spec, "kwargs": dict(self.kwargs)}
        if self.config is not None:
            from weightmapper.hf import read_config_dict

            out["config"] = read_config_dict(self.config)
        return out


@dataclass(frozen=True)
class TargetSpec:
    """The architecture to migrate into: a module spec, or a target checkpoint (one of them)."""

    module: ModuleSpec | None = None
    checkpoint: Path | None = None

    def __post_init__(self) -> None:
        if (self.module is None) == (self.checkpoint is None):
            raise ConfigError("a target needs exactly one of 'module' and 'checkpoint'")

    def describe(self) -> str:
        """TargetSpec → a short human label."""
        return self.module.spec if self.module else str(self.checkpoint)


@dataclass(frozen=True)
class InputSpec:
    """A deterministic dummy input: shape, dtype, how to draw it and the seed."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    kind: str = "randn"
    """``randn`` (floats) or ``randint`` (token ids below ``high``)."""
    high: int = 2
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """InputSpec → JSON-ready dict (also the part of cache keys that depends on it)."""
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "kind": self.kind,
            "high": self.high,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class OutputSpec:
    """Where converted checkpoints go: a directory and a file-name pattern."""

    dir: Path
    naming: str = "{migration}/{stem}.safetensors"
    """Pattern with ``{stem}``, ``{name}``, ``{migration}``, ``{index}``; ends in .safetensors."""


@dataclass(frozen=True)
class RunnerSpec:
    """How the batch runs: ``threads`` (default), ``sequential`` or ``dask``."""

    kind: str = "threads"
    max_workers: int | None = None
    """Threads: how many checkpoints at once (None: the default of the executor)."""
    address: str | None = None
    """Dask: scheduler address of an existing cluster; None starts a local cluster."""
    n_workers: int = 2
    """Dask local cluster: number of worker processes."""


@dataclass(frozen=True)
class Migration:
    """One family of checkpoints moved into one target architecture."""

    name: str
    sources: tuple[str, ...]
    """Absolute paths or glob patterns of source checkpoints."""
    target: TargetSpec
    output: OutputSpec
    source_module: ModuleSpec | None = None
    """The architecture the sources were trained with; enables the functional check."""
    dummy_input: InputSpec | None = None
    mapper: MapperSettings = field(default_factory=MapperSettings)
    """Scoring and assignment settings (the job's flat ``mapper:`` section, validated)."""
    validate: bool = True
    functional: bool = True
    require: str = "loads"
    """``checks.require``: what an output must pass to be placed (see ``pipeline.policy``)."""
    trusted: bool = False

    def expand_sources(self) -> tuple[list[Path], list[str]]:
        """Migration → (checkpoint paths, sorted and unique; patterns or paths that found nothing)."""
        found: dict[Path, None] = {}
        empty: list[str] = []
        for pattern in self.sources:
            if glob.has_magic(pattern):
                hits = [h for h in expand_glob(pattern) if h.is_file() or h.is_dir()]
            else:
                hits = [Path(pattern)] if Path(pattern).exists() else []
            if not hits:
                empty.append(pattern)
            found.update(dict.fromkeys(hits))
        return list(found), empty

    def output_path(self, source: Path, index: int) -> Path:
        """Source checkpoint and its index in the migration → the converted file's path."""
        stem = source.name.split(".")[0] if source.is_file() else source.name
        rel = self.output.naming.format(
            stem=stem, name=source.name, migration=self.name, index=index
        )
        return self.output.dir / rel


def expand_glob(pattern: str) -> list[Path]:
    """Absolute glob pattern (``**`` for any depth) → sorted matches, hidden names excluded.

    ``**`` does not descend into symlinked folders (``pathlib``'s rule), so links that loop
    back (two links to ``.``) cannot make the expansion endless; a symlink matched by the
    pattern itself is still found.
    """
    parts = Path(pattern).parts
    split = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    root, rest = Path(*parts[:split]), Path(*parts[split:])
    if not root.is_dir():
        return []
    hits = (
        h
        for h in root.glob(str(rest))
        if not any(part.startswith(".") for part in h.relative_to(root).parts)
    )
    return sorted(hits)


@dataclass(frozen=True)
class JobConfig:
    """A validated migration job: where artifacts live, how to run, and the migrations."""

    name: str
    migrations: tuple[Migration, ...]
    store: Path
    """Artifact store root; PREFECT_HOME lives in ``<store>/prefect``."""
    runner: RunnerSpec = RunnerSpec()
    examples: Path | None = None
    """Directory where the bundled example checkpoints are generated when missing."""
    path: Path | None = None
    """The YAML file this job was read from."""


def with_threshold(job: JobConfig, threshold: float) -> JobConfig:
    """Job + threshold → the same job with that threshold in every migration."""
    import dataclasses

    try:
        migrations = tuple(
            dataclasses.replace(m, mapper=m.mapper.with_threshold(threshold))
            for m in job.migrations
        )
    except SettingsError as e:
        raise ConfigError(str(e), e.problems) from e
    return dataclasses.replace(job, migrations=migrations)


MAX_JOB_NODES = 100_000
"""Largest job, counted with every alias expanded; a few bytes of nested aliases can stand
for billions of values (a YAML alias bomb), which validating them would walk."""


def _expanded_nodes(obj: Any, memo: dict[int, int], open_: set[int]) -> int:
    """Parsed YAML value → its node count with aliases expanded (shared objects counted
    once per reference, computed once each); ValueError for a value that contains itself."""
    if not isinstance(obj, dict | list):
        return 1
    key = id(obj)
    if key in memo:
        return memo[key]
    if key in open_:
        raise ValueError("a value refers to itself through an alias")
    open_.add(key)
    items = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj
    total = 1
    for item in items:
        total += _expanded_nodes(item, memo, open_)
        if total > MAX_JOB_NODES:
            break
    open_.discard(key)
    memo[key] = total
    return total


def load_job(path: str | os.PathLike[str]) -> JobConfig:
    """YAML file path → JobConfig; ConfigError listing every problem found in it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"job file {path} does not exist; pass the path of a YAML job (see configs/)."
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read job file {path}: {e}") from e
    depth = nesting_depth(text.encode("utf-8", "surrogatepass"))
    if depth > MAX_DEPTH:
        # PyYAML's scanner slows quadratically with flow nesting: refuse before parsing
        raise ConfigError(
            f"{path} nests brackets {depth} levels deep; a job nests a handful. Expected a "
            "YAML job like those in configs/; write the values out.",
            ["nesting"],
        )
    try:
        data = yaml.safe_load(text)  # no arbitrary tags, so no code runs
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}", [str(e)]) from e
    except RecursionError as e:
        raise ConfigError(f"{path} nests too deeply to be a job file", ["nesting"]) from e
    try:
        nodes = _expanded_nodes(data, {}, set())
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{path} is not a job file: {e}", [str(e)]) from e
    if nodes > MAX_JOB_NODES:
        raise ConfigError(
            f"{path} expands to more than {MAX_JOB_NODES:,} values through YAML aliases (an "
            "alias bomb?); expected a job of a few dozen settings. Write the values out.",
            ["too many values after alias expansion"],
        )
    return parse_job(data, base_dir=path.resolve().parent, origin=path)


def parse_job(data: Any, *, base_dir: Path, origin: Path | None = None) -> JobConfig:
    """Parsed YAML + the directory relative paths start from → JobConfig.

    Collects every problem before raising one ConfigError whose ``problems`` lists them.
    """
    where = str(origin) if origin else "job"
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping at the top level, found {type(data).__name__}",
            ["top level is not a mapping"],
        )
    base_dir = Path(base_dir)

    def resolve(p: Any, what: str) -> Path | None:
        if not isinstance(p, str) or not p.strip():
            problems.append(f"{what}: expected a path string, found {p!r}")
            return None
        q = Path(os.path.expanduser(p))
        return q if q.is_absolute() else (base_dir / q).resolve()

    unknown = set(data) - _TOP_KEYS - _MIGRATION_KEYS
    problems += [f"unknown top-level key {k!r}" for k in sorted(unknown)]
    name = data.get("name") or (origin.stem if origin else "job")
    if not isinstance(name, str):
        problems.append(f"name: expected a string, found {name!r}")
        name = "job"
    store = resolve(data.get("store", ".weightmapper"), "store")
    examples = resolve(data["examples"], "examples") if data.get("examples") else None
    runner = _parse_runner(data.get("runner"), problems)

    defaults = {k: v for k, v in data.items() if k in _MIGRATION_KEYS and k != "name"}
    raw = data.get("migrations")
    if raw is None:
        raw_list: list[Any] = [{"name": name}]
    elif isinstance(raw, list) and raw:
        raw_list = raw
    else:
        problems.append("migrations: expected a non-empty list of migrations")
        raw_list = []
    migrations: list[Migration] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw_list):
        label = f"migrations[{i}]" if raw is not None else "job"
        if not isinstance(entry, Mapping):
            problems.append(f"{label}: expected a mapping, found {type(entry).__name__}")
            continue
        unknown = set(entry) - _MIGRATION_KEYS
        problems += [f"{label}: unknown key {k!r}" for k in sorted(unknown)]
        merged = {**defaults, **entry}
        for k in ("mapper", "output", "checks"):
            if isinstance(defaults.get(k), Mapping) and isinstance(entry.get(k), Mapping):
                merged[k] = {**defaults[k], **entry[k]}
        m = _parse_migration(merged, label, resolve, problems)
        if m is not None:
            if m.name in seen:
                problems.append(f"{label}: migration name {m.name!r} is used twice")
            seen.add(m.name)
            migrations.append(m)
    if problems or store is None:
        raise ConfigError(
            f"{where} has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems),
            problems,
        )
    return JobConfig(
        name=name,
        migrations=tuple(migrations),
        store=store,
        runner=runner,
        examples=examples,
        path=origin.resolve() if origin else None,
    )


def _parse_runner(raw: Any, problems: list[str]) -> RunnerSpec:
    if raw is None:
        return RunnerSpec()
    if isinstance(raw, str):
        raw = {"kind": raw}
    if not isinstance(raw, Mapping):
        problems.append(f"runner: expected a mapping or a kind name, found {raw!r}")
        return RunnerSpec()
    unknown = set(raw) - {"kind", "max_workers", "address", "n_workers"}
    problems += [f"runner: unknown key {k!r}" for k in sorted(unknown)]
    kind = raw.get("kind", "threads")
    if kind not in RUNNER_KINDS:
        problems.append(f"runner.kind: expected one of {list(RUNNER_KINDS)}, found {kind!r}")
        kind = "threads"
    max_workers = raw.get("max_workers")
    if max_workers is not None and (not _is_int(max_workers) or max_workers < 1):
        problems.append(f"runner.max_workers: expected a positive integer, found {max_workers!r}")
        max_workers = None
    n_workers = raw.get("n_workers", 2)
    if not _is_int(n_workers) or n_workers < 1:
        problems.append(f"runner.n_workers: expected a positive integer, found {n_workers!r}")
        n_workers = 2
    address = raw.get("address")
    if address is not None and (not isinstance(address, str) or "://" not in address):
        problems.append(
            f"runner.address: expected a scheduler address like 'tcp://host:8786', found {address!r}"
        )
        address = None
    if address is not None and kind != "dask":
        problems.append("runner.address is only used with kind: dask")
    return RunnerSpec(kind=kind, max_workers=max_workers, address=address, n_workers=n_workers)


def _parse_migration(
    raw: Mapping[str, Any], label: str, resolve: Any, problems: list[str]
) -> Migration | None:
    before = len(problems)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or _climbs(name) or "/" in name:
        problems.append(
            f"{label}.name: expected a non-empty name without '/', '\\' or '..', found {name!r}"
        )
        name = "?"

    sources_raw = raw.get("sources")
    if isinstance(sources_raw, str):
        sources_raw = [sources_raw]
    sources: list[str] = []
    if not isinstance(sources_raw, list) or not sources_raw:
        problems.append(f"{label}.sources: expected a path, a glob or a list of them")
    else:
        for j, s in enumerate(sources_raw):
            p = resolve(s, f"{label}.sources[{j}]")
            if p is not None:
                sources.append(str(p))

    target = _parse_target(raw.get("target"), f"{label}.target", resolve, problems)
    source_module = None
    if raw.get("source_module") is not None:
        source_module = _parse_module(
            raw["source_module"], f"{label}.source_module", problems, resolve
        )
    dummy = None
    if raw.get("dummy_input") is not None:
        dummy = _parse_input(raw["dummy_input"], f"{label}.dummy_input", problems)

    mapper = _parse_mapper(raw.get("mapper"), label, problems)

    output = _parse_output(raw.get("output"), f"{label}.output", resolve, problems)
    checks = raw.get("checks") or {}
    if not isinstance(checks, Mapping) or set(checks) - {"validate", "functional", "require"}:
        problems.append(
            f"{label}.checks: expected a mapping with 'validate' and/or 'functional' booleans "
            f"and 'require' ({' | '.join(policy.REQUIRED)}), found {checks!r}"
        )
        checks = {}
    for k, v in checks.items():
        if k != "require" and not isinstance(v, bool):
            problems.append(f"{label}.checks.{k}: expected true or false, found {v!r}")
    require = checks.get("require", policy.DEFAULT_REQUIRE)
    problems += [
        f"{label}.checks.{p}"
        for p in policy.problems(require, {k: v for k, v in checks.items() if k != "require"})
    ]
    if require == "proven" and (source_module is None or dummy is None):
        problems.append(
            f"{label}.checks.require: proven compares outputs with the source; give "
            "source_module (the source architecture) and dummy_input, or choose require: loads"
        )
    trusted = raw.get("trusted", False)
    if not isinstance(trusted, bool):
        problems.append(f"{label}.trusted: expected true or false, found {trusted!r}")
    if len(problems) > before or target is None or output is None:
        return None
    return Migration(
        name=name,
        sources=tuple(sources),
        target=target,
        output=output,
        source_module=source_module,
        dummy_input=dummy,
        mapper=mapper or MapperSettings(),
        validate=bool(checks.get("validate", True)),
        functional=bool(checks.get("functional", True)),
        require=str(require),
        trusted=bool(trusted),
    )


def _parse_mapper(raw: Any, label: str, problems: list[str]) -> MapperSettings | None:
    """A job's ``mapper:`` section → MapperSettings; its problems added to ``problems``."""
    if raw is None:
        return MapperSettings()
    if not isinstance(raw, Mapping):
        problems.append(f"{label}.mapper: expected a mapping of settings, found {raw!r}")
        return None
    try:
        return MapperSettings.from_flat(raw)
    except SettingsError as e:
        problems += [f"{label}.mapper: {p}" for p in e.problems]
        return None


def _section(
    raw: Any, label: str, problems: list[str], short: tuple[type, str], keys: set[str], want: str
) -> Mapping[str, Any] | None:
    """A section as written (a bare value of type ``short[0]`` stands for ``{short[1]: value}``)
    → its mapping, each key outside ``keys`` reported; None, reporting ``want``, if no mapping."""
    if isinstance(raw, short[0]):
        raw = {short[1]: raw}
    if not isinstance(raw, Mapping):
        problems.append(f"{label}: {want}")
        return None
    problems += [f"{label}: unknown key {k!r}" for k in sorted(set(raw) - keys)]
    return raw


def _parse_module(raw: Any, label: str, problems: list[str], resolve: Any) -> ModuleSpec | None:
    from weightmapper.targets import spec_path, spec_problem

    want = "expected 'pkg.module:callable' or a mapping with 'spec'"
    raw = _section(raw, label, problems, (str, "spec"), {"spec", "kwargs", "config"}, want)
    if raw is None:
        return None
    spec = raw.get("spec")
    problem = spec_problem(spec)
    if problem is not None and isinstance(spec, str) and spec.strip() and ":" not in spec:
        # A bare name of a folder or file beside the job (``module: llama-hf``) is a path,
        # like ``./llama-hf``: relative to the job file, not to the current folder.
        here = resolve(spec, f"{label}.spec")
        if here is not None and here.exists():
            spec, problem = str(here), None
    if problem is not None:
        problems.append(f"{label}.spec: {problem}")
        return None
    path = spec_path(spec)
    if path is not None:  # a file or folder in the spec is relative to the job file
        resolved = resolve(path, f"{label}.spec")
        spec = spec.replace(path, str(resolved), 1) if resolved else spec
    config = resolve(raw["config"], f"{label}.config") if raw.get("config") else None
    kwargs = raw.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        problems.append(
            f"{label}.kwargs: expected a mapping of keyword arguments, found {kwargs!r}"
        )
        return None
    return ModuleSpec(spec=spec, kwargs=dict(kwargs), config=config)


def _parse_target(raw: Any, label: str, resolve: Any, problems: list[str]) -> TargetSpec | None:
    if raw is None:
        problems.append(
            f"{label}: missing; give 'module: pkg.module:callable' or 'checkpoint: path'"
        )
        return None
    keys = {"module", "kwargs", "config", "checkpoint"}
    want = "expected a mapping with 'module' or 'checkpoint'"
    raw = _section(raw, label, problems, (str, "module"), keys, want)
    if raw is None:
        return None
    has_module, has_ckpt = raw.get("module") is not None, raw.get("checkpoint") is not None
    if has_module == has_ckpt:
        problems.append(f"{label}: give exactly one of 'module' and 'checkpoint'")
        return None
    if has_ckpt:
        ckpt = resolve(raw["checkpoint"], f"{label}.checkpoint")
        return TargetSpec(checkpoint=ckpt) if ckpt else None
    fields = {"spec": raw["module"], "kwargs": raw.get("kwargs"), "config": raw.get("config")}
    mod = _parse_module(fields, label, problems, resolve)
    return TargetSpec(module=mod) if mod else None


def _parse_input(raw: Any, label: str, problems: list[str]) -> InputSpec | None:
    keys = {"shape", "dtype", "kind", "high", "seed"}
    want = "expected a shape list or a mapping with 'shape'"
    raw = _section(raw, label, problems, (list, "shape"), keys, want)
    if raw is None:
        return None
    shape = raw.get("shape")
    if not isinstance(shape, list) or not shape or not all(_is_int(d) and d > 0 for d in shape):
        problems.append(f"{label}.shape: expected a list of positive integers, found {shape!r}")
        return None
    if len(shape) > MAX_DUMMY_DIMS or math.prod(shape) > MAX_DUMMY_ELEMENTS:
        problems.append(
            f"{label}.shape: {shape!r} has {math.prod(shape):,} elements in {len(shape)} "
            f"dimensions; expected at most {MAX_DUMMY_ELEMENTS:,} elements and {MAX_DUMMY_DIMS} "
            "dimensions (batch 1 and a small image or sequence is enough to trace and verify)"
        )
        return None
    kind = raw.get("kind", "randint" if raw.get("dtype") in ("int64", "int32", "long") else "randn")
    if kind not in INPUT_KINDS:
        problems.append(f"{label}.kind: expected one of {list(INPUT_KINDS)}, found {kind!r}")
        return None
    dtype = raw.get("dtype", "int64" if kind == "randint" else "float32")
    if dtype not in ("float32", "float64", "float16", "bfloat16", "int64", "int32"):
        problems.append(f"{label}.dtype: unsupported dtype {dtype!r}")
        return None
    high, seed = raw.get("high", 2), raw.get("seed", 0)
    if not _is_int(high) or high < 1 or not _is_int(seed):
        problems.append(f"{label}: 'high' must be a positive integer and 'seed' an integer")
        return None
    # torch draws with 64-bit integers (32-bit ones for int32 ids): larger values overflow
    # only when the input is made, far into the run.
    top = 2**31 if dtype == "int32" else 2**63 - 1
    if high > top:
        problems.append(f"{label}.high: {high} does not fit {dtype}; expected at most {top:,}")
        return None
    if not -(2**63) <= seed < 2**64:
        problems.append(f"{label}.seed: {seed} does not fit a 64-bit seed")
        return None
    return InputSpec(shape=tuple(shape), dtype=dtype, kind=kind, high=high, seed=seed)


def _parse_output(raw: Any, label: str, resolve: Any, problems: list[str]) -> OutputSpec | None:
    if isinstance(raw, str):
        raw = {"dir": raw}
    if not isinstance(raw, Mapping) or "dir" not in raw:
        problems.append(f"{label}: expected a mapping with 'dir' (and optionally 'naming')")
        return None
    problems += [f"{label}: unknown key {k!r}" for k in sorted(set(raw) - {"dir", "naming"})]
    out_dir = resolve(raw["dir"], f"{label}.dir")
    naming = raw.get("naming", OutputSpec.__dataclass_fields__["naming"].default)
    if not isinstance(naming, str) or not naming.endswith(".safetensors"):
        problems.append(
            f"{label}.naming: expected a pattern ending in '.safetensors', found {naming!r}"
        )
        return None
    bad = _naming_problem(naming)
    if bad:
        problems.append(f"{label}.naming: {naming!r} {bad}")
        return None
    if _climbs(naming):
        problems.append(
            f"{label}.naming: {naming!r} would write outside output.dir; expected a relative "
            "pattern without '..', a leading '/' or '\\' (e.g. '{migration}/{stem}.safetensors')"
        )
        return None
    return OutputSpec(dir=out_dir, naming=naming) if out_dir else None


MAX_FORMAT_WIDTH = 255
"""Largest width or precision in an ``output.naming`` field: a file name holds 255 bytes."""


def _naming_problem(naming: str) -> str | None:
    """Output naming pattern → None when it formats a file name, else what is wrong with it.

    Checked without formatting first: a format spec such as ``{stem:>999999999}`` would
    allocate gigabytes.
    """
    known = ", ".join("{" + f + "}" for f in NAMING_FIELDS)
    try:
        fields = list(string.Formatter().parse(naming))
    except ValueError as e:
        return f"is not a valid pattern ({e}); write fields as {known}"
    for _, name, spec, _ in fields:
        if name is None:
            continue
        if name not in NAMING_FIELDS:
            return f"uses an unknown field {{{name}}}; known fields: {known}"
        if "{" in (spec or ""):
            return f"nests a field inside the format of {{{name}}}; expected a plain format"
        widths = [int(n) for n in re.findall(r"\d+", spec or "")]
        if any(w > MAX_FORMAT_WIDTH for w in widths):
            return (
                f"asks for a width of {max(widths):,} in {{{name}:{spec}}}; expected at most "
                f"{MAX_FORMAT_WIDTH} (a file name's length)"
            )
    try:
        naming.format(stem="x", name="x.pt", migration="x", index=0)
    except (KeyError, IndexError, ValueError) as e:
        return f"does not format ({e}); known fields: {known}"
    return None


def _climbs(pattern: str) -> bool:
    """Output name or pattern → True when it could leave the directory it is joined to."""
    pure = PurePosixPath(pattern)
    return "\\" in pattern or pure.is_absolute() or ".." in pure.parts


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
