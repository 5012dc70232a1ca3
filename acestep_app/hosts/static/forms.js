// The forms: an endpoint's input JSON schema -> labelled controls, and back -> a checked request body.
// Plain browser JavaScript (an ES module), no build step and no dependency.

export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function detailText(detail) {
  if (Array.isArray(detail)) return detail.map((item) => `${(item.loc || []).join(".")}: ${item.msg}`).join("; ");
  return typeof detail === "string" ? detail : JSON.stringify(detail);
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

// `onSubmit(entry)` runs the checked form (it returns a promise; a rejection is shown under the form).
export function renderForm(endpoint, onSubmit) {
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
    onSubmit(entry).catch((error) => showFormError(entry, `Unexpected error: ${error.message}`));
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

function checkItems(field, items) {
  const { minItems, maxItems } = field.schema;
  if (minItems !== undefined && items.length < minItems) return `At least ${minItems} items.`;
  if (maxItems !== undefined && items.length > maxItems) return `At most ${maxItems} items.`;
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
    if (!lines.length && !field.required) return { omit: true };
    const error = checkItems(field, lines);
    return error ? { error } : { json: JSON.stringify(lines) };
  }
  if (kind === "json") {
    const text = control.value.trim();
    if (text === "") return missing;
    let value;
    try {
      value = JSON.parse(text);
    } catch (error) {
      return { error: `Not valid JSON: ${error.message}` };
    }
    if (schema.type === "array" && !Array.isArray(value)) return { error: "Enter a JSON list: [ … ]." };
    const error = schema.type === "array" ? checkItems(field, value) : null;
    return error ? { error } : { json: text };
  }
  const text = control.value;
  if (text === "" && !hasDefault(field)) return missing;
  const error = checkText(field, text);
  return error ? { error } : { json: JSON.stringify(text) };
}

export function setFieldError(field, message) {
  field.error.textContent = message || "";
  const controls = field.upload ? [field.control, field.upload] : [field.control];
  for (const control of controls) {
    if (message) control.setAttribute("aria-invalid", "true");
    else control.removeAttribute("aria-invalid");
  }
}

export function clearErrors(entry) {
  for (const field of entry.fields) setFieldError(field, "");
  entry.formError.textContent = "";
}

export function showFormError(entry, message) {
  entry.formError.textContent = message;
}

// The request body, built as text so 64-bit integers (seeds) are sent digit for digit.
export async function readForm(entry) {
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
export function showServerErrors(entry, detail) {
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
