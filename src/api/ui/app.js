// The webhooks dashboard: plain JavaScript over the admin API (/v1), no framework, no build.
// The token lives in sessionStorage (never in a URL); everything an endpoint or a user sent
// is put on the page as text, never as HTML.
"use strict";

const TOKEN_KEY = "tesoro-webhooks-token";
const COMPANY_KEY = "tesoro-webhooks-company";
const POLL_MS = 2000;
// Deliveries retried by hand that stay listed (and polled) after they leave the Failed list.
const RETRIED_SHOWN = 20;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  admin: false,
  company: sessionStorage.getItem(COMPANY_KEY),
  catalog: null,
  webhooks: [],
  editing: null, // the webhook being edited, or null when adding
  attemptsFor: null, // the webhook whose attempts are shown
  retried: new Map(), // delivery id -> the delivery, after a Retry (the latest RETRIED_SHOWN)
  openBodies: new Set(), // the attempt bodies expanded, kept open across refreshes
  timer: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

// A table cell; `label` names its column on narrow screens, where rows stack.
function td(label, text) {
  return el("td", text, { "data-label": label });
}

function show(id, visible) {
  $(id).hidden = !visible;
}

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `request failed (${status})`);
    this.status = status;
    this.field = error.field || null;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
  });
  const text = await response.text();
  const parsed = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

function companyQuery() {
  return state.admin ? `company_id=${encodeURIComponent(state.company)}` : "";
}

function formatTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

function prettyBody(text) {
  if (text === null || text === undefined) return "";
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (_) {
    return text;
  }
}

// --- signing in -------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  $("error-token").textContent = "";
  state.token = $("token").value.trim();
  try {
    await startSession();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $("token").value = "";
  } catch (error) {
    state.token = null;
    $("error-token").textContent =
      error.status === 401 ? "This token is not valid." : error.message;
  }
}

async function startSession() {
  const session = await api("GET", "/v1/session");
  state.admin = session.admin;
  if (!state.admin) state.company = session.company_id;
  state.catalog = await api("GET", "/v1/event-types");
  show("sign-in", false);
  show("sign-out", true);
  if (state.admin && !state.company) {
    $("who").textContent = "Signed in as admin";
    show("pick-company", true);
    return;
  }
  await openCompany();
}

async function pickCompany(event) {
  event.preventDefault();
  const company = $("company").value.trim();
  $("error-company").textContent = company ? "" : "Enter a company id.";
  if (!company) return;
  state.company = company;
  sessionStorage.setItem(COMPANY_KEY, company);
  show("pick-company", false);
  await openCompany();
}

async function openCompany() {
  $("who").textContent = `Company ${state.company}${state.admin ? " (admin)" : ""}`;
  show("webhooks", true);
  show("failed", true);
  await refresh();
  clearInterval(state.timer);
  state.timer = setInterval(() => refresh().catch(reportPollError), POLL_MS);
}

// A reload with a saved token: only a refused token signs out; an outage keeps it.
function resumeSession() {
  startSession().catch((error) => {
    if (error.status === 401) {
      signOut();
      return;
    }
    $("error-token").textContent = `Cannot load the dashboard (${error.message}); reload to try again.`;
  });
}

function signOut() {
  clearInterval(state.timer);
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(COMPANY_KEY);
  window.location.reload();
}

function reportPollError(error) {
  if (error.status === 401) signOut();
}

// --- webhooks ---------------------------------------------------------------------------

async function refresh() {
  const query = companyQuery();
  const listed = await api("GET", `/v1/webhooks${query ? `?${query}` : ""}`);
  state.webhooks = listed.data;
  const health = await Promise.all(
    state.webhooks.map((w) => api("GET", `/v1/webhooks/${w.id}/health`).catch(() => null)),
  );
  renderWebhooks(health);
  await refreshFailed();
  if (state.attemptsFor) await refreshAttempts();
}

const DISABLED_BECAUSE = {
  gone: "Disabled: the endpoint answered 410 Gone",
  failing_too_long: "Disabled: every delivery failed for too long",
  manual: "Disabled",
};

function disabledText(webhook) {
  const why = DISABLED_BECAUSE[webhook.disabled_reason] ?? "Disabled";
  return webhook.disabled_at ? `${why} (since ${formatTime(webhook.disabled_at)})` : why;
}

function renderWebhooks(health) {
  const rows = $("webhook-rows");
  rows.replaceChildren();
  show("no-webhooks", state.webhooks.length === 0);
  state.webhooks.forEach((webhook, i) => {
    const row = el("tr");
    row.append(td("Name", webhook.name), td("URL", webhook.url));
    row.append(td("Events", webhook.events.join(", ")));
    row.append(td("Status", webhook.enabled ? "Enabled" : disabledText(webhook)));
    const h = health[i];
    const healthText = !h
      ? "—"
      : h.failing_streak > 0
        ? `${h.failing_streak} failed in a row; last success ${formatTime(h.last_success_at)}`
        : `Last success ${formatTime(h.last_success_at)}`;
    const circuitText =
      h && h.circuit.state === "open"
        ? `. Paused since ${formatTime(h.circuit.opened_at)}: the endpoint keeps failing, so deliveries wait and are sent once a test attempt succeeds`
        : "";
    row.append(td("Health", healthText + circuitText));
    const actions = td("Actions");
    const edit = el("button", "Edit", { type: "button", "aria-label": `Edit ${webhook.name}` });
    edit.addEventListener("click", () => openEditor(webhook));
    const attempts = el("button", "Attempts", {
      type: "button",
      "aria-label": `Attempts of ${webhook.name}`,
    });
    attempts.addEventListener("click", () => openAttempts(webhook));
    actions.append(edit, attempts);
    row.append(actions);
    rows.append(row);
  });
}

// --- the form ---------------------------------------------------------------------------

function renderEventChoices(selected) {
  const groups = $("event-groups");
  groups.replaceChildren();
  for (const category of state.catalog.categories) {
    const group = el("fieldset", null, { class: "event-group" });
    group.append(el("legend", category.name));
    const wildcard = `${category.name}.*`;
    const all = el("input", null, {
      type: "checkbox",
      id: `event-${category.name}-all`,
      value: wildcard,
      "data-wildcard": "true",
    });
    all.checked = selected.includes(wildcard);
    const allLabel = el("label", null, { class: "inline", for: all.id });
    allLabel.append(all, document.createTextNode(` All ${category.name} events`));
    group.append(allLabel);
    for (const type of category.events) {
      const box = el("input", null, { type: "checkbox", id: `event-${type}`, value: type });
      box.checked = selected.includes(type) || all.checked;
      box.disabled = all.checked;
      const label = el("label", null, { class: "inline", for: box.id });
      label.append(box, document.createTextNode(` ${type}`));
      group.append(label);
    }
    all.addEventListener("change", () => {
      group.querySelectorAll("input[type=checkbox]:not([data-wildcard])").forEach((box) => {
        box.checked = all.checked;
        box.disabled = all.checked;
      });
    });
    groups.append(group);
  }
}

function selectedEvents() {
  const chosen = [];
  for (const group of $("event-groups").querySelectorAll(".event-group")) {
    const all = group.querySelector("input[data-wildcard]");
    if (all.checked) {
      chosen.push(all.value);
      continue;
    }
    group.querySelectorAll("input:not([data-wildcard])").forEach((box) => {
      if (box.checked) chosen.push(box.value);
    });
  }
  return chosen;
}

function clearErrors() {
  for (const id of ["name", "url", "events", "secret", "rate-limit", "headers", "form"]) {
    $(`error-${id}`).textContent = "";
  }
  for (const id of ["name", "url", "secret", "rate-limit", "headers"]) {
    $(`field-${id}`).removeAttribute("aria-invalid");
  }
}

function openEditor(webhook) {
  state.editing = webhook;
  clearErrors();
  $("editor-title").textContent = webhook ? `Edit ${webhook.name}` : "Add webhook";
  $("field-name").value = webhook ? webhook.name : "";
  $("field-url").value = webhook ? webhook.url : "";
  $("field-secret").value = "";
  $("field-generate-secret").checked = !webhook;
  $("field-enabled").checked = webhook ? webhook.enabled : true;
  $("field-rate-limit").value = webhook?.rate_limit ?? "";
  $("field-headers").value = Object.entries(webhook?.headers ?? {})
    .map(([name, value]) => `${name}: ${value}`)
    .join("\n");
  renderEventChoices(webhook ? webhook.events : []);
  show("editor", true);
  $("field-name").focus();
}

function closeEditor() {
  show("editor", false);
  state.editing = null;
}

// The headers text as an object, one `Name: value` per line; blank lines are skipped.
function parseHeaders(text) {
  const headers = {};
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    const colon = line.indexOf(":");
    if (colon <= 0) {
      throw { field: "headers", message: `Line ${i + 1}: write it as Name: value` };
    }
    headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  });
  return headers;
}

// The rate limit field as a number, or null when empty (no limit).
function parseRateLimit(text) {
  if (!text.trim()) return null;
  const limit = Number(text);
  if (!Number.isInteger(limit) || limit < 1 || limit > 10000) {
    throw { field: "rate_limit", message: "A whole number of attempts per second, 1 to 10000" };
  }
  return limit;
}

async function saveWebhook(event) {
  event.preventDefault();
  clearErrors();
  let headers;
  let rateLimit;
  try {
    headers = parseHeaders($("field-headers").value);
    rateLimit = parseRateLimit($("field-rate-limit").value);
  } catch (error) {
    showFieldError(error);
    return;
  }
  const body = {
    name: $("field-name").value,
    url: $("field-url").value,
    events: selectedEvents(),
    enabled: $("field-enabled").checked,
  };
  // On an edit, empty fields remove what was set; on a new webhook they are left out.
  const hasHeaders = Object.keys(headers).length > 0;
  if (state.editing || hasHeaders) body.headers = hasHeaders ? headers : null;
  if (state.editing || rateLimit !== null) body.rate_limit = rateLimit;
  const pasted = $("field-secret").value.trim();
  if ($("field-generate-secret").checked) body.generate_secret = true;
  else if (pasted) body.secret = pasted;
  if (state.admin && !state.editing) body.company_id = state.company;
  try {
    const saved = state.editing
      ? await api("PATCH", `/v1/webhooks/${state.editing.id}`, body)
      : await api("POST", "/v1/webhooks", body);
    closeEditor();
    if (saved.secret) showSecretOnce(saved.secret);
    await refresh();
  } catch (error) {
    showFieldError(error);
  }
}

function showFieldError(error) {
  const fields = {
    name: "name",
    url: "url",
    events: "events",
    secret: "secret",
    generate_secret: "secret",
    rate_limit: "rate-limit",
    headers: "headers",
  };
  const field = fields[error.field];
  if (field) {
    $(`error-${field}`).textContent = error.message;
    const input = $(`field-${field}`);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  } else {
    $("error-form").textContent = error.message;
  }
}

function showSecretOnce(secret) {
  $("secret-value").value = secret;
  $("copy-status").textContent = "";
  show("secret-once", true);
}

async function copySecret() {
  try {
    await navigator.clipboard.writeText($("secret-value").value);
    $("copy-status").textContent = "Copied.";
  } catch (_) {
    $("secret-value").select();
    $("copy-status").textContent = "Select the secret and copy it.";
  }
}

function closeSecret() {
  $("secret-value").value = "";
  show("secret-once", false);
}

// --- attempts ---------------------------------------------------------------------------

async function openAttempts(webhook) {
  state.attemptsFor = webhook;
  $("attempts-title").textContent = `Latest attempts: ${webhook.name}`;
  $("recover-status").textContent = "";
  show("attempts", true);
  await refreshAttempts();
}

function closeAttempts() {
  state.attemptsFor = null;
  show("attempts", false);
}

function bodyCell(text, truncated, label, key) {
  const cell = td(label);
  if (text === null || text === undefined) return cell;
  const details = el("details");
  details.open = state.openBodies.has(key);
  details.addEventListener("toggle", () => {
    if (details.open) state.openBodies.add(key);
    else state.openBodies.delete(key);
  });
  details.append(el("summary", label));
  details.append(el("pre", prettyBody(text)));
  if (truncated) details.append(el("p", "Preview: the body is longer.", { class: "hint" }));
  cell.append(details);
  return cell;
}

async function refreshAttempts() {
  const webhook = state.attemptsFor;
  const listed = await api("GET", `/v1/webhooks/${webhook.id}/attempts?limit=20`);
  if (state.attemptsFor !== webhook) return;
  const rows = $("attempt-rows");
  rows.replaceChildren();
  show("no-attempts", listed.data.length === 0);
  for (const attempt of listed.data) {
    const row = el("tr");
    row.append(td("Time", formatTime(attempt.attempted_at)), td("Event type", attempt.event_type));
    row.append(td("Response", attempt.response_status ?? attempt.error_kind ?? "—"));
    row.append(td("Retries", attempt.retries));
    const body = (which) => `${attempt.id}-${which}`;
    row.append(bodyCell(attempt.request_body, attempt.body_preview, "Request body", body("out")));
    row.append(bodyCell(attempt.response_body, attempt.body_preview, "Response body", body("in")));
    rows.append(row);
  }
}

async function recover(event) {
  event.preventDefault();
  const since = $("recover-since").value;
  if (!since) {
    $("recover-status").textContent = "Choose a date and time.";
    return;
  }
  try {
    const result = await api("POST", `/v1/webhooks/${state.attemptsFor.id}/recover`, {
      since: new Date(since).toISOString(),
    });
    $("recover-status").textContent = `${result.enqueued} failed deliveries re-enqueued.`;
  } catch (error) {
    $("recover-status").textContent = error.message;
  }
}

// --- failed deliveries ------------------------------------------------------------------

async function refreshFailed() {
  const query = companyQuery();
  const listed = await api(
    "GET",
    `/v1/deliveries?status=failed&limit=50${query ? `&${query}` : ""}`,
  );
  const retried = await Promise.all(
    [...state.retried.keys()]
      .filter((id) => !listed.data.some((d) => d.id === id))
      .map((id) => api("GET", `/v1/deliveries/${id}`).catch(() => null)),
  );
  const deliveries = [...listed.data, ...retried.filter(Boolean)];
  const names = new Map(state.webhooks.map((w) => [w.id, w.name]));
  const rows = $("failed-rows");
  rows.replaceChildren();
  show("no-failed", deliveries.length === 0);
  for (const delivery of deliveries) {
    const row = el("tr", null, { "data-delivery": delivery.id });
    row.append(td("Time", formatTime(delivery.created_at)));
    row.append(td("Webhook", names.get(delivery.webhook_id) ?? delivery.webhook_id));
    row.append(td("Event type", delivery.event_type));
    row.append(td("Status", statusText(delivery.status)));
    const failedStatus = delivery.status !== "succeeded" && delivery.last_status;
    const lastError = delivery.last_error ?? (failedStatus ? `status ${delivery.last_status}` : "—");
    row.append(td("Last error", lastError));
    const action = td("Action");
    if (delivery.status === "failed") {
      const retry = el("button", "Retry", {
        type: "button",
        "aria-label": `Retry ${delivery.event_type} to ${names.get(delivery.webhook_id) ?? "webhook"}`,
      });
      retry.addEventListener("click", () => retryDelivery(delivery, retry));
      action.append(retry);
    }
    row.append(action);
    rows.append(row);
  }
}

function statusText(status) {
  return { failed: "Failed", succeeded: "Succeeded", pending: "Pending", retrying: "Retrying" }[
    status
  ] ?? status;
}

async function retryDelivery(delivery, button) {
  button.disabled = true;
  try {
    await api("POST", `/v1/deliveries/${delivery.id}/retry`);
    state.retried.set(delivery.id, delivery);
    // Each is fetched at every refresh: keep the latest few.
    while (state.retried.size > RETRIED_SHOWN) {
      state.retried.delete(state.retried.keys().next().value);
    }
    await refreshFailed();
  } catch (error) {
    button.disabled = false;
    $("error-form").textContent = error.message;
  }
}

// --- start ------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("pick-company-form").addEventListener("submit", pickCompany);
  $("sign-out").addEventListener("click", signOut);
  $("add-webhook").addEventListener("click", () => openEditor(null));
  $("webhook-form").addEventListener("submit", saveWebhook);
  $("cancel-edit").addEventListener("click", closeEditor);
  $("copy-secret").addEventListener("click", copySecret);
  $("close-secret").addEventListener("click", closeSecret);
  $("close-attempts").addEventListener("click", closeAttempts);
  $("recover-form").addEventListener("submit", recover);
  if (state.token) resumeSession();
});
