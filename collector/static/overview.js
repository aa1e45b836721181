/* The devices overview: one page of devices from /api/v1/overview, searched and paged through
 * the URL (?q=&page=), kept live over the websocket (watching only the rows on screen) and
 * refetched every 15 s for the rates and totals that only the server can count. */
"use strict";

(function () {
  const P = window.Pulse;
  const PAGE_SIZE = 50;
  const REFRESH_MS = 15000;
  const LIVE_S = 120; // the API's definition of "live": a reading received in the last 120 s
  const SPARK_S = 3600;
  const SPARK_BUCKETS = 30;
  const SPARK_W = 120;
  const SPARK_H = 28;
  const SVG = "http://www.w3.org/2000/svg";

  const input = P.byId("q");
  const rows = P.byId("rows");
  const view = { q: "", page: 1, total: null, devices: new Map() };
  let requestSeq = 0;
  let fetches = 0;
  let shownKey = null; // the ids of the rows on screen, as the live helper sends them
  let refreshTimer = null;

  function readUrl() {
    const params = new URLSearchParams(location.search);
    view.q = (params.get("q") || "").trim();
    const page = parseInt(params.get("page") || "1", 10);
    view.page = Number.isFinite(page) && page >= 1 ? page : 1;
    input.value = view.q;
  }
  function writeUrl(push) {
    const params = new URLSearchParams();
    if (view.q) params.set("q", view.q);
    if (view.page > 1) params.set("page", String(view.page));
    const url = location.pathname + (params.toString() ? "?" + params : "");
    if (url === location.pathname + location.search) return;
    if (push) history.pushState(null, "", url);
    else history.replaceState(null, "", url);
  }

  /* ---------- fetching ---------- */

  async function refresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, REFRESH_MS);
    const seq = ++requestSeq;
    const params = new URLSearchParams({ offset: String((view.page - 1) * PAGE_SIZE), limit: String(PAGE_SIZE) });
    if (view.q) params.set("q", view.q);
    const r = await P.call("GET", "/api/v1/overview?" + params, undefined, { quiet: true });
    if (seq !== requestSeq) return; // a newer search or page is on its way
    fetches += 1;
    document.body.dataset.fetches = String(fetches);
    if (!r.ok) {
      P.setText("summary", "Could not load the devices: " + (r.data.error || "HTTP " + r.status));
      return;
    }
    const d = r.data;
    P.syncClock(d.now);
    // a shared link to a page that no longer exists lands on the last one
    if (d.devices.length === 0 && d.total > 0 && d.offset >= d.total) {
      view.page = Math.max(1, Math.ceil(d.total / PAGE_SIZE));
      writeUrl(false);
      refresh();
      return;
    }
    view.total = d.total;
    render(d);
    const ids = d.devices.map((dev) => dev.device_id).sort();
    shownKey = JSON.stringify(ids);
    // a new list: onWatching refetches once the server has it in force
    live.watch(ids);
  }

  /* ---------- rendering ---------- */

  function render(d) {
    P.byId("loading").hidden = true;
    const fresh = new Map();
    const children = [];
    for (const dev of d.devices) {
      const known = view.devices.get(dev.device_id);
      const row = known ? known.row : buildRow(dev.device_id);
      const entry = { data: dev, row: row };
      fresh.set(dev.device_id, entry);
      fillRow(entry);
      children.push(row);
    }
    view.devices = fresh;
    rows.replaceChildren(...children);
    const searching = Boolean(view.q);
    P.byId("empty").hidden = d.total > 0 || searching;
    P.byId("no-match").hidden = d.total > 0 || !searching;
    P.setText("no-match-q", view.q);
    P.byId("devices").hidden = d.total === 0;
    const first = d.total ? d.offset + 1 : 0;
    const last = d.offset + d.devices.length;
    P.setText("range", d.total ? P.num(first) + "–" + P.num(last) + " of " + P.num(d.total) : "");
    P.setText("summary", summary(d));
    P.byId("prev").disabled = view.page <= 1;
    P.byId("next").disabled = last >= d.total;
    document.querySelector(".pager").hidden = d.total <= PAGE_SIZE && view.page === 1;
  }

  function summary(d) {
    const devices = d.total === 1 ? "1 device" : P.num(d.total) + " devices";
    return view.q ? devices + " matching “" + view.q + "”" : devices;
  }

  function buildRow(id) {
    const tr = P.el("tr");
    tr.dataset.device = id;
    const link = P.el("a", "device-link", id);
    link.href = "/devices/" + encodeURIComponent(id);
    const cells = [
      ["device", "Device"], ["state", "State"], ["last-seen", "Last seen"], ["rate num", "Readings/min"],
      ["missing num", "Missing seqs"], ["alerts num", "Open alerts"], ["spark", "Last hour"],
    ].map(([cls, label]) => {
      const td = P.el("td", cls);
      td.dataset.label = label;
      tr.appendChild(td);
      return td;
    });
    cells[0].append(link, P.el("span", "via muted"));
    cells[1].appendChild(P.el("span", "pill"));
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + SPARK_W + " " + SPARK_H);
    svg.setAttribute("width", String(SPARK_W));
    svg.setAttribute("height", String(SPARK_H));
    svg.setAttribute("class", "sparkline");
    svg.setAttribute("role", "img");
    for (const cls of ["band", "line"]) {
      const path = document.createElementNS(SVG, "path");
      path.setAttribute("class", cls);
      svg.appendChild(path);
    }
    const dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("class", "dot");
    dot.setAttribute("r", "2");
    svg.appendChild(dot);
    cells[6].appendChild(svg);
    return tr;
  }

  function isLive(dev) {
    return (P.now() - Date.parse(dev.last_seen)) / 1000 < LIVE_S;
  }

  function fillRow(entry) {
    const dev = entry.data;
    const cells = entry.row.cells;
    fillTimes(entry);
    const via = cells[0].lastChild;
    P.setText(via, dev.hub ? "via " + dev.hub : "");
    via.title = dev.hub ? "Sent through the agent " + dev.hub : "";
    const rate = cells[3];
    P.setText(rate, P.dec(dev.readings_per_min));
    const missing = cells[4];
    P.setText(missing, P.num(dev.missing));
    missing.classList.toggle("warn", dev.missing > 0);
    const alerts = cells[5];
    if (alerts.dataset.count !== String(dev.open_alerts)) {
      alerts.dataset.count = String(dev.open_alerts);
      if (dev.open_alerts > 0) {
        const badge = P.el("a", "badge bad", P.num(dev.open_alerts));
        badge.href = "/alerts?device_id=" + encodeURIComponent(dev.device_id);
        badge.title = dev.open_alerts === 1 ? "1 open alert" : dev.open_alerts + " open alerts";
        alerts.replaceChildren(badge);
      } else {
        alerts.replaceChildren(P.el("span", "muted", "0"));
      }
    }
    drawSpark(entry.row.cells[6].firstChild, dev.spark);
  }

  /* The state and last-seen cells: they change with the clock as well as with the data. */
  function fillTimes(entry) {
    const dev = entry.data;
    const cells = entry.row.cells;
    const live = isLive(dev);
    const state = cells[1];
    state.dataset.state = live ? "live" : "silent";
    P.setText(state.firstChild, live ? "Live" : "Silent since " + P.stamp(dev.last_seen));
    const seen = cells[2];
    seen.dataset.lastSeen = dev.last_seen;
    seen.title = P.full(dev.last_seen);
    P.setText(seen, P.ago(dev.last_seen));
  }

  /* The last hour: the mean as a line over a faint min-max band, newest value as a dot. */
  function drawSpark(svg, spark) {
    const end = P.now();
    const start = end - SPARK_S * 1000;
    const points = spark.filter((p) => Date.parse(p.t) >= start - (SPARK_S * 1000) / SPARK_BUCKETS);
    svg.dataset.points = String(points.length);
    const [band, line, dot] = svg.childNodes;
    if (!points.length) {
      band.setAttribute("d", "");
      line.setAttribute("d", "");
      dot.setAttribute("visibility", "hidden");
      svg.setAttribute("aria-label", "no readings in the last hour");
      delete svg.dataset.last;
      return;
    }
    let low = Infinity;
    let high = -Infinity;
    for (const p of points) {
      low = Math.min(low, p.min);
      high = Math.max(high, p.max);
    }
    const pad = Math.max((high - low) * 0.1, 1);
    low -= pad;
    high += pad;
    const x = (p) => Math.max(0, Math.min(SPARK_W, ((Date.parse(p.t) - start) / (end - start)) * SPARK_W)).toFixed(1);
    const y = (v) => (SPARK_H - 2 - ((v - low) / (high - low)) * (SPARK_H - 4)).toFixed(1);
    const top = points.map((p) => x(p) + "," + y(p.max));
    const bottom = points.slice().reverse().map((p) => x(p) + "," + y(p.min));
    band.setAttribute("d", "M" + top.join("L") + "L" + bottom.join("L") + "Z");
    // a gap of more than a bucket breaks the line, as it does in the readings
    const gapMs = 1.5 * (SPARK_S * 1000) / SPARK_BUCKETS;
    line.setAttribute(
      "d",
      points
        .map((p, i) => {
          const jump = i === 0 || Date.parse(p.t) - Date.parse(points[i - 1].t) > gapMs;
          return (jump ? "M" : "L") + x(p) + "," + y(p.avg);
        })
        .join(""),
    );
    const newest = points[points.length - 1];
    // a bucket that live readings went into knows its newest value; a fetched one its mean
    const latest = newest.latest === undefined ? newest.avg : newest.latest;
    dot.setAttribute("visibility", "visible");
    dot.setAttribute("cx", x(newest));
    dot.setAttribute("cy", y(latest));
    svg.dataset.last = String(latest);
    svg.setAttribute(
      "aria-label",
      "last hour: " + P.dec(low + pad) + " to " + P.dec(high - pad) + ", latest " + P.dec(latest),
    );
  }

  /* Fold a live reading into the sparkline's buckets (120 s wide, as the server's). */
  function addToSpark(spark, t, v) {
    const width = (SPARK_S * 1000) / SPARK_BUCKETS;
    const last = spark[spark.length - 1];
    const lastStart = last ? Date.parse(last.t) : NaN;
    if (last && t >= lastStart && t < lastStart + width) {
      last.avg = (last.avg * last.count + v) / (last.count + 1);
      last.count += 1;
      last.min = Math.min(last.min, v);
      last.max = Math.max(last.max, v);
      // the newest value is what the dot shows
      last.latest = v;
      return;
    }
    if (last && t < lastStart) return; // older than the newest bucket: the next refetch has it
    const bucketStart = last ? lastStart + Math.floor((t - lastStart) / width) * width : t;
    spark.push({ t: new Date(bucketStart).toISOString(), min: v, max: v, avg: v, count: 1, latest: v });
  }

  /* ---------- live ---------- */

  const refreshSoon = P.debounce(refresh, 300);

  function onEvent(event) {
    if (event.type === "batch") {
      const entry = view.devices.get(event.device_id);
      if (!entry) return;
      const dev = entry.data;
      if (Date.parse(event.last_seen) > Date.parse(dev.last_seen)) dev.last_seen = event.last_seen;
      dev.count += event.accepted;
      for (const p of event.points || []) addToSpark(dev.spark, Date.parse(p.t), p.v);
      fillRow(entry);
      entry.row.classList.remove("fresh");
      void entry.row.offsetWidth; // restart the highlight
      entry.row.classList.add("fresh");
    } else if (event.type === "alerts" || event.type === "lagged") {
      refreshSoon();
    }
  }

  /* The server watches the rows on screen now. A batch stored after they were fetched but
   * before that is in no fetch and came over no socket, nor did one stored while the socket
   * was down: only a fetch from now on has them. (No rows shown yet: the first fetch is on
   * its way, and will ask for this once it is in.) */
  function onWatching(devices) {
    if (JSON.stringify(devices) === shownKey) refresh();
  }

  const live = P.live({ devices: [], onEvent: onEvent, onWatching: onWatching });

  /* ---------- controls ---------- */

  const search = P.debounce(() => {
    const q = input.value.trim();
    if (q === view.q) return;
    view.q = q;
    view.page = 1;
    writeUrl(false);
    refresh();
  }, 250);
  input.addEventListener("input", search);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && input.value) {
      input.value = "";
      search();
    }
  });
  P.byId("clear-search").addEventListener("click", () => {
    input.value = "";
    search();
    input.focus();
  });
  function goTo(page) {
    view.page = page;
    writeUrl(true);
    refresh();
  }
  P.byId("prev").addEventListener("click", () => goTo(Math.max(1, view.page - 1)));
  P.byId("next").addEventListener("click", () => goTo(view.page + 1));
  window.addEventListener("popstate", () => {
    readUrl();
    refresh();
  });

  // "live" turns to "silent" and "12 s ago" grows without any event
  setInterval(() => view.devices.forEach(fillTimes), 5000);

  readUrl();
  refresh();
})();
