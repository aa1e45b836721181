/* The device page: its state, a chart of /api/v1/series (mean line over the min-max band)
 * for a chosen range, its streams and gaps, and its alert history. The chart asks for as
 * many points as its plot area has pixels, never more; in Live mode it folds the readings
 * the websocket brings into buckets of the same width and slides the window. */
"use strict";

(function () {
  const P = window.Pulse;
  const head = P.byId("head");
  const deviceId = head.dataset.device;
  const enc = encodeURIComponent(deviceId);
  const RANGES = { live: 600, "1h": 3600, "24h": 86400, "7d": 7 * 86400 };
  const LIVE_S = 120; // the API's "live": a reading received in the last 120 s
  const MAX_POINTS = 5000;
  const DETAIL_EVERY_MS = 3000;

  const view = {
    range: "live",
    from: null, // ms; the window shown
    to: null,
    bucketMs: 1,
    detail: null,
    requestSeq: 0,
  };
  const data = { t: [], min: [], max: [], avg: [], count: [] };

  /* ---------- the range, in the URL so that a view can be shared ---------- */

  function readUrl() {
    const params = new URLSearchParams(location.search);
    const range = params.get("range");
    const from = Date.parse(params.get("from") || "");
    const to = Date.parse(params.get("to") || "");
    if (Number.isFinite(from) && Number.isFinite(to) && from < to) {
      view.range = "custom";
      view.from = from;
      view.to = to;
    } else {
      view.range = range in RANGES ? range : "live";
    }
  }
  function writeUrl() {
    const params = new URLSearchParams();
    if (view.range === "custom") {
      params.set("from", new Date(view.from).toISOString());
      params.set("to", new Date(view.to).toISOString());
    } else if (view.range !== "live") {
      params.set("range", view.range);
    }
    const url = location.pathname + (params.toString() ? "?" + params : "");
    history.replaceState(null, "", url);
  }

  /* ---------- the chart ---------- */

  const chartEl = P.byId("chart");
  let plot = null;

  function colors() {
    const css = getComputedStyle(document.documentElement);
    const get = (name) => css.getPropertyValue(name).trim();
    return {
      line: get("--chart-line"), band: get("--chart-band"), edge: get("--chart-edge"),
      axis: get("--muted"), grid: get("--grid"),
    };
  }
  function size() {
    const width = Math.max(240, chartEl.clientWidth);
    return { width: width, height: width < 600 ? 220 : 320 };
  }
  function spanS() {
    return (view.to - view.from) / 1000;
  }
  function axisValues(u, splits, axisIdx, space, incr) {
    return splits.map((v) => {
      if (incr >= 86400) return new Date(v * 1000).toLocaleDateString([], { day: "numeric", month: "short" });
      if (spanS() > 36 * 3600) return P.stamp(v * 1000);
      return P.clock(v * 1000, incr < 60);
    });
  }
  const fmtValue = (u, v) => (v === null || v === undefined ? "–" : P.dec(v));

  function build() {
    if (typeof uPlot === "undefined") return;
    if (plot) plot.destroy();
    const c = colors();
    const axis = { stroke: c.axis, grid: { stroke: c.grid, width: 1 }, ticks: { stroke: c.grid, width: 1 } };
    plot = new uPlot(
      {
        ...size(),
        legend: { show: true, live: true },
        cursor: { drag: { x: false, y: false }, points: { size: 6 } },
        scales: {
          x: { time: true, range: () => [view.from / 1000, view.to / 1000] },
          y: {
            range: (u, min, max) => {
              if (min === null || max === null) return [0, 100];
              const pad = Math.max((max - min) * 0.08, 2);
              return [Math.floor(min - pad), Math.ceil(max + pad)];
            },
          },
        },
        axes: [
          Object.assign({ size: 36, space: 80, values: axisValues }, axis),
          Object.assign({ size: 46 }, axis),
        ],
        series: [
          { value: (u, v) => (v === null ? "–" : P.full(v * 1000)) },
          { label: "min", stroke: c.edge, width: 1, points: { show: false }, value: fmtValue },
          { label: "max", stroke: c.edge, width: 1, points: { show: false }, value: fmtValue },
          { label: "mean", stroke: c.line, width: 2, points: { show: false }, value: fmtValue },
        ],
        // filled between the max (series 2) and the min (series 1)
        bands: [{ series: [2, 1], fill: c.band }],
      },
      columns(),
      chartEl,
    );
  }
  /* uPlot's columns; a null breaks the line and band where the readings stop for a while. */
  function columns() {
    const n = data.t.length;
    const steps = [];
    for (let i = 1; i < n; i++) steps.push(data.t[i] - data.t[i - 1]);
    steps.sort((a, b) => a - b);
    const usual = steps.length ? steps[Math.floor(steps.length / 2)] : 0;
    const gap = Math.max(2 * view.bucketMs, 4 * usual);
    const cols = [[], [], [], []];
    for (let i = 0; i < n; i++) {
      if (i > 0 && data.t[i] - data.t[i - 1] > gap) {
        cols[0].push((data.t[i - 1] + data.t[i]) / 2000);
        cols[1].push(null);
        cols[2].push(null);
        cols[3].push(null);
      }
      cols[0].push(data.t[i] / 1000);
      cols[1].push(data.min[i]);
      cols[2].push(data.max[i]);
      cols[3].push(data.avg[i]);
    }
    return cols;
  }
  /* The plot area's width in CSS pixels: the most points the chart can show. */
  function plotWidth() {
    if (!plot) return Math.max(1, chartEl.clientWidth);
    return Math.max(1, Math.floor(plot.bbox.width / (window.devicePixelRatio || 1)));
  }
  let drawQueued = false;
  function draw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => {
      drawQueued = false;
      if (plot) plot.setData(columns());
      chartEl.dataset.points = String(data.t.length);
      P.byId("chart-empty").hidden = data.t.length > 0;
    });
  }

  /* ---------- loading a range ---------- */

  function windowFor(range) {
    if (range === "custom") return;
    view.to = P.now();
    view.from = view.to - RANGES[range] * 1000;
  }

  async function load() {
    windowFor(view.range);
    const points = Math.max(1, Math.min(MAX_POINTS, plotWidth()));
    // the width of the server's buckets, worked out as it does: live readings join them
    view.bucketMs = Math.max(1, Math.ceil((view.to - view.from) / points));
    const from = new Date(view.from).toISOString();
    const to = new Date(view.to).toISOString();
    const params = new URLSearchParams({ device_id: deviceId, from: from, to: to, points: String(points) });
    chartEl.dataset.requested = String(points);
    chartEl.dataset.from = from;
    chartEl.dataset.to = to;
    const seq = ++view.requestSeq;
    P.setText("chart-note", "loading…");
    const r = await P.call("GET", "/api/v1/series?" + params);
    if (seq !== view.requestSeq) return;
    if (!r.ok) {
      P.setText("chart-note", "could not load: " + (r.data.error || "HTTP " + r.status));
      return;
    }
    for (const key of Object.keys(data)) data[key].length = 0;
    for (const p of r.data.points) {
      data.t.push(Date.parse(p.t));
      data.min.push(p.min);
      data.max.push(p.max);
      data.avg.push(p.avg);
      data.count.push(p.count);
    }
    chartEl.dataset.received = String(r.data.points.length);
    note();
    draw();
  }

  function note() {
    const readings = data.count.reduce((a, b) => a + b, 0);
    const bucket = view.bucketMs >= 1000 ? P.span(view.bucketMs / 1000) : view.bucketMs + " ms";
    P.setText(
      "chart-note",
      P.num(readings) + (readings === 1 ? " reading" : " readings") + " in " +
        P.num(data.t.length) + (data.t.length === 1 ? " point" : " points") + " of " + bucket,
    );
  }

  /* A live reading joins its bucket (aligned as the server's) or starts the next one. */
  function append(t, v) {
    if (t < view.from) return;
    const start = view.from + Math.floor((t - view.from) / view.bucketMs) * view.bucketMs;
    const n = data.t.length;
    if (n && data.t[n - 1] === start) {
      const count = data.count[n - 1];
      data.avg[n - 1] = (data.avg[n - 1] * count + v) / (count + 1);
      data.count[n - 1] = count + 1;
      data.min[n - 1] = Math.min(data.min[n - 1], v);
      data.max[n - 1] = Math.max(data.max[n - 1], v);
    } else if (!n || data.t[n - 1] < start) {
      data.t.push(start);
      data.min.push(v);
      data.max.push(v);
      data.avg.push(v);
      data.count.push(1);
    } else {
      return; // an older bucket: rare (a late batch), and the next load has it
    }
  }

  /* Live mode: the window follows the clock; buckets that leave it are dropped. */
  function slide() {
    if (view.range !== "live") return;
    const span = view.to - view.from;
    view.to = P.now();
    // whole buckets, so that the ones already drawn keep their alignment
    while (view.to - view.from > span + view.bucketMs) view.from += view.bucketMs;
    let drop = 0;
    while (drop < data.t.length && data.t[drop] < view.from) drop++;
    if (drop) for (const key of Object.keys(data)) data[key].splice(0, drop);
    draw();
  }

  /* ---------- the device's summary, streams and gaps ---------- */

  async function loadDetail() {
    const r = await P.call("GET", "/api/v1/devices/" + enc, undefined, { quiet: true });
    if (!r.ok) return;
    view.detail = r.data;
    if (r.data.now) P.syncClock(r.data.now);
    renderHead();
    renderStreams(r.data.streams);
  }

  function isLive() {
    return view.detail && (P.now() - Date.parse(view.detail.last_seen)) / 1000 < LIVE_S;
  }

  function renderHead() {
    const d = view.detail;
    if (!d) return;
    const live = isLive();
    head.dataset.state = live ? "live" : "silent";
    P.setText("state", live ? "Live" : "Silent since " + P.stamp(d.last_seen));
    const seen = P.byId("last-seen");
    seen.title = P.full(d.last_seen);
    seen.dataset.lastSeen = d.last_seen;
    P.setText(seen, P.stamp(d.last_seen) + " (" + P.ago(d.last_seen) + ")");
    P.setText("count", P.num(d.count));
    P.setText("streams-count", P.num(d.streams.length));
    const missing = d.streams.reduce((a, s) => a + s.missing, 0);
    P.setText("missing", P.num(missing));
    P.byId("missing").classList.toggle("warn", missing > 0);
    P.byId("hub-fact").hidden = !d.hub;
    P.setText("hub", d.hub || "");
  }

  function seqRange(gap) {
    return gap[0] === gap[1] ? P.num(gap[0]) : P.num(gap[0]) + "–" + P.num(gap[1]);
  }

  function renderStreams(streams) {
    const rows = streams.map((s) => {
      const tr = P.el("tr");
      tr.dataset.stream = s.stream;
      tr.append(
        P.el("td", "mono", s.stream),
        P.el("td", "num wide-only", P.num(s.first_seq)),
        P.el("td", "num", P.num(s.last_seq)),
        P.el("td", "num wide-only", P.num(s.count)),
        P.el("td", "num" + (s.missing > 0 ? " warn" : ""), P.num(s.missing)),
      );
      const gaps = s.gaps || [];
      let text = gaps.length ? gaps.map(seqRange).join(", ") : "none";
      const shown = gaps.reduce((a, g) => a + (g[1] - g[0] + 1), 0);
      if (shown < s.missing) text += gaps.length ? ", …" : "before seq " + P.num(s.first_seq);
      tr.append(P.el("td", "gaps", text));
      return tr;
    });
    P.byId("streams").replaceChildren(...rows);
  }

  /* ---------- alerts ---------- */

  async function loadAlerts() {
    const [open, history] = await Promise.all([
      P.call("GET", "/api/v1/alerts?device_id=" + enc, undefined, { quiet: true }),
      P.call("GET", "/api/v1/alerts/history?limit=50&device_id=" + enc, undefined, { quiet: true }),
    ]);
    if (open.ok && Array.isArray(open.data)) {
      const active = open.data.filter((a) => a.state === "pending" || a.state === "firing");
      const dd = P.byId("open-alerts");
      if (active.length) {
        const link = P.el("a", "badge bad", P.num(active.length));
        link.href = "/alerts?device_id=" + enc;
        link.title = active.map((a) => a.rule + ": " + a.state).join("\n");
        dd.replaceChildren(link);
      } else {
        dd.replaceChildren(P.el("span", "muted", "none"));
      }
    }
    const body = P.byId("history");
    if (!history.ok || !Array.isArray(history.data)) {
      body.replaceChildren();
      P.setText("history-empty", "The alert history could not be loaded: " + (history.data.error || "HTTP " + history.status));
      P.byId("history-empty").hidden = false;
      return;
    }
    body.replaceChildren(
      ...history.data.map((h) => {
        const tr = P.el("tr");
        const when = P.el("td", "when", P.stamp(h.at));
        when.title = P.full(h.at);
        const state = P.el("td");
        const pill = P.el("span", "pill state-" + h.state, h.state);
        state.appendChild(pill);
        tr.append(
          when,
          P.el("td", "", h.rule),
          state,
          P.el("td", "num", h.value === null || h.value === undefined ? "–" : P.dec(h.value)),
        );
        return tr;
      }),
    );
    P.setText("history-empty", "No alert has fired for this device.");
    P.byId("history-empty").hidden = history.data.length > 0;
  }

  /* ---------- live ---------- */

  let detailTimer = null;
  let detailAt = 0;
  /* The streams table follows batches at most every few seconds, not on each one. */
  function detailSoon() {
    if (detailTimer) return;
    detailTimer = setTimeout(() => {
      detailTimer = null;
      detailAt = Date.now();
      loadDetail();
    }, Math.max(0, DETAIL_EVERY_MS - (Date.now() - detailAt)));
  }

  function onEvent(event) {
    if (event.type === "batch" && event.device_id === deviceId) {
      const d = view.detail;
      if (d) {
        if (Date.parse(event.last_seen) > Date.parse(d.last_seen)) d.last_seen = event.last_seen;
        d.count += event.accepted;
        renderHead();
      }
      if (view.range === "live") {
        if (event.points_dropped) {
          // a batch too big for one event (across processes): only the server has it all
          load();
        } else {
          for (const p of event.points || []) append(Date.parse(p.t), p.v);
          slide();
          note();
        }
      }
      detailSoon();
    } else if (event.type === "alerts") {
      loadAlerts();
    } else if (event.type === "lagged") {
      refreshAll();
    }
  }

  function refreshAll() {
    loadDetail();
    loadAlerts();
    load();
  }

  /* ---------- controls ---------- */

  const custom = P.byId("custom");
  function localInput(ms) {
    const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
    return d.toISOString().slice(0, 19);
  }
  function pressRange() {
    document.querySelectorAll("[data-range]").forEach((b) => {
      b.setAttribute("aria-pressed", String(b.dataset.range === view.range));
    });
    custom.hidden = view.range !== "custom";
  }
  document.querySelectorAll("[data-range]").forEach((button) => {
    button.addEventListener("click", () => {
      const range = button.dataset.range;
      if (range === "custom") {
        // start from what is on screen
        P.byId("from").value = localInput(view.from);
        P.byId("to").value = localInput(view.to);
        view.range = "custom";
        pressRange();
        P.byId("from").focus();
        return;
      }
      view.range = range;
      pressRange();
      writeUrl();
      load();
    });
  });
  custom.addEventListener("submit", (e) => {
    e.preventDefault();
    const from = new Date(P.byId("from").value).getTime();
    const to = new Date(P.byId("to").value).getTime();
    const error = P.byId("custom-error");
    if (!Number.isFinite(from) || !Number.isFinite(to) || from >= to) {
      error.textContent = "From must be a date and time before To.";
      error.hidden = false;
      return;
    }
    error.hidden = true;
    view.from = from;
    view.to = to;
    writeUrl();
    load();
  });

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (!plot) return;
      const before = plotWidth();
      plot.setSize(size());
      // a wider chart has room for more points (and a narrower one must not get more)
      if (plotWidth() !== before) load();
    }, 150);
  });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", build);

  P.byId("alerts-link").href = "/alerts?device_id=" + enc;
  readUrl();
  if (view.range === "custom") {
    P.byId("from").value = localInput(view.from);
    P.byId("to").value = localInput(view.to);
  } else {
    windowFor(view.range);
  }
  pressRange();
  build();
  refreshAll();
  P.live({
    devices: [deviceId],
    onEvent: onEvent,
    // the server watches this device now: a batch stored after the loads above but before
    // that (or while the socket was down) is only in a fetch from now on
    onWatching: refreshAll,
  });
  setInterval(() => {
    renderHead();
    slide();
  }, 1000);
})();
