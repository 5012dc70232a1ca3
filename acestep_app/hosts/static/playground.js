// The playground: a form per endpoint, generated from its input JSON schema, run through fal's queue.
// Plain browser JavaScript, no build step and no dependency: the server ships this file as package data.
"use strict";

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

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

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

function detailText(detail) {
  if (Array.isArray(detail)) return detail.map((item) => `${(item.loc || []).join(".")}: ${item.msg}`).join("; ");
  return typeof detail === "string" ? detail : JSON.stringify(detail);
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

// -- schema -> fields ----------------------------------------------------------------------------

function lookup(root, ref) {
  return ref.replace(/^#\//, "").split("/")
    .map((part) => decodeURIComponent(part).replace(/~1/g, "/").replace(/~0/g, "~"))
    .reduce((node, part) => (node ? node[part] : undefined), root);
}

// The schema of one field with $ref / single allOf followed and "X or null" unwrapped (nullable: true).
function resolve(schema, root, depth = 0) {
  if (!schema || depth > 16) return schema || {};
  const { $ref, allOf, anyOf, oneOf, ...rest } = schema;
  if ($ref) {
    const { title, ...target } = resolve(lookup(root, $ref), root, depth + 1); // a $defs title names the type
    return { ...target, ...rest };
  }
  if (allOf && allOf.length === 1) return { ...resolve(allOf[0], root, depth + 1), ...rest };
  const options = anyOf || oneOf;
  if (options) {
    const real = options.filter((option) => option.type !== "null");
    const nullable = real.length < options.length;
    if (real.length === 1) return { ...resolve(real[0], root, depth + 1), ...rest, nullable };
    return { ...rest, nullable, union: real.map((option) => resolve(option, root, depth + 1)) };
  }
  return schema;
}

function kindOf(name, schema) {
  if (Array.isArray(schema.enum)) return "enum";
  if (schema.type === "boolean") return "boolean";
  if (schema.type === "integer" || schema.type === "number") return "number";
  if (schema.type === "string") {
    const isFile = schema["x-fal-file-input"] || (/_url$/.test(name) && schema.format !== "date-time");
    return isFile ? "file" : "text";
  }
  if (schema.type === "array" && schema.items && schema.items.type === "string" && !schema.items.enum) return "lines";
  return "json";
}

function titleOf(name, schema) {
  return schema.title || name.replace(/_/g, " ").replace(/^./, (first) => first.toUpperCase());
}

function describeItems(schema, root) {
  const items = resolve(schema.items || {}, root);
  if (!items.properties) return "";
  const required = new Set(items.required || []);
  const parts = Object.entries(items.properties).map(([name, raw]) => {
    const field = resolve(raw, root);
    const bounds = [field.minimum, field.maximum].some((bound) => bound !== undefined)
      ? ` ${field.minimum ?? "…"} to ${field.maximum ?? "…"}` : "";
    return `${name} (${field.type || "value"}${bounds}${required.has(name) ? ", required" : ""})`;
  });
  return `A JSON list of objects with: ${parts.join(", ")}.`;
}

function fieldsOf(schema) {
  const required = new Set(schema.required || []);
  return Object.entries(schema.properties || {}).map(([name, raw]) => {
    const resolved = resolve(raw, schema);
    return { name, schema: resolved, kind: kindOf(name, resolved), required: required.has(name),
             title: titleOf(name, resolved), itemsHelp: resolved.type === "array" ? describeItems(resolved, schema) : "" };
  });
}

// -- fields -> form ------------------------------------------------------------------------------

function hasDefault(field) {
  return Object.prototype.hasOwnProperty.call(field.schema, "default") && field.schema.default !== null;
}

function labelFor(field, id) {
  return element("label", { for: id }, field.title, element("code", { text: field.name }),
    field.required ? element("span", { class: "required", text: " (required)" }) : null);
}

function controlFor(field, id, describedBy) {
  const { schema, name } = field;
  const common = { id, name, "aria-describedby": describedBy, required: field.required };
  if (field.kind === "enum") {
    const select = element("select", common);
    if (schema.nullable || !hasDefault(field)) select.append(element("option", { value: "", text: "(not set)" }));
    for (const value of schema.enum) {
      select.append(element("option", { value: String(value), text: String(value),
                                        selected: hasDefault(field) && schema.default === value }));
    }
    return select;
  }
  if (field.kind === "boolean") {
    return element("input", { ...common, type: "checkbox", required: false, checked: schema.default === true });
  }
  if (field.kind === "number") {
    const integer = schema.type === "integer";
    return element("input", {
      ...common, type: "number", inputmode: integer ? "numeric" : "decimal", step: integer ? "1" : "any",
      min: schema.minimum ?? schema.exclusiveMinimum, max: schema.maximum ?? schema.exclusiveMaximum,
      value: hasDefault(field) ? String(schema.default) : undefined,
      placeholder: schema.nullable ? "empty: not sent" : undefined,
    });
  }
  const example = Array.isArray(schema.examples) && typeof schema.examples[0] === "string" ? schema.examples[0] : undefined;
  if (field.kind === "text" && !/(prompt|lyrics)/.test(name)) {
    return element("input", { ...common, type: "text", value: hasDefault(field) ? schema.default : undefined,
                              placeholder: example, minlength: schema.minLength, maxlength: schema.maxLength });
  }
  const area = element("textarea", { ...common, rows: /lyrics/.test(name) ? 6 : field.kind === "json" ? 4 : 2,
                                     placeholder: field.kind === "text" ? example : undefined,
                                     spellcheck: field.kind === "text" });
  if (field.kind === "text" && hasDefault(field)) area.value = schema.default;
  if (field.kind === "lines" && hasDefault(field)) area.value = schema.default.join("\n");
  if (field.kind === "json" && hasDefault(field)) area.value = JSON.stringify(schema.default, null, 2);
  return area;
}

function fileField(field, id, describedBy, help, error) {
  const accept = /audio/.test(field.name) ? "audio/*" : undefined;
  const upload = element("input", { id: `${id}-file`, name: field.name, type: "file", accept,
                                    "aria-describedby": describedBy });
  const url = element("input", { id, name: field.name, type: "text", inputmode: "url", spellcheck: false,
                                 "aria-describedby": describedBy, placeholder: "https://… or data:…",
                                 value: hasDefault(field) ? field.schema.default : undefined });
  const legend = element("legend", {}, field.title, element("code", { text: field.name }),
    field.required ? element("span", { class: "required", text: " (required)" }) : null);
  const box = element("fieldset", { class: "field wide", "data-field": field.name }, legend,
    element("label", { for: `${id}-file`, text: "Upload a file (sent as a data: URI)" }), upload,
    element("label", { for: id, text: "or its URL" }), url, help, error);
  return { box, control: url, upload };
}

function renderField(field, formId) {
  const id = `${formId}-${field.name}`;
  // the control shows the default already: fal's "Default value: `x`" suffix is left out of the help
  const description = (field.schema.description || "").replace(/\s*Default value: `[^`]*`\s*$/, "");
  const helpText = [description, field.itemsHelp].filter(Boolean).join(" ");
  const help = element("p", { class: "help", id: `${id}-help`, text: helpText });
  const error = element("p", { class: "error", id: `${id}-error`, "aria-live": "polite" });
  const describedBy = `${id}-help ${id}-error`;
  if (field.kind === "file") return { ...field, error, ...fileField(field, id, describedBy, help, error) };
  const control = controlFor(field, id, describedBy);
  const wide = ["text", "lines", "json"].includes(field.kind) && control.tagName === "TEXTAREA";
  const classes = ["field", wide ? "wide" : "", field.kind === "boolean" ? "checkbox" : ""].filter(Boolean).join(" ");
  const box = field.kind === "boolean"
    ? element("div", { class: classes, "data-field": field.name }, control, labelFor(field, id), help, error)
    : element("div", { class: classes, "data-field": field.name }, labelFor(field, id), control, help, error);
  return { ...field, box, control, error };
}

function renderForm(endpoint) {
  const formId = `form-${endpoint.name}`;
  const fields = fieldsOf(endpoint.input_schema).map((field) => renderField(field, formId));
  const formError = element("p", { class: "error", role: "alert" });
  const submit = element("button", { type: "submit", text: `Run ${endpoint.name}` });
  const form = element("form", { id: formId, class: "endpoint-form", novalidate: true, hidden: true,
                                 "aria-labelledby": `${formId}-title` },
    element("h2", { id: `${formId}-title`, text: endpoint.summary || endpoint.name }),
    element("p", { class: "path" }, element("code", { text: `POST ${endpoint.submit_path}` })),
    element("p", { text: endpoint.description }),
    element("div", { class: "fields" }, ...fields.map((field) => field.box)),
    element("div", { class: "form-actions" }, submit), formError);
  const entry = { endpoint, form, fields, formError, submit };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitForm(entry).catch((error) => showFormError(entry, `Unexpected error: ${error.message}`));
  });
  return entry;
}

// -- reading and checking a form -----------------------------------------------------------------

function checkNumber(field, text) {
  const { schema } = field;
  if (schema.type === "integer" ? !/^-?\d+$/.test(text) : !Number.isFinite(Number(text))) {
    return schema.type === "integer" ? "Enter a whole number." : "Enter a number.";
  }
  const value = Number(text);
  if (schema.minimum !== undefined && value < schema.minimum) return `Must be at least ${schema.minimum}.`;
  if (schema.maximum !== undefined && value > schema.maximum) return `Must be at most ${schema.maximum}.`;
  if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) {
    return `Must be more than ${schema.exclusiveMinimum}.`;
  }
  if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) {
    return `Must be less than ${schema.exclusiveMaximum}.`;
  }
  return null;
}

function checkText(field, text) {
  const { schema } = field;
  if (schema.minLength !== undefined && text.length < schema.minLength) {
    return `Must be at least ${schema.minLength} characters.`;
  }
  if (schema.maxLength !== undefined && text.length > schema.maxLength) {
    return `Must be at most ${schema.maxLength} characters.`;
  }
  return null;
}

function readAsDataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error || new Error("the file could not be read"));
    reader.readAsDataURL(file);
  });
}

// One field -> {json: its value as JSON text} | {omit: true} | {error: message}.
async function readField(field) {
  const { control, schema, kind } = field;
  const missing = field.required ? { error: "This field is required." } : { omit: true };
  if (kind === "boolean") return { json: control.checked ? "true" : "false" };
  if (kind === "enum") {
    if (control.value === "") return missing;
    const value = schema.enum.find((option) => String(option) === control.value);
    return { json: JSON.stringify(value) };
  }
  if (kind === "number") {
    if (control.validity && control.validity.badInput) return { error: "Enter a number." };
    const text = control.value.trim();
    if (text === "") return missing;
    const error = checkNumber(field, text);
    return error ? { error } : { json: schema.type === "integer" ? text.replace(/^(-?)0+(?=\d)/, "$1") : String(Number(text)) };
  }
  if (kind === "file") {
    const file = field.upload.files && field.upload.files[0];
    if (file) return { json: JSON.stringify(await readAsDataUri(file)) };
    const url = control.value.trim();
    if (url === "") return field.required ? { error: "Upload a file or enter its URL." } : { omit: true };
    return { json: JSON.stringify(url) };
  }
  if (kind === "lines") {
    const lines = control.value.split("\n").map((line) => line.trim()).filter(Boolean);
    return lines.length || field.required ? { json: JSON.stringify(lines) } : { omit: true };
  }
  if (kind === "json") {
    const text = control.value.trim();
    if (text === "") return missing;
    try {
      const value = JSON.parse(text);
      if (schema.type === "array" && !Array.isArray(value)) return { error: "Enter a JSON list: [ … ]." };
    } catch (error) {
      return { error: `Not valid JSON: ${error.message}` };
    }
    return { json: text };
  }
  const text = control.value;
  if (text === "" && !hasDefault(field)) return missing;
  const error = checkText(field, text);
  return error ? { error } : { json: JSON.stringify(text) };
}

function setFieldError(field, message) {
  field.error.textContent = message || "";
  const controls = field.upload ? [field.control, field.upload] : [field.control];
  for (const control of controls) {
    if (message) control.setAttribute("aria-invalid", "true");
    else control.removeAttribute("aria-invalid");
  }
}

function clearErrors(entry) {
  for (const field of entry.fields) setFieldError(field, "");
  entry.formError.textContent = "";
}

function showFormError(entry, message) {
  entry.formError.textContent = message;
}

// The request body, built as text so 64-bit integers (seeds) are sent digit for digit.
async function readForm(entry) {
  const parts = [];
  let firstInvalid = null;
  for (const field of entry.fields) {
    const value = await readField(field);
    if (value.error) {
      setFieldError(field, value.error);
      firstInvalid = firstInvalid || field;
    } else if (!value.omit) {
      parts.push(`${JSON.stringify(field.name)}:${value.json}`);
    }
  }
  return { body: `{${parts.join(",")}}`, firstInvalid };
}

// Server-side 422 items next to their fields (loc ["body", field, ...]); the rest under the form.
function showServerErrors(entry, detail) {
  const unplaced = [];
  const items = Array.isArray(detail) ? detail : [{ loc: [], msg: detailText(detail) }];
  let first = null;
  for (const item of items) {
    const loc = item.loc || [];
    const name = loc[0] === "body" ? loc[1] : undefined;
    const field = entry.fields.find((candidate) => candidate.name === name);
    if (field) {
      const where = loc.slice(2).join(" → ");
      const message = where ? `${where}: ${item.msg}` : item.msg;
      setFieldError(field, field.error.textContent ? `${field.error.textContent} ${message}` : message);
      first = first || field;
    } else {
      unplaced.push(`${loc.join(".") || "request"}: ${item.msg}`);
    }
  }
  if (unplaced.length) showFormError(entry, unplaced.join("; "));
  if (first) first.control.focus();
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
    follow({ entry, endpoint: entry.endpoint.name, requestId: handle.request_id, statusUrl: handle.status_url,
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

function showResult(text, result) {
  const audio = result.audio || {};
  const url = typeof audio.url === "string" ? audio.url : "";
  const source = url.includes("/files/") ? local(url) : url;
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
  field.control.focus();
}

// -- history -------------------------------------------------------------------------------------

async function refreshHistory() {
  if (!state.catalog) return;
  const response = await api(`/requests?limit=${HISTORY_SIZE}`);
  if (!response.ok) return;
  const { requests } = await response.json();
  const rows = requests.map((item) => {
    const open = element("button", { type: "button", text: "Open", "aria-label": `Open request ${item.request_id}` });
    open.addEventListener("click", () => follow({
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
      const entry = renderForm(endpoint);
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
