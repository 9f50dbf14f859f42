"""What a reader should look at first: one definition of score bands, review order and status.

Every rendering (terminal, Markdown, HTML) colours, counts and orders pairs with these
functions, so a count of pairs to review always equals the rows coloured yellow or red.
A pair's band comes from its score (a calibrated probability, see ``docs/scores.md``), and a
pair the engine flagged (``confidence: low`` or ``ambiguous``) is never shown green, whatever
its score.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from weightmapper.progress import stage

BANDS: tuple[str, ...] = ("high", "medium", "low")
"""Band names, best first: green > 0.8, yellow 0.6–0.8, red < 0.6."""

BAND_LIMITS: dict[str, str] = {"high": "> 0.8", "medium": "0.6–0.8", "low": "< 0.6"}
"""Band → the score range it covers, for legends."""

SORTS: tuple[str, ...] = ("score", "name")
"""Orders a pair table can take: ``score`` puts risky pairs first, ``name`` is natural order."""


def natural_key(name: str) -> tuple[object, ...]:
    """Tensor name → :func:`weightmapper.inventory.natural_key` (imported when first sorting,
    so that naming the sorts, as ``--help`` does, loads no torch)."""
    from weightmapper.inventory import natural_key as key

    return key(name)


def score_band(score: float) -> str:
    """Score → ``high`` (> 0.8), ``medium`` (0.6–0.8) or ``low`` (< 0.6)."""
    if score > 0.8:
        return "high"
    if score >= 0.6:
        return "medium"
    return "low"


def flagged(entry: Mapping[str, Any]) -> bool:
    """Pair or split/merge dict → True when the engine marked it low confidence or ambiguous."""
    return entry.get("confidence") in ("low", "ambiguous") or bool(entry.get("ambiguous"))


SIGNAL_TEXT: dict[str, str] = {
    "shape": "1 equal; less for an unexplained transpose",
    "name": "names alike (synonyms, layer numbers)",
    "hierarchy": "parent modules and types alike",
    "order": "positions in forward or key order agree",
    "structure": "how unambiguous the choice was",
    "raw": "weighted mean, before calibration",
    "runner_up": "raw score of the best alternative",
    "margin": "raw minus the runner-up's",
    "name_margin": "that gap in the names alone",
    "roles": "1 agree, 0.5 unknown, 0 differ",
    "unique": "1 / tensors of its shape",
    "index": "layer indices agree",
    "role_unique": "1 a role the network has once",
    "order_known": "0 key order says nothing (sorted)",
    "context": "1 with its siblings, 0 not, 0.5 unknown",
    "hint": "1 the fused name says so (qkv, in_proj)",
    "layout_settled": "0 the fused row layout is a guess",
    "order_settled": "0 names do not settle the part order",
}
"""Breakdown key → what its value means, in a few words (``docs/scores.md`` says more)."""

FLAG_TEXT = {
    "low": "low confidence: the evidence could not settle this pair",
    "ambiguous": "ambiguous: an alternative scored nearly as well",
}


def pair_notes(entry: Mapping[str, Any]) -> list[str]:
    """Pair or split/merge dict → what to know beyond its score: its flag, then its note.

    Every view (terminal, Markdown, HTML) says the same, so a ``?`` is explained alike.
    """
    notes = []
    if entry.get("confidence") == "low":
        notes.append(FLAG_TEXT["low"])
    elif entry.get("confidence") == "ambiguous" or entry.get("ambiguous"):
        notes.append(FLAG_TEXT["ambiguous"])
    if entry.get("note"):
        notes.append(str(entry["note"]))
    return notes


def pair_band(entry: Mapping[str, Any]) -> str:
    """Pair or split/merge dict → its band; a flagged pair is at best ``medium``."""
    band = score_band(float(entry["score"]))
    return "medium" if band == "high" and flagged(entry) else band


def entry_score(entry: Mapping[str, Any]) -> float:
    """Pair dict → the number to rank it by: its calibrated probability if any, else its score."""
    probability = entry.get("probability")
    return float(probability if isinstance(probability, int | float) else entry["score"])


def review_key(entry: Mapping[str, Any]) -> tuple[int, int, float, list[Any]]:
    """Pair or split/merge dict → sort key putting the riskiest first.

    Red before yellow before green; within a band flagged pairs first, then the lowest
    score (or probability); ties in natural key order, so the order is stable.
    """
    name = entry.get("source") or (entry.get("sources") or [""])[0]
    return (
        len(BANDS) - 1 - BANDS.index(pair_band(entry)),
        0 if flagged(entry) else 1,
        entry_score(entry),
        natural_key(name),
    )


def ordered(entries: Iterable[Mapping[str, Any]], sort: str = "score") -> list[Mapping[str, Any]]:
    """Pairs (and splits/merges) + ``score`` or ``name`` → them in that display order."""
    items = list(entries)
    if sort == "name":
        return sorted(
            items, key=lambda e: natural_key(e.get("source") or (e.get("sources") or [""])[0])
        )
    if sort != "score":
        raise ValueError(f"unknown sort {sort!r}; expected one of {', '.join(SORTS)}")
    return sorted(items, key=review_key)


def band_counts(report: Mapping[str, Any]) -> dict[str, int]:
    """Report → number of pairs and splits/merges per band (``high``, ``medium``, ``low``)."""
    mapping = report["mapping"]
    counts = dict.fromkeys(BANDS, 0)
    for entry in [*mapping["pairs"], *mapping.get("multi", [])]:
        counts[pair_band(entry)] += 1
    return counts


def mapping_status(report: Mapping[str, Any]) -> tuple[str, str] | None:
    """Report → (state, sentence) saying what is known of the mapping; None when nothing is.

    A status recorded in the report (``status`` at the top, in ``mapping`` or in its
    ``metadata``; a string or a dict with ``status`` and ``detail``) wins. Otherwise it is
    read from the checks: equal outputs are ``proven equal``, different ones ``differs at``
    the first diverging module, a strict load alone ``loads, not proven``. The state is one
    of ``proven``, ``loads``, ``differs``, ``unknown``.
    """
    mapping = report.get("mapping") or {}
    for holder in (report, mapping, mapping.get("metadata") or {}):
        recorded = holder.get("status")
        if recorded:
            return _recorded_status(recorded)
    check = report.get("functional_check")
    if check:
        if check.get("equal"):
            return "proven", "proven equal"
        where = check.get("first_diverging") or "the outputs"
        return "differs", f"differs at {where}"
    validation = report.get("validation")
    if validation:
        if validation.get("ok"):
            return "loads", "loads, not proven"
        return "differs", "does not load"
    return None


def _recorded_status(recorded: Any) -> tuple[str, str]:
    if isinstance(recorded, Mapping):
        label = str(recorded.get("label") or recorded.get("status") or recorded.get("state"))
        detail = recorded.get("detail") or recorded.get("reason")
        text = f"{label}: {detail}" if detail and str(detail) not in label else label
    else:
        label = text = str(recorded)
    low = label.lower().replace("_", " ")
    if low.startswith("proven"):
        state = "proven"
    elif low.startswith("loads"):
        state = "loads"
    elif low.startswith(("differs", "fail", "does not")):
        state = "differs"
    else:
        state = "unknown"
    return state, text


def _steps(transform: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if transform.get("name") == "chain":
        return [
            s for s in (transform.get("params") or {}).get("steps", []) if isinstance(s, Mapping)
        ]
    return [transform]


def _step_text(step: Mapping[str, Any]) -> str:
    name = str(step.get("name", "identity"))
    params = step.get("params") or {}
    dim = params.get("dim", 0)
    sizes = [int(s) for s in params.get("sizes") or []]
    if name == "split":
        each = " (each tensor)" if params.get("each") else ""
        return f"split dim {dim} into {' + '.join(map(str, sizes))}{each}"
    if name == "merge":
        text = f"concatenate along dim {dim}"
        if sizes:
            text += f" ({' + '.join(map(str, sizes))})"
        if params.get("group"):
            text += f" in groups of {params['group']}"
        return text
    if name == "stack":
        return f"stack along a new dim {dim}"
    if name == "unstack":
        count = params.get("count")
        return f"unstack dim {dim}" + (f" into {count}" if count else "")
    shown = ", ".join(f"{k}={params[k]}" for k in sorted(params))
    return f"{name}({shown})" if shown else name


def multi_layout(entry: Mapping[str, Any]) -> str:
    """Split/merge dict → one sentence: which dim, which sizes, in which order the steps run."""
    return ", then ".join(_step_text(s) for s in _steps(entry.get("transform") or {}))


def multi_parts(entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Split/merge dict → (key, its slice of the fused tensor) for each part, in fused order.

    A split's targets and a merge's sources are the parts; the slice reads ``dim 0 [0:32)``
    when the sizes are recorded, else it is empty.
    """
    split = entry.get("kind") == "split" or len(entry.get("sources") or []) == 1
    parts = list(entry["targets"] if split else entry["sources"])
    step = next(
        (s for s in _steps(entry.get("transform") or {}) if s.get("name") in ("split", "merge")),
        None,
    )
    params = (step or {}).get("params") or {}
    sizes = [int(s) for s in params.get("sizes") or []]
    if not sizes or len(sizes) != len(parts) or params.get("each") or params.get("group"):
        return [(p, "") for p in parts]
    out, start = [], 0
    for part, size in zip(parts, sizes, strict=True):
        out.append((part, f"dim {params.get('dim', 0)} [{start}:{start + size})"))
        start += size
    return out


REASON_TEXT: dict[str, str] = {
    "no_shape_partner": "no key on the other side has a compatible shape, even transformed",
    "below_threshold": "the best candidate scored under the threshold",
    "lost_to_better_candidate": "its candidates were taken by pairs that scored higher",
    "buffer_excluded": "a buffer with no counterpart in its matched module",
    "incompatible_component": "every shape-compatible candidate is in a family declared incompatible",
    "ambiguous": "several candidates tie and nothing separates them; a guess would be unsafe",
    "no_candidates": "the other side has no keys left",
}
"""Unmatched reason code → one sentence saying what it means."""


def unmatched_by_reason(items: Iterable[Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Unmatched key dicts → (reason, its keys in natural order), largest group first."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for u in items:
        groups.setdefault(str(u["reason"]), []).append(u)
    return [
        (reason, sorted(keys, key=lambda u: natural_key(u["name"])))
        for reason, keys in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]


@dataclass(frozen=True)
class PairGroup:
    """Pairs renamed by one rule (one layer template), or the splits and merges."""

    source: str
    """Readable source template: ``layers.{n}.attn.q_proj.*`` (a literal key for one pair)."""
    target: str
    """Readable target template, same placeholders."""
    entries: tuple[Mapping[str, Any], ...]
    """The pair (or split/merge) dicts of the group, riskiest first."""

    @property
    def worst(self) -> Mapping[str, Any]:
        """The riskiest entry: it decides the group's colour and place."""
        return self.entries[0]


def pair_groups(report: Mapping[str, Any]) -> list[PairGroup]:
    """Report → its pairs grouped by the rename rule (layer template) covering them.

    The rules are :func:`weightmapper.rules.compress_mapping`'s, so a group is what one
    verified regex renames; splits and merges form one more group. Groups come riskiest
    first (the band and score of their worst entry), entries inside riskiest first.
    """
    from weightmapper.result import MappingResult
    from weightmapper.rules import compress_mapping

    mapping = report["mapping"]
    by_source = {p["source"]: p for p in mapping["pairs"]}
    groups: list[PairGroup] = []
    if by_source:
        with stage("group pairs by rule"):
            rules = compress_mapping(MappingResult.from_dict(dict(mapping))).rules
        for rule in rules:
            entries = [by_source[k] for k in rule.keys if k in by_source]
            if not entries:
                continue
            src, tgt = readable_rule(rule.pattern, rule.replacement)
            groups.append(PairGroup(src, tgt, tuple(ordered(entries))))
    multi = mapping.get("multi", [])
    if multi:
        groups.append(PairGroup("splits and merges", "", tuple(ordered(multi))))
    return sorted(groups, key=lambda g: review_key(g.worst))


_GROUP = re.compile(r"\((\\d\+|\.\+|[^()]*)\)")


def readable_rule(pattern: str, replacement: str) -> tuple[str, str]:
    """Rename rule regex + replacement → (source, target) templates a reader can scan.

    A layer-index group reads ``{n}`` (``{0|1}`` when only some indices are allowed), a
    shared tail ``*``; the target uses the same placeholders, so
    ``layers\\.(\\d+)\\.fc\\.(.+)`` → ``model.\\1.linear.\\2`` reads
    ``layers.{n}.fc.*`` → ``model.{n}.linear.*``.
    """
    labels: list[str] = []

    def group(m: re.Match[str]) -> str:
        body = m.group(1)
        label = "{n}" if body == r"\d+" else "*" if body == ".+" else "{" + body + "}"
        labels.append(label)
        return "\0" + str(len(labels) - 1) + "\0"

    marked = _GROUP.sub(group, pattern)
    source = re.sub(r"\\(.)", r"\1", marked)
    source = re.sub(r"\0(\d+)\0", lambda m: labels[int(m.group(1))], source)

    def ref(m: re.Match[str]) -> str:
        index = int(m.group(1) or m.group(2)) - 1
        return labels[index] if 0 <= index < len(labels) else m.group(0)

    target = re.sub(r"\\g<(\d+)>|\\(\d+)", ref, replacement).replace("\\\\", "\\")
    return source, target
