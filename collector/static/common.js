/* Pulse server UI: what every page's script shares. The JSON calls (with the CSRF header on
 * changes, errors shown to the user), the one live websocket with its reconnect and the
 * indicator in the top bar, and time formatting. No build step; values go into the page as
 * text (textContent), never as HTML. */
"use strict";

window.Pulse = (function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const byId = (id) => document.getElementById(id);

  /* ---------- errors ---------- */

  let toastTimer = null;
  /* A message at the bottom of the screen that the user can read and dismiss. */
  function showError(text) {
    let box = byId("toast");
    if (!box) {
      box = document.createElement("div");
      box.id = "toast";
      box.className = "toast";
      box.setAttribute("role", "alert");
      box.addEventListener("click", () => (box.hidden = true));
      document.body.appendChild(box);
    }
    box.textContent = text;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (box.hidden = true), 8000);
  }

  /* ---------- HTTP ---------- */

  /* {ok, status, data}; a change carries the CSRF token; a failure is shown unless `quiet`. */
  async function call(method, path, body, options) {
    const quiet = Boolean(options && options.quiet);
    const init = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") {
      init.headers["X-CSRF-Token"] = csrf;
      if (body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (err) {
      if (!quiet) showError("The server did not answer (" + method + " " + path + ").");
      return { ok: false, status: 0, data: { error: "the server did not answer" } };
    }
    if (resp.status === 401) {
      // the session ended (signed out elsewhere, or the server restarted with accounts)
      location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
      return { ok: false, status: 401, data: { error: "sign in again" } };
    }
    let data = null;
    if (resp.status !== 204) {
      try {
        data = await resp.json();
      } catch (err) {
        data = null;
      }
    }
    const result = { ok: resp.ok, status: resp.status, data: data === null ? {} : data };
    if (!resp.ok && !quiet) showError((result.data.error || "HTTP " + resp.status) + " (" + method + " " + path + ")");
    return result;
  }

  /* ---------- time ---------- */

  // server time minus this browser's: "live" and "ago" follow the server's clock
  let skewMs = 0;
  function syncClock(serverNow) {
    const t = Date.parse(serverNow);
    if (Number.isFinite(t)) skewMs = t - Date.now();
  }
  function now() {
    return Date.now() + skewMs;
  }
  function toDate(value) {
    return value instanceof Date ? value : new Date(typeof value === "number" ? value : Date.parse(value));
  }
  function sameDay(a, b) {
    return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
  }
  /* HH:MM (24 h, the browser's time zone). */
  function clock(value, withSeconds) {
    const opts = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    if (withSeconds) opts.second = "2-digit";
    return toDate(value).toLocaleTimeString([], opts);
  }
  /* HH:MM today, else "29 Nov, HH:MM" (with the year if not this year). */
  function stamp(value) {
    const d = toDate(value);
    const today = new Date(now());
    if (sameDay(d, today)) return clock(d);
    const opts = { day: "numeric", month: "short" };
    if (d.getFullYear() !== today.getFullYear()) opts.year = "numeric";
    return d.toLocaleDateString([], opts) + ", " + clock(d);
  }
  /* The full date and time, for a title attribute. */
  function full(value) {
    return toDate(value).toLocaleString([], { dateStyle: "medium", timeStyle: "medium", hourCycle: "h23" });
  }
  function span(seconds) {
    let s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60);
    s %= 60;
    if (m < 60) return m + " min";
    const h = Math.floor(m / 60);
    if (h < 48) return h + " h " + (m % 60) + " min";
    return Math.floor(h / 24) + " d " + (h % 24) + " h";
  }
  /* "12 s ago", "3 min ago", "2 d 4 h ago". */
  function ago(value) {
    const seconds = (now() - toDate(value).getTime()) / 1000;
    return seconds < 1 ? "just now" : span(seconds) + " ago";
  }

  const numberFormat = new Intl.NumberFormat("en-US");
  const decimalFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  function num(n) {
    return n === null || n === undefined ? "–" : numberFormat.format(n);
  }
  function dec(n) {
    return n === null || n === undefined ? "–" : decimalFormat.format(n);
  }

  /* ---------- the live websocket ---------- */

  /* One websocket to /api/v1/live for the page. `devices` is the list to watch (null: all);
   * onEvent gets every event (a message of a type it does not know it can skip); onOpen runs
   * after each (re)connect. onWatching(devices) runs when the server answers that the list the
   * page watches now is in force ({"type": "watching"}), after each (re)connect and each
   * change of the list: every batch stored from then on comes over the socket, so a fetch
   * started then misses nothing, and that is when the page should refetch. The list in force
   * is also on <body data-live-watching> (JSON), set once onWatching has run, for the tests.
   * Reconnects with a growing, jittered wait. */
  function live(options) {
    const conn = byId("conn");
    const main = document.querySelector("main");
    const initial = options.devices === undefined ? null : options.devices;
    let devices = initial === null ? null : initial.slice().sort();
    let ws = null;
    let retryMs = 500;
    let opened = false;

    function show(state) {
      conn.dataset.state = state;
      conn.textContent = { live: "live", connecting: "connecting…", down: "disconnected, retrying" }[state];
      main.classList.toggle("stale", state === "down");
    }
    function sendFilter() {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ devices: devices }));
    }
    /* The server's answer to a filter; one for a list since replaced is not news. */
    function onWatching(watching) {
      const key = JSON.stringify(watching === undefined ? null : watching);
      if (key !== JSON.stringify(devices)) return;
      try {
        if (options.onWatching) options.onWatching(devices);
      } finally {
        document.body.dataset.liveWatching = key;
      }
    }
    function connect() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      ws = new WebSocket(scheme + location.host + "/api/v1/live");
      ws.onopen = () => {
        retryMs = 500;
        sendFilter();
        show("live");
        const again = opened;
        opened = true;
        if (options.onOpen) options.onOpen(again);
      };
      ws.onmessage = (e) => {
        let event;
        try {
          event = JSON.parse(e.data);
        } catch (err) {
          return;
        }
        if (event === null || typeof event !== "object") return;
        if (event.type === "watching") onWatching(event.devices);
        else options.onEvent(event);
      };
      ws.onclose = () => {
        ws = null;
        // the next socket's answer says when its filter is in force
        delete document.body.dataset.liveWatching;
        show("down");
        const wait = Math.round(retryMs * (0.75 + Math.random() * 0.5));
        retryMs = Math.min(retryMs * 2, 15000);
        setTimeout(connect, wait);
      };
    }

    show("connecting");
    connect();
    return {
      /* Watch these device ids from now on (null: every device); onWatching says when. */
      watch(ids) {
        const next = ids === null ? null : ids.slice().sort();
        if (JSON.stringify(next) === JSON.stringify(devices)) return;
        devices = next;
        delete document.body.dataset.liveWatching;
        sendFilter();
      },
      get connected() {
        return Boolean(ws && ws.readyState === WebSocket.OPEN);
      },
    };
  }

  /* ---------- small DOM helpers ---------- */

  function setText(el, text) {
    if (typeof el === "string") el = byId(el);
    if (el && el.textContent !== text) el.textContent = text;
  }
  /* An element with a class and text (never HTML). */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }
  /* Run `fn` once, `ms` after the last of a burst of calls. */
  function debounce(fn, ms) {
    let timer = null;
    return function () {
      const args = arguments;
      clearTimeout(timer);
      timer = setTimeout(() => fn.apply(null, args), ms);
    };
  }

  return {
    byId, call, showError, syncClock, now, clock, stamp, full, ago, span, num, dec,
    live, setText, el, debounce,
  };
})();
