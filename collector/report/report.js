// brokerwatch report: renders the alerts held in #report-data, a page of them at a time, with hand-made SVG plots.
// Inlined into the page by collector/report/__init__.py; no library, no network.
(function () {
  "use strict";
  var T0 = performance.now();
  var DATA = JSON.parse(document.getElementById("report-data").textContent);
  var PARSED = performance.now();
  // 25 alerts drawn at a time keep 10k alerts as fast to open as 25; "#all" draws every one (to print the report)
  var PAGE = location.hash === "#all" ? Infinity : 25;
  var SEV = {4: "critical", 3: "high", 2: "medium", 1: "low"};
  var NS = "http://www.w3.org/2000/svg";
  var state = {page: 0, sev: 0};

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function sv(tag, attrs, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function fmt(x) {
    if (x === null || x === undefined) return "";
    if (typeof x === "number") return Math.abs(x) >= 1e4 ? x.toExponential(2) : String(Math.round(x * 1000) / 1000);
    return String(x);
  }
  function get(o, path) {
    return path.split(".").reduce(function (a, k) { return a && a[k] !== undefined ? a[k] : undefined; }, o);
  }
  function svgBox(cls, w, h) { return sv("svg", {"class": cls, viewBox: "0 0 " + w + " " + h, role: "img"}); }

  // Bin edges of n bins from lo to hi, even or even in log (as collector/report/__init__.py made them).
  function edgesOf(h, n) {
    var out = [];
    for (var i = 0; i <= n; i++) {
      var f = i / n;
      out.push(h.log ? Math.exp(Math.log(h.lo) + f * (Math.log(h.hi) - Math.log(h.lo))) : h.lo + f * (h.hi - h.lo));
    }
    return out;
  }

  // Bars of a histogram: edges (n+1), series [{counts, cls}], optional marks.
  function histogram(cls, edges, series, opts) {
    var W = 360, H = 150, L = 34, R = 8, T = 8, B = 26;
    var s = svgBox(cls, W, H);
    var lo = edges[0], hi = edges[edges.length - 1];
    var logx = opts && opts.log;
    function x(v) {
      var f = logx ? (Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo)) : (v - lo) / ((hi - lo) || 1);
      return L + f * (W - L - R);
    }
    var norm = series.map(function (sr) {
      var tot = sr.counts.reduce(function (a, b) { return a + b; }, 0) || 1;
      return sr.counts.map(function (c) { return opts && opts.share ? c / tot : c; });
    });
    var ymax = Math.max.apply(null, [1e-9].concat.apply([], norm));
    function y(v) { return H - B - (v / ymax) * (H - B - T); }
    if (opts && opts.band) s.appendChild(sv("rect", {"class": "band", x: x(opts.band[0]), y: T,
      width: Math.max(1, x(opts.band[1]) - x(opts.band[0])), height: H - B - T}));
    series.forEach(function (sr, si) {
      var w = series.length > 1 ? 0.5 : 1;
      for (var i = 0; i < sr.counts.length; i++) {
        if (!norm[si][i]) continue;
        var x0 = x(edges[i]), x1 = x(edges[i + 1]), bw = (x1 - x0) * w;
        s.appendChild(sv("rect", {"class": sr.cls, x: x0 + si * bw, y: y(norm[si][i]), width: Math.max(0.8, bw - 0.5),
          height: H - B - y(norm[si][i])}));
      }
    });
    if (opts && opts.period) s.appendChild(sv("line", {"class": "period", x1: x(opts.period), x2: x(opts.period),
      y1: T, y2: H - B}));
    s.appendChild(sv("line", {"class": "axis", x1: L, x2: W - R, y1: H - B, y2: H - B}));
    s.appendChild(sv("line", {"class": "axis", x1: L, x2: L, y1: T, y2: H - B}));
    [0, 0.5, 1].forEach(function (f) {
      var v = logx ? Math.exp(Math.log(lo) + f * (Math.log(hi) - Math.log(lo))) : lo + f * (hi - lo);
      s.appendChild(sv("text", {x: x(v), y: H - B + 12, "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle"},
        (opts && opts.log ? String(Math.round(v)) : fmt(v)) + (opts && opts.unit ? " " + opts.unit : "")));
    });
    s.appendChild(sv("text", {x: 2, y: T + 8}, opts && opts.share ? fmt(ymax * 100) + "%" : fmt(ymax)));
    s.appendChild(sv("text", {x: W - R, y: H - 2, "text-anchor": "end"}, opts && opts.xlabel || ""));
    return s;
  }

  function timeline(tl) {
    var W = 1000, H = 90, L = 8, R = 8, T = 8, B = 24;
    var s = svgBox("timeline", W, H);
    s.appendChild(sv("line", {"class": "axis", x1: L, x2: W - R, y1: H - B, y2: H - B}));
    if (tl.ticks) {
      tl.ticks.forEach(function (pm) {
        var xx = L + (pm / 1000) * (W - L - R);
        s.appendChild(sv("line", {"class": "tick", x1: xx, x2: xx, y1: T + 6, y2: H - B}));
      });
    } else {
      var n = tl.bins.length, m = Math.max.apply(null, tl.bins.concat([1])), bw = (W - L - R) / n;
      tl.bins.forEach(function (c, i) {
        if (!c) return;
        var h = (c / m) * (H - B - T);
        s.appendChild(sv("rect", {"class": "bar", x: L + i * bw, y: H - B - h, width: Math.max(0.8, bw - 0.3), height: h}));
      });
    }
    s.appendChild(sv("text", {x: L, y: H - 6}, new Date(tl.t0).toISOString().replace(".000Z", "Z")));
    s.appendChild(sv("text", {x: W - R, y: H - 6, "text-anchor": "end"}, new Date(tl.t1).toISOString().replace(".000Z", "Z")));
    return s;
  }

  function plot(title, node, legend) {
    var d = el("div", {"class": "plot"});
    d.appendChild(el("h3", {}, title));
    d.appendChild(node);
    if (legend) d.appendChild(legend);
    return d;
  }

  function kv(rows) {
    var t = el("table");
    rows.forEach(function (r) {
      if (r[1] === undefined || r[1] === null || r[1] === "") return;
      var tr = el("tr");
      tr.appendChild(el("th", {}, r[0]));
      tr.appendChild(el("td", {}, typeof r[1] === "object" ? JSON.stringify(r[1]) : fmt(r[1])));
      t.appendChild(tr);
    });
    return t;
  }

  function evidenceTable(ev) {
    var t = el("table", {"class": "evidence"});
    var head = el("tr");
    ["DET0002 element", "fired", "why"].forEach(function (h) { head.appendChild(el("th", {}, h)); });
    t.appendChild(head);
    var fired = ev.fired || [], why = ev.why || {};
    var keys = fired.slice();
    Object.keys(why).forEach(function (k) { if (keys.indexOf(k) < 0) keys.push(k); });
    keys.forEach(function (k) {
      var tr = el("tr");
      tr.appendChild(el("td", {}, k));
      tr.appendChild(el("td", fired.indexOf(k) >= 0 ? {"class": "fired"} : {}, fired.indexOf(k) >= 0 ? "yes" : "no"));
      tr.appendChild(el("td", {}, why[k] || ""));
      t.appendChild(tr);
    });
    return t;
  }

  function card(v, index) {
    var a = v.alert, ev = get(a, "brokerwatch.evidence") || {};
    var sev = get(a, "event.severity") || 0;
    var c = el("article", {"class": "alert", id: "alert-" + (get(a, "event.id") || index), "data-severity": sev});
    var h = el("header");
    h.appendChild(el("span", {"class": "sev sev" + sev}, SEV[sev] || "?"));
    h.appendChild(el("h2", {}, (get(a, "rule.id") || "") + " " + (get(a, "source.ip") || "?") + " \u2192 " +
      (get(a, "destination.ip") || "?") + ":" + (get(a, "destination.port") || "?") + " " + (get(a, "network.protocol") || "")));
    h.appendChild(el("span", {}, "score " + fmt(get(a, "brokerwatch.score")) + " \u00b7 " + (a["@timestamp"] || "") +
      " \u00b7 revision " + fmt(get(a, "brokerwatch.revision") || 0)));
    c.appendChild(h);
    c.appendChild(el("div", {"class": "legend"}, get(a, "rule.name") || ""));

    var plots = el("div", {"class": "plots"});
    if (v.timeline) {
      var tp = plot("Event timeline (" + v.events + " " + (v.events_from || "flow records") + (v.kept < v.events ? ", first " + v.kept + " drawn" : "") +
        (v.timeline.ticks ? "" : ", counts per bin") + ")", timeline(v.timeline));
      tp.style.gridColumn = "1 / -1";
      plots.appendChild(tp);
    }
    if (v.intervals) {
      var iv = v.intervals;
      var lg = el("div", {"class": "legend"});
      if (iv.period) { lg.appendChild(el("i", {style: "background:#c0392b"})); lg.appendChild(document.createTextNode("period " + fmt(iv.period) + " s")); }
      if (iv.band) { lg.appendChild(el("i", {style: "background:#f5d76e"})); lg.appendChild(document.createTextNode("jitter band " + fmt(iv.band[0]) + "-" + fmt(iv.band[1]) + " s")); }
      if (iv.over) lg.appendChild(document.createTextNode(" \u00b7 " + iv.over + " longer gaps in the last bin"));
      plots.appendChild(plot("Inter-arrival times (" + iv.n + " gaps)", histogram("intervals", edgesOf(iv, iv.counts.length),
        [{counts: iv.counts, cls: "bar"}], {period: iv.period, band: iv.band, unit: "s", xlabel: "seconds between events"}), lg));
    }
    if (v.bytes) {
      var b = v.bytes, lb = el("div", {"class": "legend"});
      lb.appendChild(el("i", {style: "background:#c0392b"}));
      lb.appendChild(document.createTextNode("this pair (median " + fmt(b.pair_median) + " B)"));
      lb.appendChild(el("i", {style: "background:#7f8c99"}));
      lb.appendChild(document.createTextNode(b.peer_pairs + " other pairs to this broker" +
        (b.others_median !== null ? " (median " + fmt(b.others_median) + " B)" : "")));
      plots.appendChild(plot("Bytes per event, share of each side's events", histogram("bytes", edgesOf(b, b.pair.length),
        [{counts: b.pair, cls: "bar-pair"}, {counts: b.others, cls: "bar-peer"}],
        {log: true, share: true, unit: "B", xlabel: "bytes per flow record (log)"}), lb));
    }
    if (!v.timeline) plots.appendChild(el("p", {"class": "none"}, "No events of this pair in the inputs given: " +
      "pass the captures and logs the alerts came from to see its plots."));
    c.appendChild(plots);

    var cols = el("div", {"class": "cols"});
    var left = el("div"), right = el("div");
    left.appendChild(el("h3", {}, "Evidence: DET0002 elements"));
    left.appendChild(evidenceTable(ev));
    var rest = [];
    Object.keys(ev).forEach(function (k) { if (k !== "fired" && k !== "why") rest.push([k, ev[k]]); });
    left.appendChild(el("h3", {}, "Evidence: measurements"));
    left.appendChild(kv(rest));
    right.appendChild(el("h3", {}, "Attribution"));
    var attr = [["process.name", get(a, "process.name")], ["process.executable", get(a, "process.executable")],
      ["process.pid", get(a, "process.pid")], ["process.command_line", get(a, "process.command_line")],
      ["process.parent.executable", get(a, "process.parent.executable")], ["host.name", get(a, "host.name")],
      ["host.os.type", get(a, "host.os.type")], ["user.name", get(a, "user.name")]];
    var known = attr.filter(function (r) { return r[1] !== undefined && r[1] !== null; });
    var at = known.length ? kv(known) : el("p", {"class": "none"}, "No process or host attributed (network evidence only).");
    at.setAttribute("data-part", "attribution");
    right.appendChild(at);
    right.appendChild(el("h3", {}, "ATT&CK mapping"));
    var m = DATA.attack, ul = el("ul", {"class": "attack"});
    var techs = get(a, "threat.technique.id") || [m.technique[0]];
    techs.forEach(function (t) {
      var li = el("li"), link = el("a", {href: m.technique[2]}, t);
      li.appendChild(link);
      li.appendChild(document.createTextNode(" " + (t === m.technique[0] ? m.technique[1] : "")));
      ul.appendChild(li);
    });
    var tac = el("li"); tac.appendChild(el("a", {href: m.tactic[2]}, m.tactic[0]));
    tac.appendChild(document.createTextNode(" " + m.tactic[1])); ul.appendChild(tac);
    ul.appendChild(el("li", {}, (get(a, "rule.ruleset") || m.detection[0]) + " " + m.detection[1] + ", analytic " + (get(a, "rule.id") || "")));
    right.appendChild(ul);
    cols.appendChild(left); cols.appendChild(right);
    c.appendChild(cols);
    return c;
  }

  function visible() {
    return DATA.alerts.filter(function (v) { return !state.sev || get(v.alert, "event.severity") === state.sev; });
  }

  function render() {
    var list = visible(), pages = PAGE === Infinity ? 1 : Math.max(1, Math.ceil(list.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var main = document.getElementById("alerts");
    main.textContent = "";
    (PAGE === Infinity ? list : list.slice(state.page * PAGE, (state.page + 1) * PAGE)).forEach(function (v, i) {
      main.appendChild(card(v, state.page * PAGE + i));
    });
    if (!list.length) main.appendChild(el("p", {"class": "none"}, "No alerts."));
    var nav = document.getElementById("pager");
    nav.textContent = "";
    var prev = el("button", {type: "button", id: "prev"}, "\u2190 previous"), next = el("button", {type: "button", id: "next"}, "next \u2192");
    prev.disabled = state.page === 0; next.disabled = state.page >= pages - 1;
    prev.onclick = function () { state.page--; render(); window.scrollTo(0, 0); };
    next.onclick = function () { state.page++; render(); window.scrollTo(0, 0); };
    var sel = el("select", {id: "severity"});
    [[0, "all severities"], [4, "critical"], [3, "high"], [2, "medium"], [1, "low"]].forEach(function (o) {
      var op = el("option", {value: o[0]}, o[1]); if (o[0] === state.sev) op.selected = true; sel.appendChild(op);
    });
    sel.onchange = function () { state.sev = +sel.value; state.page = 0; render(); };
    nav.appendChild(prev);
    nav.appendChild(el("span", {id: "page"}, "page " + (state.page + 1) + " of " + pages + " (" + list.length + " alerts)"));
    nav.appendChild(next);
    nav.appendChild(sel);
  }

  function summary() {
    var counts = {}, rules = {};
    DATA.alerts.forEach(function (v) {
      var s = get(v.alert, "event.severity") || 0, r = get(v.alert, "rule.id") || "?";
      counts[s] = (counts[s] || 0) + 1; rules[r] = (rules[r] || 0) + 1;
    });
    var t = el("table", {id: "severity-counts"}), hr = el("tr"), dr = el("tr");
    [4, 3, 2, 1].forEach(function (s) { hr.appendChild(el("th", {}, SEV[s])); dr.appendChild(el("td", {}, counts[s] || 0)); });
    Object.keys(rules).sort().forEach(function (r) { hr.appendChild(el("th", {}, r)); dr.appendChild(el("td", {}, rules[r])); });
    t.appendChild(hr); t.appendChild(dr);
    document.getElementById("summary").appendChild(t);
    var m = DATA.meta;
    document.getElementById("meta").textContent = "alerts from " + m.alerts_file + (m.inputs.length ? "; events from " +
      m.inputs.join(", ") + " (" + m.rows_read + " records read)" : "; no inputs given, so no plots");
  }

  summary();
  render();
  // how long the page took to be ready, from navigation start (read by tests and by people comparing reports)
  document.body.setAttribute("data-parse-ms", String(Math.round(PARSED - T0)));
  document.body.setAttribute("data-rendered-ms", String(Math.round(performance.now())));
})();
