// The playground: a form per endpoint (forms.js builds it from the input JSON schema), run through
// fal's queue. Plain browser JavaScript (ES modules), no build step and no dependency: the server ships
// these files as package data.
import {
  clearErrors, detailText, element, readForm, renderForm, showFormError, showServerErrors,
} from "./forms.js";

const KEY_STORAGE = "acestep-playground-api-key";
const POLL_MS = 500;
const KEY_DEBOUNCE_MS = 400;
const HISTORY_SIZE = 20;

const state = {
  key: "",
  catalog: null,
  forms: new Map(), // endpoint name -> {endpoint, form, fields}
  run: null, // the request shown in the run panel
};

const $ = (id) => document.getElementById(id);

// -- small helpers -------------------------------------------------------------------------------

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function readStorage() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

function writeStorage(value) {
  try {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage disabled: the key lives as long as the page
  }
}

// A URL of this server as a same-origin path: the queue answers absolute URLs built from the Host
// header, which a proxy in front may have changed.
function local(url) {
  const parsed = new URL(url, window.location.href);
  return parsed.pathname + parsed.search;
}

function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  if (state.key) headers.Authorization = `Key ${state.key}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(local(path), { ...options, headers, cache: "no-store" });
}

async function bodyOf(response) {
  const text = await response.text();
  try {
    return { text, json: JSON.parse(text) };
  } catch {
    return { text, json: null };
  }
}

// JSON with integers beyond 2^53 kept digit for digit (seeds are 64-bit), where the browser can.
function prettyJson(text) {
  const exact = typeof JSON.rawJSON === "function";
  try {
    const value = JSON.parse(text, (key, parsed, context) =>
      exact && typeof parsed === "number" && !Number.isSafeInteger(parsed) && context && /^-?\d+$/.test(context.source)
        ? JSON.rawJSON(context.source) : parsed);
    return JSON.stringify(value, null, 2);
  } catch {
    return text;
  }
}

// -- running a request ---------------------------------------------------------------------------

async function submitForm(entry) {
  clearErrors(entry);
  const { body, firstInvalid } = await readForm(entry);
  if (firstInvalid) {
    firstInvalid.control.focus();
    return;
  }
  entry.submit.disabled = true;
  try {
    const response = await api(entry.endpoint.submit_path, { method: "POST", body });
    const answer = await bodyOf(response);
    if (!response.ok) {
      rejected(entry, response.status, answer.json);
      return;
    }
    const handle = answer.json;
    watch({ entry, endpoint: entry.endpoint.name, requestId: handle.request_id, statusUrl: handle.status_url,
            responseUrl: handle.response_url, cancelUrl: handle.cancel_url, queuePosition: handle.queue_position });
  } finally {
    entry.submit.disabled = false;
  }
}

function rejected(entry, status, body) {
  const detail = body ? body.detail : null;
  if (status === 401) {
    showFormError(entry, "The API key was not accepted: enter it above.");
    $("api-key").focus();
  } else if (status === 422 && detail) {
    showServerErrors(entry, detail);
  } else if (status === 413) {
    showFormError(entry, `The request is too large for this endpoint (${detailText(detail)}).`);
  } else {
    showFormError(entry, `The server answered HTTP ${status}${detail ? `: ${detailText(detail)}` : "."}`);
  }
}

function progressOf(logs) {
  for (let index = logs.length - 1; index >= 0; index -= 1) {
    const matches = [...String(logs[index].message).matchAll(/(\d+)\s*\/\s*(\d+)/g)];
    const last = matches[matches.length - 1];
    if (last && Number(last[2]) > 0) return Number(last[1]) / Number(last[2]);
  }
  return null;
}

function showRun(run) {
  $("run").hidden = false;
  $("run-endpoint").textContent = run.endpoint;
  $("run-request-id").textContent = run.requestId;
  $("run-error").textContent = "";
  $("run-logs").replaceChildren();
  $("run-result").hidden = true;
  $("run-audio").removeAttribute("src");
  $("run-cancel").hidden = false;
  $("run-cancel").disabled = false;
  $("run-progress").removeAttribute("value"); // indeterminate until a step is logged
  setStatus(run.queuePosition !== undefined ? `In queue (position ${run.queuePosition})` : "Loading…");
  run.logCount = 0;
}

function setStatus(text) {
  $("run-status").textContent = text;
}

function renderLogs(run, logs) {
  const list = $("run-logs");
  for (const entry of logs.slice(run.logCount)) {
    const time = entry.timestamp ? new Date(entry.timestamp).toLocaleTimeString() : "";
    list.append(element("li", { class: entry.level || "INFO", text: `${time} ${entry.message}` }));
  }
  run.logCount = logs.length;
  list.scrollTop = list.scrollHeight;
}

// Follows a request in the run panel; a failure to reach the server is shown there, never thrown.
function watch(run) {
  follow(run).catch((error) => {
    if (state.run === run) $("run-error").textContent = `Lost the request: ${error.message}`;
  });
}

async function follow(run) {
  state.run = run;
  showRun(run);
  while (state.run === run) {
    let response;
    try {
      response = await api(`${local(run.statusUrl)}?logs=1`);
    } catch (error) {
      setStatus(`Connection lost (${error.message}); retrying…`);
      await sleep(POLL_MS * 4);
      continue;
    }
    const answer = await bodyOf(response);
    if (state.run !== run) return;
    if (!answer.json || (response.status !== 200 && response.status !== 202)) {
      $("run-error").textContent = `Status failed: HTTP ${response.status} ${answer.json ? detailText(answer.json.detail) : ""}`;
      $("run-cancel").hidden = true;
      return;
    }
    const status = answer.json;
    renderLogs(run, status.logs || []);
    if (status.status === "IN_QUEUE") {
      setStatus(`In queue (position ${status.queue_position ?? 0})`);
    } else if (status.status === "IN_PROGRESS") {
      const progress = progressOf(status.logs || []);
      setStatus(progress === null ? "Running" : `Running (${Math.round(progress * 100)}%)`);
      if (progress !== null) $("run-progress").value = progress;
    } else {
      await finished(run, status);
      return;
    }
    await sleep(POLL_MS);
  }
}

async function finished(run, status) {
  $("run-cancel").hidden = true;
  if (status.error) {
    const cancelled = status.error_type === "request_cancelled";
    setStatus(cancelled ? "Cancelled" : `Failed (${status.error_type})`);
    $("run-error").textContent = status.error;
    if (!cancelled && run.entry) {
      const response = await api(run.responseUrl);
      const answer = await bodyOf(response);
      if (response.status === 422 && answer.json) showServerErrors(run.entry, answer.json.detail);
    }
  } else {
    const response = await api(run.responseUrl);
    const answer = await bodyOf(response);
    if (!response.ok || !answer.json) {
      $("run-error").textContent = `Result failed: HTTP ${response.status}`;
    } else {
      setStatus("Completed");
      $("run-progress").value = 1;
      showResult(answer.text, answer.json);
    }
  }
  refreshHistory();
}

// An http(s) file URL to play: this server's files from this origin (the page's policy allows no other).
function playable(text) {
  let url;
  try {
    url = new URL(String(text), window.location.href);
  } catch {
    return "";
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return "";
  return url.pathname.startsWith("/files/") ? url.pathname + url.search : url.href;
}

function showResult(text, result) {
  const audio = result.audio || {};
  const source = playable(audio.url);
  $("run-audio").src = source;
  const download = $("run-download");
  download.href = source;
  download.download = audio.file_name || "";
  download.textContent = `Download ${audio.file_name || "the audio"}${audio.file_size ? ` (${Math.round(audio.file_size / 1024)} KiB)` : ""}`;
  const seed = /"seed"\s*:\s*(-?\d+)/.exec(text);
  $("run-seed").value = seed ? seed[1] : "";
  $("copy-status").textContent = "";
  $("run-json").textContent = prettyJson(text);
  $("run-result").hidden = false;
}

async function cancelRun() {
  const run = state.run;
  if (!run) return;
  $("run-cancel").disabled = true;
  const response = await api(run.cancelUrl, { method: "PUT" });
  const answer = await bodyOf(response);
  const outcome = answer.json ? answer.json.status : `HTTP ${response.status}`;
  if (state.run === run && response.status === 202) setStatus("Cancellation requested");
  else if (state.run === run) $("run-error").textContent = `Cancel: ${outcome}`;
}

async function copySeed() {
  const seed = $("run-seed");
  try {
    await navigator.clipboard.writeText(seed.value);
    $("copy-status").textContent = "Copied.";
  } catch {
    seed.select();
    const copied = typeof document.execCommand === "function" && document.execCommand("copy");
    $("copy-status").textContent = copied ? "Copied." : "Selected: press Ctrl+C to copy.";
  }
}

function reuseSeed() {
  const run = state.run;
  const entry = run && state.forms.get(run.endpoint);
  const field = entry && entry.fields.find((candidate) => candidate.name === "seed");
  if (!field) return;
  field.control.value = $("run-seed").value;
  window.location.hash = encodeURIComponent(run.endpoint);
  showSelected();
  field.control.focus();
}

// -- history -------------------------------------------------------------------------------------

async function refreshHistory() {
  if (!state.catalog) return;
  let requests;
  try {
    const response = await api(`/requests?limit=${HISTORY_SIZE}`);
    if (!response.ok) return;
    ({ requests } = await response.json());
  } catch {
    return; // the server is unreachable: the list stays as it was
  }
  const rows = requests.map((item) => {
    const open = element("button", { type: "button", text: "Open", "aria-label": `Open request ${item.request_id}` });
    open.addEventListener("click", () => watch({
      entry: state.forms.get(item.endpoint), endpoint: item.endpoint, requestId: item.request_id,
      statusUrl: item.status_url, responseUrl: item.response_url, cancelUrl: item.cancel_url,
    }));
    const submitted = item.created_at ? new Date(item.created_at) : null;
    return element("tr", {},
      element("td", { text: submitted ? submitted.toLocaleTimeString() : "", title: submitted ? submitted.toLocaleString() : null }),
      element("td", { text: item.endpoint }),
      element("td", { class: item.status, text: item.status, title: item.error_type }),
      element("td", { text: item.billable_seconds ? item.billable_seconds.toFixed(3) : "0" }),
      element("td", {}, open));
  });
  $("history-rows").replaceChildren(...rows);
}

// -- endpoints and the key -----------------------------------------------------------------------

function renderCatalog(catalog) {
  const nav = $("endpoints");
  nav.replaceChildren();
  for (const family of catalog.families) {
    const headingId = `family-${family.name}`;
    const list = element("ul", { "aria-labelledby": headingId });
    for (const endpoint of family.endpoints) {
      const entry = renderForm(endpoint, submitForm);
      state.forms.set(endpoint.name, entry);
      $("forms").append(entry.form);
      list.append(element("li", {}, element("a", { href: `#${encodeURIComponent(endpoint.name)}`,
                                                   "data-endpoint": endpoint.name, text: endpoint.name })));
    }
    nav.append(element("h2", { id: headingId, text: family.name }), list);
  }
  showSelected();
}

function showSelected() {
  if (!state.forms.size) return;
  const wanted = decodeURIComponent(window.location.hash.slice(1));
  const name = state.forms.has(wanted) ? wanted : state.forms.keys().next().value;
  for (const [endpoint, entry] of state.forms) entry.form.hidden = endpoint !== name;
  for (const link of document.querySelectorAll("#endpoints a")) {
    if (link.dataset.endpoint === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${name} · ACE-Step playground`;
}

function keyRequired() {
  return document.body.dataset.keyRequired === "true";
}

async function loadCatalog() {
  const status = $("key-status");
  if (keyRequired() && !state.key) {
    status.textContent = "This server needs an API key.";
    return;
  }
  let response;
  try {
    response = await api("/playground/endpoints");
  } catch (error) {
    status.textContent = `The server cannot be reached (${error.message}).`;
    return;
  }
  if (response.status === 401) {
    status.textContent = "The key was not accepted.";
    return;
  }
  if (!response.ok) {
    status.textContent = `The endpoints could not be loaded (HTTP ${response.status}).`;
    return;
  }
  const catalog = await response.json();
  const count = catalog.families.reduce((total, family) => total + family.endpoints.length, 0);
  status.textContent = keyRequired() ? `Key accepted: ${count} endpoints.` : `${count} endpoints; this server needs no key.`;
  if (!state.catalog) renderCatalog(catalog);
  state.catalog = catalog;
  await refreshHistory();
}

function useKey(value) {
  state.key = value.trim();
  writeStorage(state.key);
  return loadCatalog();
}

function init() {
  state.key = readStorage();
  const input = $("api-key");
  input.value = state.key;
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => useKey(input.value), KEY_DEBOUNCE_MS);
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer);
    useKey(input.value);
  });
  $("forget-key").addEventListener("click", () => {
    input.value = "";
    state.key = "";
    writeStorage("");
    $("key-status").textContent = "Key forgotten.";
  });
  $("run-cancel").addEventListener("click", () => cancelRun().catch((error) => {
    $("run-error").textContent = `Cancel failed: ${error.message}`;
  }));
  $("copy-seed").addEventListener("click", copySeed);
  $("reuse-seed").addEventListener("click", reuseSeed);
  $("refresh-history").addEventListener("click", () => refreshHistory());
  window.addEventListener("hashchange", showSelected);
  loadCatalog();
}

init();
