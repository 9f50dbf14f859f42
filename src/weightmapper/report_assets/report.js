/* weightmapper HTML report: sorting, filtering, tree links, and a self-check (#selftest). */
(function () {
  "use strict";
  var table = document.getElementById("mapping-table");
  var body = table ? table.tBodies[0] : null;
  var rows = body ? Array.prototype.slice.call(body.rows) : [];
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
        row.__keys = (row.cells[0].textContent + " " + row.cells[1].textContent).toLowerCase();
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
      var cell = row.cells[col];
      var v = cell.getAttribute("data-value");
      if (v === null) { v = cell.textContent; }
      return { row: row, key: numeric ? parseFloat(v) : v.toLowerCase(), i: i };
    });
    keyed.sort(function (a, b) {
      if (a.key < b.key) { return -dir; }
      if (a.key > b.key) { return dir; }
      return a.i - b.i;
    });
    rows = keyed.map(function (k) { body.appendChild(k.row); return k.row; });
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
    }
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
