"""Report dict → one self-contained HTML page (no network, no CDN) for sharing a mapping.

The page holds a summary (the mapping's status, pairs to review per colour band), a score
histogram (inline SVG), the pairs grouped by layer template (one row per rename rule,
expandable to its pairs), a sortable and filterable pair table whose rows expand to their
score breakdown (splits and merges with their parts, sizes and order), the unmatched keys
grouped by reason, both module trees side by side with matched modules linked, and the
validation results. CSS and JavaScript come from
``report_assets/`` and are inlined; a Content-Security-Policy forbids any fetch. The
output depends only on the report, so a saved report re-renders byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from weightmapper.atomic import atomic_write_text
from weightmapper.report import check_headline, module_links
from weightmapper.review import (
    BAND_LIMITS,
    REASON_TEXT,
    SIGNAL_TEXT,
    band_counts,
    flagged,
    mapping_status,
    multi_layout,
    multi_parts,
    ordered,
    pair_band,
    pair_groups,
    pair_notes,
    score_band,
    unmatched_by_reason,
)

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)

# Collected before any other script runs, so the self-check can report load-time errors.
_ERROR_CATCHER = """
window.__wmErrors = [];
window.addEventListener("error", function (e) {
  window.__wmErrors.push(String(e.message || e.type) + " @" + (e.lineno || 0));
});
window.addEventListener("securitypolicyviolation", function (e) {
  window.__wmErrors.push("CSP blocked " + e.blockedURI);
});
(function () {
  var orig = console.error;
  console.error = function () {
    window.__wmErrors.push(Array.prototype.join.call(arguments, " "));
    return orig.apply(console, arguments);
  };
})();
"""

# Symbols every common font has: emoji badges render as empty boxes without an emoji font.
HTML_BADGES: dict[str, str] = {
    "identity": "✓ exact",
    "transpose": "⇄ transpose",
    "reshape": "⊞ reshape",
    "split": "⋔ split",
    "merge": "⊕ merge",
    "stack": "⊕ merge",
}

_HIST_BINS = 10
_OPEN_DEPTH = 2


@lru_cache(maxsize=2)
def _asset(name: str) -> str:
    return resources.files("weightmapper").joinpath("report_assets", name).read_text("utf-8")


def _script_text(text: str) -> str:
    # A literal "</" inside an inline script would end the element early.
    return text.replace("</", "<\\/")


def _shape(shape: Any) -> str:
    dims = list(shape or [])
    return "×".join(str(d) for d in dims) if dims else "scalar"


def render_html(report: Mapping[str, Any], *, title: str | None = None) -> str:
    """Report dict → HTML text of a self-contained page (inline CSS/JS, no external fetch)."""
    src, tgt = report["inputs"]["source"], report["inputs"]["target"]
    title = title or f"weightmapper: {src['name']} → {tgt['name']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>\n{_asset('report.css')}</style>",
        f"<script>{_ERROR_CATCHER}</script>",
        "</head>",
        "<body>",
        f"<h1>{escape(src['name'])} → {escape(tgt['name'])}</h1>",
        f'<div class="sub">weightmapper {escape(str(report.get("tool_version", "?")))} · '
        f"report schema {escape(str(report.get('schema_version', '?')))}</div>",
        _summary(report),
        _distribution(report),
        _groups_section(report),
        _mapping_section(report),
        _unmatched_section(report),
        _trees_section(report),
        _checks_section(report),
        '<pre id="selftest-result" hidden></pre>',
        f"<script>\n{_script_text(_asset('report.js'))}</script>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def write_html(report: Mapping[str, Any], path: str | Path) -> Path:
    """Report dict → HTML file at path, written atomically; returns the path."""
    return atomic_write_text(path, render_html(report))


# --- sections --------------------------------------------------------------------------------


def _card(value: str, label: str) -> str:
    return f'<div class="card"><div class="v">{escape(value)}</div><div class="l">{escape(label)}</div></div>'


def _summary(report: Mapping[str, Any]) -> str:
    cov = report["mapping"]["coverage"]
    bands = band_counts(report)
    cards = [
        _card(f"{cov['source_coverage']:.1%}", "source coverage"),
        _card(f"{cov['target_coverage']:.1%}", "target coverage"),
    ]
    if "target_confident_coverage" in cov:
        cards += [
            _card(f"{cov['source_confident_coverage']:.1%}", "source coverage, confident pairs"),
            _card(f"{cov['target_confident_coverage']:.1%}", "target coverage, confident pairs"),
        ]
    cards += [
        _card(str(cov["mapped_pairs"]), "one-to-one pairs"),
        _card(str(cov["multi_pairs"]), "splits / merges"),
        _card(
            f"{cov['source_unmatched']} / {cov['target_unmatched']}", "unmatched source / target"
        ),
        _card(str(bands["medium"] + bands["low"]), "pairs to review (yellow + red)"),
    ]
    band_line = " · ".join(
        f'<span class="score {b}" data-band-count="{b}">{bands[b]} {colour}</span>'
        f' <span class="muted">({BAND_LIMITS[b]})</span>'
        for b, colour in (("high", "green"), ("medium", "yellow"), ("low", "red"))
    )
    n_flagged = sum(
        1 for e in [*report["mapping"]["pairs"], *report["mapping"].get("multi", [])] if flagged(e)
    )
    if n_flagged:
        band_line += (
            f' <span class="muted">· {n_flagged} flagged low confidence or ambiguous '
            "(never green)</span>"
        )
    rows = []
    for side in ("source", "target"):
        inp = report["inputs"][side]
        rows.append(
            "<tr>"
            f"<td>{side}</td><td>{escape(inp['name'])}</td>"
            f'<td class="mono">{escape(inp.get("path") or "—")}</td>'
            f'<td class="mono" title="{escape(inp.get("sha256") or "")}">{_short(inp.get("sha256"))}</td>'
            f'<td class="mono" title="{escape(inp.get("signature") or "")}">'
            f"{_short(inp.get('signature'))}</td>"
            f'<td class="num">{inp["tensor_count"]}</td>'
            "</tr>"
        )
    settings = report.get("settings") or {}
    setting_items = "".join(
        f"<li><code>{escape(k)}</code>: <code>{escape(json.dumps(settings[k], sort_keys=True))}</code></li>"
        for k in sorted(settings)
    )
    return (
        '<section id="summary"><h2>Summary</h2>'
        f"{_status_banner(report)}"
        f'<div class="cards">{"".join(cards)}</div>'
        f'<p id="bands">{band_line}</p>'
        "<table><thead><tr><th>side</th><th>name</th><th>path</th><th>sha256</th>"
        "<th>architecture signature</th><th>tensors</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        + (
            f"<details><summary>Settings ({len(settings)})</summary><ul>{setting_items}</ul></details>"
            if setting_items
            else ""
        )
        + "</section>"
    )


def _status_banner(report: Mapping[str, Any]) -> str:
    status = mapping_status(report)
    if status is None:
        return (
            '<div class="status unknown" id="status">status: not checked '
            '<span class="muted">(no validation or functional check in this report)</span></div>'
        )
    state, text = status
    mark = {"proven": "✓", "loads": "◐", "differs": "✗"}.get(state, "?")
    return (
        f'<div class="status {escape(state)}" id="status" data-state="{escape(state)}">'
        f"{mark} {escape(text)}</div>"
    )


def _short(digest: str | None) -> str:
    return escape(digest[:12]) if digest else "—"


def score_histogram(scores: list[float], bins: int = _HIST_BINS) -> list[int]:
    """Scores in [0, 1] → counts per equal-width bin (1.0 falls in the last bin)."""
    counts = [0] * bins
    for s in scores:
        counts[min(bins - 1, max(0, int(s * bins)))] += 1
    return counts


def _distribution(report: Mapping[str, Any]) -> str:
    mapping = report["mapping"]
    scores = [float(p["score"]) for p in mapping["pairs"]] + [
        float(m["score"]) for m in mapping.get("multi", [])
    ]
    counts = score_histogram(scores)
    width, height, pad = 520, 160, 24
    bar_w = (width - 2 * pad) / len(counts)
    top = max(counts) or 1
    colours = {"high": "#1a7f37", "medium": "#bf8700", "low": "#cf222e"}
    shapes = []
    for i, n in enumerate(counts):
        h = (height - 2 * pad) * n / top
        x = pad + i * bar_w
        y = height - pad - h
        lo, hi = i / len(counts), (i + 1) / len(counts)
        colour = colours[score_band((lo + hi) / 2)]
        shapes.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
            f'fill="{colour}"><title>{lo:.1f}–{hi:.1f}: {n} pair(s)</title></rect>'
        )
        if n:
            shapes.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">{n}</text>'
            )
        shapes.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{height - 8}" text-anchor="middle">{lo:.1f}</text>'
        )
    return (
        '<section id="distribution"><h2>Score distribution</h2>'
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="histogram of {len(scores)} pair scores">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#c7ccd4"/>'
        f"{''.join(shapes)}</svg>"
        '<div class="muted">green &gt; 0.8 · yellow 0.6–0.8 · red &lt; 0.6</div></section>'
    )


def _mapping_rows(report: Mapping[str, Any]) -> list[str]:
    mapping = report["mapping"]
    entries = ordered([*mapping["pairs"], *mapping.get("multi", [])])
    return [_row(e) for e in entries]


def _weights(report: Mapping[str, Any]) -> dict[str, float]:
    settings = report.get("settings") or {}
    weights = settings.get("weights") or (report["mapping"].get("settings") or {}).get("weights")
    if not isinstance(weights, Mapping):
        return {}
    return {str(k): float(v) for k, v in weights.items()}


def _compact(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _row(entry: Mapping[str, Any]) -> str:
    """Pair or split/merge dict → a <tbody> of its row and its (folded) breakdown row."""
    score = float(entry["score"])
    band = pair_band(entry)
    multi = "sources" in entry
    transform = entry.get("transform") or {"name": entry["kind"] if multi else "identity"}
    tname = transform.get("name", "identity")
    badge = HTML_BADGES.get(entry["kind"] if multi else tname, tname)
    conf = (
        f' <span class="badge lowconf" title="{escape("; ".join(pair_notes(entry)))}">?</span>'
        if flagged(entry)
        else ""
    )
    if multi:
        parts = dict(multi_parts(entry))
        split = entry["kind"] == "split"
        sources = "".join(
            f"<div>{escape(s)}{_slice(parts.get(s), not split)}</div>" for s in entry["sources"]
        )
        targets = "".join(
            f"<div>{escape(t)}{_slice(parts.get(t), split)}</div>" for t in entry["targets"]
        )
        match, shapes, stage = entry["kind"].upper(), multi_layout(entry), entry["kind"]
    else:
        sources, targets = escape(entry["source"]), escape(entry["target"])
        match = "GROUP" if entry.get("group", True) else "INDIV"
        shapes = f"{_shape(entry.get('source_shape'))} → {_shape(entry.get('target_shape'))}"
        stage = entry.get("stage") or ""
    return (
        f'<tbody class="pair" data-band="{band}" data-transform="{escape(tname)}" '
        f'data-score="{score:.6f}">'
        '<tr class="main">'
        '<td><button class="expand" type="button" aria-expanded="false" '
        'title="show the score breakdown">▸</button></td>'
        f'<td class="key">{sources}</td>'
        f'<td class="key">{targets}</td>'
        f'<td class="num score {band}" data-value="{score:.6f}">{score:.3f}{conf}</td>'
        f'<td><span class="badge t-{escape(tname)}" '
        f'title="{escape(json.dumps(transform.get("params", {}), sort_keys=True))}">'
        f"{escape(badge)}</span></td>"
        f'<td><span class="badge {match.lower()}">{escape(match)}</span></td>'
        f'<td class="mono">{escape(shapes)}</td>'
        f"<td>{escape(stage)}</td>"
        "</tr>"
        f'<tr class="breakdown" data-breakdown="{escape(_compact(entry.get("breakdown") or {}))}">'
        f'<td></td><td colspan="7"><div class="bd">{_breakdown(entry)}</div></td></tr>'
        "</tbody>"
    )


def _slice(text: str | None, show: bool) -> str:
    return f' <span class="slice">{escape(text)}</span>' if show and text else ""


_KNOWN_FIELDS = frozenset(
    {"source", "target", "sources", "targets", "score", "breakdown", "source_shape",
     "target_shape", "transform", "group", "stage", "confidence", "kind", "ambiguous",
     "probability", "note"}
)  # fmt: skip


def _breakdown(entry: Mapping[str, Any]) -> str:
    """Pair dict → notes beside its breakdown (flags, transform, parts, extra fields).

    The per-signal table itself is drawn by the page's script from the row's
    ``data-breakdown`` and the weights when the row is first opened: written out for every
    pair it would triple the size of a large model's page.
    """
    notes = [f"combined score {float(entry['score']):.3f}"]
    if entry.get("stage"):
        notes.append(f"settled by the {escape(str(entry['stage']))} stage")
    # The flag (read from ``confidence``, where the engine writes it) and the note in words.
    notes += [escape(n) for n in pair_notes(entry)]
    if isinstance(entry.get("probability"), int | float):
        notes.append(f"probability {float(entry['probability']):.3f}")
    transform = entry.get("transform") or {}
    if transform.get("params"):
        notes.append(
            f"transform {escape(str(transform.get('name')))} "
            f"<code>{escape(json.dumps(transform['params'], sort_keys=True))}</code>"
        )
    for key in sorted(set(entry) - _KNOWN_FIELDS):
        notes.append(
            f"{escape(key)}: <code>{escape(json.dumps(entry[key], sort_keys=True))}</code>"
        )
    if "sources" in entry:
        side = "targets" if entry["kind"] == "split" else "sources"
        items = "".join(
            f"<li><code>{escape(k)}</code> {escape(where)}</li>" for k, where in multi_parts(entry)
        )
        notes.append(
            f'{escape(multi_layout(entry))}; {side} in fused order:<ol class="parts">{items}</ol>'
        )
    return f'<ul class="notes">{"".join(f"<li>{n}</li>" for n in notes)}</ul>'


def _mapping_section(report: Mapping[str, Any]) -> str:
    rows = _mapping_rows(report)
    names = sorted(
        {(p.get("transform") or {}).get("name", "identity") for p in report["mapping"]["pairs"]}
        | {m["transform"]["name"] for m in report["mapping"].get("multi", [])}
    )
    transform_opts = "".join(f'<option value="{escape(n)}">{escape(n)}</option>' for n in names)
    head = (
        "<th></th>"
        '<th class="sortable" data-col="source">source</th>'
        '<th class="sortable" data-col="target">target</th>'
        '<th class="sortable" data-col="score" data-type="number">score</th>'
        '<th class="sortable" data-col="transform">transform</th>'
        '<th class="sortable" data-col="match">match</th>'
        "<th>shapes</th>"
        '<th class="sortable" data-col="stage">stage</th>'
    )
    return (
        f'<section id="mapping"><h2>Mapping ({len(rows)} rows)</h2>'
        '<div class="controls">'
        '<input id="filter" type="search" placeholder="filter keys (source or target)…" '
        'aria-label="filter keys">'
        '<select id="band" aria-label="score band"><option value="">all scores</option>'
        '<option value="high">high (&gt; 0.8)</option><option value="medium">medium (0.6–0.8)</option>'
        '<option value="low">low (&lt; 0.6)</option></select>'
        '<select id="transform" aria-label="transform"><option value="">all transforms</option>'
        f"{transform_opts}</select>"
        f'<span id="visible-count" class="muted">{len(rows)} of {len(rows)} rows</span>'
        "</div>"
        '<p class="muted">Riskiest first: red, then yellow (flagged pairs first), lowest score '
        "first. ▸ opens a pair's score breakdown; click a column to sort.</p>"
        f'<div class="wrap"><table id="mapping-table"><thead><tr>{head}</tr></thead>'
        f"{''.join(rows)}</table></div>"
        f'<script type="application/json" id="signal-weights">'
        f"{_script_text(_compact(_weights(report)))}</script>"
        f'<script type="application/json" id="signal-meanings">'
        f"{_script_text(_compact(SIGNAL_TEXT))}</script></section>"
    )


def _groups_section(report: Mapping[str, Any]) -> str:
    groups = pair_groups(report)
    items = []
    for i, g in enumerate(groups):
        worst = g.worst
        band = pair_band(worst)
        counts = {b: 0 for b in ("high", "medium", "low")}
        for e in g.entries:
            counts[pair_band(e)] += 1
        dots = " ".join(
            f'<span class="score {b}">{counts[b]} {colour}</span>'
            for b, colour in (("low", "red"), ("medium", "yellow"), ("high", "green"))
            if counts[b]
        )
        rows = "".join(
            f'<tr><td class="key">{escape(_keys(e, "source"))}</td>'
            f'<td class="key">{escape(_keys(e, "target"))}</td>'
            f'<td class="num score {pair_band(e)}">{float(e["score"]):.3f}</td>'
            f"<td>{escape(_badge(e))}</td></tr>"
            for e in g.entries
        )
        target = f" → {escape(g.target)}" if g.target else ""
        items.append(
            f'<details class="group" data-band="{band}" id="group-{i}">'
            f'<summary><span class="key">{escape(g.source)}{target}</span> '
            f'<span class="muted">{len(g.entries)} pair{"s" if len(g.entries) != 1 else ""}'
            f" · lowest</span> "
            f'<span class="score {band}">{float(worst["score"]):.3f}</span> '
            f'<span class="muted">·</span> {dots}</summary>'
            '<table class="group-pairs"><thead><tr><th>source</th><th>target</th><th>score</th>'
            f"<th>transform</th></tr></thead><tbody>{rows}</tbody></table></details>"
        )
    n_pairs = len(report["mapping"]["pairs"]) + len(report["mapping"].get("multi", []))
    return (
        f'<section id="groups"><h2>By layer template ({len(groups)} groups, {n_pairs} pairs)</h2>'
        '<p class="muted">One row per rename rule (a layer template and its tail); '
        "open a row to see its pairs. Riskiest groups first.</p>"
        f"{''.join(items) or _NO_PAIRS}</section>"
    )


_NO_PAIRS = '<p class="muted">No pairs.</p>'


def _keys(entry: Mapping[str, Any], side: str) -> str:
    return entry[side] if side in entry else ", ".join(entry[side + "s"])


def _badge(entry: Mapping[str, Any]) -> str:
    if "sources" in entry:
        return f"{HTML_BADGES.get(entry['kind'], entry['kind'])}: {multi_layout(entry)}"
    name = (entry.get("transform") or {}).get("name", "identity")
    return HTML_BADGES.get(name, name)


def _unmatched_section(report: Mapping[str, Any]) -> str:
    out = ['<section id="unmatched"><h2>Unmatched keys</h2>']
    for side in ("source", "target"):
        items = report["mapping"]["unmatched"][side]
        out.append(f"<h3>{side} ({len(items)})</h3>")
        if not items:
            out.append('<p class="muted">None.</p>')
            continue
        for reason, keys in unmatched_by_reason(items):
            rows = []
            for u in keys:
                best = u.get("best_candidate")
                best_txt = "" if best is None else escape(best)
                if best is not None and u.get("best_score") is not None:
                    best_txt += f" ({float(u['best_score']):.3f})"
                rows.append(
                    f'<tr><td class="key">{escape(u["name"])}</td>'
                    f'<td class="mono">{_shape(u.get("shape"))}</td>'
                    f"<td>{escape(u.get('detail') or '')}</td>"
                    f'<td class="key">{best_txt}</td></tr>'
                )
            out.append(
                f'<details class="reason unmatched-{side}" data-reason="{escape(reason)}" open>'
                f'<summary><span class="badge reason">{escape(reason)}</span> '
                f"<strong>{len(keys)}</strong> "
                f'<span class="muted">{escape(REASON_TEXT.get(reason, ""))}</span></summary>'
                "<table><thead><tr><th>key</th><th>shape</th><th>detail</th><th>best candidate</th>"
                f"</tr></thead><tbody>{''.join(rows)}</tbody></table></details>"
            )
    out.append("</section>")
    return "".join(out)


def _trees_section(report: Mapping[str, Any]) -> str:
    links = module_links(report)
    ids = {
        side: {g["path"]: f"{side[0]}-m-{i}" for i, g in enumerate(report["hierarchy"][side])}
        for side in ("source", "target")
    }
    cols = []
    for side, other in (("source", "target"), ("target", "source")):
        name = report["inputs"][side]["name"]
        tree = _tree_html(report["hierarchy"][side], links[side], ids[side], ids[other], side)
        cols.append(
            f'<div class="tree" id="tree-{side}"><strong>{side}: {escape(name)}</strong>{tree}</div>'
        )
    return (
        '<section id="trees"><h2>Module hierarchies</h2>'
        '<p class="muted">Click a module to highlight it and its partner; ✓ matched, '
        "◐ partly matched, ✗ unmatched.</p>"
        f'<div class="trees">{"".join(cols)}</div></section>'
    )


def _tree_html(
    groups: list[Mapping[str, Any]],
    links: Mapping[str, Mapping[str, Any]],
    own_ids: Mapping[str, str],
    other_ids: Mapping[str, str],
    side: str,
) -> str:
    # Nested dict of path components, keeping the inventory's order of first appearance.
    root: dict[str, Any] = {}
    by_path = {g["path"]: g for g in groups}
    for g in groups:
        node = root
        for part in g["path"].split(".") if g["path"] else []:
            node = node.setdefault(part, {})
    arrow = "→" if side == "source" else "←"

    def label(path: str, name: str) -> str:
        g = by_path.get(path)
        if g is None:
            return f'<span class="node">{escape(name)}</span>'
        tensors = " ".join(
            f'<span class="t{" buf" if t.get("buffer") else ""}">'
            f"[{escape({'weight': 'W', 'bias': 'B'}.get(t['name'], t['name']))} {_shape(t.get('shape'))}]</span>"
            for t in g["tensors"]
        )
        mtype = (
            f' <span class="mtype">({escape(g["module_type"])})</span>'
            if g.get("module_type")
            else ""
        )
        entry = links.get(path)
        state, mark = "", ""
        partner_ids: list[str] = []
        if entry is not None:
            partner_ids = [other_ids[p] for p in entry["partners"] if p in other_ids]
            anchors = ", ".join(
                f'<a href="#{other_ids[p]}">{escape(p or "(root)")}</a>'
                for p in entry["partners"]
                if p in other_ids
            )
            if entry["matched"] == 0:
                state, mark = "unmatched", '<span class="mark">✗</span>'
            elif entry["matched"] < entry["total"]:
                state = "partial"
                mark = f'<span class="mark">◐ {arrow}</span> {anchors} ({entry["matched"]}/{entry["total"]})'
            else:
                state, mark = "matched", f'<span class="mark">✓ {arrow}</span> {anchors}'
        return (
            f'<span class="node {state}" id="{own_ids[path]}" data-partners="{" ".join(partner_ids)}">'
            f"{escape(name)}{mtype} {tensors} {mark}</span>"
        )

    def render(node: Mapping[str, Any], prefix: str, depth: int) -> str:
        items = []
        for name, child in node.items():
            path = f"{prefix}.{name}" if prefix else name
            text = label(path, name)
            if child:
                opened = " open" if depth < _OPEN_DEPTH else ""
                items.append(
                    f"<li><details{opened}><summary>{text}</summary>"
                    f"{render(child, path, depth + 1)}</details></li>"
                )
            else:
                items.append(f"<li>{text}</li>")
        return f"<ul>{''.join(items)}</ul>"

    top = label("", "(root)") if "" in by_path else ""
    return top + render(root, "", 0)


def _checks_section(report: Mapping[str, Any]) -> str:
    out = []
    for title, key in (("Validation", "validation"), ("Functional check", "functional_check")):
        section = report.get(key)
        if section:
            ok, line = check_headline(key, section)
            out.append(
                f'<h3>{title}</h3><p class="score {"high" if ok else "low"}">'
                f"{'✓' if ok else '✗'} {escape(line)}</p>"
                f'<pre class="json">{escape(json.dumps(section, indent=2, sort_keys=True))}</pre>'
            )
    if not out:
        return '<section id="checks"><h2>Checks</h2><p class="muted">No validation recorded.</p></section>'
    return f'<section id="checks"><h2>Checks</h2>{"".join(out)}</section>'
