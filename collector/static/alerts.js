/* Pulse server, the alerts page: every alert with its actions, and the history. Refetches
 * when the live websocket says alerts changed. No build step. Every value goes into the page
 * as text (textContent), never HTML. */
"use strict";

(function () {
  const byId = (id) => document.getElementById(id);
  const card = byId("alerts-card");
  const filter = { device_id: card.dataset.deviceId || "", state: card.dataset.state || "" };
  const ORDER = { firing: 0, pending: 1, resolved: 2 };
  const HISTORY_LIMIT = Number(card.dataset.historyLimit) || 100;
  const HISTORY_SHOWN = 15; // the rest behind "Show all"

  let alerts = [];
  const rows = new Map(); // "rule\u0000device" -> <tr>, kept so an open menu survives a refetch

  const P = window.Pulse;
  const call = (method, path, body) => P.call(method, path, body, { quiet: true });

  function errorText(res) {
    return (res.data && res.data.error) || (res.status ? "HTTP " + res.status : "no answer");
  }

  const numberFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
  function num(v) {
    return v === null || v === undefined ? "–" : numberFormat.format(v);
  }
  function silencedUntil(alert) {
    if (!alert.silenced_until) return null;
    const until = new Date(alert.silenced_until);
    return until.getTime() > P.now() ? until : null;
  }
  /* An open alert has held "for 12 min"; a resolved one ended "12 min ago". */
  function forText(alert) {
    const seconds = (P.now() - Date.parse(alert.since)) / 1000;
    return alert.state === "resolved" ? P.ago(alert.since) : "for " + P.span(seconds);
  }
  function keyOf(alert) {
    return alert.rule + "\u0000" + alert.device_id;
  }
  function field(root, k) {
    return root.querySelector('[data-k="' + k + '"]');
  }
  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }
  function deviceLink(a, deviceId) {
    a.href = "/devices/" + encodeURIComponent(deviceId);
    setText(a, deviceId);
  }

  /* ---------- the alerts ---------- */

  function sorted(list) {
    return list.slice().sort((a, b) => {
      const byState = (ORDER[a.state] ?? 3) - (ORDER[b.state] ?? 3);
      if (byState) return byState;
      return new Date(b.since) - new Date(a.since);
    });
  }

  function fill(row, alert) {
    row.dataset.state = alert.state;
    row.dataset.rule = alert.rule;
    row.dataset.device = alert.device_id;
    const badge = field(row, "state");
    badge.className = "pill state-" + alert.state;
    setText(badge, alert.state);
    field(row, "ack").hidden = !alert.acknowledged;
    const until = silencedUntil(alert);
    const silenced = field(row, "silenced");
    silenced.hidden = !until;
    row.dataset.silenced = until ? "true" : "false";
    row.dataset.acknowledged = alert.acknowledged ? "true" : "false";
    if (until) {
      setText(silenced, "silenced until " + P.stamp(until));
      silenced.title = "Silenced until " + P.full(until);
    }
    setText(field(row, "rule"), alert.rule);
    deviceLink(field(row, "device"), alert.device_id);
    const since = field(row, "since");
    since.dateTime = alert.since;
    since.title = P.full(alert.since);
    setText(since, P.stamp(alert.since));
    setText(field(row, "for"), forText(alert));
    setText(field(row, "value"), num(alert.value));
    row.querySelector('[data-action="ack"]').hidden = alert.acknowledged || alert.state === "resolved";
    row.querySelector('[data-action="unsilence"]').hidden = !until;
  }

  function newRow() {
    const row = byId("alert-row").content.firstElementChild.cloneNode(true);
    return row;
  }

  function render() {
    const body = byId("alert-rows");
    // the counts at the top cover every state; the state filter narrows only the list
    const list = sorted(alerts).filter((a) => !filter.state || a.state === filter.state);
    const seen = new Set();
    list.forEach((alert, i) => {
      const key = keyOf(alert);
      seen.add(key);
      let row = rows.get(key);
      if (!row) {
        row = newRow();
        rows.set(key, row);
      }
      fill(row, alert);
      // move only when out of place: moving a row would close its menu and drop focus
      if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null);
    });
    for (const [key, row] of rows) {
      if (!seen.has(key)) {
        row.remove();
        rows.delete(key);
      }
    }
    byId("alerts").dataset.count = String(list.length);
    byId("alerts").hidden = list.length === 0;
    byId("alerts-empty").hidden = list.length !== 0;
    for (const state of Object.keys(ORDER)) {
      setText(byId("n-" + state), String(alerts.filter((a) => a.state === state).length));
    }
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v !== undefined) q.set(k, v);
    const s = q.toString();
    return s ? "?" + s : "";
  }

  async function loadAlerts() {
    const res = await call("GET", "/api/v1/alerts" + query({ device_id: filter.device_id }));
    const problem = byId("alerts-error");
    if (!res.ok || !Array.isArray(res.data)) {
      problem.textContent = "Could not load the alerts: " + errorText(res);
      problem.hidden = false;
      return;
    }
    problem.hidden = true;
    alerts = res.data;
    render();
  }

  async function loadHistory() {
    const res = await call("GET", "/api/v1/alerts/history" + query({ device_id: filter.device_id, limit: HISTORY_LIMIT }));
    if (!res.ok || !Array.isArray(res.data)) return;
    const list = res.data.slice().sort((a, b) => new Date(b.at) - new Date(a.at));
    const body = byId("history-rows");
    const template = byId("history-row").content.firstElementChild;
    body.replaceChildren(
      ...list.map((entry) => {
        const row = template.cloneNode(true);
        row.dataset.state = entry.state;
        const at = field(row, "at");
        at.dateTime = entry.at;
        at.title = P.full(entry.at);
        at.textContent = P.stamp(entry.at);
        const badge = field(row, "state");
        badge.className = "pill state-" + entry.state;
        badge.textContent = entry.state;
        field(row, "rule").textContent = entry.rule;
        deviceLink(field(row, "device"), entry.device_id);
        field(row, "value").textContent = num(entry.value);
        return row;
      }),
    );
    byId("history").dataset.count = String(list.length);
    byId("history").hidden = list.length === 0;
    byId("history-empty").hidden = list.length !== 0;
    showHistory();
  }

  let historyAll = false;
  function showHistory() {
    const rows = byId("history-rows").children;
    [...rows].forEach((row, i) => (row.hidden = !historyAll && i >= HISTORY_SHOWN));
    const more = byId("history-more");
    more.hidden = historyAll || rows.length <= HISTORY_SHOWN;
    more.textContent = "Show all " + rows.length;
  }
  byId("history-more").addEventListener("click", () => {
    historyAll = true;
    showHistory();
  });

  let loading = null;
  let again = false;
  /* One refetch at a time; a change during one asks for one more after it. */
  function refresh() {
    if (loading) {
      again = true;
      return loading;
    }
    loading = Promise.all([loadAlerts(), loadHistory()]).finally(() => {
      loading = null;
      if (again) {
        again = false;
        refresh();
      }
    });
    return loading;
  }

  /* ---------- actions ---------- */

  function say(text, tone) {
    const el = byId("action-result");
    el.textContent = text;
    el.dataset.tone = tone;
  }

  async function act(row, path, body, done) {
    const buttons = row.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    const res = await call("POST", path, Object.assign({ rule: row.dataset.rule, device_id: row.dataset.device }, body));
    buttons.forEach((b) => (b.disabled = false));
    const what = "“" + row.dataset.rule + "” on " + row.dataset.device;
    if (res.ok) {
      say(done + " " + what + ".", "good");
      const menu = field(row, "silence-menu");
      if (menu) menu.open = false;
    } else {
      say("Could not change " + what + ": " + errorText(res), "bad");
    }
    await refresh();
  }

  function silence(row, seconds, label) {
    return act(row, "/api/v1/alerts/silence", { for_s: seconds }, "Silenced for " + label + ":");
  }

  byId("alert-rows").addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    const row = button.closest("tr");
    if (button.dataset.action === "ack") act(row, "/api/v1/alerts/ack", {}, "Acknowledged");
    else if (button.dataset.action === "unsilence") act(row, "/api/v1/alerts/silence", { for_s: 0 }, "Unsilenced");
    else if (button.dataset.silence) silence(row, Number(button.dataset.silence), button.textContent);
  });

  byId("alert-rows").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.target;
    const minutes = Number(form.elements.minutes.value);
    if (!(minutes >= 1)) return;
    silence(form.closest("tr"), Math.round(minutes * 60), P.span(Math.round(minutes * 60)));
    form.reset();
  });

  // one silence menu open at a time; a click elsewhere closes it
  document.addEventListener("click", (event) => {
    for (const menu of document.querySelectorAll("details.menu[open]")) {
      if (!menu.contains(event.target)) menu.open = false;
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    for (const menu of document.querySelectorAll("details.menu[open]")) {
      menu.open = false;
      menu.querySelector("summary").focus();
    }
  });

  /* ---------- live ---------- */

  // no device's readings: this page only needs to hear that alerts changed
  refresh();
  P.live({
    devices: [],
    // once the server has the socket's filter in force, every change from then on comes over
    // it: fetch whatever changed before (or while the socket was down)
    onWatching: () => refresh(),
    onEvent: (event) => {
      if (event.type === "alerts" || event.type === "lagged") refresh();
    },
  });
  // durations grow and silences end without any event: redraw from what we have
  setInterval(render, 15000);
})();
