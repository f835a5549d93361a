// cancel-gateway console: the ledger read API and GET /v1/connections/health, drawn. No
// build step, no dependency: every value from the API goes into the page as text, never HTML.
"use strict";

const KEY = "cancel-gateway.key"; // sessionStorage: this tab only
const REFRESH_MS = 5000;
const STATUSES = ["cancelled", "already_cancelled", "rejected", "failed", "pending"];
const CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz";
const ID = /^cxl_[0-9a-z]{26}$/;

const $ = (id) => document.getElementById(id);
// nav: bumped by every navigation; a load that finds it changed after an await drops its
// answer, and only a timer of the current view may run.
const state = { nav: 0, cursors: [null], page: 0, query: {}, timer: null, refresh: true, connections: null, shown: "" };

function fresh(nav) {
  return nav === state.nav;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path) {
  const key = sessionStorage.getItem(KEY);
  if (!key) throw new ApiError(401, "no caller key");
  let answer;
  try {
    answer = await fetch(path, { headers: { Authorization: `Bearer ${key}`, Accept: "application/json" } });
  } catch (error) {
    throw new ApiError(0, `the gateway did not answer (${error.message}); is it running?`);
  }
  let body = null;
  try {
    body = await answer.json();
  } catch (error) {
    throw new ApiError(answer.status, `the gateway answered ${answer.status} without JSON`);
  }
  if (!answer.ok) {
    const message = body && body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${answer.status}`;
    throw new ApiError(answer.status, message);
  }
  return { status: answer.status, body };
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

function label(status) {
  return el("span", { class: `label ${status}`, text: status.replace("_", " ") });
}

// The ULID layout of a cancellation id: its first 10 characters are milliseconds since 1970.
function idTime(id) {
  let ms = 0;
  for (const char of id.slice(4, 14)) ms = ms * 32 + CROCKFORD.indexOf(char);
  return new Date(ms);
}

// Times are UTC everywhere, as in the gateway's logs.
function shortTime(date) {
  const [day, time] = date.toISOString().slice(0, 19).split("T");
  return day === new Date().toISOString().slice(0, 10) ? time : `${day} ${time}`;
}

function showError(node, error) {
  node.textContent = error instanceof ApiError && error.status === 401
    ? "The gateway refused this key (401). Forget it and paste a caller key from the configuration."
    : `Could not load: ${error.message}`;
  node.classList.add("error");
}

function showState(node, text) {
  node.textContent = text;
  node.classList.remove("error");
}

// --- the key ---------------------------------------------------------------------------------

function signedIn() {
  return Boolean(sessionStorage.getItem(KEY));
}

async function login(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY, key);
  state.connections = null;
  try {
    await loadConnections(); // the key's first use: refused here, or the filter's options
  } catch (error) {
    sessionStorage.removeItem(KEY);
    $("login-error").textContent = error.status === 401
      ? "That key was refused (401): it is not a caller key of this gateway. Check callers[].key in its configuration."
      : `The gateway could not be asked: ${error.message}`;
    $("key").focus();
    return;
  }
  $("key").value = "";
  $("login-error").textContent = "";
  if (!location.hash || location.hash === "#/login") location.hash = "#/cancellations";
  else route();
}

function forget() {
  sessionStorage.removeItem(KEY);
  Object.assign(state, { cursors: [null], page: 0, query: {}, connections: null, shown: "" });
  if (location.hash === "#/login") route();
  else location.hash = "#/login";
}

// --- the list ---------------------------------------------------------------------------------

function queryFromHash() {
  const [, search = ""] = location.hash.split("?");
  return Object.fromEntries(new URLSearchParams(search));
}

function fillFilters(query) {
  $("f-connection").value = query.connection || "";
  $("f-status").value = query.status || "";
  $("f-resource").value = query.resource_id || "";
  $("f-since").value = query.since ? toLocalInput(query.since) : "";
  $("f-until").value = query.until ? toLocalInput(query.until) : "";
}

function toLocalInput(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 19);
}

function applyFilters(event) {
  event.preventDefault();
  const query = new URLSearchParams();
  const connection = $("f-connection").value;
  const status = $("f-status").value;
  const resource = $("f-resource").value.trim();
  if (connection) query.set("connection", connection);
  if (status) query.set("status", status);
  if (resource) query.set("resource_id", resource);
  for (const [name, input] of [["since", $("f-since")], ["until", $("f-until")]]) {
    if (input.value) query.set(name, new Date(input.value).toISOString());
  }
  const search = query.toString();
  location.hash = search ? `#/cancellations?${search}` : "#/cancellations";
}

function clearFilters() {
  setTimeout(() => { location.hash = "#/cancellations"; }, 0);
}

async function loadConnections() {
  if (state.connections) return state.connections;
  // The health list names every connection an admin may read, not only those it may use.
  const { body } = await api("/v1/connections/health");
  state.connections = body.connections.map((c) => c.connection);
  const select = $("f-connection");
  select.replaceChildren(el("option", { value: "", text: "any" }));
  for (const name of state.connections) select.append(el("option", { value: name, text: name }));
  return state.connections;
}

async function showList(query, nav) {
  if (JSON.stringify(query) !== JSON.stringify(state.query)) {
    Object.assign(state, { query, cursors: [null], page: 0, shown: "" });
  }
  try {
    await loadConnections();
  } catch (error) {
    if (fresh(nav)) showError($("list-state"), error);
    return;
  }
  if (!fresh(nav)) return;
  fillFilters(query);
  await loadPage(state.page, nav);
}

// One page of the list (0: the newest); the page changes only once its answer is in.
async function loadPage(wanted, nav) {
  const params = new URLSearchParams(state.query);
  const cursor = state.cursors[wanted];
  if (cursor) params.set("cursor", cursor);
  params.set("limit", "25");
  const node = $("list-state");
  let body;
  try {
    ({ body } = await api(`/v1/cancellations?${params}`));
  } catch (error) {
    if (fresh(nav)) {
      showError(node, error);
      schedule(nav);
    }
    return;
  }
  if (!fresh(nav)) return;
  state.page = wanted;
  state.cursors[wanted + 1] = body.next_cursor;
  $("older").disabled = !body.next_cursor;
  $("newer").disabled = wanted === 0;
  // Drawn again only when something changed: a refresh keeps the focus where it is.
  const drawn = JSON.stringify([wanted, body.items]);
  if (drawn !== state.shown) {
    state.shown = drawn;
    $("list").querySelector("tbody").replaceChildren(...body.items.map(row));
  }
  const filtered = Object.keys(state.query).length > 0;
  let text;
  if (body.items.length === 0) {
    text = filtered
      ? "No cancellation matches these filters. Clear them, or widen the time range."
      : "No cancellations yet. Send one with POST /v1/cancellations (the demo prints a curl for each provider) and it appears here.";
  } else {
    text = `${body.items.length} shown, newest first${wanted ? `, page ${wanted + 1}` : ""}${state.refresh && wanted === 0 ? "; refreshed every 5 s" : ""}.`;
  }
  if (node.textContent !== text || node.classList.contains("error")) showState(node, text);
  schedule(nav);
}

function row(envelope) {
  const id = envelope.cancellation_id;
  const upstream = envelope.upstream || {};
  const when = id ? idTime(id) : null;
  const link = el("a", {
    href: `#/cancellations/${id}`,
    title: id,
    "aria-label": `${envelope.resource_id || id}, ${envelope.status}${when ? `, ${shortTime(when)} UTC` : ""}`,
    text: when ? shortTime(when) : id,
  });
  return el(
    "tr", { "data-id": id },
    el("td", {}, link),
    el("td", { text: envelope.connection || "—" }),
    el("td", { text: envelope.provider || "—" }),
    el("td", { class: "mono", text: envelope.resource_id || "—" }),
    el("td", {}, label(envelope.status)),
    el("td", { class: "mono", text: envelope.error ? envelope.error.code : "" }),
    el("td", { class: "num", text: upstream.attempts ?? 0 }),
    el("td", { class: "num", text: upstream.latency_ms != null ? `${Math.round(upstream.latency_ms)} ms` : "—" }),
  );
}

function schedule(nav) {
  clearTimeout(state.timer);
  state.timer = null;
  if (fresh(nav) && state.refresh && state.page === 0 && currentView() === "cancellations") {
    state.timer = setTimeout(() => loadPage(0, nav), REFRESH_MS);
  }
}

function toggleRefresh() {
  state.refresh = !state.refresh;
  $("refresh-toggle").textContent = state.refresh ? "Pause auto-refresh" : "Resume auto-refresh";
  if (state.refresh) loadPage(state.page, state.nav);
  else schedule(state.nav);
}

function page(step) {
  loadPage(step > 0 ? state.page + 1 : 0, state.nav);
}

// --- search -------------------------------------------------------------------------------

async function search(event) {
  event.preventDefault();
  let text = $("search-input").value.trim();
  if (!text) return;
  if (/^cxl_/i.test(text)) text = text.toLowerCase();
  if (ID.test(text)) {
    location.hash = `#/cancellations/${text}`;
    return;
  }
  const nav = state.nav;
  try {
    const { body } = await api(`/v1/cancellations?resource_id=${encodeURIComponent(text)}&limit=2`);
    if (!fresh(nav)) return;
    if (body.items.length === 1) {
      location.hash = `#/cancellations/${body.items[0].cancellation_id}`;
      return;
    }
  } catch (error) {
    // The list it leads to says what went wrong.
  }
  if (fresh(nav)) location.hash = `#/cancellations?resource_id=${encodeURIComponent(text)}`;
}

// --- one cancellation -----------------------------------------------------------------------

async function showDetail(id, nav) {
  const node = $("detail-state");
  $("detail-title").textContent = `Cancellation ${id}`;
  $("detail-body").hidden = true;
  showState(node, "Loading…");
  let envelope;
  let events;
  try {
    [{ body: envelope }, { body: events }] = await Promise.all([
      api(`/v1/cancellations/${encodeURIComponent(id)}`),
      api(`/v1/cancellations/${encodeURIComponent(id)}/events`),
    ]);
  } catch (error) {
    if (!fresh(nav)) return;
    if (error.status === 404) {
      node.textContent = `No cancellation ${id} for this caller: check the id, or use a key that may see it.`;
      node.classList.add("error");
    } else if (error.status === 409) {
      showState(node, "It is still running: it appears here once it has an answer (asked again every 2 s).");
      state.timer = setTimeout(() => showDetail(id, nav), 2000);
    } else {
      showError(node, error);
    }
    return;
  }
  if (!fresh(nav)) return;
  showState(node, "");
  facts(envelope);
  timeline(events.events);
  retry(envelope, events.events);
  $("envelope").textContent = JSON.stringify(envelope, null, 2);
  $("detail-body").hidden = false;
}

function facts(envelope) {
  const list = $("detail-facts");
  list.replaceChildren();
  const add = (name, value, copy) => {
    const dd = el("dd", {}, value);
    if (copy && envelope[copy]) {
      dd.append(el("button", { type: "button", "data-copy-text": envelope[copy], "aria-label": `Copy the ${name}`, class: "quiet", text: "Copy" }));
    }
    list.append(el("dt", { text: name }), dd);
  };
  add("Status", label(envelope.status));
  if (envelope.error) add("Error", `${envelope.error.code}: ${envelope.error.message}`);
  add("Connection", `${envelope.connection || "—"} (${envelope.provider || "no provider"})`);
  add("Resource", `${envelope.resource || "—"} ${envelope.resource_id || ""}`.trim());
  if (envelope.cancellation_id) add("Received", idTime(envelope.cancellation_id).toISOString());
  if (envelope.upstream) {
    add("Upstream", `${envelope.upstream.attempts} attempt(s), last HTTP ${envelope.upstream.status ?? "—"}, ${Math.round(envelope.upstream.latency_ms)} ms`);
  }
  add("Request id", el("code", { text: envelope.request_id || "—" }), "request_id");
  add("Trace id", el("code", { text: envelope.trace_id || "—" }), "trace_id");
}

const DESCRIBE = {
  received: (e) => (e.idempotency_key ? `received, Idempotency-Key ${e.idempotency_key}` : "received"),
  attempt: (e) => `${e.method} ${e.url} → ${e.status ?? e.error_code ?? "no answer"}${e.status && e.error_code ? ` (${e.error_code})` : ""}, ${Math.round(e.latency_ms)} ms`,
  probe: (e) => `status probe: ${e.result}`,
  scheduled: (e) => `${e.step} scheduled for ${e.due}`,
  settled: (e) => `settled ${e.status}${e.error_code ? ` (${e.error_code})` : ""}`,
  webhook: (e) => `webhook delivery: ${e.status ?? e.error ?? "no answer"}, ${Math.round(e.latency_ms || 0)} ms`,
};

function tone(event) {
  if (event.type === "settled") return event.status === "failed" || event.status === "rejected" ? "bad" : "good";
  if (event.type === "attempt") return event.status && event.status < 300 ? "good" : "bad";
  if (event.type === "webhook") return event.status && event.status < 300 ? "good" : "bad";
  return "";
}

function timeline(events) {
  const list = $("timeline");
  list.replaceChildren(...events.map((event) => {
    const describe = DESCRIBE[event.type] || ((e) => e.type);
    return el(
      "li", { class: tone(event), "data-type": event.type },
      el("div", { class: "when", text: event.at }),
      el("div", { class: "what", text: event.type }),
      el("div", { text: describe(event) }),
    );
  }));
}

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

function retry(envelope, events) {
  const received = events.find((e) => e.type === "received") || {};
  const box = $("retry");
  if (envelope.status !== "failed" || !received.request) {
    box.hidden = true;
    return;
  }
  const lines = [
    `curl -sS -X POST ${shellQuote(`${location.origin}/v1/cancellations`)}`,
    `  -H "Authorization: Bearer $CANCEL_GATEWAY_KEY"`,
    "  -H 'Content-Type: application/json'",
  ];
  if (received.idempotency_key) lines.push(`  -H ${shellQuote(`Idempotency-Key: ${received.idempotency_key}`)}`);
  const body = JSON.stringify(received.request);
  lines.push(`  -d ${shellQuote(body)}`);
  $("retry-curl").textContent = lines.join(" \\\n");
  $("retry-masked").hidden = !body.includes("[REDACTED]");
  box.hidden = false;
}

async function copy(event) {
  const button = event.target.closest("button[data-copy], button[data-copy-text]");
  if (!button) return;
  const text = button.dataset.copyText ?? $(button.dataset.copy).textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch (error) {
    button.textContent = "Select and copy";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

// --- connections ------------------------------------------------------------------------------

async function showConnections(nav) {
  const node = $("connections-state");
  let body;
  try {
    ({ body } = await api("/v1/connections/health"));
  } catch (error) {
    if (fresh(nav)) showError(node, error);
    return;
  }
  if (!fresh(nav)) return;
  $("connections-window").textContent = `The last ${body.window_s / 60} minutes (UTC) as this gateway process saw them, at ${body.generated_at}; refreshed every 10 s.`;
  if (body.connections.length === 0) {
    showState(node, "This caller may use no connection: add one to its callers[].connections in the configuration.");
  } else {
    showState(node, "");
  }
  $("cards").replaceChildren(...body.connections.map(card));
  clearTimeout(state.timer);
  state.timer = setTimeout(() => showConnections(nav), REFRESH_MS * 2);
}

// Cancellations of every status in an {status: count} object.
function counted(outcomes) {
  return Object.values(outcomes).reduce((a, b) => a + b, 0);
}

function card(health) {
  const total = counted(health.outcomes);
  const latency = (value) => (value == null ? "—" : `${Math.round(value)} ms`);
  const stats = el("dl", {});
  const stat = (name, value, attention) => stats.append(el("dt", { text: name }), el("dd", { class: attention ? "attention" : null, text: value }));
  stat("In flight now", String(health.in_flight));
  stat("Cancellations, 15 min", String(total));
  stat("Failed", String(health.outcomes.failed || 0), (health.outcomes.failed || 0) > 0);
  stat("Upstream p50 / p95", `${latency(health.latency.p50_ms)} / ${latency(health.latency.p95_ms)}`);
  stat("Rate-limit refusals", String(health.rate_limited), health.rate_limited > 0);
  stat("Unmapped provider errors", String(health.unmapped_errors), health.unmapped_errors > 0);
  return el(
    "li", { class: "card", "data-connection": health.connection },
    el("h3", {}, el("span", { text: health.connection }), el("span", { class: `label ${health.breaker}`, "data-breaker": health.breaker, text: `breaker ${health.breaker.replace("_", " ")}` })),
    el("p", { class: "provider", text: health.provider }),
    bars(health),
    legend(),
    stats,
  );
}

const SVG = "http://www.w3.org/2000/svg";

function bars(health) {
  const svg = document.createElementNS(SVG, "svg");
  const width = 15 * 10;
  svg.setAttribute("viewBox", `0 0 ${width} 40`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  const most = Math.max(1, ...health.minutes.map((m) => counted(m.outcomes)));
  const described = [];
  health.minutes.forEach((minute, index) => {
    let y = 40;
    const x = index * 10 + 1;
    const count = counted(minute.outcomes);
    if (count === 0) {
      const empty = document.createElementNS(SVG, "rect");
      for (const [name, value] of [["x", x], ["y", 38], ["width", 8], ["height", 2], ["class", "s-empty"]]) empty.setAttribute(name, value);
      svg.append(empty);
      return;
    }
    described.push(`${minute.start.slice(11, 16)}: ${count}`);
    for (const status of STATUSES) {
      const n = minute.outcomes[status] || 0;
      if (!n) continue;
      const height = (n / most) * 38;
      y -= height;
      const rect = document.createElementNS(SVG, "rect");
      for (const [name, value] of [["x", x], ["y", y], ["width", 8], ["height", height], ["class", `s-${status}`]]) rect.setAttribute(name, value);
      const title = document.createElementNS(SVG, "title");
      title.textContent = `${minute.start}: ${n} ${status}`;
      rect.append(title);
      svg.append(rect);
    }
  });
  svg.setAttribute("aria-label", described.length
    ? `Cancellations per minute over 15 minutes: ${described.join(", ")}`
    : "No cancellation in the last 15 minutes");
  return svg;
}

function legend() {
  return el("ul", { class: "legend", "aria-hidden": "true" }, ...STATUSES.map((s) => el("li", {}, el("i", { class: `s-${s}` }), s.replace("_", " "))));
}

// --- routing ----------------------------------------------------------------------------------

function currentView() {
  if (!signedIn()) return "login";
  const hash = location.hash || "#/cancellations";
  if (hash.startsWith("#/connections")) return "connections";
  if (/^#\/cancellations\/[^?]+/.test(hash)) return "detail";
  return "cancellations";
}

function show(view) {
  for (const name of ["login", "cancellations", "detail", "connections"]) $(name).hidden = name !== view;
  const signed = view !== "login";
  $("nav").hidden = !signed;
  $("search").hidden = !signed;
  $("forget").hidden = !signed;
  for (const [link, current] of [["nav-cancellations", view === "cancellations" || view === "detail"], ["nav-connections", view === "connections"]]) {
    if (current) $(link).setAttribute("aria-current", "page");
    else $(link).removeAttribute("aria-current");
  }
}

function route() {
  state.nav += 1;
  const nav = state.nav;
  clearTimeout(state.timer);
  state.timer = null;
  const view = currentView();
  show(view);
  if (view === "login") {
    $("key").focus();
  } else if (view === "connections") {
    showConnections(nav);
  } else if (view === "detail") {
    let id;
    try {
      id = decodeURIComponent(location.hash.slice("#/cancellations/".length));
    } catch (error) {
      showState($("detail-state"), "This address names no cancellation: go back to the list.");
      $("detail-body").hidden = true;
      return;
    }
    showDetail(id, nav);
  } else {
    showList(queryFromHash(), nav);
  }
  return view;
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("forget").addEventListener("click", forget);
  $("filters").addEventListener("submit", applyFilters);
  $("filters").addEventListener("reset", clearFilters);
  $("refresh-toggle").addEventListener("click", toggleRefresh);
  $("older").addEventListener("click", () => page(1));
  $("newer").addEventListener("click", () => page(-1));
  $("search").addEventListener("submit", search);
  document.addEventListener("click", copy);
  window.addEventListener("hashchange", () => {
    if (route() !== "login") $("main").focus({ preventScroll: true });
  });
  $("skip").addEventListener("click", (event) => {
    event.preventDefault(); // the address stays the view's
    $("main").focus();
  });
  route();
});
