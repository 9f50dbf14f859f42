"""Convention files → validated :class:`Convention` objects; key lists → roles and layouts.

A convention file (YAML, schema 1) names a library's module paths by role::

    schema: 1
    name: hf-llama
    library: transformers
    architectures: [LlamaForCausalLM, MistralForCausalLM]
    prefixes: ["", "model."]
    layout: {rope: rotate_half, qkv: separate, linear: out_in}
    roles:
      decoder:
        "[model.]layers.{i}.self_attn.q_proj": attn.q
        "lm_head": head.lm

A pattern is a module path (the tensor's last name, ``weight``/``bias``/…, is implied) or a
whole tensor name. ``{i}`` is the block index, ``{e}`` an expert index, ``{s}`` a stage index,
``{j}`` any other index; ``[text]`` is optional text. Matching goes through each key's
*template* (its numbers replaced by ``#``) so that a 100,000-tensor checkpoint costs one
regular-expression search per distinct template, not per key.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from weightmapper.dotted import number_components
from weightmapper.errors import ConfigError

log = logging.getLogger(__name__)

SCHEMA = 1
"""The convention file schema this module reads."""

ROLES: frozenset[str] = frozenset(
    {
        # embeddings and input stems
        "embed.tokens", "embed.positions", "embed.types", "embed.norm", "embed.patch",
        "embed.cls", "embed.proj",
        # attention: self (attn.*) and cross (xattn.*)
        "attn.q", "attn.k", "attn.v", "attn.qkv", "attn.kv", "attn.out", "attn.relbias",
        "attn.q_norm", "attn.k_norm", "attn.sinks",
        "xattn.q", "xattn.k", "xattn.v", "xattn.kv", "xattn.out", "xattn.relbias",
        # norms by the sub-layer they belong to (before it in pre-norm, after it in post-norm)
        "norm.attn", "norm.xattn", "norm.mlp", "norm.attn_out", "norm.mlp_out",
        "norm.pre", "norm.final",
        # feed-forward: gate/up/down (a plain two-layer MLP is up then down)
        "mlp.gate", "mlp.up", "mlp.gate_up", "mlp.down",
        # mixture of experts
        "moe.router", "moe.gate", "moe.up", "moe.gate_up", "moe.down", "moe.bias",
        # heads
        "head.lm", "head.cls", "head.pooler", "head.transform", "head.transform_norm",
        "head.bias", "head.proj", "head.logit_scale",
        # convolutional networks
        "stem.conv", "stem.norm",
        "block.conv1", "block.conv2", "block.conv3", "block.norm1", "block.norm2", "block.norm3",
        "block.shortcut.conv", "block.shortcut.norm", "block.se.reduce", "block.se.expand",
        "block.scale", "downsample.conv", "downsample.norm", "head.conv", "head.norm",
    }
)  # fmt: skip
"""The role vocabulary shared by every convention; a user file may add roles named ``x.*``."""

STACKS: frozenset[str] = frozenset({"main", "encoder", "decoder", "vision", "text"})

LAYOUT_CHOICES: dict[str, tuple[Any, ...]] = {
    "rope": ("none", "rotate_half", "interleaved"),
    "qkv": ("separate", "concat", "per_head", "per_kv_group"),
    "gate_up": ("separate", "gate_first", "up_first"),
    "linear": ("out_in", "in_out"),
    "norm_offset": (False, True),
    "experts": ("none", "per_expert", "stacked"),
}
"""Layout fields and their allowed values (the first is the default)."""

_INDEX = {"i": "block", "e": "expert", "s": "stage", "j": "index"}
_PLACEHOLDER = re.compile(r"\{([iesj])\}|\[([^\]]*)\]")
_NUMBER_PART = re.compile(r"(?<![^.])\d+(?![^.])")
_PARAM = r"(?:\.(?P<param>[A-Za-z_][A-Za-z0-9_]*))?"


@dataclass(frozen=True)
class Layout:
    """How a library stores tensors whose layout names cannot reveal."""

    rope: str = "none"
    """RoPE row order of q/k projections: ``rotate_half`` (HF) or ``interleaved`` (Meta)."""
    qkv: str = "separate"
    """Rows of a fused q/k/v: ``concat`` [q; k; v], ``per_head`` or ``per_kv_group`` blocks."""
    gate_up: str = "separate"
    """Order of a fused gate/up tensor's halves."""
    linear: str = "out_in"
    """``out_in`` as ``nn.Linear``; ``in_out`` as GPT-2's ``Conv1D`` or Keras/Flax kernels."""
    norm_offset: bool = False
    """Norm weights stored as offsets: the layer multiplies by ``1 + w`` (Gemma)."""
    experts: str = "none"
    """Mixture-of-experts weights ``per_expert`` (one tensor each) or ``stacked`` (3-d)."""


@dataclass(frozen=True)
class RoleRule:
    """One pattern of a convention, compiled: a module path or tensor name → role."""

    pattern: str
    role: str
    stack: str
    template: re.Pattern[str] = field(repr=False, compare=False)
    raw: re.Pattern[str] = field(repr=False, compare=False)
    on_templates: bool = field(default=False, repr=False, compare=False)
    """True when a key fits :attr:`raw` exactly when its template fits :attr:`template`
    (:func:`_decided_by_template`): the keys of a fitting template then need no matching one
    by one to be counted."""


@dataclass(frozen=True)
class Convention:
    """A library's naming convention: roles by pattern, and its tensor layouts."""

    name: str
    library: str
    description: str
    architectures: tuple[str, ...]
    layout: Layout
    rules: tuple[RoleRule, ...]
    version: int = 1
    source: str = "<builtin>"
    """The file it was read from, for messages."""
    requires: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)
    """Patterns of which each must name at least one key for the convention to apply: what
    tells it apart from a convention that names every tensor alike (torchtune's Qwen2 has
    q/k/v biases and RoPE on halves; its Llama has neither)."""

    def applies_to(self, keys: Sequence[str]) -> bool:
        """Keys → True when every required pattern names at least one of them."""
        return all(any(r.fullmatch(k) for k in keys) for r in self.requires)


@dataclass(frozen=True)
class KeyRole:
    """What a convention says of one tensor name."""

    role: str
    stack: str
    block: int | None
    """The block index (``{i}``), when the pattern has one."""
    param: str | None
    """``weight``, ``bias``, … (``None`` when the pattern names the tensor itself)."""
    convention: str


@dataclass(frozen=True)
class Identified:
    """A convention that fits a key list, and how well."""

    convention: Convention
    matched: int
    """Keys the convention gives a role to."""
    total: int

    @property
    def coverage(self) -> float:
        """Fraction of the keys the convention explains, in [0, 1]."""
        return self.matched / self.total if self.total else 0.0


def _regex(pattern: str, prefixes: Sequence[str], *, template: bool) -> re.Pattern[str]:
    """A pattern → a regex over full keys (``template``: numbers already replaced by ``#``)."""
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(pattern):
        literal = pattern[pos : m.start()]
        out.append(_literal(literal, template))
        if m.group(1):
            name = m.group(1)
            # a whole dotted part is ``#`` in a template; inside a word (``layer{s}``) it is not
            out.append(r"(?:#|\d+)" if template else rf"(?P<{name}>\d+)")
        else:
            out.append(f"(?:{_literal(m.group(2), template)})?")
        pos = m.end()
    out.append(_literal(pattern[pos:], template))
    alts = "|".join(_literal(p, template) for p in sorted(set(prefixes), key=len, reverse=True))
    return re.compile(f"(?:{alts})" + "".join(out) + _PARAM)


def _decided_by_template(pattern: str, template: re.Pattern[str], raw: re.Pattern[str]) -> bool:
    """A pattern and its two regexes → True when a key fits ``raw`` exactly when its template
    fits ``template``.

    So it is when the two regexes differ only where an index stands (``\\d+`` in one,
    ``#`` or ``\\d+`` in the other): no literal number that a template would hide
    (``downsample.0``), no literal ``#``, and no two indices side by side (``{i}{j}`` may
    split one number that a template shows as one ``#``).
    """
    if "\\#" in raw.pattern or _ADJACENT_INDICES.search(pattern):
        return False
    return _INDEX_GROUP.sub(lambda _m: r"(?:#|\d+)", raw.pattern) == template.pattern


_INDEX_GROUP = re.compile(r"\(\?P<[iesj]>\\d\+\)")
"""An index's group in a raw regex (``(?P<i>\\d+)``)."""
_ADJACENT_INDICES = re.compile(r"\}(?:\[[^\]]*\])*\{")
"""Two indices with nothing (or only optional text) between them in a pattern."""


def _literal(text: str, template: bool) -> str:
    return re.escape(_NUMBER_PART.sub("#", text) if template else text)


def _problems_in_layout(raw: Any, where: str) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    if raw is None:
        return {}, problems
    if not isinstance(raw, Mapping):
        return {}, [f"{where}: layout must be a mapping of {', '.join(LAYOUT_CHOICES)}"]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in LAYOUT_CHOICES:
            problems.append(
                f"{where}: unknown layout field {key!r}; expected one of "
                f"{', '.join(LAYOUT_CHOICES)}"
            )
        elif value not in LAYOUT_CHOICES[key]:
            choices = ", ".join(str(c) for c in LAYOUT_CHOICES[key])
            problems.append(f"{where}: layout {key}={value!r}; expected one of {choices}")
        else:
            values[key] = value
    return values, problems


def parse_convention(doc: Any, source: str = "<memory>") -> Convention:
    """A parsed YAML document → Convention; ConfigError listing every problem at once."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: a convention file is a mapping; found {type(doc).__name__}")
    problems: list[str] = []
    if doc.get("schema") != SCHEMA:
        problems.append(f"{source}: schema {doc.get('schema')!r}; this version reads schema 1")
    name = doc.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name or ""):
        problems.append(f"{source}: name {name!r} must be lower-case letters, digits, . _ -")
    prefixes = doc.get("prefixes", [""])
    if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
        problems.append(f"{source}: prefixes must be a list of strings")
        prefixes = [""]
    layout, layout_problems = _problems_in_layout(doc.get("layout"), source)
    problems += layout_problems
    rules: list[RoleRule] = []
    roles = doc.get("roles")
    if not isinstance(roles, Mapping) or not roles:
        problems.append(f"{source}: roles must map a stack ({', '.join(sorted(STACKS))}) to rules")
        roles = {}
    for stack, table in roles.items():
        if stack not in STACKS:
            problems.append(f"{source}: unknown stack {stack!r}; expected {sorted(STACKS)}")
            continue
        if not isinstance(table, Mapping):
            problems.append(f"{source}: roles.{stack} must map patterns to roles")
            continue
        for pattern, role in table.items():
            if role not in ROLES and not (isinstance(role, str) and role.startswith("x.")):
                problems.append(
                    f"{source}: {pattern!r} has role {role!r}, not in the vocabulary "
                    "(docs/conventions.md) and not a custom x.* role"
                )
                continue
            try:
                on_template = _regex(str(pattern), prefixes, template=True)
                raw = _regex(str(pattern), prefixes, template=False)
                rules.append(
                    RoleRule(
                        str(pattern),
                        role,
                        stack,
                        on_template,
                        raw,
                        _decided_by_template(str(pattern), on_template, raw),
                    )
                )
            except re.error as e:
                problems.append(f"{source}: pattern {pattern!r} is malformed ({e})")
    requires: list[re.Pattern[str]] = []
    raw_requires = doc.get("requires", [])
    if not isinstance(raw_requires, list) or not all(isinstance(r, str) for r in raw_requires):
        problems.append(f"{source}: requires must be a list of patterns")
        raw_requires = []
    for pattern in raw_requires:
        try:
            requires.append(_regex(pattern, prefixes, template=False))
        except re.error as e:
            problems.append(f"{source}: required pattern {pattern!r} is malformed ({e})")
    architectures = doc.get("architectures", [])
    if not isinstance(architectures, list):
        problems.append(f"{source}: architectures must be a list of class names")
        architectures = []
    if problems:
        raise ConfigError(
            f"convention file {source} has {len(problems)} problem(s):\n  " + "\n  ".join(problems),
            problems,
        )
    return Convention(
        name=str(name),
        library=str(doc.get("library", "")),
        description=str(doc.get("description", "")),
        architectures=tuple(str(a) for a in architectures),
        layout=Layout(**layout),
        rules=tuple(rules),
        version=int(doc.get("version", 1)),
        source=source,
        requires=tuple(requires),
    )


def template_of(key: str) -> str:
    """``model.layers.12.mlp.up_proj.weight`` → ``model.layers.#.mlp.up_proj.weight``."""
    return _NUMBER_PART.sub("#", key)


def templates_of(keys: Sequence[str]) -> list[str]:
    """Keys → :func:`template_of` of each, in one pass over all of them: every key is put
    between dots and the keys joined, so a number part is one between two dots."""
    joined = ".\n.".join(keys)
    if not keys or joined.count("\n") != len(keys) - 1:  # a key holds a newline
        return [template_of(k) for k in keys]
    found = number_components(joined, ".\n", read_values=False)
    if found is None:  # not ASCII (``\d`` sees other digits too), or a very long number
        return _DOTTED_NUMBER.sub(".#", "." + joined + ".")[1:-1].split(".\n.")
    return found.text.split(".\n.")


_DOTTED_NUMBER = re.compile(r"\.\d+(?=\.)")


class ConventionSet:
    """The conventions in force (built-in plus the user's): identify a key list, give roles."""

    def __init__(self, conventions: Iterable[Convention]) -> None:
        self.conventions: dict[str, Convention] = {}
        for c in conventions:
            if c.name in self.conventions:
                log.info("convention %s from %s replaces %s", c.name, c.source,
                         self.conventions[c.name].source)  # fmt: skip
            self.conventions[c.name] = c

    def __len__(self) -> int:
        return len(self.conventions)

    def __getitem__(self, name: str) -> Convention:
        try:
            return self.conventions[name]
        except KeyError:
            raise ConfigError(
                f"no convention named {name!r}; known: {', '.join(sorted(self.conventions))}"
            ) from None

    def match(self, convention: Convention, keys: Iterable[str]) -> dict[str, KeyRole]:
        """One convention and keys → the roles it gives (keys it does not explain left out)."""
        return self._match(convention, _Templated(list(keys)))

    def _match(self, convention: Convention, tk: _Templated) -> dict[str, KeyRole]:
        """One convention + templated keys → the roles it gives, in key order."""
        out: dict[str, KeyRole] = {}
        by_template = tk.rules_by_template(convention)
        for key, t in zip(tk.keys, tk.templates, strict=True):
            rules = by_template[t]
            if not rules:
                continue
            for rule in rules:
                m = rule.raw.fullmatch(key)
                if m:
                    groups = m.groupdict()
                    block = groups.get("i")
                    out[key] = KeyRole(
                        rule.role,
                        rule.stack,
                        int(block) if block is not None else None,
                        groups.get("param"),
                        convention.name,
                    )
                    break
        return out

    def _count(self, convention: Convention, tk: _Templated) -> int:
        """One convention + templated keys → how many distinct keys it gives a role to."""
        if not tk.distinct:
            return len(self._match(convention, tk))
        n = 0
        for t, rules in tk.rules_by_template(convention).items():
            if not rules:
                continue
            if any(r.on_templates for r in rules):
                n += len(tk.groups[t])  # each key of the template fits that rule
                continue
            for key in tk.groups[t]:
                for rule in rules:
                    if rule.raw.fullmatch(key):
                        n += 1
                        break
        return n

    def identify(self, keys: Sequence[str], architectures: Iterable[str] = ()) -> list[Identified]:
        """Keys (and a config's ``architectures``, if known) → fitting conventions, best first.

        Conventions that explain the same number of keys tie: names alone cannot tell them
        apart (HF Llama and HF Gemma name every tensor alike and differ in norm layout),
        unless one's ``requires`` are present. Conventions whose ``requires`` are absent
        are left out.
        """
        return self._identify(_Templated(list(keys)), architectures)

    def _identify(self, tk: _Templated, architectures: Iterable[str]) -> list[Identified]:
        wanted = set(architectures)
        pool = [
            c for c in self.conventions.values() if not wanted or wanted & set(c.architectures)
        ] or list(self.conventions.values())
        pool = [c for c in pool if c.applies_to(tk.keys)]
        found = [Identified(c, self._count(c, tk), len(tk.keys)) for c in pool]
        found = [f for f in found if f.matched]
        # Among conventions that explain as many keys, one whose required tensors are there
        # is the more specific: it wins the tie.
        return sorted(
            found,
            key=lambda f: (-f.matched, -len(f.convention.requires), f.convention.name),
        )

    def roles(
        self,
        keys: Sequence[str],
        architectures: Iterable[str] = (),
        min_coverage: float = 0.5,
        *,
        distinct: bool | None = None,
    ) -> tuple[dict[str, KeyRole], list[Identified]]:
        """Keys → (key → role from the best-fitting convention, the conventions tied for best).

        Nothing is returned when no convention explains ``min_coverage`` of the keys. A
        convention with repeated blocks claims keys only when it explains one block's: a
        three-layer ``conv1``/``bn1``/``fc`` net shares a ResNet's stem and head names, not
        its structure. ``distinct``: True when the caller knows no key repeats (the keys of
        a mapping), None to have it checked.
        """
        tk = _Templated(list(keys), distinct)
        found = [f for f in self._identify(tk, architectures) if _sees_a_block(f.convention, tk)]
        if not found or found[0].coverage < min_coverage:
            return {}, []
        first = found[0]
        best = [
            f
            for f in found
            if f.matched == first.matched
            and len(f.convention.requires) == len(first.convention.requires)
        ]
        return self._match(best[0].convention, tk), best


def _sees_a_block(convention: Convention, tk: _Templated) -> bool:
    """Convention + templated keys → True when it has no block patterns (``{i}``) or a key's
    first matching pattern is one: the stem and head names alone are common to many nets."""
    if not any("{i}" in r.pattern for r in convention.rules):
        return True
    for t, rules in tk.rules_by_template(convention).items():
        if not any("{i}" in r.pattern for r in rules):
            continue
        for key in tk.groups[t]:
            rule = next((r for r in rules if r.raw.fullmatch(key)), None)
            if rule is not None and "{i}" in rule.pattern:
                return True
    return False


class _Templated:
    """Keys with their templates computed once, grouped by template.

    A 100,000-tensor checkpoint has a few dozen distinct templates: each convention's rules
    are tried against each template once, and only the keys of templates some rule fits are
    matched one by one (the keys are grouped by template the first time some are asked for).
    """

    def __init__(self, keys: list[str], distinct: bool | None = None) -> None:
        self.keys = keys
        if distinct is not None:  # known to the caller (the keys of a mapping are distinct)
            self.distinct = distinct
        self.templates = templates_of(keys)
        self.distinct_templates: list[str] = list(dict.fromkeys(self.templates))
        """Distinct templates, in order of first appearance."""

    @functools.cached_property
    def groups(self) -> dict[str, list[str]]:
        """Template → its keys, templates and keys in first-seen order."""
        return _grouped(self.keys, self.templates)

    @functools.cached_property
    def distinct(self) -> bool:
        """True when no key repeats (always so for the keys of a mapping)."""
        return len(set(self.keys)) == len(self.keys)

    def rules_by_template(self, convention: Convention) -> dict[str, list[RoleRule]]:
        """Convention → distinct template → the rules whose template pattern fits it."""
        return {
            t: [r for r in convention.rules if r.template.fullmatch(t)]
            for t in self.distinct_templates
        }


def _grouped(keys: list[str], templates: list[str]) -> dict[str, list[str]]:
    """Keys + their templates → template → its keys, templates and keys in first-seen order
    (a stable sort of the keys by template code, cut where the code changes)."""
    if not keys:
        return {}
    code = {t: n for n, t in enumerate(dict.fromkeys(templates))}
    codes = np.fromiter(map(code.__getitem__, templates), np.int64, len(templates))
    order = np.argsort(codes, kind="stable")
    ordered = np.array(keys, dtype=object)[order]
    cuts = np.cumsum(np.bincount(codes, minlength=len(code)))[:-1]
    return {t: part.tolist() for t, part in zip(code, np.split(ordered, cuts), strict=True)}


def _builtin_files() -> list[tuple[str, str]]:
    root = resources.files("weightmapper.conventions") / "data"
    return sorted(
        (f"conventions/data/{p.name}", p.read_text(encoding="utf-8"))
        for p in root.iterdir()
        if p.name.endswith(".yaml")
    )


@functools.lru_cache(maxsize=1)
def _builtin() -> tuple[Convention, ...]:
    return tuple(parse_convention(yaml.safe_load(text), name) for name, text in _builtin_files())


def load_conventions(paths: Iterable[str | Path] = ()) -> ConventionSet:
    """User convention files (added to, or replacing by name, the built-in ones) → the set."""
    extra: list[Convention] = []
    problems: list[str] = []
    for path in paths:
        p = Path(path)
        try:
            doc = yaml.safe_load(p.read_text(encoding="utf-8"))
            extra.append(parse_convention(doc, str(p)))
        except OSError as e:
            problems.append(f"{p}: cannot be read ({e.strerror or e}); give an existing file")
        except yaml.YAMLError as e:
            problems.append(f"{p}: not valid YAML ({e})")
        except ConfigError as e:
            problems += e.problems or [str(e)]
    if problems:
        raise ConfigError(
            f"{len(problems)} problem(s) in convention files:\n  " + "\n  ".join(problems),
            problems,
        )
    return ConventionSet([*_builtin(), *extra])
