/* weightmapper HTML report: sorting, filtering, breakdown rows, tree links, and a
   self-check (#selftest). Each pair is a <tbody class="pair"> holding its main row and its
   breakdown row, so sorting and filtering move and hide the two together. */
(function () {
  "use strict";
  var table = document.getElementById("mapping-table");
  var rows = table ? Array.prototype.slice.call(table.querySelectorAll("tbody.pair")) : [];
  var filterBox = document.getElementById("filter");
  var bandBox = document.getElementById("band");
  var transformBox = document.getElementById("transform");
  var countBox = document.getElementById("visible-count");

  function applyFilter() {
    var q = (filterBox.value || "").trim().toLowerCase();
    var band = bandBox.value;
    var tr = transformBox.value;
    var visible = 0;
    rows.forEach(function (row) {
      if (row.__keys === undefined) {  // source and target cells, lower-cased once
        var cells = row.rows[0].cells;
        row.__keys = (cells[1].textContent + " " + cells[2].textContent).toLowerCase();
      }
      var text = row.__keys;
      var ok = (!q || text.indexOf(q) !== -1) &&
        (!band || row.getAttribute("data-band") === band) &&
        (!tr || row.getAttribute("data-transform") === tr);
      row.classList.toggle("hidden", !ok);
      if (ok) { visible += 1; }
    });
    countBox.textContent = visible + " of " + rows.length + " rows";
    return visible;
  }

  function sortBy(th) {
    var col = th.cellIndex;
    var numeric = th.getAttribute("data-type") === "number";
    var dir = th.classList.contains("asc") ? -1 : 1;
    Array.prototype.forEach.call(th.parentNode.cells, function (c) { c.classList.remove("asc", "desc"); });
    th.classList.add(dir === 1 ? "asc" : "desc");
    var keyed = rows.map(function (row, i) {
      var cell = row.rows[0].cells[col];
      var v = cell.getAttribute("data-value");
      if (v === null) { v = cell.textContent; }
      return { row: row, key: numeric ? parseFloat(v) : v.toLowerCase(), i: i };
    });
    keyed.sort(function (a, b) {
      if (a.key < b.key) { return -dir; }
      if (a.key > b.key) { return dir; }
      return a.i - b.i;
    });
    rows = keyed.map(function (k) { table.appendChild(k.row); return k.row; });
  }

  var weightsEl = document.getElementById("signal-weights");
  var weights = weightsEl ? JSON.parse(weightsEl.textContent) : {};
  var meaningsEl = document.getElementById("signal-meanings");
  var meanings = meaningsEl ? JSON.parse(meaningsEl.textContent) : {};

  function band(v) { return v > 0.8 ? "high" : (v >= 0.6 ? "medium" : "low"); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function bar(value, kind) {
    var outer = el("span", "meter " + kind);
    var inner = el("span");
    inner.style.width = Math.round(Math.max(0, Math.min(1, value)) * 100) + "%";
    outer.appendChild(inner);
    return outer;
  }

  /* The per-signal table of a pair: sub-score, weight, contribution (weight × sub-score /
     sum of the weights of the signals it has), built once, when the row is first opened. */
  function buildBreakdown(detail) {
    if (detail.__built) { return; }
    detail.__built = true;
    var scores = JSON.parse(detail.getAttribute("data-breakdown") || "{}");
    var names = Object.keys(scores).sort();
    var holder = detail.querySelector(".bd");
    if (!names.length) {
      holder.insertBefore(el("p", "muted", "no per-signal scores recorded"), holder.firstChild);
      return;
    }
    var totalW = names.reduce(function (n, k) { return n + (k in weights ? weights[k] : 0); }, 0);
    var table = el("table", "signals");
    var head = el("tr");
    ["signal", "sub-score", "", "weight", "contribution", "", "meaning"].forEach(function (h) { head.appendChild(el("th", "", h)); });
    table.appendChild(el("thead")).appendChild(head);
    var body = table.appendChild(el("tbody"));
    var total = 0;
    names.forEach(function (k) {
      var v = scores[k];
      var w = k in weights ? weights[k] : null;
      var part = w !== null && totalW ? w * v / totalW : null;
      total += part || 0;
      var tr = el("tr", "signal");
      tr.appendChild(el("td", "", k));
      tr.appendChild(el("td", "num score " + band(v), v.toFixed(3)));
      tr.appendChild(el("td")).appendChild(bar(v, band(v)));
      tr.appendChild(el("td", "num", w === null ? "\u2014" : w.toFixed(2)));
      tr.appendChild(el("td", "num", part === null ? "\u2014" : part.toFixed(3)));
      var last = tr.appendChild(el("td"));
      if (part !== null) { last.appendChild(bar(part, "share")); }
      tr.appendChild(el("td", "muted", meanings[k] || ""));
      body.appendChild(tr);
    });
    if (totalW) {
      var sum = el("tr", "sum");
      sum.appendChild(el("td", "", "weighted sum"));
      sum.appendChild(el("td"));
      sum.appendChild(el("td"));
      sum.appendChild(el("td", "num", totalW.toFixed(2)));
      sum.appendChild(el("td", "num", total.toFixed(3)));
      sum.appendChild(el("td")).appendChild(bar(total, "share"));
      body.appendChild(sum);
    }
    holder.insertBefore(table, holder.firstChild);
  }

  function toggle(pair, open) {
    var button = pair.querySelector("button.expand");
    var isOpen = open === undefined ? !pair.classList.contains("open") : open;
    if (isOpen) { buildBreakdown(pair.querySelector("tr.breakdown")); }
    pair.classList.toggle("open", isOpen);
    button.setAttribute("aria-expanded", isOpen ? "true" : "false");
    button.textContent = isOpen ? "\u25BE" : "\u25B8";
    return isOpen;
  }

  function highlight(node) {
    Array.prototype.forEach.call(document.querySelectorAll(".node.hl"), function (n) { n.classList.remove("hl"); });
    var ids = [node.id].concat((node.getAttribute("data-partners") || "").split(" ").filter(Boolean));
    var lit = 0;
    ids.forEach(function (id) {
      var el = document.getElementById(id);
      if (el) {
        el.classList.add("hl");
        lit += 1;
        var d = el.parentNode;
        while (d && d.tagName) {  // open folded ancestors so the partner is visible
          if (d.tagName === "DETAILS") { d.open = true; }
          d = d.parentNode;
        }
      }
    });
    return lit;
  }

  if (table) {
    rows.forEach(function (pair) {
      pair.querySelector("button.expand").addEventListener("click", function () { toggle(pair); });
    });
    filterBox.addEventListener("input", applyFilter);
    bandBox.addEventListener("change", applyFilter);
    transformBox.addEventListener("change", applyFilter);
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      if (th.classList.contains("sortable")) {
        th.addEventListener("click", function () { sortBy(th); });
      }
    });
    applyFilter();
  }
  Array.prototype.forEach.call(document.querySelectorAll(".node[data-partners]"), function (node) {
    node.addEventListener("click", function (ev) {
      if (ev.target.tagName === "A") {
        ev.preventDefault();
        var target = document.getElementById(ev.target.getAttribute("href").slice(1));
        if (target) { highlight(target); target.scrollIntoView({ block: "center" }); }
        return;
      }
      highlight(node);
    });
  });

  /* Self-check, run when the URL ends in #selftest[&filter=TEXT][&band=BAND]: exercises
     filtering, sorting and tree links, and writes what it saw into #selftest-result. */
  function selftest() {
    var params = {};
    location.hash.slice(1).split("&").slice(1).forEach(function (kv) {
      var i = kv.indexOf("=");
      if (i > 0) { params[kv.slice(0, i)] = decodeURIComponent(kv.slice(i + 1)); }
    });
    var out = { rows: rows.length, errors: window.__wmErrors };
    function shown(e) {  // content of a closed <details> keeps a layout box in Chromium
      return e.checkVisibility ? e.checkVisibility() : e.offsetHeight > 0;
    }
    if (table) {
      var scoreTh = table.tHead.rows[0].querySelector("th[data-col=score]");
      sortBy(scoreTh);
      sortBy(scoreTh);  // second click: descending
      var scores = rows.map(function (r) { return parseFloat(r.getAttribute("data-score")); });
      out.sorted_desc = scores.every(function (s, i) { return i === 0 || scores[i - 1] >= s; });
      filterBox.value = params.filter || "";
      bandBox.value = params.band || "";
      out.filter = filterBox.value;
      out.band = bandBox.value;
      out.visible = applyFilter();
      out.count_text = countBox.textContent;
      out.breakdown_rows = table.querySelectorAll("tbody.pair tr.breakdown").length;
      var first = rows.filter(function (r) { return !r.classList.contains("hidden"); })[0] || rows[0];
      if (first) {
        var detail = first.querySelector("tr.breakdown");
        out.breakdown_hidden_before = !shown(detail);
        toggle(first, true);
        out.breakdown_shown_after = shown(detail);
        out.breakdown_signals = detail.querySelectorAll("tr.signal").length;
        out.breakdown_meanings = Array.prototype.filter.call(
          detail.querySelectorAll("tr.signal td.muted"), function (td) { return td.textContent; }
        ).length;
        toggle(first, false);
        out.breakdown_hidden_again = !shown(detail);
      }
    }
    var groups = Array.prototype.slice.call(document.querySelectorAll("#groups details.group"));
    out.groups = groups.length;
    out.group_pairs = groups.reduce(function (n, g) { return n + g.querySelectorAll("tbody tr").length; }, 0);
    if (groups.length) {
      var g0 = groups[0].querySelector("table");
      out.group_hidden_before = !shown(g0);
      groups[0].open = true;
      out.group_shown_after = shown(g0);
      out.group0_band = groups[0].getAttribute("data-band");
      groups[0].open = false;
    }
    out.reason_groups = document.querySelectorAll("#unmatched details.reason").length;
    out.status = (document.getElementById("status") || {}).textContent || "";
    out.band_counts = {};
    Array.prototype.forEach.call(document.querySelectorAll("[data-band-count]"), function (el) {
      out.band_counts[el.getAttribute("data-band-count")] = parseInt(el.textContent, 10);
    });
    out.band_rows = {};
    rows.forEach(function (r) {
      var b = r.getAttribute("data-band");
      out.band_rows[b] = (out.band_rows[b] || 0) + 1;
    });
    var linked = document.querySelector(".node[data-partners]:not([data-partners=''])");
    out.tree_nodes = document.querySelectorAll(".node").length;
    out.tree_highlighted = linked ? highlight(linked) : 0;
    out.unmatched_rows = document.querySelectorAll("#unmatched tbody tr").length;
    out.histogram_bars = document.querySelectorAll("#distribution svg rect.bar").length;
    document.getElementById("selftest-result").textContent = JSON.stringify(out);
  }
  // After "load", so errors from anything that runs or loads later are counted too.
  if (location.hash.indexOf("#selftest") === 0) { window.addEventListener("load", selftest); }
})();
