/* Pulse server, the rules and channels page: list, create, edit and delete both, and send a
 * test notification. The API checks every field; its problems are shown beside the field
 * they name. No build step. Every value goes into the page as text, never HTML. */
"use strict";

(function () {
  const byId = (id) => document.getElementById(id);

  let rules = [];
  let channels = [];
  let editingRule = null; // the name of the rule in the form, null for a new one
  let editingChannel = null;
  const ruleForm = byId("rule-form");

  const P = window.Pulse;
  const call = (method, path, body) => P.call(method, path, body, { quiet: true });

  function errorText(res) {
    return (res.data && res.data.error) || (res.status ? "HTTP " + res.status : "no answer");
  }
  function path(kind, name) {
    return "/api/v1/" + kind + "/" + encodeURIComponent(name);
  }

  /* ---------- formatting ---------- */

  const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
  function num(v) {
    return v === null || v === undefined ? "–" : numberFormat.format(v);
  }
  function span(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Number(seconds);
    if (s < 60) return num(s) + " s";
    if (s < 3600) return num(s / 60) + " min";
    if (s < 86400) return num(s / 3600) + " h";
    return num(s / 86400) + " d";
  }
  function condition(rule) {
    if (rule.when === "silent") return "no reading received";
    const sign = rule.when === "above" ? ">" : "<";
    let text = "value " + sign + " " + num(rule.threshold);
    if (rule.clear !== null && rule.clear !== undefined && rule.clear !== rule.threshold) {
      text += ", clears at " + num(rule.clear);
    }
    return text;
  }
  function field(root, k) {
    return root.querySelector('[data-k="' + k + '"]');
  }
  function schemeOf(url) {
    const i = url.indexOf("://");
    return i > 0 ? url.slice(0, i) : "?";
  }

  /* ---------- lists ---------- */

  function renderRules() {
    const template = byId("rule-row").content.firstElementChild;
    byId("rule-rows").replaceChildren(
      ...rules.map((rule) => {
        const row = template.cloneNode(true);
        row.dataset.name = rule.name;
        field(row, "name").textContent = rule.name;
        field(row, "device").textContent = rule.device === "*" ? "every device" : rule.device;
        field(row, "condition").textContent = condition(rule);
        field(row, "for").textContent = span(rule.for_s);
        field(row, "repeat").textContent = rule.repeat_s ? "every " + span(rule.repeat_s) : "no";
        field(row, "channels").textContent = rule.channels.length ? rule.channels.join(", ") : "none";
        return row;
      }),
    );
    byId("rules").dataset.count = String(rules.length);
    byId("rules").hidden = rules.length === 0;
    byId("rules-empty").hidden = rules.length !== 0;
    markEditing();
  }

  /* The row of the rule in the form stands out, so it is clear which one is being changed. */
  function markEditing() {
    for (const row of byId("rule-rows").children) {
      row.classList.toggle("editing", !ruleForm.hidden && row.dataset.name === editingRule);
    }
  }

  function usersOf(name) {
    return rules.filter((r) => r.channels.includes(name)).map((r) => r.name);
  }

  function renderChannels() {
    const template = byId("channel-item").content.firstElementChild;
    const list = byId("channel-list");
    // keep the open "Show URLs" and the last test result of a channel across a reload
    const before = new Map([...list.children].map((li) => [li.dataset.name, li]));
    list.replaceChildren(
      ...channels.map((channel) => {
        const item = template.cloneNode(true);
        item.dataset.name = channel.name;
        field(item, "name").textContent = channel.name;
        const schemes = [...new Set(channel.urls.map(schemeOf))].join(", ");
        field(item, "summary").textContent =
          channel.urls.length + (channel.urls.length === 1 ? " URL" : " URLs") + " · " + schemes;
        const users = usersOf(channel.name);
        field(item, "used-by").textContent = users.length ? "Used by " + users.join(", ") : "Not used by any rule";
        field(item, "urls").replaceChildren(
          ...channel.urls.map((url) => {
            const li = document.createElement("li");
            const code = document.createElement("code");
            code.textContent = url;
            li.append(code);
            return li;
          }),
        );
        const old = before.get(channel.name);
        if (old) {
          item.querySelector("details").open = old.querySelector("details").open;
          const result = field(old, "result");
          const now = field(item, "result");
          now.textContent = result.textContent;
          now.dataset.tone = result.dataset.tone || "";
          now.hidden = result.hidden;
        }
        return item;
      }),
    );
    list.dataset.count = String(channels.length);
    byId("channels-empty").hidden = channels.length !== 0;
    renderChannelChecks();
  }

  function renderChannelChecks() {
    const box = byId("rule-channels");
    const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
    box.replaceChildren(
      ...channels.map((channel) => {
        const label = document.createElement("label");
        label.className = "check";
        const input = document.createElement("input");
        input.type = "checkbox";
        input.name = "channels";
        input.value = channel.name;
        input.checked = checked.has(channel.name);
        label.append(input, " " + channel.name);
        return label;
      }),
    );
    byId("rule-no-channels").hidden = channels.length !== 0;
  }

  async function load() {
    const [r, c] = await Promise.all([call("GET", "/api/v1/rules"), call("GET", "/api/v1/channels")]);
    if (r.ok && Array.isArray(r.data)) rules = r.data.slice().sort((a, b) => a.name.localeCompare(b.name));
    else say("rules-result", "Could not load the rules: " + errorText(r), "bad");
    if (c.ok && Array.isArray(c.data)) channels = c.data.slice().sort((a, b) => a.name.localeCompare(b.name));
    else say("channels-result", "Could not load the channels: " + errorText(c), "bad");
    renderRules();
    renderChannels();
  }

  async function loadDevices() {
    // suggestions only: a datalist of the first devices, nothing breaks without it
    const res = await call("GET", "/api/v1/overview?limit=200");
    if (!res.ok || !res.data || !Array.isArray(res.data.devices)) return;
    const options = res.data.devices.map((d) => {
      const option = document.createElement("option");
      option.value = d.device_id;
      return option;
    });
    const all = document.createElement("option");
    all.value = "*";
    byId("device-ids").replaceChildren(all, ...options);
  }

  function say(id, text, tone) {
    const el = byId(id);
    el.textContent = text;
    el.dataset.tone = tone;
  }

  /* ---------- problems beside their fields ---------- */

  function clearProblems(form) {
    for (const el of form.querySelectorAll(".field-error, .form-error")) {
      el.textContent = "";
      el.hidden = true;
    }
    for (const el of form.querySelectorAll(".field[data-invalid]")) el.removeAttribute("data-invalid");
  }

  /* "threshold", "$.channels[1]", "urls[0]" -> "threshold", "channels", "urls" */
  function fieldOf(key) {
    const bare = String(key || "").replace(/^\$\.?/, "");
    const match = bare.match(/^([A-Za-z_]+)(?:\[(\d+)\])?/);
    return match ? { name: match[1], index: match[2] === undefined ? null : Number(match[2]) } : null;
  }

  function showProblems(form, res, generalId, describeIndex) {
    const problems = (res.data && Array.isArray(res.data.problems) && res.data.problems) || [];
    const general = [];
    let first = null;
    for (const p of problems) {
      const where = fieldOf(p.key);
      const el = where && form.querySelector('[data-error-for="' + where.name + '"]');
      if (!el) {
        general.push((p.key ? p.key + ": " : "") + p.problem);
        continue;
      }
      const prefix = where.index !== null && describeIndex ? describeIndex(where.name, where.index) : "";
      el.textContent = (el.textContent ? el.textContent + " " : "") + prefix + p.problem;
      el.hidden = false;
      const box = el.closest(".field");
      box.dataset.invalid = "true";
      first = first || box;
    }
    if (!problems.length) general.push(errorText(res));
    if (general.length) {
      const el = byId(generalId);
      el.textContent = general.join("; ");
      el.hidden = false;
    }
    const focus = first && first.querySelector("input, select, textarea");
    if (focus) focus.focus();
  }

  /* ---------- the rule form ---------- */

  function showValueFields() {
    const silent = ruleForm.elements.when.value === "silent";
    for (const el of ruleForm.querySelectorAll("[data-for-values]")) el.hidden = silent;
    ruleForm.querySelector("[data-for-help]").textContent = silent
      ? "How long without a reading before the alert fires."
      : "How long the condition must hold before the alert fires.";
  }

  function openRuleForm(rule) {
    editingRule = rule ? rule.name : null;
    clearProblems(ruleForm);
    ruleForm.reset();
    const el = ruleForm.elements;
    byId("rule-form-title").textContent = rule ? "Edit rule “" + rule.name + "”" : "New rule";
    el.name.value = rule ? rule.name : "";
    el.device.value = rule ? rule.device : "*";
    el.when.value = rule ? rule.when : "above";
    el.threshold.value = rule && rule.threshold !== null && rule.threshold !== undefined ? rule.threshold : "";
    el.clear.value = rule && rule.clear !== null && rule.clear !== undefined ? rule.clear : "";
    el.for_s.value = rule ? rule.for_s : 0;
    el.repeat_s.value = rule && rule.repeat_s ? rule.repeat_s : "";
    const on = new Set(rule ? rule.channels : channels.length === 1 ? [channels[0].name] : []);
    for (const box of byId("rule-channels").querySelectorAll("input")) box.checked = on.has(box.value);
    showValueFields();
    ruleForm.hidden = false;
    markEditing();
    ruleForm.scrollIntoView({ block: "nearest" });
    el.name.focus();
  }

  function closeRuleForm() {
    ruleForm.hidden = true;
    editingRule = null;
    markEditing();
  }

  /* The form as a Rule; an empty optional number is left out, so the API's default applies. */
  function ruleFromForm() {
    const el = ruleForm.elements;
    const rule = { name: el.name.value.trim(), device: el.device.value.trim(), when: el.when.value };
    const number = (input) => (input.value.trim() === "" ? null : Number(input.value));
    if (rule.when !== "silent") {
      const threshold = number(el.threshold);
      if (threshold !== null) rule.threshold = threshold;
      const clear = number(el.clear);
      if (clear !== null) rule.clear = clear;
    }
    rule.for_s = number(el.for_s) ?? 0;
    const repeat = number(el.repeat_s);
    if (repeat !== null) rule.repeat_s = repeat;
    rule.channels = [...byId("rule-channels").querySelectorAll("input:checked")].map((i) => i.value);
    return rule;
  }

  async function saveRule(event) {
    event.preventDefault();
    clearProblems(ruleForm);
    const rule = ruleFromForm();
    const renamed = editingRule !== null && rule.name !== editingRule;
    // a PUT to an existing name replaces that rule: never do it by accident
    if ((editingRule === null || renamed) && rules.some((r) => r.name === rule.name)) {
      showProblems(ruleForm, { data: { problems: [{ key: "name", problem: "a rule with this name exists already" }] } }, "rule-error");
      return;
    }
    const save = byId("rule-save");
    save.disabled = true;
    const res = await call("PUT", path("rules", rule.name || " "), rule);
    if (res.ok && renamed) {
      const gone = await call("DELETE", path("rules", editingRule));
      if (!gone.ok && gone.status !== 404) say("rules-result", "Saved as “" + rule.name + "”, but the old rule stays: " + errorText(gone), "bad");
    }
    save.disabled = false;
    if (!res.ok) {
      showProblems(ruleForm, res, "rule-error");
      return;
    }
    say("rules-result", (res.status === 201 ? "Created" : "Saved") + " rule “" + rule.name + "”.", "good");
    closeRuleForm();
    await load();
  }

  /* ---------- the channel form ---------- */

  const channelForm = byId("channel-form");

  function openChannelForm(channel) {
    editingChannel = channel ? channel.name : null;
    clearProblems(channelForm);
    channelForm.reset();
    byId("channel-form-title").textContent = channel ? "Edit channel “" + channel.name + "”" : "New channel";
    channelForm.elements.name.value = channel ? channel.name : "";
    // rules name their channels: a rename would leave them pointing at nothing
    channelForm.elements.name.readOnly = Boolean(channel);
    channelForm.elements.urls.value = channel ? channel.urls.join("\n") : "";
    channelForm.hidden = false;
    channelForm.scrollIntoView({ block: "nearest" });
    (channel ? channelForm.elements.urls : channelForm.elements.name).focus();
  }

  function closeChannelForm() {
    channelForm.hidden = true;
    editingChannel = null;
  }

  async function saveChannel(event) {
    event.preventDefault();
    clearProblems(channelForm);
    const name = channelForm.elements.name.value.trim();
    const urls = channelForm.elements.urls.value
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "");
    if (name === "") {
      showProblems(channelForm, { data: { problems: [{ key: "name", problem: "a name is required" }] } }, "channel-error");
      return;
    }
    if (editingChannel === null && channels.some((c) => c.name === name)) {
      showProblems(channelForm, { data: { problems: [{ key: "name", problem: "a channel with this name exists already" }] } }, "channel-error");
      return;
    }
    const save = byId("channel-save");
    save.disabled = true;
    const res = await call("PUT", path("channels", name), { urls: urls });
    save.disabled = false;
    if (!res.ok) {
      showProblems(channelForm, res, "channel-error", (name, i) => (name === "urls" ? "line " + (i + 1) + ": " : ""));
      return;
    }
    say("channels-result", (res.status === 201 ? "Created" : "Saved") + " channel “" + name + "”.", "good");
    closeChannelForm();
    await load();
  }

  async function testChannel(item, button) {
    const result = field(item, "result");
    button.disabled = true;
    result.hidden = false;
    result.dataset.tone = "";
    result.textContent = "Sending…";
    const res = await call("POST", path("channels", item.dataset.name) + "/test");
    button.disabled = false;
    if (res.ok && res.data && res.data.delivered) {
      result.dataset.tone = "good";
      result.textContent = "✓ Delivered at " + P.clock(new Date(), true) + ".";
    } else {
      result.dataset.tone = "bad";
      result.textContent = "✗ Not delivered: " + errorText(res);
    }
  }

  /* ---------- delete, after a confirmation ---------- */

  function confirmDelete(title, text) {
    const dialog = byId("confirm");
    byId("confirm-title").textContent = title;
    byId("confirm-text").textContent = text;
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "delete"), { once: true });
    });
  }

  async function deleteRule(name) {
    const yes = await confirmDelete("Delete rule “" + name + "”?", "Its alerts stop being evaluated and no more notifications are sent for it.");
    if (!yes) return;
    const res = await call("DELETE", path("rules", name));
    if (res.ok || res.status === 404) {
      say("rules-result", "Deleted rule “" + name + "”.", "good");
      if (editingRule === name) closeRuleForm();
    } else {
      say("rules-result", "Could not delete “" + name + "”: " + errorText(res), "bad");
    }
    await load();
  }

  async function deleteChannel(name) {
    const users = usersOf(name);
    const note = users.length ? " Rules that use it: " + users.join(", ") + "." : "";
    const yes = await confirmDelete("Delete channel “" + name + "”?", "Its URLs are removed for good." + note);
    if (!yes) return;
    const res = await call("DELETE", path("channels", name));
    if (res.ok || res.status === 404) {
      say("channels-result", "Deleted channel “" + name + "”.", "good");
      if (editingChannel === name) closeChannelForm();
    } else {
      // 409: the API names the rules that still use it
      say("channels-result", "Could not delete “" + name + "”: " + errorText(res), "bad");
    }
    await load();
  }

  /* ---------- wiring ---------- */

  byId("new-rule").addEventListener("click", () => openRuleForm(null));
  byId("rule-cancel").addEventListener("click", closeRuleForm);
  ruleForm.addEventListener("submit", saveRule);
  ruleForm.elements.when.addEventListener("change", showValueFields);
  byId("new-channel").addEventListener("click", () => openChannelForm(null));
  byId("channel-cancel").addEventListener("click", closeChannelForm);
  channelForm.addEventListener("submit", saveChannel);

  // typing into a field takes back its complaint
  for (const form of [ruleForm, channelForm]) {
    form.addEventListener("input", (event) => {
      const box = event.target.closest(".field");
      if (!box || !box.dataset.invalid) return;
      box.removeAttribute("data-invalid");
      const el = box.querySelector(".field-error");
      el.hidden = true;
      el.textContent = "";
    });
  }

  byId("rule-rows").addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    const name = button.closest("tr").dataset.name;
    const rule = rules.find((r) => r.name === name);
    if (button.dataset.action === "edit" && rule) openRuleForm(rule);
    else if (button.dataset.action === "delete") deleteRule(name);
  });

  byId("channel-list").addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    const item = button.closest("li.channel");
    const channel = channels.find((c) => c.name === item.dataset.name);
    if (button.dataset.action === "test") testChannel(item, button);
    else if (button.dataset.action === "edit" && channel) openChannelForm(channel);
    else if (button.dataset.action === "delete") deleteChannel(item.dataset.name);
  });

  load();
  loadDevices();
})();
