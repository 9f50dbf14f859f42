"""Rich views of a mapping: the mapping table, two module trees side by side, a score breakdown.

Each view takes a WeightMapper, a MappingResult or a report dict (so a saved report
renders the same way as a live mapper) and prints to a rich Console: pass your own
(``Console(record=True)`` to capture it); the default prints to stdout and falls back to
plain text when stdout is not a terminal. Every view returns the Console it printed to.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.segment import Segment
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from weightmapper.errors import MappingError
from weightmapper.report import (
    REPORT_KIND,
    build_report,
    module_links,
    report_status,
    status_label,
    transform_badge,
)
from weightmapper.result import MappingResult, check_verdict, diff_text
from weightmapper.review import (
    SIGNAL_TEXT,
    band_counts,
    flagged,
    multi_layout,
    ordered,
    pair_band,
    pair_notes,
    score_band,
)
from weightmapper.sanitize import visible

BAND_STYLES: dict[str, str] = {"high": "green", "medium": "yellow", "low": "red"}
"""Score band → rich colour: green > 0.8, yellow 0.6–0.8, red < 0.6."""

_BAR_WIDTH = 24


# --- inputs ----------------------------------------------------------------------------------


def as_report(obj: Any, result: MappingResult | None = None) -> dict[str, Any]:
    """WeightMapper, MappingResult or report dict (+ optional result override) → report dict."""
    if isinstance(obj, Mapping) and obj.get("kind") == REPORT_KIND:
        if result is None:
            return dict(obj)
        report = dict(obj)
        report["mapping"] = build_report(result, hash_inputs=False)["mapping"]
        return report
    if isinstance(obj, MappingResult):
        return build_report(result or obj, hash_inputs=False)
    return build_report(obj, hash_inputs=False, result=result)


PIPE_WIDTH = 160
"""Width of the plain text written when stdout is not a terminal (keys stay on one line)."""


def safe_text(value: Any, style: str = "") -> Text:
    """Any value from a file (a name, a path, a reason) → rich Text showing it verbatim.

    Text is never parsed as markup (a name ``[/]`` or ``[link=…]`` stays literal) and
    control and bidi characters become visible escapes (see ``weightmapper.sanitize``).
    """
    return Text(visible(value), style=style)


class SafeConsole(Console):
    """A rich Console that never lets text write control sequences to the terminal.

    Whatever reaches it (a name that slipped past ``safe_text``, an error message quoting
    one), the text of every segment has its control characters shown as escapes; the
    styles and cursor controls rich itself emits are untouched.
    """

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            Segment(visible(text, keep_newlines=True), style, control)
            if not control and text
            else Segment(text, style, control)
            for text, style, control in buffer
        )


def default_console() -> Console:
    """() → Console on stdout: the terminal's width, or 160 columns of plain text in a pipe."""
    console = SafeConsole(soft_wrap=False, highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, PIPE_WIDTH)
    return console


def _console(console: Console | None) -> Console:
    return console if console is not None else default_console()


def _shape(shape: Any) -> str:
    dims = list(shape or [])
    return "×".join(str(d) for d in dims) if dims else "scalar"


def score_text(score: float, band: str | None = None) -> Text:
    """Score (+ its band, else the score's) → Text coloured green, yellow or red."""
    return Text(f"{score:.3f}", style=BAND_STYLES[band or score_band(score)])


# --- mapping table ---------------------------------------------------------------------------


def visualize_mapping(
    mapper: Any,
    result: MappingResult | None = None,
    show_unmatched: bool = True,
    max_matches: int = 30,
    max_unmatched: int = 15,
    *,
    sort: str = "score",
    console: Console | None = None,
) -> Console:
    """Mapper/result/report → printed summary panel, pair table and unmatched keys.

    Scores are coloured by band; each row has a transform badge (✓ exact, 🔄 transpose,
    📐 reshape, split, merge), a GROUP/INDIV badge and both shapes. ``sort="score"`` puts
    the pairs to review first (red, then yellow, flagged ones first, lowest score first);
    ``sort="name"`` lists them in natural key order. ``max_matches`` and ``max_unmatched``
    cap the rows shown (the panel counts them all).
    """
    report = as_report(mapper, result)
    con = _console(console)
    con.print(summary_panel(report))
    con.print(mapping_table(report, max_matches=max_matches, sort=sort))
    notes = notes_table(report, max_rows=max_matches)
    if notes is not None:
        con.print(notes)
    if show_unmatched:
        for side in ("source", "target"):
            table = unmatched_table(report, side, max_unmatched=max_unmatched)
            if table is not None:
                con.print(table)
    return con


def summary_panel(report: Mapping[str, Any]) -> Panel:
    """Report → Panel with names, coverage, counts and the settings that decided the pairs."""
    mapping = report["mapping"]
    cov = mapping["coverage"]
    src, tgt = report["inputs"]["source"], report["inputs"]["target"]
    settings = report.get("settings") or {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("status", status_text(report))
    grid.add_row("source", safe_text(f"{src['name']} ({src['tensor_count']} tensors)"))
    grid.add_row("target", safe_text(f"{tgt['name']} ({tgt['tensor_count']} tensors)"))
    grid.add_row(
        "coverage",
        _coverage_text(cov["source_coverage"], "source")
        + Text("  ")
        + _coverage_text(cov["target_coverage"], "target"),
    )
    if "target_confident_coverage" in cov:
        grid.add_row(
            "confident",
            _coverage_text(cov["source_confident_coverage"], "source")
            + Text("  ")
            + _coverage_text(cov["target_confident_coverage"], "target"),
        )
    grid.add_row(
        "pairs",
        f"{cov['mapped_pairs']} one-to-one, {cov['multi_pairs']} split/merge; unmatched: "
        f"{cov['source_unmatched']} source, {cov['target_unmatched']} target",
    )
    counts = band_counts(report)
    n_flagged = sum(1 for e in [*mapping["pairs"], *mapping.get("multi", [])] if flagged(e))
    review = Text(f"{counts['high']} green", style="green")
    review.append(", ")
    review.append(f"{counts['medium']} yellow", style="yellow")
    review.append(", ")
    review.append(f"{counts['low']} red", style="red")
    if counts["medium"] + counts["low"]:
        review.append(f": {counts['medium'] + counts['low']} to review")
        if n_flagged:
            review.append(f" ({n_flagged} flagged low confidence or ambiguous)")
    grid.add_row("scores", review)
    shown = {
        k: settings[k] for k in ("threshold", "strategy", "buffer_matching_mode") if k in settings
    }
    if shown:
        grid.add_row("settings", safe_text(", ".join(f"{k}={v}" for k, v in shown.items())))
    check = report.get("functional_check")
    if check:
        grid.add_row("outputs", check_text(check))
    validation = report.get("validation")
    if validation:
        grid.add_row("loads", validation_text(validation))
    return Panel(grid, title="weightmapper: mapping summary", box=box.ROUNDED, expand=False)


_STATUS_STYLES = {
    "proven_equal": "bold green",
    "loads_not_proven": "yellow",
    "differs": "bold red",
    "does_not_load": "bold red",
}


def status_text(report: Mapping[str, Any]) -> Text:
    """Report → the mapping's status as one coloured line (``proven equal``, ``differs at X``)."""
    status = report_status(report)
    text = Text(status_label(report), style=_STATUS_STYLES.get(status.get("state", ""), ""))
    if status.get("detail"):
        text.append(f": {status['detail']}")
    return text


def check_text(check: Mapping[str, Any]) -> Text:
    """Functional-check dict → one coloured line (equal or not, the differences)."""
    equal = bool(check.get("equal"))
    text = Text(check_verdict(check), style="green" if equal else "bold red")
    text.append(f" ({diff_text(check)})")
    if check.get("first_diverging"):
        text.append(f"; first diverging module {check['first_diverging']}", style="red")
    return text


def validation_text(validation: Mapping[str, Any]) -> Text:
    """Validation dict → one coloured line (loads strictly, or what is missing/unexpected)."""
    if validation.get("ok"):
        return Text("strictly, every target tensor present", style="green")
    counts = ", ".join(
        f"{len(validation.get(k) or [])} {k.replace('_', ' ')}"
        for k in ("missing", "unexpected", "shape_mismatches")
    )
    return Text(f"NO: {counts}", style="bold red")


def _coverage_text(fraction: float, label: str) -> Text:
    style = "green" if fraction >= 0.999 else "yellow" if fraction >= 0.8 else "red"
    return Text(f"{label} {fraction:.1%}", style=style)


def mapping_table(
    report: Mapping[str, Any], *, max_matches: int | None = 30, sort: str = "score"
) -> Table:
    """Report → Table of pairs and splits/merges in ``sort`` order, capped at ``max_matches``.

    ``score`` (the default) shows the pairs to review first, ``name`` natural key order with
    splits and merges last.
    """
    mapping = report["mapping"]
    table = Table(title="Mapping", box=box.SIMPLE_HEAD, show_lines=False)
    table.add_column("source", no_wrap=True)
    table.add_column("→ target", no_wrap=True)
    table.add_column("score", justify="right")
    table.add_column("transform")
    table.add_column("match")
    table.add_column("shapes", overflow="fold")
    rows: list[tuple[Any, ...]] = []
    entries = ordered(mapping["pairs"], sort) + ordered(mapping.get("multi", []), sort)
    if sort == "score":
        entries = ordered(entries, sort)
    for e in entries:
        conf = Text(" ?", style="yellow") if flagged(e) else Text("")
        if "sources" in e:
            rows.append(
                (
                    Text("\n".join(visible(n) for n in e["sources"])),
                    Text("\n".join(visible(n) for n in e["targets"])),
                    score_text(e["score"], pair_band(e)) + conf,
                    safe_text(transform_badge({"name": e["kind"]})),
                    _match_badge(True),
                    safe_text(multi_layout(e)),
                )
            )
            continue
        rows.append(
            (
                safe_text(e["source"]),
                safe_text(e["target"]),
                score_text(e["score"], pair_band(e)) + conf,
                safe_text(transform_badge(e.get("transform"))),
                _match_badge(bool(e.get("group", True))),
                f"{_shape(e.get('source_shape'))} → {_shape(e.get('target_shape'))}",
            )
        )
    limit = len(rows) if max_matches is None else max_matches
    for row in rows[:limit]:
        table.add_row(*row)
    if len(rows) > limit:
        table.caption = f"… {len(rows) - limit} more rows not shown"
    return table


def notes_table(report: Mapping[str, Any], *, max_rows: int | None = 30) -> Table | None:
    """Report → Table of the pairs flagged ``?`` or carrying a note, with why; None when none.

    The flag in words (low confidence, ambiguous) and what the pair rests on beyond its
    score (a layout assumed from names, a cross-role pair), riskiest first.
    """
    mapping = report["mapping"]
    entries = ordered([*mapping["pairs"], *mapping.get("multi", [])], "score")
    noted = [(e, pair_notes(e)) for e in entries]
    noted = [(e, n) for e, n in noted if n]
    if not noted:
        return None
    table = Table(title=f"Pairs to check ({len(noted)})", box=box.SIMPLE_HEAD)
    table.add_column("source", no_wrap=True)
    table.add_column("→ target", no_wrap=True)
    table.add_column("why", style="yellow", overflow="fold")
    limit = len(noted) if max_rows is None else max_rows
    for e, notes in noted[:limit]:
        table.add_row(
            Text("\n".join(visible(n) for n in e.get("sources") or [e["source"]])),
            Text("\n".join(visible(n) for n in e.get("targets") or [e["target"]])),
            Text("\n".join(visible(n) for n in notes)),
        )
    if len(noted) > limit:
        table.caption = f"… {len(noted) - limit} more"
    return table


def _match_badge(group: bool) -> Text:
    return Text("GROUP", style="cyan") if group else Text("INDIV", style="magenta")


def unmatched_table(
    report: Mapping[str, Any], side: str, *, max_unmatched: int | None = 15
) -> Table | None:
    """Report + side → Table of that side's unmatched keys with reasons; None when none."""
    unmatched = report["mapping"]["unmatched"][side]
    if not unmatched:
        return None
    table = Table(title=f"Unmatched {side} keys ({len(unmatched)})", box=box.SIMPLE_HEAD)
    table.add_column("key", no_wrap=True)
    table.add_column("shape")
    table.add_column("reason", style="red")
    table.add_column("detail", overflow="fold")
    limit = len(unmatched) if max_unmatched is None else max_unmatched
    for u in unmatched[:limit]:
        table.add_row(
            safe_text(u["name"]),
            _shape(u.get("shape")),
            safe_text(u["reason"]),
            safe_text(u.get("detail") or ""),
        )
    if len(unmatched) > limit:
        table.caption = f"… {len(unmatched) - limit} more"
    return table


# --- hierarchies -----------------------------------------------------------------------------


def visualize_hierarchies(
    mapper: Any,
    show_matches: bool = False,
    max_depth: int = 5,
    *,
    console: Console | None = None,
) -> Console:
    """Mapper/result/report → the two module trees printed side by side.

    Each module with tensors shows W/B badges with shapes inline (other tensors by name,
    buffers dimmed). With ``show_matches`` a matched module is marked ✓ with its partner,
    a partly matched one ◐ and an unmatched one ✗. Modules deeper than ``max_depth`` are
    folded into a count.
    """
    report = as_report(mapper)
    con = _console(console)
    links = module_links(report) if show_matches else None
    src, tgt = report["inputs"]["source"], report["inputs"]["target"]
    grid = Table.grid(padding=(0, 4), expand=False)
    grid.add_column()
    grid.add_column()
    grid.add_row(
        module_tree(report, "source", src["name"], max_depth, links),
        module_tree(report, "target", tgt["name"], max_depth, links),
    )
    con.print(grid)
    return con


def _tensor_badges(group: Mapping[str, Any]) -> Text:
    text = Text()
    buffers = [t for t in group["tensors"] if t.get("buffer")]
    for t in group["tensors"]:
        if t.get("buffer"):
            continue
        label = {"weight": "W", "bias": "B"}.get(t["name"], visible(t["name"]))
        text.append(" [")
        text.append(label, style="bold blue" if label in ("W", "B") else "blue")
        text.append(f" {_shape(t.get('shape'))}]")
    if buffers:
        # Buffers (running stats, counters) rarely decide a match: one dim note, not a badge each.
        text.append(f" +{len(buffers)} buffer{'s' if len(buffers) > 1 else ''}", style="dim")
    return text


def module_tree(
    report: Mapping[str, Any],
    side: str,
    title: str,
    max_depth: int = 5,
    links: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> Tree:
    """Report + side → rich Tree of module paths with tensor badges (and match marks)."""
    groups = {g["path"]: g for g in report["hierarchy"][side]}
    root = Tree(safe_text(f"{side}: {title}", style="bold"))
    nodes: dict[str, Tree] = {"": root}
    folded: dict[str, int] = {}
    side_links = (links or {}).get(side, {})
    arrow = "→" if side == "source" else "←"
    for path in _ordered_paths(groups):
        parts = path.split(".") if path else []
        if len(parts) > max_depth:
            anchor = ".".join(parts[:max_depth])
            folded[anchor] = folded.get(anchor, 0) + 1
            parts = parts[:max_depth]
            _ensure(nodes, parts, groups)
            continue
        node = _ensure(nodes, parts, groups)
        group = groups.get(path)
        if group is None:
            continue
        label = node.label if isinstance(node.label, Text) else Text(str(node.label))
        label.append_text(_tensor_badges(group))
        if links is not None:
            label.append_text(_match_mark(side_links.get(path), arrow))
        node.label = label
    for anchor, n in folded.items():
        nodes[anchor].add(Text(f"… {n} module(s) deeper than depth {max_depth}", style="dim"))
    return root


def _ordered_paths(groups: Mapping[str, Any]) -> list[str]:
    # Keep the inventory's order (registration or execution) rather than sorting names.
    return list(groups)


def _ensure(nodes: dict[str, Tree], parts: list[str], groups: Mapping[str, Any]) -> Tree:
    for i in range(1, len(parts) + 1):
        path = ".".join(parts[:i])
        if path not in nodes:
            parent = nodes[".".join(parts[: i - 1])]
            label = safe_text(parts[i - 1])
            module_type = (groups.get(path) or {}).get("module_type")
            if module_type:
                label.append(f" ({visible(module_type)})", style="dim")
            nodes[path] = parent.add(label)
    return nodes[".".join(parts)]


def _match_mark(entry: Mapping[str, Any] | None, arrow: str) -> Text:
    if entry is None:
        return Text()
    partners = ", ".join(visible(p) for p in entry["partners"]) or "(root)"
    if entry["matched"] == 0:
        return Text("  ✗ unmatched", style="red")
    if entry["matched"] < entry["total"]:
        return Text(f"  ◐ {arrow} {partners} ({entry['matched']}/{entry['total']})", style="yellow")
    return Text(f"  ✓ {arrow} {partners}", style="green")


# --- score breakdown -------------------------------------------------------------------------


def visualize_score_breakdown(
    mapper: Any, param_name: str, *, console: Console | None = None
) -> Console:
    """Mapper/result/report + a source (or target) key → its per-signal scores as bars.

    Shows each signal's sub-score, its weight and its contribution to the combined score
    (weight × sub-score / Σ weights), each as a bar, when the mapping recorded its weights;
    the weighted sum is the raw score, which the calibration turns into the pair's probability
    of being right from it and the evidence listed without a weight (``docs/scores.md``).
    """
    report = as_report(mapper)
    con = _console(console)
    entry = find_pair(report, param_name)
    breakdown: dict[str, float] = entry["breakdown"]
    weights = _weights(report, breakdown)
    total_w = sum(weights.values()) if weights else 0.0
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("signal")
    table.add_column("sub-score", justify="right")
    table.add_column("", no_wrap=True)
    table.add_column("weight", justify="right")
    table.add_column("contribution", justify="right")
    table.add_column("", no_wrap=True)
    table.add_column("meaning", style="dim", overflow="fold")
    table.caption = "weight —: evidence the calibration reads beside the raw score (docs/scores.md)"
    total = 0.0
    for signal in sorted(breakdown):
        value = float(breakdown[signal])
        w = weights.get(signal) if weights else None
        part = w * value / total_w if w is not None and total_w else None
        total += part or 0.0
        table.add_row(
            safe_text(signal),
            score_text(value),
            _bar(value),
            "—" if w is None else f"{w:.2f}",
            "—" if part is None else f"{part:.3f}",
            Text("") if part is None else _bar(part, style="cyan"),
            SIGNAL_TEXT.get(signal, ""),
        )
    if weights:
        table.add_section()
        table.add_row(
            "weighted sum", "", "", f"{total_w:.2f}", f"{total:.3f}", _bar(total, style="cyan")
        )
    source = ", ".join(entry.get("sources") or [entry.get("source", "")])
    target = ", ".join(entry.get("targets") or [entry.get("target", "")])
    header = Text()
    header.append(visible(f"{source} → {target}") + "\n", style="bold")
    if "raw" in breakdown:
        header.append("probability right ")
        header.append_text(score_text(float(entry["score"])))
        header.append(f" (raw {float(breakdown['raw']):.3f})")
    else:
        header.append("combined score ")
        header.append_text(score_text(float(entry["score"])))
    header.append(f"   transform {transform_badge(entry.get('transform'))}")
    if "stage" in entry:
        header.append(f"   stage {entry['stage'] or '—'}")
    if entry.get("confidence") == "low":
        header.append("   low confidence", style="yellow")
    elif entry.get("confidence") == "ambiguous":
        header.append("   ambiguous: an alternative scored nearly as well", style="yellow")
    if entry.get("note"):
        header.append("\n" + visible(str(entry["note"])), style="yellow")
    if not weights:
        header.append(
            "\nweights not recorded in this mapping; contributions not shown", style="dim"
        )
    con.print(Panel(Group(header, table), title="score breakdown", expand=False))
    return con


def find_pair(report: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Report + a source or target key → its pair (or split/merge) dict; MappingError if none."""
    mapping = report["mapping"]
    for p in mapping["pairs"]:
        if name in (p["source"], p["target"]):
            return p
    for m in mapping.get("multi", []):
        if name in m["sources"] or name in m["targets"]:
            return m
    for side in ("source", "target"):
        for u in mapping["unmatched"][side]:
            if u["name"] == name:
                raise MappingError(
                    f"{name!r} is an unmatched {side} key ({u['reason']}: "
                    f"{u.get('detail') or 'no detail'}), so it has no score breakdown."
                )
    keys = [p["source"] for p in mapping["pairs"]] + [p["target"] for p in mapping["pairs"]]
    close = difflib.get_close_matches(name, keys, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise MappingError(f"{name!r} is not a key of this mapping (source or target).{hint}")


def _weights(report: Mapping[str, Any], breakdown: Mapping[str, float]) -> dict[str, float]:
    settings = report.get("settings") or {}
    weights = settings.get("weights") or report["mapping"].get("settings", {}).get("weights")
    if not isinstance(weights, Mapping):
        return {}
    return {k: float(v) for k, v in weights.items() if k in breakdown}


def _bar(value: float, style: str | None = None) -> Text:
    filled = max(0, min(_BAR_WIDTH, round(value * _BAR_WIDTH)))
    bar = Text("█" * filled, style=style or BAND_STYLES[score_band(value)])
    bar.append("░" * (_BAR_WIDTH - filled), style="dim")
    return bar
