// Keep a chart's zoom, pan and hidden legend entries across live redraws (the Train page loads
// this once per page).
//
// Why this exists: Streamlit (1.67) gives a Plotly chart a new element id whenever its figure
// changes, so every live redraw mounts a fresh Plotly graph and Plotly's own `uirevision` never
// sees the same graph twice. Here each graph's view is remembered under its figure's
// `layout.uirevision` (twophase/plots.py keep_view: the run, the chart and the x-axis) and put
// back on every later graph with that uirevision: the axes' ranges (a double click, autorange,
// forgets them) and which legend entries were clicked off (by trace name; clicking one on again
// forgets it).
(function () {
  if (window.__twophaseKeepView) return;
  window.__twophaseKeepView = true;
  const views = new Map();  // uirevision -> {"xaxis.range": [a, b], "yaxis.range": [c, d], hidden: {name: "legendonly"}}
  window.__twophaseViews = views;  // to look at from the browser's console (and the tests)

  function current(gd) {  // the graph's zoomed axes, as relayout takes them
    const view = {};
    for (const axis of ["xaxis", "yaxis"]) {
      const a = gd._fullLayout && gd._fullLayout[axis];
      if (a && a.autorange === false && Array.isArray(a.range)) view[axis + ".range"] = [a.range[0], a.range[1]];
    }
    return view;
  }

  function axes(view) {  // the view without its hidden entries: what relayout takes
    const out = Object.assign({}, view);
    delete out.hidden;
    return out;
  }

  function shows(gd, view) {  // whether the graph shows `view`'s axes already
    const now = current(gd);
    return Object.keys(axes(view)).every((k) => now[k] && now[k].every((v, i) =>
      Math.abs(v - view[k][i]) <= 1e-9 * Math.max(1, Math.abs(v))));
  }

  function hiddenToSet(gd, view) {  // [trace indices, visible values] that differ from the remembered entries
    const hidden = view.hidden || {};
    const indices = [], visible = [];
    (gd.data || []).forEach((t, i) => {
      if (!t.name || !(t.name in hidden)) return;
      const want = hidden[t.name];
      if ((t.visible === undefined ? true : t.visible) !== want) { indices.push(i); visible.push(want); }
    });
    return [indices, visible];
  }

  function store(key, view) {
    if (view.hidden && !Object.keys(view.hidden).length) delete view.hidden;
    if (Object.keys(view).length) views.set(key, view); else views.delete(key);
  }

  function remember(key, ev) {  // a relayout: the user's zoom, pan or double click
    const view = Object.assign({}, views.get(key) || {});
    for (const axis of ["xaxis", "yaxis"]) {
      if (ev[axis + ".autorange"]) delete view[axis + ".range"];
      let range = ev[axis + ".range"];
      if (!range && ev[axis + ".range[0]"] !== undefined) range = [ev[axis + ".range[0]"], ev[axis + ".range[1]"]];
      if (range) view[axis + ".range"] = [range[0], range[1]];
    }
    store(key, view);
  }

  function rememberLegend(key, gd) {  // after a legend click: which named traces are off now
    if (gd.__twophaseApplying) return;  // our own restyle, not the user's
    const view = Object.assign({}, views.get(key) || {});
    const hidden = {};
    (gd.data || []).forEach((t) => {
      if (t.name && (t.visible === "legendonly" || t.visible === false)) hidden[t.name] = t.visible;
    });
    view.hidden = hidden;
    store(key, view);
  }

  function attach(gd) {
    if (gd.__twophaseKey !== undefined || !gd.on || !gd.layout || !gd._fullLayout) return;  // done, or not drawn yet
    const rev = gd.layout.uirevision;
    if (rev === undefined || rev === null || rev === "") return;
    const key = String(rev);
    gd.__twophaseKey = key;
    gd.__twophaseApplied = 0;
    gd.on("plotly_relayout", (ev) => remember(key, ev || {}));
    gd.on("plotly_restyle", () => rememberLegend(key, gd));
    if (!views.has(key)) {  // zoomed before this script saw the graph
      const view = current(gd);
      if (Object.keys(view).length) views.set(key, view);
    }
  }

  function restore(gd) {  // put the remembered view back (a fresh graph, or one its redraw reset)
    const view = views.get(gd.__twophaseKey);
    if (!view || gd.__twophaseApplying || gd.__twophaseApplied >= 5) return;
    const [indices, visible] = hiddenToSet(gd, view);
    const zoom = !shows(gd, view);
    if (!zoom && !indices.length) return;
    gd.__twophaseApplying = true;
    gd.__twophaseApplied += 1;
    Promise.resolve(indices.length ? window.Plotly.restyle(gd, {visible: visible}, indices) : null)
      .then(() => (zoom ? window.Plotly.relayout(gd, axes(view)) : null))
      .finally(() => { gd.__twophaseApplying = false; });
  }

  function scan() {
    if (!window.Plotly) return;
    document.querySelectorAll(".js-plotly-plot").forEach((gd) => {
      attach(gd);
      if (gd.__twophaseKey !== undefined) restore(gd);
    });
  }
  // at once when the page changes (a redraw's fresh graph gets its view back within a frame), and
  // every 100 ms for what no change announces (a graph that finished drawing)
  let pending = false;
  new MutationObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; scan(); });
  }).observe(document.body, {childList: true, subtree: true});
  setInterval(scan, 100);
})();
