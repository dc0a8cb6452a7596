// Small SVG charts for the align-track page: line charts and scatter plots.
// No dependencies. Each drawn series keeps the numbers it was drawn from in data-
// attributes (data-x, data-y) so what is on screen can be checked.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2f6fdb", "#e4572e", "#1e8e4e", "#8a3ffc", "#c07a00", "#0f9fb5",
    "#d12771", "#5a6b00", "#6b4e16", "#444c5c"];
  const W = 520, H = 260, M = { l: 58, r: 14, t: 10, b: 34 };

  function color(i) { return PALETTE[i % PALETTE.length]; }

  function el(tag, attrs, parent) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function num(v) {
    if (typeof v === "number") return v;
    if (v === "Infinity") return Infinity;
    if (v === "-Infinity") return -Infinity;
    return NaN;  // "NaN", null
  }

  function fmt(v) {
    if (!isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return String(+v.toPrecision(4));
  }

  function ticks(lo, hi, n) {
    if (lo === hi) { lo -= 1; hi += 1; }
    const raw = (hi - lo) / n, p = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map(m => m * p).find(s => s >= raw) || raw;
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
      out.push(+t.toPrecision(12));
    }
    return { lo: Math.min(lo, out[0]), hi: Math.max(hi, out[out.length - 1]), ticks: out };
  }

  function extent(values) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) if (isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
    return lo === Infinity ? [0, 1] : [lo, hi];
  }

  function axes(svg, xs, ys, xLabel, xFmt) {
    const x = ticks(xs[0], xs[1], 6), y = ticks(ys[0], ys[1], 5);
    const sx = v => M.l + (v - x.lo) / (x.hi - x.lo) * (W - M.l - M.r);
    const sy = v => H - M.b - (v - y.lo) / (y.hi - y.lo) * (H - M.t - M.b);
    const g = el("g", { class: "axis" }, svg);
    for (const t of y.ticks) {
      el("line", { x1: M.l, x2: W - M.r, y1: sy(t), y2: sy(t) }, g);
      el("text", { x: M.l - 6, y: sy(t) + 4, "text-anchor": "end" }, g).textContent = fmt(t);
    }
    for (const t of x.ticks) {
      el("line", { x1: sx(t), x2: sx(t), y1: H - M.b, y2: H - M.b + 4 }, g);
      el("text", { x: sx(t), y: H - M.b + 16, "text-anchor": "middle" }, g).textContent =
        (xFmt || fmt)(t);
    }
    el("line", { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b }, g);
    el("text", { x: (M.l + W - M.r) / 2, y: H - 4, "text-anchor": "middle" }, g)
      .textContent = xLabel || "";
    return { sx, sy };
  }

  function legend(series) {
    const div = document.createElement("div");
    div.className = "legend";
    for (const s of series) {
      const item = document.createElement("span");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = s.color;
      item.append(sw, document.createTextNode(s.label));
      div.appendChild(item);
    }
    return div;
  }

  function showTip(evt, text) {
    const tip = document.getElementById("tooltip");
    if (!tip) return;
    tip.textContent = text;
    tip.hidden = false;
    tip.style.left = (evt.clientX + 14) + "px";
    tip.style.top = (evt.clientY + 10) + "px";
  }

  function hideTip() {
    const tip = document.getElementById("tooltip");
    if (tip) tip.hidden = true;
  }

  // series: [{label, color, run, points: [{x, y}]}]; opts: {title, xLabel, xFmt}
  function line(series, opts) {
    opts = opts || {};
    const wrap = document.createElement("div");
    wrap.className = "chart";
    if (opts.title) {
      const h = document.createElement("h4");
      h.textContent = opts.title;
      wrap.appendChild(h);
    }
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
      "data-metric": opts.title || "" });
    const all = series.flatMap(s => s.points);
    const { sx, sy } = axes(svg, extent(all.map(p => num(p.x))),
      extent(all.map(p => num(p.y))), opts.xLabel, opts.xFmt);
    series.forEach((s, i) => {
      let d = "", pen = false;
      for (const p of s.points) {
        const x = num(p.x), y = num(p.y);
        if (!isFinite(x) || !isFinite(y)) { pen = false; continue; }
        d += (pen ? "L" : "M") + sx(x).toFixed(1) + " " + sy(y).toFixed(1);
        pen = true;
      }
      const path = el("path", { class: "series", d: d || "M0 0", stroke: s.color || color(i),
        "data-run": s.run || "", "data-label": s.label,
        "data-x": s.points.map(p => p.x).join(","),
        "data-y": s.points.map(p => p.y).join(",") }, svg);
      if (s.points.length === 1) {
        const p = s.points[0];
        if (isFinite(num(p.y))) el("circle", { cx: sx(num(p.x)), cy: sy(num(p.y)), r: 3,
          fill: s.color || color(i) }, svg);
      }
      path.setAttribute("data-count", s.points.length);
    });
    const cursor = el("line", { y1: M.t, y2: H - M.b, stroke: "#9aa6bd", visibility: "hidden" },
      svg);
    svg.addEventListener("mousemove", evt => {
      const box = svg.getBoundingClientRect();
      const px = (evt.clientX - box.left) * W / box.width;
      const lines = [];
      let at = null;
      for (const s of series) {
        let best = null;
        for (const p of s.points) {
          const x = num(p.x);
          if (!isFinite(x)) continue;
          if (best === null || Math.abs(sx(x) - px) < Math.abs(sx(num(best.x)) - px)) best = p;
        }
        if (best) {
          at = at === null ? sx(num(best.x)) : at;
          lines.push(`${s.label}: ${fmt(num(best.y))} @ ${(opts.xFmt || fmt)(num(best.x))}`);
        }
      }
      if (at === null) return;
      cursor.setAttribute("x1", at);
      cursor.setAttribute("x2", at);
      cursor.setAttribute("visibility", "visible");
      showTip(evt, lines.join("\n"));
    });
    svg.addEventListener("mouseleave", () => {
      cursor.setAttribute("visibility", "hidden");
      hideTip();
    });
    wrap.appendChild(svg);
    if (series.length > 1 || opts.legend) wrap.appendChild(legend(series));
    return wrap;
  }

  // points: [{x, y, label, color, run}]; x may be text (then placed as categories).
  function scatter(points, opts) {
    opts = opts || {};
    const wrap = document.createElement("div");
    wrap.className = "chart";
    const h = document.createElement("h4");
    h.textContent = opts.title || "";
    wrap.appendChild(h);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "scatter" });
    const numeric = points.every(p => typeof p.x === "number");
    const cats = numeric ? [] : [...new Set(points.map(p => String(p.x)))].sort();
    const xv = p => numeric ? p.x : cats.indexOf(String(p.x));
    const xs = numeric ? extent(points.map(xv)) : [-0.5, Math.max(cats.length - 0.5, 0.5)];
    const { sx, sy } = axes(svg, xs, extent(points.map(p => num(p.y))), opts.xLabel,
      numeric ? null : (t => cats[t] === undefined ? "" : cats[t]));
    for (const p of points) {
      const y = num(p.y);
      if (!isFinite(y) || !isFinite(xv(p))) continue;
      const c = el("circle", { cx: sx(xv(p)), cy: sy(y), r: 5, fill: p.color,
        "fill-opacity": 0.85, "data-run": p.run || "", "data-x": String(p.x),
        "data-y": String(p.y) }, svg);
      el("title", {}, c).textContent = `${p.label}\n${opts.xLabel} = ${p.x}\n` +
        `${opts.yLabel} = ${fmt(y)}`;
    }
    wrap.appendChild(svg);
    return wrap;
  }

  return { line, scatter, color, fmt, num };
})();
