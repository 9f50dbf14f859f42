"""Roles a network has once, read from module names: a key → ``head.cls``, ``norm.final``, ….

Most roles repeat (every block has a query projection), but a network has one head, one final
norm, one token embedding, one relative-position bias. Where neither a forward pass nor a
naming convention gave a key its role, the words libraries use for these few modules
(``classifier``, ``final_layer_norm``, ``relpos_bias``; ``fc`` and ``norm`` only as the first
component of a path) say it. The words are data, ``singletons.yaml`` beside this module.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from weightmapper.conventions.registry import ROLES
from weightmapper.errors import ConfigError

SCHEMA = 1
"""The schema of ``singletons.yaml`` this module reads."""
FAMILY: dict[str, str] = {
    "head.lm": "head", "head.cls": "head", "head.proj": "head",
    "norm.final": "norm.final", "embed.tokens": "embed.tokens",
    "embed.positions": "embed.positions", "embed.types": "embed.types",
    "attn.relbias": "attn.relbias", "embed.patch": "embed.patch", "embed.cls": "embed.cls",
}  # fmt: skip
"""Role → the one-per-network role it is (an LM head and a classifier are both the head)."""


@dataclass(frozen=True)
class SingletonWords:
    """Module-path words → the one-per-network role they name."""

    anywhere: dict[str, str]
    """Word → role, at any depth of a module path."""
    top: dict[str, str]
    """Word → role, only as a path's first component."""
    _seen: dict[str, str | None] = field(default_factory=dict, compare=False, repr=False)
    """Module path → its answer (a module's weight and bias ask the same question)."""

    def role_of(self, key: str) -> str | None:
        """Tensor key → the role its module path names (innermost word first), or None."""
        module, _, local = key.rpartition(".")
        module = module or local  # a parameter of the root module is its own component
        if module not in self._seen:
            parts = module.split(".")
            found = None
            for i in range(len(parts) - 1, -1, -1):
                found = self.component_role(parts[i], first=i == 0)
                if found:
                    break
            self._seen[module] = found
        return self._seen[module]

    def component_role(self, component: str, *, first: bool) -> str | None:
        """One component of a module path + whether it is the path's first → the role it
        names, or None."""
        word = component.lower()
        return self.anywhere.get(word) or (self.top.get(word) if first else None)


def parse_singletons(doc: Any, source: str = "<memory>") -> SingletonWords:
    """Parsed YAML of a singleton-words file → SingletonWords; every problem in one ConfigError."""
    problems: list[str] = []
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ConfigError(
            f"{source}: expected a mapping with schema: {SCHEMA} and roles; found "
            f"{type(doc).__name__ if not isinstance(doc, dict) else doc.get('schema')!r}",
        )
    anywhere: dict[str, str] = {}
    top: dict[str, str] = {}
    roles = doc.get("roles")
    if not isinstance(roles, dict):
        raise ConfigError(f"{source}: roles must map a role to its words (anywhere, top)")
    for role, where in roles.items():
        if role not in FAMILY or role not in ROLES:
            problems.append(f"{source}: {role!r} is not a one-per-network role ({sorted(FAMILY)})")
            continue
        if not isinstance(where, dict) or set(where) - {"anywhere", "top"}:
            problems.append(f"{source}: {role}: expected the lists anywhere and top")
            continue
        for kind, table in (("anywhere", anywhere), ("top", top)):
            for word in where.get(kind) or []:
                w = str(word).lower()
                if w in anywhere or w in top:
                    problems.append(f"{source}: {role}: word {w!r} names two roles; keep one")
                table[w] = role
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in {source}", problems)
    return SingletonWords(anywhere, top)


@functools.cache
def singleton_words() -> SingletonWords:
    """() → the built-in words (``singletons.yaml``), read once."""
    text = (resources.files("weightmapper.conventions") / "singletons.yaml").read_text("utf-8")
    return parse_singletons(yaml.safe_load(text), "conventions/singletons.yaml")
