"""Mapping → the shortest list of regex rename rules that reproduces it exactly, and exports.

A rule renames keys only: ``layers\\.(\\d+)\\.attn\\.c_attn\\.(.+)`` →
``blocks.\\1.attention.qkv.\\2``. Pure-digit key components (layer indices) become
capture groups and a shared tail of components becomes one ``(.+)`` group, so one rule
covers a whole family of keys. Rules are chosen greedily (most keys first) among
candidates that are *safe*: every source key a rule matches, mapped or not, must be
renamed to exactly its mapped target. Pairs no template covers become literal rules;
splits and merges cannot be expressed as renames and are listed instead. The result is
verified by applying the rules to every source key.

Exports: ``python`` (a rule list plus a tiny ``rename`` function), ``regex`` (lines
``pattern => replacement``), ``hf-key-mapping`` (a dict for transformers'
``from_pretrained(key_mapping=...)``) and ``mmengine`` (``revise_keys`` for
``mmengine.runner.load_checkpoint``). Keys that need a tensor transform are named in
comments: a rule only renames.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from weightmapper.errors import MappingError
from weightmapper.review import natural_key

if TYPE_CHECKING:  # torch loads when a mapping is compressed, not when FORMATS is read
    from weightmapper.result import MappingResult

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("python", "regex", "hf-key-mapping", "mmengine")

_DIGITS = re.compile(r"[0-9]+")
_MAX_COMBOS = 8
"""Most backreference choices tried per pair when a layer index appears twice."""

# A template token: a literal component (str) or a digit group (None) on the source side;
# ("l", text) or ("r", group index) on the target side.
_SrcTok = str | None
_TgtTok = tuple[str, Any]


@dataclass(frozen=True)
class _Template:
    src: tuple[_SrcTok, ...]
    tail: bool
    tgt: tuple[_TgtTok, ...]
    allowed: tuple[frozenset[str] | None, ...] = ()
    """Per digit group: the values it may take (None: any number)."""

    @property
    def n_digit_groups(self) -> int:
        return sum(1 for t in self.src if t is None)

    def pattern(self) -> str:
        parts = []
        gi = 0
        for tok in self.src:
            if tok is None:
                allowed = self.allowed[gi] if self.allowed else None
                parts.append(
                    r"(\d+)"
                    if allowed is None
                    else "(" + "|".join(re.escape(v) for v in _natural(allowed)) + ")"
                )
                gi += 1
            else:
                parts.append(re.escape(tok))
        body = r"\.".join(parts)
        if self.tail:
            body = body + r"\.(.+)" if parts else "(.+)"
        return body

    def replacement(self) -> str:
        parts = []
        for kind, val in self.tgt:
            parts.append(_escape_repl(val) if kind == "l" else rf"\g<{val + 1}>")
        if self.tail:
            parts.append(rf"\g<{self.n_digit_groups + 1}>")
        return _tidy_refs(".".join(parts))


def _natural(values: Iterable[str]) -> list[str]:
    return sorted(values, key=lambda v: (len(v), v))


def _escape_repl(text: str) -> str:
    return text.replace("\\", "\\\\")


def _tidy_refs(repl: str) -> str:
    # \g<1> is unambiguous; \1 reads better and is safe unless a digit follows.
    return re.sub(r"\\g<(\d)>(?![0-9])", r"\\\1", repl)


@dataclass(frozen=True)
class RenameRule:
    """One regex rename: a source key matching ``pattern`` (whole key) becomes ``replacement``."""

    pattern: str
    """Python regex matched against the whole source key (``re.fullmatch``)."""
    replacement: str
    """``re`` replacement template with ``\\1``-style group references."""
    keys: tuple[str, ...]
    """Source keys of the mapping this rule renames."""
    transforms: dict[str, int] = field(default_factory=dict)
    """Transform name → how many of those keys need it (identity left out)."""
    template: _Template | None = field(default=None, repr=False, compare=False)

    @property
    def literal(self) -> bool:
        """True for a rule that names one key outright (no groups)."""
        return "(" not in self.pattern

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        """The compiled pattern (compiled once: re's own cache is small)."""
        return re.compile(self.pattern)

    def apply(self, key: str) -> str | None:
        """Source key → renamed key, or None when the pattern does not match it."""
        m = self.regex.fullmatch(key)
        return m.expand(self.replacement) if m else None

    def to_dict(self) -> dict[str, Any]:
        """RenameRule → JSON-ready dict."""
        return {
            "pattern": self.pattern,
            "replacement": self.replacement,
            "count": len(self.keys),
            "transforms": dict(sorted(self.transforms.items())),
        }


@dataclass(frozen=True)
class RuleSet:
    """Rules that reproduce a mapping, what they cannot express, and the verification result."""

    rules: tuple[RenameRule, ...]
    mapping_size: int
    """Number of one-to-one pairs the rules must reproduce."""
    unexpressed: tuple[tuple[str, str], ...] = ()
    """(source key, why) for keys a rename cannot express (splits, merges)."""
    problems: tuple[str, ...] = ()
    """What verification found wrong; empty when the rules reproduce the mapping exactly."""
    source_keys: tuple[str, ...] = field(default=(), repr=False)

    @property
    def verified(self) -> bool:
        """True when applying the rules to every source key gives exactly the mapping."""
        return not self.problems

    @property
    def ratio(self) -> float:
        """Mapped keys per rule (higher is a shorter rule table)."""
        return self.mapping_size / len(self.rules) if self.rules else 0.0

    def apply(self, key: str) -> str | None:
        """Source key → target key by the first matching rule, or None (not mapped)."""
        return apply_rules(self.rules, key)

    def to_dict(self) -> dict[str, Any]:
        """RuleSet → JSON-ready dict."""
        return {
            "rules": [r.to_dict() for r in self.rules],
            "mapping_size": self.mapping_size,
            "rule_count": len(self.rules),
            "ratio": round(self.ratio, 3),
            "verified": self.verified,
            "problems": list(self.problems),
            "unexpressed": [{"key": k, "reason": r} for k, r in self.unexpressed],
        }


def apply_rules(rules: Sequence[RenameRule], key: str) -> str | None:
    """Rules + source key → the first matching rule's output, or None when none matches."""
    for rule in rules:
        out = rule.apply(key)
        if out is not None:
            return out
    return None


def apply_rules_sequentially(rules: Sequence[RenameRule], key: str) -> str:
    """Rules + key → key after every rule is applied in turn (mmengine/transformers 5 style)."""
    for rule in rules:
        out = rule.apply(key)
        if out is not None:
            key = out
    return key


_META = set("()[]{}|*+?^$\\")


def _literal_head(pattern: str) -> str | None:
    head = pattern.split(r"\.", 1)[0]
    return None if not head or _META & set(head) else head


class _RuleIndex:
    """Rules bucketed by the literal first key component of their pattern.

    Gives exactly the results of :func:`apply_rules` and :func:`apply_rules_sequentially`
    while trying only the rules that can match a key (thousands of literal rules stay fast).
    """

    def __init__(self, rules: Sequence[RenameRule]) -> None:
        self.rules = list(rules)
        self.by_head: dict[str, list[int]] = {}
        self.open: list[int] = []
        for i, rule in enumerate(self.rules):
            head = _literal_head(rule.pattern)
            (self.open if head is None else self.by_head.setdefault(head, [])).append(i)

    def _candidates(self, key: str, after: int = -1) -> Iterable[int]:
        head = key.split(".", 1)[0]
        for i in heapq.merge(self.by_head.get(head, ()), self.open):
            if i > after:
                yield i

    def first(self, key: str) -> str | None:
        for i in self._candidates(key):
            out = self.rules[i].apply(key)
            if out is not None:
                return out
        return None

    def sequential(self, key: str) -> str:
        last = -1
        while True:
            for i in self._candidates(key, last):
                out = self.rules[i].apply(key)
                if out is not None:
                    key, last = out, i
                    break
            else:
                return key


# --- compression -----------------------------------------------------------------------------


def compress_mapping(
    mapping: MappingResult | Mapping[str, str],
    *,
    source_keys: Iterable[str] | None = None,
    split_by_transform: bool = True,
) -> RuleSet:
    """Mapping (+ every source key, mapped or not) → verified RuleSet, fewest rules first.

    ``source_keys`` defaults to the keys a MappingResult knows (pairs, unmatched, split and
    merge sources); a rule never renames a key the mapping leaves out. With
    ``split_by_transform`` each rule covers keys that need the same transform, so its
    comment can say "all these keys need a transpose".
    """
    pairs, transforms, unexpressed, universe = _mapping_parts(mapping, source_keys)
    tclass = {s: (transforms.get(s, "identity") if split_by_transform else "") for s in pairs}
    keys = sorted(universe)
    index = _PrefixIndex(keys)

    candidates: dict[_Template, None] = {}
    for s, t in pairs.items():
        for tpl in _candidates(s, t):
            candidates.setdefault(tpl, None)

    scored: list[tuple[_Template, frozenset[str]]] = []
    for tpl in candidates:
        cover = _safe_cover(tpl, index, pairs, tclass)
        if cover is not None and len(cover[1]) >= 2:
            scored.append(cover)
    chosen = _greedy_cover(scored, set(pairs))
    covered = set().union(*(c for _, c in chosen)) if chosen else set()

    rules = [_make_rule(tpl, cover, transforms) for tpl, cover in chosen]
    for s in sorted(set(pairs) - covered):
        rules.append(
            RenameRule(
                re.escape(s),
                _escape_repl(pairs[s]),
                (s,),
                _count_transforms([s], transforms),
            )
        )
    rules = order_for_sequential(rules)
    problems = verify_rules(rules, pairs, keys)
    logger.info("compressed %d pairs into %d rules", len(pairs), len(rules))
    return RuleSet(tuple(rules), len(pairs), tuple(unexpressed), tuple(problems), tuple(keys))


def _mapping_parts(
    mapping: MappingResult | Mapping[str, str], source_keys: Iterable[str] | None
) -> tuple[dict[str, str], dict[str, str], list[tuple[str, str]], set[str]]:
    from weightmapper.result import MappingResult

    unexpressed: list[tuple[str, str]] = []
    transforms: dict[str, str] = {}
    if isinstance(mapping, MappingResult):
        pairs = {p.source: p.target for p in mapping.pairs}
        transforms = {p.source: p.transform.name for p in mapping.pairs}
        universe = set(pairs) | {u.name for u in mapping.unmatched_source}
        for m in mapping.multi:
            universe.update(m.sources)
            for s in m.sources:
                unexpressed.append(
                    (
                        s,
                        f"{m.kind} {', '.join(m.sources)} → {', '.join(m.targets)} "
                        f"(transform {m.transform.name}): a rename cannot express it",
                    )
                )
    elif isinstance(mapping, Mapping):
        pairs = {str(k): str(v) for k, v in mapping.items()}
        universe = set(pairs)
    else:
        raise MappingError(
            f"cannot compress a {type(mapping).__name__}: expected a MappingResult or a "
            "{source: target} dict."
        )
    if source_keys is not None:
        universe |= set(source_keys)
    return pairs, transforms, sorted(unexpressed, key=lambda u: natural_key(u[0])), universe


def _candidates(s: str, t: str) -> Iterable[_Template]:
    sc, tc = s.split("."), t.split(".")
    common = 0
    while common < min(len(sc), len(tc)) and sc[-1 - common] == tc[-1 - common]:
        common += 1
    for r in range(common + 1):
        sp, tp = sc[: len(sc) - r], tc[: len(tc) - r]
        if not sp and not r:
            continue
        src = tuple(None if _DIGITS.fullmatch(c) else c for c in sp)
        values = [c for c in sp if _DIGITS.fullmatch(c)]
        options: list[list[_TgtTok]] = []
        for c in tp:
            if _DIGITS.fullmatch(c):
                # A literal index only where no source index has the value: literal variants
                # differ per key, so offering them everywhere makes candidates grow with keys.
                refs: list[_TgtTok] = [("r", i) for i, v in enumerate(values) if v == c]
                options.append(refs or [("l", c)])
            else:
                options.append([("l", c)])
        for combo in itertools.islice(itertools.product(*options), _MAX_COMBOS):
            yield _Template(src, r > 0, tuple(combo))


class _PrefixIndex:
    """Source keys bucketed by component template prefix, so a candidate sees only its keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.split = {k: k.split(".") for k in keys}
        self.by_prefix: dict[tuple[_SrcTok, ...], list[str]] = {}
        self.by_full: dict[tuple[_SrcTok, ...], list[str]] = {}
        for k, comps in self.split.items():
            tpl = tuple(None if _DIGITS.fullmatch(c) else c for c in comps)
            self.by_full.setdefault(tpl, []).append(k)
            for n in range(len(tpl)):
                self.by_prefix.setdefault(tpl[:n], []).append(k)

    def bucket(self, tpl: _Template) -> list[str]:
        return (self.by_prefix if tpl.tail else self.by_full).get(tpl.src, [])


def _render(tpl: _Template, comps: list[str]) -> tuple[str, tuple[str, ...]]:
    values = tuple(c for c, tok in zip(comps, tpl.src, strict=False) if tok is None)
    out = [val if kind == "l" else values[val] for kind, val in tpl.tgt]
    if tpl.tail:
        out.extend(comps[len(tpl.src) :])
    return ".".join(out), values


def _safe_cover(
    tpl: _Template, index: _PrefixIndex, pairs: Mapping[str, str], tclass: Mapping[str, str]
) -> tuple[_Template, frozenset[str]] | None:
    """Candidate → (template, keys it renames) when every key it matches comes out right."""
    good: list[tuple[str, tuple[str, ...]]] = []
    bad: list[tuple[str, ...]] = []
    classes = set()
    for key in index.bucket(tpl):
        produced, values = _render(tpl, index.split[key])
        if pairs.get(key) == produced:
            good.append((key, values))
            classes.add(tclass[key])
        else:
            bad.append(values)
    if len(good) < 2:
        return None
    if len(classes) > 1:
        # Mixed transforms: keep the largest class only, through a restricted pattern.
        best = max(sorted(classes), key=lambda c: sum(1 for k, _ in good if tclass[k] == c))
        bad += [v for k, v in good if tclass[k] != best]
        good = [(k, v) for k, v in good if tclass[k] == best]
    if not bad:
        return tpl, frozenset(k for k, _ in good)
    n = tpl.n_digit_groups
    allowed = tuple(frozenset(v[i] for _, v in good) for i in range(n))
    if any(all(v[i] in allowed[i] for i in range(n)) for v in bad):
        return None  # restricting the layer indices cannot separate good from bad keys
    # A group that only ever takes one value is clearer as a literal component.
    src = list(tpl.src)
    tgt = list(tpl.tgt)
    kept: list[frozenset[str] | None] = []
    gi = 0
    remap: dict[int, int] = {}
    fixed: dict[int, str] = {}
    for pos, tok in enumerate(tpl.src):
        if tok is None:
            if len(allowed[gi]) == 1:
                (value,) = allowed[gi]
                src[pos] = value
                fixed[gi] = value
            else:
                remap[gi] = len(kept)
                kept.append(allowed[gi])
            gi += 1
    for j, (kind, val) in enumerate(tgt):
        if kind == "r":
            tgt[j] = ("l", fixed[val]) if val in fixed else ("r", remap[val])
    if not kept and not tpl.tail:
        return None  # fully literal: the literal fallback says it more plainly
    restricted = _Template(tuple(src), tpl.tail, tuple(tgt), tuple(kept))
    return restricted, frozenset(k for k, _ in good)


def _greedy_cover(
    scored: list[tuple[_Template, frozenset[str]]], universe: set[str]
) -> list[tuple[_Template, frozenset[str]]]:
    """Candidates with their covers → a small subset covering as much as possible (lazy greedy)."""

    def tie(tpl: _Template) -> tuple[Any, ...]:
        restricted = any(a is not None for a in tpl.allowed)
        return (restricted, len(tpl.src) + len(tpl.tgt), tpl.pattern(), tpl.replacement())

    heap = [(-len(c), tie(t), i) for i, (t, c) in enumerate(scored)]
    heapq.heapify(heap)
    remaining = set(universe)
    chosen: list[tuple[_Template, frozenset[str]]] = []
    while heap and remaining:
        neg, tb, i = heapq.heappop(heap)
        tpl, cover = scored[i]
        new = len(cover & remaining)
        if new < 2:
            continue
        if new != -neg:
            heapq.heappush(heap, (-new, tb, i))
            continue
        chosen.append((tpl, cover))
        remaining -= cover
    # Drop a pick whose keys the other picks cover anyway (the smallest are checked first).
    keep = list(range(len(chosen)))
    for i in reversed(range(len(chosen))):
        others: set[str] = set()
        for j in keep:
            if j != i:
                others |= chosen[j][1]
        if chosen[i][1] <= others:
            keep.remove(i)
    return [chosen[i] for i in keep]


def _count_transforms(keys: Iterable[str], transforms: Mapping[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for k in keys:
        name = transforms.get(k, "identity")
        if name != "identity":
            counts[name] = counts.get(name, 0) + 1
    return counts


def _make_rule(tpl: _Template, cover: frozenset[str], transforms: Mapping[str, str]) -> RenameRule:
    keys = tuple(sorted(cover))
    return RenameRule(
        tpl.pattern(), tpl.replacement(), keys, _count_transforms(keys, transforms), tpl
    )


def order_for_sequential(rules: list[RenameRule]) -> list[RenameRule]:
    """Rules → the same rules ordered so that applying all of them in turn (mmengine's
    ``revise_keys``, transformers' renamings) never renames a key twice, where possible.

    A rule whose pattern matches another rule's output goes first. Ties keep the
    largest-cover-first order.
    """
    index = _RuleIndex(rules)
    before: dict[int, set[int]] = {i: set() for i in range(len(rules))}
    for i, rule in enumerate(rules):
        for key in rule.keys:
            out = rule.apply(key)
            if out is None:
                continue
            for j in index._candidates(out):
                if j != i and j not in before[i] and rules[j].regex.fullmatch(out):
                    before[i].add(j)  # rule j must run before rule i
    order: list[int] = []
    placed: set[int] = set()
    pending = list(range(len(rules)))
    while pending:
        ready = [i for i in pending if before[i] <= placed]
        if not ready:
            logger.info("rename rules chain in a cycle; sequential loaders may rename twice")
            ready = pending[:1]
        for i in ready:
            order.append(i)
            placed.add(i)
        pending = [i for i in pending if i not in placed]
    return [rules[i] for i in order]


def verify_rules(
    rules: Sequence[RenameRule], pairs: Mapping[str, str], source_keys: Iterable[str]
) -> list[str]:
    """Rules + mapping + all source keys → problems (empty when the rules reproduce it exactly).

    Checks first-match application (``rename``, Python/regex exports) and applying every
    rule in turn (mmengine, transformers): each mapped key must come out as its target,
    and every key the mapping leaves out must not be renamed.
    """
    problems: list[str] = []
    index = _RuleIndex(rules)
    for key in sorted(set(source_keys) | set(pairs)):
        want = pairs.get(key)
        got = index.first(key)
        if got != want:
            problems.append(
                f"{key}: rules give {got!r}, mapping says {want!r}"
                if want is not None
                else f"{key}: not in the mapping, but the rules rename it to {got!r}"
            )
            continue
        seq = index.sequential(key)
        if seq != (want if want is not None else key):
            problems.append(
                f"{key}: applied in turn the rules give {seq!r}, mapping says {want or key!r}"
            )
    return problems


# --- export formats --------------------------------------------------------------------------


def _rule_comment(rule: RenameRule) -> str:
    note = f"{len(rule.keys)} key(s)"
    if rule.transforms:
        note += "; needs transform " + ", ".join(
            f"{name} ({n} key(s))" for name, n in sorted(rule.transforms.items())
        )
    return note


def _py_str(text: str) -> str:
    if '"' not in text and not text.endswith("\\") and "\n" not in text:
        return f'r"{text}"'
    return repr(text)


def _header(ruleset: RuleSet, fmt: str, comment: str) -> list[str]:
    lines = [
        f"{comment} weightmapper rename rules ({fmt}): {len(ruleset.rules)} rule(s) reproduce "
        f"{ruleset.mapping_size} mapped key(s) ({ruleset.ratio:.1f} keys per rule).",
        f"{comment} Verified: "
        + (
            "applying the rules to every source key gives exactly the mapping."
            if ruleset.verified
            else f"NO, {len(ruleset.problems)} problem(s): see below."
        ),
        f"{comment} Rules only rename; keys needing a tensor transform are noted per rule "
        "(apply the mapping file for those).",
    ]
    return lines


def _footer(ruleset: RuleSet, comment: str) -> list[str]:
    lines = []
    if ruleset.unexpressed:
        lines.append(f"{comment} Not expressible as renames ({len(ruleset.unexpressed)} key(s)):")
        lines += [f"{comment}   {k}: {why}" for k, why in ruleset.unexpressed]
    if ruleset.problems:
        lines.append(f"{comment} Verification problems:")
        lines += [f"{comment}   {p}" for p in ruleset.problems[:50]]
    return lines


def format_rules(ruleset: RuleSet, fmt: str = "python") -> str:
    """RuleSet + format name (python, regex, hf-key-mapping, mmengine) → text to paste."""
    if fmt == "python":
        return _format_python(ruleset)
    if fmt == "regex":
        return _format_regex(ruleset)
    if fmt == "hf-key-mapping":
        return _format_hf(ruleset)
    if fmt == "mmengine":
        return _format_mmengine(ruleset)
    raise MappingError(f"unknown rule format {fmt!r}; choose one of {', '.join(FORMATS)}.")


def _format_regex(ruleset: RuleSet) -> str:
    lines = _header(ruleset, "regex", "#")
    lines.append(
        "# Each line: PATTERN => REPLACEMENT; a pattern matches a whole key; first match wins."
    )
    for rule in ruleset.rules:
        lines.append(f"# {_rule_comment(rule)}")
        lines.append(f"{rule.pattern} => {rule.replacement}")
    lines += _footer(ruleset, "#")
    return "\n".join(lines) + "\n"


def _format_python(ruleset: RuleSet) -> str:
    lines = ['"""', *(line.removeprefix("# ") for line in _header(ruleset, "python", "#")), '"""']
    lines += ["", "import re", "", "RULES: list[tuple[str, str]] = ["]
    for rule in ruleset.rules:
        lines.append(f"    # {_rule_comment(rule)}")
        lines.append(f"    ({_py_str(rule.pattern)}, {_py_str(rule.replacement)}),")
    lines += [
        "]",
        "",
        "",
        "def rename(key: str) -> str | None:",
        '    """Source key → target key by the first matching rule; None: not in the mapping."""',
        "    for pattern, replacement in RULES:",
        "        m = re.fullmatch(pattern, key)",
        "        if m:",
        "            return m.expand(replacement)",
        "    return None",
        "",
        "",
        "def rename_state_dict(state_dict: dict) -> dict:",
        '    """Source state dict → renamed state dict (keys the mapping leaves out are dropped)."""',
        "    return {new: v for k, v in state_dict.items() if (new := rename(k)) is not None}",
    ]
    footer = _footer(ruleset, "#")
    if footer:
        lines += ["", *footer]
    return "\n".join(lines) + "\n"


def _hf_rules(ruleset: RuleSet) -> list[tuple[str, str, RenameRule]]:
    """Rules → (pattern, replacement) in transformers' key_mapping form.

    transformers 5 fills in only ``\\1`` and replaces the matched text, so a rule with a
    shared tail becomes a prefix rename (the tail is left in place) and a rule with more
    than one layer index is expanded per value of the others.
    """
    out: list[tuple[str, str, RenameRule]] = []
    for rule in _renaming_rules(ruleset):
        tpl = rule.template
        if tpl is None:  # literal rule
            out.append((f"^{rule.pattern}$", rule.replacement, rule))
            continue
        used = sorted({v for k, v in tpl.tgt if k == "r"})
        keep = used[0] if used else None
        expanded = _expand_groups(tpl, rule.keys, keep)
        for sub, keys in expanded:
            prefix = _Template(sub.src, False, sub.tgt, sub.allowed)
            pat = prefix.pattern()
            repl = prefix.replacement()
            if tpl.tail:
                pat = f"^{pat}\\." if sub.src else "^"
                repl = f"{repl}." if sub.tgt else ""
            else:
                pat = f"^{pat}$"
            out.append((pat, repl, RenameRule(pat, repl, keys, rule.transforms)))
    return out


def _expand_groups(
    tpl: _Template, keys: Sequence[str], keep: int | None
) -> list[tuple[_Template, tuple[str, ...]]]:
    """Template → templates with every digit group but ``keep`` made literal, per key family."""
    n = tpl.n_digit_groups
    if n <= 1 and (keep is not None or n == 0):
        return [(tpl, tuple(keys))]
    families: dict[tuple[str, ...], list[str]] = {}
    for k in keys:
        comps = k.split(".")
        values = tuple(c for c, tok in zip(comps, tpl.src, strict=False) if tok is None)
        fixed = tuple(v for i, v in enumerate(values) if i != keep)
        families.setdefault(fixed, []).append(k)
    out = []
    for fixed, fam in sorted(families.items()):
        src: list[_SrcTok] = []
        tgt: list[_TgtTok] = []
        gi = 0
        it = iter(fixed)
        literal_of: dict[int, str] = {}
        for tok in tpl.src:
            if tok is None:
                if gi == keep:
                    src.append(None)
                else:
                    literal_of[gi] = next(it)
                    src.append(literal_of[gi])
                gi += 1
            else:
                src.append(tok)
        for kind, val in tpl.tgt:
            if kind == "r":
                # The one group left open becomes group 0, the only one transformers fills.
                tgt.append(("l", literal_of[val]) if val in literal_of else ("r", 0))
            else:
                tgt.append((kind, val))
        allowed = ()
        if keep is not None and tpl.allowed and tpl.allowed[keep] is not None:
            allowed = (frozenset(c.split(".")[_group_pos(tpl, keep)] for c in fam),)
        out.append((_Template(tuple(src), tpl.tail, tuple(tgt), allowed), tuple(fam)))
    return out


def _group_pos(tpl: _Template, gi: int) -> int:
    seen = -1
    for pos, tok in enumerate(tpl.src):
        if tok is None:
            seen += 1
            if seen == gi:
                return pos
    raise IndexError(gi)


def _format_hf(ruleset: RuleSet) -> str:
    rules = _hf_rules(ruleset)
    problems = verify_hf(rules, ruleset)
    lines = [
        *_header(ruleset, "hf-key-mapping", "#"),
        "# Pass as transformers' from_pretrained(..., key_mapping=KEY_MAPPING); each pattern "
        "renames the part of a key it matches.",
        *_kept_note(ruleset, _renaming_rules(ruleset)),
    ]
    if len(rules) != len(_renaming_rules(ruleset)):
        lines.append(
            f"# {len(rules)} entries: transformers fills in only \\1, so rules with several "
            "layer indices are written once per index family."
        )
    if problems:
        lines.append(f"# WARNING: in transformers' semantics {len(problems)} key(s) differ:")
        lines += [f"#   {p}" for p in problems[:20]]
    for pat, _, rule in rules:
        if rule.transforms:
            lines.append(f"# {pat}: {_rule_comment(rule)}")
    body = json.dumps({pat: repl for pat, repl, _ in rules}, indent=4)
    lines.append(f"KEY_MAPPING = {body}")
    lines += _footer(ruleset, "#")
    return "\n".join(lines) + "\n"


def verify_hf(rules: Sequence[tuple[str, str, RenameRule]], ruleset: RuleSet) -> list[str]:
    """HF-form rules → keys whose rename under transformers' semantics differs from the mapping.

    transformers applies every matching renaming in turn, replacing the matched text, and
    leaves keys no renaming matches unchanged.
    """
    want = {k: t for r in ruleset.rules for k in r.keys for t in [r.apply(k)]}
    problems = []
    compiled = [(re.compile(p), repl) for p, repl, _ in rules]
    for key in ruleset.source_keys:
        out = key
        for pat, repl in compiled:
            m = pat.search(out)
            if m:
                out = out.replace(
                    m.group(0), repl.replace("\\1", m.group(1) if m.groups() else ""), 1
                )
        expected = want.get(key, key)
        if out != expected:
            problems.append(f"{key}: {out!r}, expected {expected!r}")
    return problems


def _renaming_rules(ruleset: RuleSet) -> list[RenameRule]:
    """Rules that change at least one key: loaders that keep unmatched keys need no others."""
    return [r for r in ruleset.rules if any(r.apply(k) != k for k in r.keys)]


def _kept_note(ruleset: RuleSet, kept: list[RenameRule]) -> list[str]:
    n = sum(len(r.keys) for r in ruleset.rules) - sum(len(r.keys) for r in kept)
    if not n:
        return []
    return [f"# {n} key(s) keep their names: the loader leaves them as they are, no rule needed."]


def _format_mmengine(ruleset: RuleSet) -> str:
    kept = _renaming_rules(ruleset)
    lines = [
        *_header(ruleset, "mmengine", "#"),
        "# Use: mmengine.runner.load_checkpoint(model, filename, revise_keys=revise_keys)",
        "# mmengine applies every (pattern, replacement) in turn with re.sub; patterns are "
        "anchored and ordered so no key is renamed twice.",
        *_kept_note(ruleset, kept),
        "revise_keys = [",
    ]
    for rule in kept:
        lines.append(f"    # {_rule_comment(rule)}")
        lines.append(f"    ({_py_str('^' + rule.pattern + '$')}, {_py_str(rule.replacement)}),")
    lines.append("]")
    lines += _footer(ruleset, "#")
    return "\n".join(lines) + "\n"
