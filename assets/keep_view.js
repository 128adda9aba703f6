// Keep a chart's zoom and pan across live redraws (the Train page loads this once per page).
//
// Why this exists: Streamlit (1.67) gives a Plotly chart a new element id whenever its figure
// changes, so every live redraw mounts a fresh Plotly graph and Plotly's own `uirevision` never
// sees the same graph twice. Here each graph's view is remembered under its figure's
// `layout.uirevision` (twophase/plots.py keep_view: the run, the chart and the x-axis) and put
// back on every later graph with that uirevision. A double click (autorange) forgets it.
(function () {
  if (window.__twophaseKeepView) return;
  window.__twophaseKeepView = true;
  const views = new Map();  // uirevision -> {"xaxis.range": [a, b], "yaxis.range": [c, d]}
  window.__twophaseViews = views;  // to look at from the browser's console (and the tests)

  function current(gd) {  // the graph's zoomed axes, as relayout takes them
    const view = {};
    for (const axis of ["xaxis", "yaxis"]) {
      const a = gd._fullLayout && gd._fullLayout[axis];
      if (a && a.autorange === false && Array.isArray(a.range)) view[axis + ".range"] = [a.range[0], a.range[1]];
    }
    return view;
  }

  function shows(gd, view) {  // whether the graph shows `view` already
    const now = current(gd);
    return Object.keys(view).every((k) => now[k] && now[k].every((v, i) =>
      Math.abs(v - view[k][i]) <= 1e-9 * Math.max(1, Math.abs(v))));
  }

  function remember(key, ev) {  // a relayout: the user's zoom, pan or double click
    const view = Object.assign({}, views.get(key) || {});
    for (const axis of ["xaxis", "yaxis"]) {
      if (ev[axis + ".autorange"]) delete view[axis + ".range"];
      let range = ev[axis + ".range"];
      if (!range && ev[axis + ".range[0]"] !== undefined) range = [ev[axis + ".range[0]"], ev[axis + ".range[1]"]];
      if (range) view[axis + ".range"] = [range[0], range[1]];
    }
    if (Object.keys(view).length) views.set(key, view); else views.delete(key);
  }

  function attach(gd) {
    if (gd.__twophaseKey !== undefined || !gd.on || !gd.layout || !gd._fullLayout) return;  // done, or not drawn yet
    const rev = gd.layout.uirevision;
    if (rev === undefined || rev === null || rev === "") return;
    const key = String(rev);
    gd.__twophaseKey = key;
    gd.__twophaseApplied = 0;
    gd.on("plotly_relayout", (ev) => remember(key, ev || {}));
    if (!views.has(key)) {  // zoomed before this script saw the graph
      const view = current(gd);
      if (Object.keys(view).length) views.set(key, view);
    }
  }

  function restore(gd) {  // put the remembered view back (a fresh graph, or one its redraw reset)
    const view = views.get(gd.__twophaseKey);
    if (!view || gd.__twophaseApplying || gd.__twophaseApplied >= 5 || shows(gd, view)) return;
    gd.__twophaseApplying = true;
    gd.__twophaseApplied += 1;
    Promise.resolve(window.Plotly.relayout(gd, view)).finally(() => { gd.__twophaseApplying = false; });
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
