"""The HTML report in a real headless Chromium: loads cleanly, right row count, filtering works.

The page runs its own self-check when its URL ends in ``#selftest&filter=…&band=…`` and
writes what it saw (row count, rows left after filtering, sort order, breakdown rows that
open and close, template groups that expand, band counts against row colours, errors
caught by ``window.onerror``/``console.error``) into ``#selftest-result``; Chromium's
``--dump-dom`` gives us the DOM after that script ran. Screenshots are kept as test
artifacts under pytest's temporary directory (``report.png``, and ``report-open.png``
with a breakdown row and a group opened), never in the source tree.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from weightmapper.engine import map_inventories
from weightmapper.examples.transformer import NewTransformer, OldTransformer
from weightmapper.html_report import render_html, write_html
from weightmapper.inventory import Inventory
from weightmapper.mapper import WeightMapper
from weightmapper.report import build_report
from weightmapper.review import band_counts, pair_band, pair_groups
from zoo import get_case

pytestmark = [pytest.mark.integration, pytest.mark.browser]

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")


def _report() -> dict:
    # A 3-layer model mapped onto a 2-layer one: a real engine result with unmatched keys.
    src = Inventory.from_module(
        OldTransformer(vocab_size=64, d_model=32, n_layer=3, n_head=4, max_len=16)
    )
    tgt = Inventory.from_module(
        NewTransformer(vocab_size=64, d_model=32, n_layer=2, n_head=4, max_len=16)
    )
    result = map_inventories(src, tgt)
    mapper = type("Run", (), {"result": result, "source_inventory": src, "target_inventory": tgt})
    return build_report(mapper)


def _split_report() -> dict:
    # Fused in_proj → separate q/k/v (splits), verified on the case's input: a proven status.
    case = get_case("torch_encoder_in_proj_to_separate")
    mapper = WeightMapper(case.build_source(), case.build_target(), dummy_input=case.dummy_input())
    mapper.suggest_mapping(verify=True)
    return build_report(mapper)


def _selftest(browser: str, page: Path, profile: Path, **params: str) -> dict:
    fragment = "selftest" + "".join(f"&{k}={quote(v)}" for k, v in params.items())
    proc = subprocess.run(
        [
            browser,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--dump-dom",
            f"{page.as_uri()}#{fragment}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = re.search(r'<pre id="selftest-result"[^>]*>(.*?)</pre>', proc.stdout, re.S)
    assert found, (
        f"no self-check result in the dumped DOM (rc {proc.returncode}): {proc.stderr[-2000:]}"
    )
    assert found.group(1), "the page's script did not run (empty self-check result)"
    return json.loads(html.unescape(found.group(1)))


def _visible(report: dict, text: str = "", band: str = "") -> int:
    rows = [([p["source"]], [p["target"]], p) for p in report["mapping"]["pairs"]]
    rows += [(m["sources"], m["targets"], m) for m in report["mapping"]["multi"]]
    return sum(
        1
        for s, t, entry in rows
        if text.lower() in " ".join(s + t).lower() and (not band or pair_band(entry) == band)
    )


def test_html_report_loads_counts_rows_and_filters_in_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    report = _report()
    page = write_html(report, tmp_path / "report.html")
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing to fetch
    n_rows = len(report["mapping"]["pairs"]) + len(report["mapping"]["multi"])
    n_unmatched = sum(len(v) for v in report["mapping"]["unmatched"].values())
    assert n_unmatched > 0

    plain = _selftest(browser, page, tmp_path / "p0")
    assert plain["errors"] == []
    assert plain["rows"] == n_rows and plain["visible"] == n_rows
    assert plain["count_text"] == f"{n_rows} of {n_rows} rows"
    assert plain["sorted_desc"] is True
    assert plain["tree_highlighted"] >= 2  # a module and its partner lit up
    assert plain["unmatched_rows"] == n_unmatched
    assert plain["histogram_bars"] == 10

    term = report["mapping"]["pairs"][0]["source"].rsplit(".", 1)[0]
    filtered = _selftest(browser, page, tmp_path / "p1", filter=term.upper())
    assert filtered["errors"] == []
    assert filtered["visible"] == _visible(report, term) < n_rows
    band = pair_band(report["mapping"]["pairs"][-1])
    by_band = _selftest(browser, page, tmp_path / "p2", band=band)
    assert by_band["visible"] == _visible(report, band=band) > 0
    nothing = _selftest(browser, page, tmp_path / "p3", filter="no-such-key-anywhere")
    assert nothing["visible"] == 0 and nothing["errors"] == []


def test_breakdown_rows_groups_status_and_band_counts_work_in_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    report = _report()
    # A functional status recorded by the mapping, and one pair flagged low confidence:
    # the counts must follow the colours, not the raw scores.
    report["status"] = report["mapping"]["status"] = {
        "state": "differs",
        "label": "differs at layers.1.mlp",
        "detail": "",
        "module": "layers.1.mlp",
    }
    report["mapping"]["pairs"][0]["confidence"] = "low"
    page = write_html(report, tmp_path / "report.html")
    n_rows = len(report["mapping"]["pairs"]) + len(report["mapping"]["multi"])
    seen = _selftest(browser, page, tmp_path / "p0")
    assert seen["errors"] == []
    assert seen["breakdown_rows"] == n_rows
    assert seen["breakdown_hidden_before"] is True
    assert seen["breakdown_shown_after"] is True and seen["breakdown_signals"] >= 3
    # Every signal and recorded evidence of the engine says what it means.
    assert seen["breakdown_meanings"] == seen["breakdown_signals"]
    assert seen["breakdown_hidden_again"] is True
    groups = pair_groups(report)
    assert 1 < seen["groups"] == len(groups) < n_rows  # layers share a row per template
    assert seen["group_pairs"] == n_rows
    assert seen["group_hidden_before"] is True and seen["group_shown_after"] is True
    assert seen["group0_band"] == pair_band(groups[0].worst)
    reasons = {u["reason"] for side in ("source", "target")
               for u in report["mapping"]["unmatched"][side]}  # fmt: skip
    assert 0 < seen["reason_groups"] >= len(reasons)
    assert "differs at layers.1.mlp" in seen["status"]
    counts = band_counts(report)
    assert seen["band_counts"] == counts
    assert {b: seen["band_rows"].get(b, 0) for b in counts} == counts


def test_split_rows_show_parts_sizes_and_order_and_the_proven_status(tmp_path: Path) -> None:
    browser = _chromium()
    report = _split_report()
    assert report["mapping"]["multi"] and report["functional_check"]["equal"]
    page = write_html(report, tmp_path / "report.html")
    text = page.read_text()
    assert "split dim 0 into 32 + 32 + 32" in text
    assert "dim 0 [0:32)" in text and "dim 0 [32:64)" in text and "dim 0 [64:96)" in text
    seen = _selftest(browser, page, tmp_path / "p0", filter="in_proj")
    assert seen["errors"] == [] and "proven equal" in seen["status"]
    assert seen["visible"] == len(report["mapping"]["multi"])


def test_html_report_screenshots_are_kept_as_artifacts(tmp_path: Path) -> None:
    browser = _chromium()
    report = _split_report()
    page = write_html(report, tmp_path / "report.html")
    assert page.read_text() == render_html(json.loads(json.dumps(report)))
    # A second page with the first pair's breakdown and the first group opened, as a reader
    # would leave them.
    opened = tmp_path / "report-open.html"
    opened.write_text(
        page.read_text()
        .replace('<details class="group"', '<details open class="group"', 1)
        .replace("</body>", _OPEN_FIRST_BREAKDOWN + "</body>")
    )
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    for html_page, name in ((page, "report.png"), (opened, "report-open.png")):
        shot = artifacts / name
        subprocess.run(
            [
                browser, *FLAGS, f"--user-data-dir={tmp_path / ('profile-' + name)}",
                f"--screenshot={shot}", "--window-size=1280,1800", html_page.as_uri(),
            ],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 20_000  # a drawn page, not a blank one


# Opening a row through its button builds the per-signal table, as a click would.
_OPEN_FIRST_BREAKDOWN = (
    "<script>document.querySelector('tbody.pair button.expand').click();</script>"
)


def test_self_check_reports_script_errors_and_blocked_fetches(tmp_path: Path) -> None:
    # The check must be able to fail: a broken script and a remote stylesheet are caught.
    browser = _chromium()
    good = render_html(_report())
    broken = tmp_path / "broken.html"
    broken.write_text(good.replace("</body>", "<script>undefinedFn();</script></body>"))
    errors = _selftest(browser, broken, tmp_path / "q0")["errors"]
    assert any("undefinedFn" in e for e in errors)
    remote = tmp_path / "remote.html"
    remote.write_text(
        good.replace(
            "</head>", '<link rel="stylesheet" href="https://example.invalid/x.css"></head>'
        )
    )
    errors = _selftest(browser, remote, tmp_path / "q1")["errors"]
    assert any("CSP blocked" in e for e in errors)
