// The align-track page: a list of runs, one run, and a comparison of runs.
// Routes live in the URL hash: #/?filters, #/run/ID, #/compare?ids=A,B or ?sweep=S.
// Everything is built with DOM calls (never innerHTML with data from the store).
"use strict";

const REFRESH_MS = 3000;
const state = { selected: new Set(), timer: null, view: 0 };

// -- helpers ------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

async function api(path, params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") qs.set(k, v);
  }
  const res = await fetch(`/api/${path}?${qs}`);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

function fmtValue(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Charts.fmt(v);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function fmtTime(ts) {
  if (!ts) return "";
  const d = new Date(ts * 1000), p = n => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function fmtDuration(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60), hr = Math.floor(m / 60);
  return hr ? `${hr}h${String(m % 60).padStart(2, "0")}m`
    : `${m}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
}

function statusBadge(status) {
  return h("span", { class: `status ${status}`, "data-status": status }, status);
}

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  return { path, params: new URLSearchParams(query || "") };
}

function go(path, params) {
  const qs = params ? new URLSearchParams(
    Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined)
  ).toString() : "";
  location.hash = path + (qs ? "?" + qs : "");
}

function setCrumbs(...items) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren(...items.map(([text, href]) =>
    href ? h("a", { href }, text) : h("span", {}, text)));
}

function setLive(on) {
  document.getElementById("live").hidden = !on;
}

// Re-run `fn` every REFRESH_MS while `live` says so and the view is unchanged.
function refreshWhile(live, fn) {
  clearTimeout(state.timer);
  setLive(live);
  if (!live) return;
  const view = state.view;
  const tick = () => {
    if (view !== state.view) return;
    const typing = document.activeElement && /INPUT|SELECT/.test(document.activeElement.tagName) &&
      document.activeElement.type !== "checkbox";
    if (typing) state.timer = setTimeout(tick, REFRESH_MS); else fn();
  };
  state.timer = setTimeout(tick, REFRESH_MS);
}

function card(title, ...body) {
  return h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...body);
}

// -- list of runs -------------------------------------------------------------------

async function showList(params) {
  const filters = {
    experiment: params.get("experiment") || "", status: params.get("status") || "",
    sweep: params.get("sweep") || "", q: params.get("q") || "",
    where: params.get("where") || "", sort: params.get("sort") || "started_at",
    desc: params.get("desc") || "1", group: params.get("group") || "1",
    offset: params.get("offset") || "0", limit: params.get("limit") || "50",
  };
  setCrumbs(["runs", "#/"]);
  const app = document.getElementById("app");
  const update = changes => go("/", { ...filters, offset: "0", ...changes });

  let page, groups, error = null;
  try {
    [page, groups] = await Promise.all([api("runs", filters), api("groups")]);
  } catch (e) {
    error = e.message;
    page = { runs: [], total: 0, offset: 0, limit: 50, varying: [], metric_names: [] };
    groups = groups || { experiments: [], sweeps: [], statuses: {} };
  }

  const side = h("aside", { class: "side" },
    h("h3", {}, "Experiments"),
    h("ul", { id: "experiments" }, groups.experiments.map(e =>
      h("li", { class: e.name === filters.experiment ? "on" : "", title: e.name,
        onclick: () => update({ experiment: e.name === filters.experiment ? "" : e.name }) },
      h("span", {}, e.name, e.running ? " ●" : ""), h("span", { class: "n" }, e.runs)))),
    h("h3", {}, "Sweeps"),
    h("ul", { id: "sweeps" }, groups.sweeps.length ? groups.sweeps.map(s =>
      h("li", { class: s.id === filters.sweep ? "on" : "", title: s.id,
        onclick: () => update({ sweep: s.id === filters.sweep ? "" : s.id }) },
      h("span", {}, `${s.experiment || ""} · ${s.id.slice(0, 8)}`, s.running ? " ●" : ""),
      h("a", { href: `#/compare?sweep=${encodeURIComponent(s.id)}`, title: "compare",
        onclick: e => e.stopPropagation() }, "⇄"),
      h("span", { class: "n" }, s.runs))) : h("li", { class: "muted" }, "none")),
    h("h3", {}, "Status"),
    h("ul", { id: "statuses" }, Object.entries(groups.statuses).map(([s, n]) =>
      h("li", { class: s === filters.status ? "on" : "",
        onclick: () => update({ status: s === filters.status ? "" : s }) },
      statusBadge(s), h("span", { class: "n" }, n)))));

  const q = h("input", { type: "search", id: "q", placeholder: "name or id",
    value: filters.q });
  const status = h("select", { id: "status" },
    ["", "running", "finished", "failed", "interrupted", "crashed"].map(s =>
      h("option", { value: s, selected: s === filters.status }, s || "any status")));
  const where = h("input", { type: "text", id: "where", value: filters.where,
    placeholder: "params.lr < 0.05 and metrics.loss < 0.2 and tags.model = 'mlp'" });
  const group = h("input", { type: "checkbox", id: "group", checked: filters.group === "1" });
  const apply = () => update({ q: q.value.trim(), status: status.value,
    where: where.value.trim(), group: group.checked ? "1" : "0" });
  for (const input of [q, where]) {
    input.addEventListener("keydown", e => { if (e.key === "Enter") apply(); });
  }
  status.addEventListener("change", apply);
  group.addEventListener("change", apply);
  const compare = h("button", { id: "compare", class: "primary",
    disabled: state.selected.size < 2,
    onclick: () => go("/compare", { ids: [...state.selected].join(",") }) },
  `Compare selected (${state.selected.size})`);
  const chips = ["experiment", "sweep"].filter(k => filters[k]).map(k =>
    h("button", { class: "chip", onclick: () => update({ [k]: "" }) },
      `${k}: ${filters[k].slice(0, 24)} ✕`));
  const toolbar = h("div", { class: "toolbar" }, q, status, where,
    h("button", { id: "apply", onclick: apply }, "Filter"),
    h("label", {}, group, " group"), ...chips, compare);

  const cols = [["", null], ["id", "id"], ["name", "name"], ["experiment", "experiment"],
    ["status", "status"], ["sweep · job", "sweep_id"], ["started", "started_at"],
    ["duration", "duration"]];
  const paramCols = page.varying.slice(0, 8), metricCols = page.metric_names.slice(0, 8);
  const sortHead = (label, key) => {
    if (!key) return h("th", {}, label);
    const on = filters.sort === key;
    return h("th", { "data-sort": key, class: on ? "sorted" : "",
      onclick: () => update({ sort: key, desc: on && filters.desc === "1" ? "0" : "1" }) },
    label, on ? (filters.desc === "1" ? " ▼" : " ▲") : "");
  };
  const head = h("tr", {}, cols.map(([l, k]) => sortHead(l, k)),
    paramCols.map(k => sortHead(k, "params." + k)),
    metricCols.map(k => sortHead(k, "metrics." + k)));
  const body = h("tbody", {});
  let lastGroup = null;
  const width = cols.length + paramCols.length + metricCols.length;
  for (const r of page.runs) {
    const key = `${r.experiment}\u0000${r.sweep_id || ""}`;
    if (filters.group === "1" && key !== lastGroup) {
      lastGroup = key;
      body.appendChild(h("tr", { class: "group" }, h("td", { colspan: width },
        r.experiment, r.sweep_id ? ` › sweep ${r.sweep_id.slice(0, 8)}` : "")));
    }
    const box = h("input", { type: "checkbox", checked: state.selected.has(r.id),
      "data-id": r.id });
    box.addEventListener("change", () => {
      if (box.checked) state.selected.add(r.id); else state.selected.delete(r.id);
      compare.disabled = state.selected.size < 2;
      compare.textContent = `Compare selected (${state.selected.size})`;
    });
    body.appendChild(h("tr", { class: `run ${r.status}`, "data-id": r.id },
      h("td", {}, box),
      h("td", {}, h("a", { href: `#/run/${r.id}`, class: "runlink" }, r.id.slice(0, 8))),
      h("td", { title: r.name }, r.name),
      h("td", {}, r.experiment),
      h("td", {}, statusBadge(r.status)),
      h("td", {}, r.sweep_id ? `${r.sweep_id.slice(0, 8)} · ${r.job_num}` : ""),
      h("td", {}, fmtTime(r.started_at)),
      h("td", { class: "num" }, r.status === "running"
        ? fmtDuration(Date.now() / 1000 - r.started_at) : fmtDuration(r.duration)),
      paramCols.map(k => h("td", { class: "num" }, fmtValue(r.params[k]))),
      metricCols.map(k => h("td", { class: "num", "data-metric": k },
        fmtValue(r.metrics[k])))));
  }
  if (!page.runs.length) {
    body.appendChild(h("tr", {}, h("td", { colspan: width, class: "muted" },
      "No runs match.")));
  }
  const off = +page.offset, lim = +page.limit;
  const pager = h("div", { class: "pager" },
    h("button", { id: "prev", disabled: off <= 0,
      onclick: () => go("/", { ...filters, offset: Math.max(0, off - lim) }) }, "‹ Prev"),
    h("span", { id: "range" }, page.total ? `${off + 1}–${off + page.runs.length} of ` +
      `${page.total.toLocaleString("en")}` : "0 runs"),
    h("button", { id: "next", disabled: off + lim >= page.total,
      onclick: () => go("/", { ...filters, offset: off + lim }) }, "Next ›"),
    h("select", { id: "limit", onchange: e => update({ limit: e.target.value }) },
      ["25", "50", "100", "200", "500"].map(n =>
        h("option", { value: n, selected: n === String(lim) }, `${n} a page`))));

  app.replaceChildren(h("div", { class: "layout" }, side, h("div", {},
    toolbar, error ? h("div", { class: "error", id: "error" }, error) : null,
    h("div", { class: "tablewrap" }, h("table", { id: "runs" }, h("thead", {}, head), body)),
    pager)));
  const live = page.runs.some(r => r.status === "running");
  refreshWhile(live, () => showList(params));
}

// -- one run ------------------------------------------------------------------------

function tree(value, name, depth) {
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    const node = h("details", { open: depth < 2 },
      h("summary", {}, h("span", { class: "k" }, name),
        h("span", { class: "muted" }, Array.isArray(value) ? ` [${entries.length}]`
          : ` {${entries.length}}`)));
    for (const [k, v] of entries) node.appendChild(tree(v, String(k), depth + 1));
    return node;
  }
  return h("div", { class: "leaf", "data-key": name }, h("span", { class: "k" }, name),
    ": ", h("span", { class: "v" }, JSON.stringify(value)));
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== "" && v !== null &&
    v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]).flat());
}

const TEXT_EXT = /\.(txt|log|md|yaml|yml|json|csv|tsv|py|toml|ini|cfg|out|err)$/i;
const IMAGE_EXT = /\.(png|jpe?g|gif|webp|svg)$/i;

function artifactUrl(run, name, inline) {
  const qs = new URLSearchParams({ run, name });
  if (inline) qs.set("inline", "1");
  return `/api/artifact?${qs}`;
}

async function artifactsCard(run) {
  if (!run.artifacts.length) return null;
  const rows = [], previews = [], loads = [];
  for (const a of run.artifacts) {
    rows.push(h("tr", {}, h("td", {}, a.name), h("td", { class: "num" }, a.size),
      h("td", {}, a.sha256.slice(0, 12)),
      h("td", {}, h("a", { href: artifactUrl(run.id, a.name), download: a.name.split("/").pop(),
        class: "download", "data-name": a.name }, "download"))));
    if (IMAGE_EXT.test(a.name)) {
      previews.push(h("figure", {}, h("img", { class: "artifact", alt: a.name,
        src: artifactUrl(run.id, a.name, true) }), h("figcaption", { class: "muted" }, a.name)));
    } else if (TEXT_EXT.test(a.name) && a.size <= 65536) {
      const pre = h("pre", { class: "artifact-text", "data-name": a.name }, "…");
      // The page counts as shown once these small texts are in, not before.
      loads.push(fetch(artifactUrl(run.id, a.name, true))
        .then(r => r.ok ? r.text() : Promise.reject(new Error(`HTTP ${r.status}`)))
        .then(t => { pre.textContent = t; },
              e => { pre.textContent = `could not load ${a.name}: ${e.message}`; }));
      // Hydra's own files (.hydra/...) start folded; the app's own are shown.
      previews.push(h("details", { open: !a.name.startsWith(".") },
        h("summary", { class: "muted" }, a.name), pre));
    }
  }
  await Promise.all(loads);
  return card("Artifacts", h("table", { id: "artifacts" },
    h("thead", {}, h("tr", {}, ["name", "bytes", "sha256", ""].map(c => h("th", {}, c)))),
    h("tbody", {}, rows)), ...previews);
}

function metricCharts(histories, xMode) {
  // histories: [{run, label, color, started_at, metrics: {name: points}}]
  const names = [...new Set(histories.flatMap(r => Object.keys(r.metrics)))].sort();
  const time = xMode === "time";
  return names.map(name => Charts.line(
    histories.filter(r => r.metrics[name]).map(r => ({
      label: r.label, color: r.color, run: r.run,
      points: r.metrics[name].map(p => ({
        x: time ? +(p.timestamp - r.started_at).toFixed(3) : p.step, y: p.value })),
    })),
    { title: name, xLabel: time ? "seconds since start" : "step",
      legend: histories.length > 1 }));
}

async function showRun(id) {
  setCrumbs(["runs", "#/"], [id.slice(0, 8), null]);
  const app = document.getElementById("app");
  let run, hist;
  try {
    [run, hist] = await Promise.all([api("run", { id }), api("metrics", { id })]);
  } catch (e) {
    app.replaceChildren(h("div", { class: "error", id: "error" }, e.message));
    setLive(false);
    return;
  }
  const xMode = route().params.get("x") || "step";
  const header = card(null, h("div", { class: "row" }, h("h2", { id: "run-name" }, run.name),
    statusBadge(run.status), h("code", {}, run.id)),
  facts([["experiment", h("a", { href: `#/?experiment=${encodeURIComponent(run.experiment)}` },
    run.experiment)],
  ["sweep", run.sweep_id ? h("span", {}, h("a", { href:
    `#/compare?sweep=${encodeURIComponent(run.sweep_id)}` }, run.sweep_id), ` job ${run.job_num}`)
    : ""],
  ["started", fmtTime(run.started_at)], ["ended", fmtTime(run.ended_at)],
  ["duration", run.duration !== null ? fmtDuration(run.duration) : "running"],
  ["output dir", run.output_dir], ["return value", run.return_value === null ? ""
    : JSON.stringify(run.return_value)],
  ["dropped", run.dropped ? `${run.dropped} points skipped (bad values, names or steps)` : ""]]),
  run.error ? h("div", { class: "error" }, `${run.error.type}: ${run.error.message}`) : null,
  run.error && run.error.traceback ? h("details", {}, h("summary", {}, "traceback"),
    h("pre", {}, run.error.traceback)) : null);

  const xToggle = h("select", { id: "xmode", onchange: e => go(`/run/${id}`, { x: e.target.value }) },
    ["step", "time"].map(v => h("option", { value: v, selected: v === xMode }, `x: ${v}`)));
  const charts = metricCharts([{ run: run.id, label: run.name, color: Charts.color(0),
    started_at: run.started_at, metrics: hist.metrics }], xMode);
  const stats = Object.entries(run.metric_stats);
  const metrics = card("Metrics", h("div", { class: "row" }, xToggle),
    stats.length ? h("table", { id: "metric-stats" }, h("thead", {}, h("tr", {},
      ["metric", "last", "min", "max", "points"].map(c => h("th", {}, c)))),
    h("tbody", {}, stats.map(([m, s]) => h("tr", {}, h("td", {}, m),
      [s.last, s.min, s.max, s.count].map(v => h("td", { class: "num" }, fmtValue(v)))))))
      : h("p", { class: "muted" }, "No metrics logged."),
    h("div", { class: "charts", id: "charts" }, charts));

  const config = card("Config", run.config ? h("div", { class: "tree", id: "config" },
    Object.entries(run.config).map(([k, v]) => tree(v, k, 0)))
    : h("p", { class: "muted" }, "No config recorded."));
  const overrides = card("Overrides", run.overrides.length
    ? h("pre", { id: "overrides" }, run.overrides.join("\n"))
    : h("p", { class: "muted" }, "None."),
  Object.keys(run.choices).length ? h("div", {}, h("h4", {}, "Config choices"),
    facts(Object.entries(run.choices).map(([k, v]) => [k, String(v)]))) : null);
  const tags = card("Tags", Object.keys(run.tags).length ? h("div", { class: "tags", id: "tags" },
    Object.entries(run.tags).map(([k, v]) => h("span", {}, `${k}=${v}`)))
    : h("p", { class: "muted" }, "None."));
  const env = card("Environment", h("div", { class: "tree", id: "env" },
    tree(run.env, "env", 1), tree(run.git, "git", 1)));
  app.replaceChildren(header, metrics, await artifactsCard(run), config, overrides, tags, env);
  refreshWhile(run.status === "running", () => showRun(id));
}

// -- compare ------------------------------------------------------------------------

async function showCompare(params) {
  const sweep = params.get("sweep") || "", ids = params.get("ids") || "";
  setCrumbs(["runs", "#/"], [sweep ? `sweep ${sweep.slice(0, 8)}` : "compare", null]);
  const app = document.getElementById("app");
  let cmp;
  try {
    cmp = await api("compare", sweep ? { sweep } : { ids });
  } catch (e) {
    app.replaceChildren(h("div", { class: "error", id: "error" }, e.message));
    return;
  }
  const runs = cmp.runs.map((r, i) => ({ ...r, color: Charts.color(i) }));
  const label = r => {
    const differ = cmp.varying.slice(0, 3).map(k => `${k}=${fmtValue(r.params[k])}`)
      .filter(pair => !r.name.includes(pair));
    return `${r.name} ${r.id.slice(0, 6)}${differ.length ? " (" + differ.join(", ") + ")" : ""}`;
  };
  const xMode = params.get("x") || "step";
  const histories = await Promise.all(runs.map(r => api("metrics", { id: r.id })));

  const legendRows = runs.map(r => h("tr", {}, h("td", {}, h("span", { class: "swatch",
    style: `background:${r.color}` })), h("td", {}, h("a", { href: `#/run/${r.id}` },
    r.id.slice(0, 8))), h("td", {}, r.name), h("td", {}, statusBadge(r.status)),
  h("td", {}, fmtDuration(r.duration))));
  const runsCard = card(`${runs.length} runs`, h("table", {}, h("tbody", {}, legendRows)));

  const paramRow = (k, differs) => h("tr", { class: differs ? "differs" : "same",
    "data-param": k }, h("td", {}, k), runs.map(r => h("td", { class: "num" },
    fmtValue(r.params[k]))));
  const head = h("thead", {}, h("tr", {}, h("th", {}, "param"),
    runs.map(r => h("th", {}, h("span", { class: "swatch", style: `background:${r.color}` }),
      r.id.slice(0, 8)))));
  const paramsCard = card("Params", h("table", { id: "params" }, head, h("tbody", {},
    cmp.varying.map(k => paramRow(k, true)), cmp.same.map(k => paramRow(k, false)))),
  h("p", { class: "muted" }, `${cmp.varying.length} differ, ${cmp.same.length} the same`));

  const metricRows = cmp.metric_names.map(m => h("tr", { "data-metric": m }, h("td", {}, m),
    runs.map(r => h("td", { class: "num" }, r.metric_stats[m]
      ? fmtValue(r.metric_stats[m].last) : ""))));
  const finals = card("Final metrics", h("table", { id: "finals" }, head.cloneNode(true),
    h("tbody", {}, metricRows)));

  const xToggle = h("select", { id: "xmode", onchange: e =>
    go("/compare", { ...(sweep ? { sweep } : { ids }), x: e.target.value }) },
  ["step", "time"].map(v => h("option", { value: v, selected: v === xMode }, `x: ${v}`)));
  const curves = card("Curves", xToggle, h("div", { class: "charts", id: "charts" },
    metricCharts(runs.map((r, i) => ({ run: r.id, label: label(r), color: r.color,
      started_at: histories[i].started_at, metrics: histories[i].metrics })), xMode)));

  const paramKeys = cmp.varying.length ? cmp.varying : cmp.same;
  const pSel = h("select", { id: "scatter-param" }, paramKeys.map(k => h("option", { value: k }, k)));
  const differs = m => new Set(runs.map(r => r.metric_stats[m]
    ? String(r.metric_stats[m].last) : "")).size > 1;
  const metricOrder = [...cmp.metric_names.filter(differs),
    ...cmp.metric_names.filter(m => !differs(m))];
  const mSel = h("select", { id: "scatter-metric" },
    metricOrder.map(m => h("option", { value: m }, m)));
  const plot = h("div", { id: "scatter" });
  const drawScatter = () => {
    const p = pSel.value, m = mSel.value;
    plot.replaceChildren(p && m ? Charts.scatter(runs.filter(r => r.metric_stats[m]).map(r => ({
      x: r.params[p], y: r.metric_stats[m].last, label: label(r), color: r.color, run: r.id })),
    { title: `final ${m} against ${p}`, xLabel: p, yLabel: m })
      : h("p", { class: "muted" }, "Needs a param and a metric."));
  };
  pSel.addEventListener("change", drawScatter);
  mSel.addEventListener("change", drawScatter);
  drawScatter();
  const scatterCard = card("Param against final metric", h("div", { class: "row" },
    "x ", pSel, " y ", mSel), plot);

  app.replaceChildren(runsCard, curves, scatterCard, paramsCard, finals);
  refreshWhile(runs.some(r => r.status === "running"), () => showCompare(params));
}

// -- router -------------------------------------------------------------------------

function render() {
  state.view += 1;
  clearTimeout(state.timer);
  const { path, params } = route();
  let done;
  if (path.startsWith("/run/")) done = showRun(decodeURIComponent(path.slice(5)));
  else if (path === "/compare") done = showCompare(params);
  else done = showList(params);
  const view = state.view;
  done.finally(() => { if (view === state.view) document.body.dataset.ready = path; });
}

window.addEventListener("hashchange", () => { delete document.body.dataset.ready; render(); });
render();
