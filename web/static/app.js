/* Pulse agent dashboard: live status over /ws, the chart, the controls and the settings
 * editor. No build step. Every value goes into the page as text (textContent), never HTML. */
"use strict";

(function () {
  const byId = (id) => document.getElementById(id);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const page = document.body.dataset.page;
  const unlocked = document.body.dataset.unlocked === "true";
  const CHART_WINDOW_S = 300;
  const RATE_SETTLE_S = 1;

  /* ---------- HTTP ---------- */

  async function call(method, path, body) {
    const init = { method: method, credentials: "same-origin", headers: {} };
    if (method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRF-Token"] = csrf;
      init.body = JSON.stringify(body === undefined ? {} : body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (err) {
      return { ok: false, status: 0, data: { error: "the agent did not answer" } };
    }
    let data = {};
    try {
      data = await resp.json();
    } catch (err) {
      data = {};
    }
    return { ok: resp.ok, status: resp.status, data: data || {} };
  }

  /* ---------- formatting ---------- */

  const numberFormat = new Intl.NumberFormat();
  function num(n) {
    return n === null || n === undefined ? "–" : numberFormat.format(n);
  }
  function clock(ts, withSeconds) {
    const opts = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    if (withSeconds) opts.second = "2-digit";
    return new Date(ts * 1000).toLocaleTimeString([], opts);
  }
  function span(seconds) {
    let s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60);
    s %= 60;
    if (m < 60) return m + " min " + s + " s";
    const h = Math.floor(m / 60);
    if (h < 24) return h + " h " + (m % 60) + " min";
    return Math.floor(h / 24) + " d " + (h % 24) + " h";
  }
  function ago(ts) {
    return span(Date.now() / 1000 - ts) + " ago";
  }
  function setText(id, text) {
    const el = byId(id);
    if (el && el.textContent !== text) el.textContent = text;
  }

  /* The state in words and a tone (colour); the same words the tray uses. */
  function headline(s, info, incoming) {
    const queued = num(s.pending) + " queued";
    const why = s.detail ? " (" + s.detail + ")" : "";
    switch (s.state) {
      case "sending":
        return {
          tone: "good",
          title: "Sending",
          detail: "Readings are getting through" + (s.pending > 0 ? "; " + queued + "." : "."),
        };
      case "catching_up": {
        const rate = s.catchup_rate;
        // the first samples of a catch-up come from acks a few ms apart: wait for a real rate
        if (!rate || Date.now() / 1000 - s.state_since < RATE_SETTLE_S) {
          return { tone: "info", title: "Catching up", detail: queued + "; measuring the rate…" };
        }
        // new readings keep arriving while the backlog drains
        const gain = rate - (incoming || 0);
        return {
          tone: "info",
          title: "Catching up at " + num(Math.round(rate)) + " readings/s",
          detail:
            gain > 0
              ? queued + ", about " + span(s.pending / gain) + " to go."
              : queued + "; new readings arrive as fast as they are sent.",
        };
      }
      case "offline":
        return {
          tone: "bad",
          title: "Offline since " + clock(s.state_since) + ", " + queued,
          detail:
            "Cannot reach the server at " + info.server_url +
            ". Readings are kept and sent when it is back" + why + ".",
        };
      case "retrying":
        return {
          tone: "warn",
          title: "Retrying, " + queued,
          detail: "The server answered with an error; trying again with growing waits" + why + ".",
        };
      case "unauthorized":
        return {
          tone: "bad",
          title: "Unauthorized",
          detail:
            "The server refused the token" + why + ". Check the server token in Settings; " +
            queued + ".",
        };
      case "rejected":
        return {
          tone: "bad",
          title: "Rejected by server",
          detail: "The server refuses these readings" + why + "; " + queued + ".",
        };
      case "paused":
        return {
          tone: "muted",
          title: "Paused",
          detail: "Nothing is sent until you press Resume; " + queued + ".",
        };
      default:
        return { tone: "muted", title: "Starting", detail: "Waiting for the first delivery." };
    }
  }

  /* ---------- the chart (uPlot) ---------- */

  /* opts.label names the series; opts.auto fits the y range to the data (any unit), else
   * the heart-rate range; opts.small draws a short chart for a source's card. */
  function createChart(el, opts) {
    opts = opts || {};
    const xs = [];
    const ys = [];
    let plot = null;
    let drawQueued = false;

    function colors() {
      const css = getComputedStyle(document.documentElement);
      const get = (name) => css.getPropertyValue(name).trim();
      return { line: get("--chart-line"), fill: get("--chart-fill"), axis: get("--muted"), grid: get("--grid") };
    }
    function size() {
      const width = Math.max(opts.small ? 160 : 220, el.clientWidth);
      if (opts.small) return { width: width, height: 110 };
      return { width: width, height: width < 500 ? 190 : 230 };
    }
    function build() {
      if (typeof uPlot === "undefined") return;
      if (plot) plot.destroy();
      const c = colors();
      const axis = { stroke: c.axis, grid: { stroke: c.grid, width: 1 }, ticks: { stroke: c.grid, width: 1 } };
      const dims = size();
      plot = new uPlot(
        {
          width: dims.width,
          height: dims.height,
          legend: { show: false },
          cursor: { drag: { x: false, y: false } },
          scales: {
            x: { time: true },
            y: {
              range: opts.auto
                ? (u, min, max) => {
                    if (min === null) return [0, 1];
                    const pad = Math.max((max - min) * 0.1, Math.abs(max) * 0.05, 0.5);
                    return [min - pad, max + pad];
                  }
                : (u, min, max) =>
                    min === null ? [50, 120] : [Math.min(50, Math.floor(min - 5)), Math.max(120, Math.ceil(max + 5))],
            },
          },
          axes: [
            Object.assign(
              {
                size: 34,
                space: 70,
                incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600],
                values: (u, splits) => splits.map((v) => clock(v, true)),
              },
              axis,
            ),
            Object.assign({ size: opts.small ? 48 : 42 }, axis),
          ],
          series: [{}, { label: opts.label || "bpm", stroke: c.line, fill: c.fill, width: 2, points: { show: false } }],
        },
        [xs, ys],
        el,
      );
      el.dataset.points = String(xs.length);
    }
    function draw() {
      drawQueued = false;
      if (!plot) return;
      plot.setData([xs, ys]);
      el.dataset.points = String(xs.length);
    }
    function queueDraw() {
      if (!drawQueued) {
        drawQueued = true;
        requestAnimationFrame(draw);
      }
    }
    function trim() {
      const cutoff = Date.now() / 1000 - CHART_WINDOW_S;
      let n = 0;
      while (n < xs.length && xs[n] < cutoff) n++;
      if (n) {
        xs.splice(0, n);
        ys.splice(0, n);
      }
    }

    build();
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => plot && plot.setSize(size()), 100);
    });
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", build);

    return {
      destroy() {
        if (plot) plot.destroy();
        plot = null;
      },
      seed(columns) {
        xs.length = 0;
        ys.length = 0;
        for (let i = 0; i < columns.t.length; i++) {
          xs.push(columns.t[i]);
          ys.push(columns.v[i]);
        }
        trim();
        queueDraw();
      },
      add(t, v) {
        if (xs.length && t < xs[xs.length - 1]) return;
        xs.push(t);
        ys.push(v);
        trim();
        queueDraw();
      },
      perSecond() {
        // over the last 10 s, or over what there is of them
        const now = Date.now() / 1000;
        const span = Math.min(10, xs.length ? now - xs[0] : 0);
        if (span <= 0) return 0;
        let n = 0;
        for (let i = xs.length - 1; i >= 0 && xs[i] >= now - span; i--) n++;
        return n / span;
      },
      perMinute() {
        const since = Date.now() / 1000 - 60;
        let n = 0;
        for (let i = xs.length - 1; i >= 0 && xs[i] >= since; i--) n++;
        return n;
      },
    };
  }

  /* ---------- status page ---------- */

  function initStatus() {
    const view = { status: null, info: null, seq: null, live: false };
    const chart = createChart(byId("chart"));
    const sourceCharts = new Map(); // device id → its small chart
    let sourceRecent = {}; // device id → {t, v} from the last snapshot
    let sourceRows = [];
    let ws = null;
    let retryDelay = 500;
    let resync = false;
    let renderQueued = false;
    let deadSeen = -1;

    function connect() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      ws = new WebSocket(scheme + location.host + "/ws");
      ws.onmessage = (e) => onEvent(JSON.parse(e.data));
      ws.onclose = () => {
        ws = null;
        view.seq = null;
        if (resync) {
          resync = false;
          connect();
          return;
        }
        const wait = Math.round(retryDelay * (0.75 + Math.random() * 0.5));
        retryDelay = Math.min(retryDelay * 2, 10000);
        showConnection(false);
        setTimeout(connect, wait);
      };
    }

    function showConnection(live) {
      const conn = byId("conn");
      conn.dataset.state = live ? "live" : "down";
      conn.textContent = live ? "live" : "disconnected, retrying";
      document.querySelector("main").classList.toggle("stale", !live);
      view.live = live;
      if (!live) {
        // the last state shown may be long gone: do not leave "Sending" in green
        byId("state").dataset.tone = "warn";
        setText("state-title", "Agent not reachable");
        setText(
          "state-detail",
          "This page lost its connection to the agent: disconnected, retrying. " +
            "The figures below are from " + clock(Date.now() / 1000, true) + ".",
        );
      }
    }

    function onEvent(ev) {
      if (ev.type === "snapshot") {
        if (view.status !== null) checkSession();
        view.status = ev.status;
        view.info = ev.info;
        view.seq = ev.seq;
        chart.seed(ev.recent);
        sourceRecent = ev.recent_sources || {};
        for (const [id, c] of sourceCharts) c.seed(sourceRecent[id] || { t: [], v: [] });
        retryDelay = 500;
        showConnection(true);
        render();
        refreshLog();
        return;
      }
      if (view.seq === null) return;
      if (ev.seq !== view.seq + 1) {
        // events were lost (a slow tab): start again from a fresh snapshot
        resync = true;
        ws.close();
        return;
      }
      view.seq = ev.seq;
      if (ev.type === "status") {
        Object.assign(view.status, ev.changes);
      } else if (ev.type === "reading") {
        view.status.pending = ev.pending;
        view.status.last_reading = ev.reading;
        const t = Date.parse(ev.reading.datetime) / 1000;
        chart.add(t, ev.reading.value);
        const small = sourceCharts.get(ev.device_id);
        if (small) small.add(t, ev.reading.value);
      } else if (ev.type === "source") {
        view.status.sources[ev.index] = ev.source;
      } else if (ev.type === "config") {
        view.info = ev.info;
      }
      queueRender();
      queueLog();
    }

    // a restarted agent has a new secret: a page unlocked by the old one must say it is locked
    async function checkSession() {
      const r = await call("GET", "/api/session");
      if (r.ok && r.data.unlocked !== unlocked) location.reload();
    }

    function queueRender() {
      if (!renderQueued) {
        renderQueued = true;
        requestAnimationFrame(() => {
          renderQueued = false;
          render();
        });
      }
    }

    function render() {
      const s = view.status;
      const info = view.info;
      if (!s) return;
      if (view.live) {
        const h = headline(s, info, chart.perSecond());
        byId("state").dataset.tone = h.tone;
        setText("state-title", h.title);
        setText("state-detail", h.detail);
      }
      const problem = byId("storage-problem");
      problem.hidden = !s.storage_problem;
      setText("storage-problem", s.storage_problem || "");
      setText("c-pending", num(s.pending));
      setText("c-sent", num(s.sent_total));
      setText("c-dropped", num(s.dropped_total));
      setText("c-dead", num(s.dead_total));
      setText("c-invalid", num(s.invalid_total));
      // shown only once a sensor has given something that could not be stored
      byId("tile-invalid").hidden = !s.invalid_total;
      setText("hr-now", s.last_reading ? String(s.last_reading.value) : "–");
      const paused = s.state === "paused";
      byId("btn-pause").hidden = paused;
      byId("btn-resume").hidden = !paused;
      byId("btn-retry-dead").disabled = !unlocked || !s.dead_total;
      setText("w-server", info.server_url);
      setText("w-device", info.device_id);
      setText("w-config", info.config_path);
      setText("w-data", info.data_dir);
      setText("w-logs", info.logs_dir);
      setText("t-version", info.version);
      const restart = info.restart_needed || [];
      byId("restart-note").hidden = restart.length === 0;
      setText("restart-list", restart.join(", "));
      renderSources(s.sources || []);
      if (s.dead_total !== deadSeen) {
        deadSeen = s.dead_total;
        refreshDead();
      }
      renderTimes();
    }

    const SOURCE_TONES = { ok: "good", starting: "muted", reconnecting: "warn", error: "bad" };
    const DELIVERY_WORDS = {
      sending: "sending",
      catching_up: "catching up",
      retrying: "retrying",
      offline: "offline",
      unauthorized: "unauthorized",
      rejected: "rejected",
      paused: "paused",
      starting: "starting",
    };

    function el(tag, className, text) {
      const e = document.createElement(tag);
      if (className) e.className = className;
      if (text !== undefined) e.textContent = text;
      return e;
    }

    /* One card per source; built when the list changes shape, its texts set at each render. */
    function buildSourceRow(src) {
      const li = el("li", "source");
      const head = el("div", "source-head");
      const dot = el("span", "dot");
      dot.setAttribute("aria-hidden", "true");
      const id = el("strong", "source-id");
      const kind = el("span", "source-kind");
      const value = el("span", "source-value");
      head.append(dot, id, kind, el("span", "spacer"), value);
      const state = el("p", "source-state");
      const facts = el("p", "source-facts");
      const error = el("p", "source-error");
      const chartEl = el("div", "chart source-chart");
      chartEl.dataset.points = "0";
      chartEl.setAttribute("role", "img");
      li.append(head, state, facts, error, chartEl);
      const row = { li, id, kind, value, state, facts, error, chartEl, deviceId: null };
      return row;
    }

    function renderSources(sources) {
      const card = byId("sources-card");
      const several = sources.length > 1;
      card.hidden = sources.length === 0;
      // with several sources their units differ: each has its own chart instead of the main one
      byId("chart-card").hidden = several;
      document.querySelector(".grid").classList.toggle("several", several);
      if (sourceRows.length !== sources.length) {
        for (const c of sourceCharts.values()) c.destroy();
        sourceCharts.clear();
        sourceRows = sources.map(buildSourceRow);
        byId("sources-list").replaceChildren(...sourceRows.map((r) => r.li));
      }
      const counts = {};
      sources.forEach((src, i) => {
        const row = sourceRows[i];
        counts[src.state] = (counts[src.state] || 0) + 1;
        row.li.dataset.tone = SOURCE_TONES[src.state] || "muted";
        row.li.dataset.device = src.device_id;
        setNode(row.id, src.device_id);
        setNode(row.kind, src.kind);
        const unit = src.unit || (src.last_reading ? src.last_reading.unit : "");
        setNode(row.value, src.last_reading ? String(src.last_reading.value) + (unit ? " " + unit : "") : "–");
        setNode(row.state, src.state + (src.detail ? ": " + src.detail : ""));
        setNode(
          row.facts,
          num(src.errors_total) + (src.errors_total === 1 ? " error" : " errors") + " · " +
            num(src.pending) + " pending · " + num(src.sent_total) + " sent · delivery " +
            (DELIVERY_WORDS[src.delivery] || src.delivery),
        );
        row.error.hidden = !src.last_error;
        setNode(row.error, src.last_error ? "last error: " + src.last_error : "");
        row.chartEl.hidden = !several;
        if (several && row.deviceId !== src.device_id) {
          if (row.deviceId !== null && sourceCharts.has(row.deviceId)) {
            sourceCharts.get(row.deviceId).destroy();
            sourceCharts.delete(row.deviceId);
          }
          row.deviceId = src.device_id;
          row.chartEl.setAttribute("aria-label", src.device_id + " over the last 5 minutes");
          const c = createChart(row.chartEl, { small: true, auto: true, label: unit || src.kind });
          c.seed(sourceRecent[src.device_id] || { t: [], v: [] });
          sourceCharts.set(src.device_id, c);
        }
      });
      const order = ["ok", "reconnecting", "error", "starting"];
      const parts = order.filter((k) => counts[k]).map((k) => counts[k] + " " + k);
      setText("sources-summary", sources.length + (sources.length === 1 ? " source" : " sources") + (parts.length ? ", " + parts.join(", ") : ""));
    }

    function setNode(node, text) {
      if (node.textContent !== text) node.textContent = text;
    }

    function renderTimes() {
      const s = view.status;
      if (!s) return;
      setText("t-last-send", s.last_send_at ? clock(s.last_send_at, true) + " (" + ago(s.last_send_at) + ")" : "never");
      setText("t-last-error", s.last_error ? clock(s.last_error_at, true) + " (" + ago(s.last_error_at) + ")" : "none");
      setText("t-last-error-text", s.last_error || "");
      setText("t-rate", num(chart.perMinute()));
      setText("t-uptime", span(Date.now() / 1000 - s.started_at));
      if (view.live && (s.state === "offline" || s.state === "catching_up")) {
        const h = headline(s, view.info, chart.perSecond());
        setText("state-title", h.title);
        setText("state-detail", h.detail);
      }
    }

    /* the log: fetched when events arrive, at most every 2 s */
    let logTimer = null;
    let lastLog = 0;
    function queueLog() {
      if (logTimer) return;
      logTimer = setTimeout(refreshLog, Math.max(0, 2000 - (Date.now() - lastLog)));
    }
    async function refreshLog() {
      clearTimeout(logTimer);
      logTimer = null;
      lastLog = Date.now();
      const r = await call("GET", "/api/logs");
      if (!r.ok) return;
      setText("log-file", r.data.file + ", last " + r.data.lines.length + " lines");
      const pre = byId("log");
      const text = r.data.lines.join("\n");
      if (pre.dataset.text === text) return;
      pre.dataset.text = text;
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      pre.replaceChildren(
        ...r.data.lines.map((line) => {
          const el = document.createElement("span");
          if (/ (ERROR|CRITICAL) /.test(line)) el.className = "lvl-error";
          else if (/ WARNING /.test(line)) el.className = "lvl-warn";
          el.textContent = line + "\n";
          return el;
        }),
      );
      if (atBottom || !pre.dataset.scrolled) {
        pre.scrollTop = pre.scrollHeight;
        pre.dataset.scrolled = "1";
      }
    }

    async function refreshDead() {
      const details = byId("dead-details");
      if (!deadSeen) {
        details.hidden = true;
        return;
      }
      const r = await call("GET", "/api/dead-letters");
      if (!r.ok) return;
      details.hidden = r.data.dead.length === 0;
      byId("dead-list").replaceChildren(
        ...r.data.dead.map((d) => {
          const li = document.createElement("li");
          li.textContent = "#" + d.seq + " (" + d.value + " " + d.unit + ", " + d.ts + "): " + d.error;
          return li;
        }),
      );
    }

    const done = {
      "send-now": () => "Sending now.",
      pause: () => "Paused.",
      resume: () => "Resumed.",
      "retry-dead": (d) => num(d.moved) + " dead letters queued again.",
    };
    document.querySelectorAll("[data-action]").forEach((btn) => {
      btn.addEventListener("click", async () => {
        const action = btn.dataset.action;
        btn.disabled = true;
        const r = await call("POST", "/api/actions/" + action);
        btn.disabled = false;
        setText("action-result", r.ok ? done[action](r.data) : "Refused: " + (r.data.error || "HTTP " + r.status));
        queueRender();
      });
    });

    // HOOK (desktop issue): the switch exists only when the agent offers start at login
    const autostart = byId("autostart");
    if (autostart) {
      autostart.addEventListener("change", async () => {
        const r = await call("POST", "/api/actions/autostart", { enabled: autostart.checked });
        if (!r.ok) {
          autostart.checked = !autostart.checked;
          setText("action-result", "Refused: " + (r.data.error || "HTTP " + r.status));
        } else {
          autostart.checked = r.data.enabled;
          setText("action-result", r.data.enabled ? "Starts at login." : "Does not start at login.");
        }
      });
    }

    connect();
    setInterval(renderTimes, 1000);
  }

  /* ---------- settings page ---------- */

  function readField(el) {
    const kind = el.dataset.kind;
    if (kind === "bool") return el.checked;
    if (kind === "int" || kind === "float" || kind === "optional_int") {
      const raw = el.value.trim();
      if (raw === "") return kind === "optional_int" ? null : raw;
      const n = Number(raw);
      // the server checks the type; a word goes as a word so its error can say so
      return Number.isFinite(n) ? n : raw;
    }
    return el.value;
  }

  function writeField(el, value) {
    if (el.dataset.kind === "bool") el.checked = Boolean(value);
    else el.value = value === null || value === undefined ? "" : String(value);
  }

  function initSettings() {
    const form = byId("settings-form");
    const fields = Array.from(form.querySelectorAll("[data-field]"));
    const result = byId("save-result");
    const label = (key) => {
      const el = fields.find((f) => f.dataset.field === key);
      return el ? el.dataset.label : key;
    };

    function clearErrors() {
      for (const el of fields) {
        const key = el.dataset.field;
        const err = byId("err-" + key);
        err.hidden = true;
        err.textContent = "";
        el.removeAttribute("aria-invalid");
        el.closest(".field").dataset.invalid = "false";
      }
      byId("general-errors").hidden = true;
    }

    function showResult(tone, text) {
      result.dataset.tone = tone;
      result.textContent = text;
    }

    form.addEventListener("reset", () => {
      clearErrors();
      showResult("", "");
    });

    function readForm() {
      const body = {};
      for (const el of fields) {
        const parts = el.dataset.field.split(".");
        const value = readField(el);
        if (parts.length === 1) body[parts[0]] = value;
        else (body[parts[0]] = body[parts[0]] || {})[parts[1]] = value;
      }
      return body;
    }

    /* Mark each field the server named; return how many problems there are. */
    function showErrors(errors, general) {
      for (const key of Object.keys(errors)) {
        const err = byId("err-" + key);
        const el = fields.find((f) => f.dataset.field === key);
        if (!err || !el) continue;
        err.textContent = errors[key];
        err.hidden = false;
        el.setAttribute("aria-invalid", "true");
        el.closest(".field").dataset.invalid = "true";
      }
      if (general.length) {
        const box = byId("general-errors");
        box.textContent = general.join("; ");
        box.hidden = false;
      }
      // the first bad field in the form's order, not the server's
      const firstInvalid = fields.find((f) => f.getAttribute("aria-invalid") === "true");
      if (firstInvalid) firstInvalid.focus();
      return Object.keys(errors).length + general.length;
    }

    function showSaved(d, dropped) {
      for (const el of fields) {
        const parts = el.dataset.field.split(".");
        const value = parts.length === 1 ? d.config[parts[0]] : d.config[parts[0]][parts[1]];
        writeField(el, value);
        el.defaultValue = el.value;
        if (el.dataset.kind === "bool") el.defaultChecked = el.checked;
      }
      const restart = d.restart_needed || [];
      byId("restart-note").hidden = restart.length === 0;
      setText("restart-list", restart.join(", "));
      if (!d.changed.length) {
        showResult("good", "Nothing changed.");
        return;
      }
      let text = "Saved.";
      if (d.applied_live.length) text += " Applied now: " + d.applied_live.map(label).join(", ") + ".";
      const later = d.changed.filter((k) => d.applied_live.indexOf(k) < 0);
      if (later.length) text += " Takes effect after a restart: " + later.map(label).join(", ") + ".";
      if (dropped) text += " The oldest queued readings beyond the new limit are dropped.";
      showResult("good", text);
    }

    /* Lowering the queue limit below what is queued loses readings: ask before, never after. */
    const dropDialog = byId("drop-dialog");
    const readings = (n) => num(n) + (n === 1 ? " reading" : " readings");

    function askToDrop(count, cap) {
      const oldest = count === 1 ? "oldest one" : num(count) + " oldest";
      setText("drop-title", "Drop " + num(count) + " queued " + (count === 1 ? "reading?" : "readings?"));
      if (typeof cap === "number") {
        setText(
          "drop-text",
          num(cap + count) + " readings are waiting to be sent, and a queue limit of " + num(cap) +
            " keeps only " + num(cap) + ". Saving deletes the " + oldest +
            ": they never reach the server and cannot be recovered.",
        );
        setText("drop-keep", "Cancel to keep them: nothing is saved. A limit of at least " +
          num(cap + count) + " keeps every queued reading.");
      } else {
        setText("drop-text", "Saving deletes the " + oldest + " queued: they never reach the server and cannot be recovered.");
        setText("drop-keep", "Cancel to keep them: nothing is saved.");
      }
      setText("drop-confirm", "Drop " + readings(count));
      dropDialog.returnValue = "";
      dropDialog.showModal();
      // Escape closes the dialog too, with no value: that is a cancel
      return new Promise((resolve) => {
        dropDialog.addEventListener("close", () => resolve(dropDialog.returnValue === "drop"), { once: true });
      });
    }

    async function save(body, confirmDrop) {
      clearErrors();
      const button = byId("save");
      button.disabled = true;
      showResult("", "Saving…");
      const r = await call("PUT", "/api/config" + (confirmDrop ? "?confirm_drop=true" : ""), body);
      button.disabled = false;
      if (r.ok) {
        showSaved(r.data, confirmDrop);
      } else if (r.status === 409 && typeof r.data.would_drop === "number") {
        const count = r.data.would_drop;
        showResult("", "Waiting for your answer…");
        if (await askToDrop(count, (body.storage || {}).max_pending)) {
          await save(body, true);
          return;
        }
        showErrors(r.data.errors || {}, r.data.general || []);
        showResult("", "Not saved, and nothing was dropped: the " + readings(count) +
          " stay queued and the config file was not changed.");
      } else if (r.status === 422) {
        const n = showErrors(r.data.errors || {}, r.data.general || []);
        showResult("bad", "Not saved: " + n + (n === 1 ? " problem" : " problems") + " to fix. The config file was not changed.");
      } else {
        showResult("bad", "Not saved: " + (r.data.error || "HTTP " + r.status));
      }
    }

    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!unlocked) return;
      save(readForm(), false);
    });
  }

  /* ---------- unlocking with the password ---------- */

  const login = byId("login-form");
  if (login) {
    login.addEventListener("submit", async (e) => {
      e.preventDefault();
      const r = await call("POST", "/api/login", { password: byId("password").value });
      if (r.ok) location.reload();
      else setText("login-error", r.data.error || "HTTP " + r.status);
    });
  }

  if (page === "status") initStatus();
  else if (page === "settings") initSettings();
})();
