// The playground: a form per endpoint built from this server's /openapi.json (so a new field appears
// without editing this file), uploads through /storage/upload/initiate, submit through the queue, then
// status, logs, progress, preview, cancel and the result. Plain browser JavaScript, no build step.
"use strict";

const APP = "fal-ai/wan-vace-14b";
const POLL_MS = 500;
const KEY_STORE = "vace-api-key";
const state = { spec: null, schemas: {}, endpoint: null, job: null, timer: null, keyWaiters: [] };
const $ = (id) => document.getElementById(id);

// -- API key: asked once (on the first 401), kept for this tab -----------------------------------------

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Key ${key}` } : {};
}

function askForKey() {
  $("key-panel").hidden = false;
  $("api-key").focus();
  return new Promise((resolve) => state.keyWaiters.push(resolve));
}

$("save-key").addEventListener("click", () => {
  sessionStorage.setItem(KEY_STORE, $("api-key").value.trim());
  $("key-panel").hidden = true;
  state.keyWaiters.splice(0).forEach((resolve) => resolve());
});

async function api(url, options = {}) {
  for (;;) {
    const response = await fetch(url, { ...options, headers: { ...(options.headers || {}), ...authHeaders() } });
    if (response.status !== 401) return response;
    await askForKey();
  }
}

// -- the form, from the schema -----------------------------------------------------------------------

function resolve(schema) {
  if (schema && schema.$ref) return state.spec.components.schemas[schema.$ref.split("/").pop()];
  return schema;
}

function describe(prop) {
  // pydantic writes Optional[X] as anyOf [X, null]
  let base = prop;
  let nullable = false;
  if (prop.anyOf) {
    const kinds = prop.anyOf.map(resolve);
    nullable = kinds.some((k) => k.type === "null");
    base = kinds.find((k) => k.type !== "null") || {};
  }
  base = resolve(base);
  return { ...base, nullable, description: prop.description || base.description || "",
           default: prop.default !== undefined ? prop.default : base.default, title: prop.title || "" };
}

function fileKind(name, info) {
  if (info.type === "string" && name.endsWith("_url")) return "file";
  if (info.type === "array" && name.endsWith("_urls")) return "files";
  return null;
}

function metaText(name, info, required) {
  const parts = [info.type === "array" ? `array of ${(info.items || {}).type || "any"}` : info.type];
  if (info.nullable) parts[0] += " or null";
  if (required) parts.push("required");
  if (info.default !== undefined) parts.push(`default ${JSON.stringify(info.default)}`);
  if (info.minimum !== undefined || info.maximum !== undefined) {
    parts.push(`range ${info.minimum ?? "-∞"} to ${info.maximum ?? "∞"}`);
  }
  if (info.enum) parts.push(`one of ${info.enum.join(", ")}`);
  return `${parts.join(" · ")} — ${info.description}`;
}

function fieldElement(name, prop, required) {
  const info = describe(prop);
  const row = document.createElement("div");
  row.className = "field";
  row.dataset.field = name;
  row.dataset.type = info.type || "";
  const id = `f-${name}`;
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = name;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = metaText(name, info, required);
  row.append(label, meta);
  let input;
  const kind = fileKind(name, info);
  if (kind) {
    row.dataset.kind = kind;
    const wrap = document.createElement("div");
    wrap.className = "file-row";
    const file = document.createElement("input");
    file.type = "file";
    file.id = `${id}-file`;
    file.multiple = kind === "files";
    input = document.createElement(kind === "files" ? "textarea" : "input");
    if (kind === "file") input.type = "text";
    input.placeholder = kind === "files" ? "or URLs, one a line" : "or a URL";
    wrap.append(file, input);
    row.append(wrap);
  } else if (info.enum) {
    input = document.createElement("select");
    if (info.nullable || info.default === undefined) input.append(new Option("(not set)", ""));
    info.enum.forEach((v) => input.append(new Option(v, v, false, v === info.default)));
    row.append(input);
  } else if (info.type === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = info.default === true;
    row.append(input);
  } else if (info.type === "integer" || info.type === "number") {
    input = document.createElement("input");
    input.type = "number";
    if (info.minimum !== undefined) input.min = info.minimum;
    if (info.maximum !== undefined) input.max = info.maximum;
    input.step = info.type === "integer" ? "1" : "any";
    if (info.default !== undefined && info.default !== null) input.value = info.default;
    row.append(input);
  } else if (info.type === "string") {
    input = document.createElement(name.includes("prompt") ? "textarea" : "input");
    if (input.tagName === "INPUT") input.type = "text";
    if (typeof info.default === "string") input.value = info.default;
    row.append(input);
  } else {
    // objects, arrays of anything but URLs, unions: typed as JSON
    row.dataset.json = "1";
    input = document.createElement("textarea");
    input.placeholder = "JSON";
    if (info.default !== undefined && info.default !== null) input.value = JSON.stringify(info.default);
    row.append(input);
  }
  input.id = id;
  input.name = name;
  return row;
}

function endpointPaths() {
  return Object.keys(state.spec.paths)
    .filter((p) => p.startsWith(`/queue/${APP}`) && state.spec.paths[p].post && state.spec.paths[p].post.requestBody);
}

function endpointLabel(path) {
  const rest = path.slice(`/queue/${APP}`.length).replace(/^\//, "");
  return rest || "root";
}

function renderForm() {
  const path = $("endpoint").value;
  state.endpoint = path;
  const operation = state.spec.paths[path].post;
  const schema = resolve(operation.requestBody.content["application/json"].schema);
  const required = new Set(schema.required || []);
  $("endpoint-description").textContent = operation.description || operation.summary || schema.description || "";
  const fields = $("fields");
  fields.replaceChildren();
  Object.entries(schema.properties).forEach(([name, prop]) => {
    fields.append(fieldElement(name, prop, required.has(name)));
  });
  updateSnippets();
}

// -- collecting the input (uploading local files first) ------------------------------------------------

async function upload(file) {
  const init = await api("/storage/upload/initiate", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ content_type: file.type || "application/octet-stream", file_name: file.name }),
  });
  if (!init.ok) throw new Error(`upload of ${file.name} refused: ${init.status} ${await init.text()}`);
  const { upload_url: uploadUrl, file_url: fileUrl } = await init.json();
  const put = await api(uploadUrl, { method: "PUT", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file });
  if (!put.ok) throw new Error(`upload of ${file.name} failed: ${put.status} ${await put.text()}`);
  return fileUrl;
}

async function collectInput(withUploads) {
  const body = {};
  for (const row of $("fields").children) {
    const name = row.dataset.field;
    const input = $(`f-${name}`);
    const kind = row.dataset.kind;
    if (kind) {
      const files = $(`f-${name}-file`).files;
      const typed = input.value.split("\n").map((s) => s.trim()).filter(Boolean);
      let urls = typed;
      if (files.length) {
        urls = withUploads ? [] : Array.from(files, (f) => `<upload of ${f.name}>`);
        if (withUploads) for (const f of files) urls.push(await upload(f));
        if (withUploads) { input.value = urls.join("\n"); $(`f-${name}-file`).value = ""; }
      }
      if (!urls.length) continue;
      body[name] = kind === "files" ? urls : urls[0];
    } else if (input.type === "checkbox") {
      body[name] = input.checked;
    } else if (input.value === "") {
      continue;
    } else if (row.dataset.json) {
      try {
        body[name] = JSON.parse(input.value);
      } catch (err) {
        throw new Error(`${name} is not valid JSON: ${err.message}`);
      }
    } else if (row.dataset.type === "integer") {
      body[name] = parseInt(input.value, 10);
    } else if (row.dataset.type === "number") {
      body[name] = parseFloat(input.value);
    } else {
      body[name] = input.value;
    }
  }
  return body;
}

async function updateSnippets() {
  const body = await collectInput(false);
  const id = `${APP}${state.endpoint.slice(`/queue/${APP}`.length)}`;
  const origin = window.location.origin;
  const json = JSON.stringify(body, null, 2);
  $("curl").textContent = `curl -X POST ${origin}/queue/${id} \\\n  -H "Authorization: Key $FAL_KEY" \\\n` +
    `  -H "Content-Type: application/json" \\\n  -d '${json.replace(/'/g, "'\\''")}'`;
  const pyArgs = json.replace(/\btrue\b/g, "True").replace(/\bfalse\b/g, "False").replace(/\bnull\b/g, "None");
  $("python").textContent = [
    "import fal_client",
    "import fal_client.client as c",
    "",
    "# point fal-client at this server (docs/clients.md); FAL_KEY holds the API key",
    `c.RUN_URL_FORMAT = "${origin}/"`,
    `c.QUEUE_URL_FORMAT = "${origin}/queue/"`,
    `c.REST_URL = c.CDN_URL = "${origin}"`,
    "",
    `result = fal_client.subscribe("${id}", arguments=${pyArgs}, with_logs=True)`,
    'print(result["video"]["url"])',
  ].join("\n");
}

// -- submit, poll, cancel, result ------------------------------------------------------------------------

function showError(message) { $("error").textContent = message; }

function showProgress(progress) {
  const fraction = progress ? progress.fraction || 0 : 0;
  $("progress-bar").style.width = `${(fraction * 100).toFixed(1)}%`;
  $("progress-bar").dataset.fraction = String(fraction);
  if (!progress) return;
  const step = progress.steps ? ` · step ${progress.step}/${progress.steps}` : "";
  const eta = progress.eta_seconds != null ? ` · about ${Math.round(progress.eta_seconds)} s left` : "";
  $("progress-text").textContent = `${progress.phase_label || progress.phase || ""}${step}${eta}`;
  if (progress.preview_url) {
    $("preview-box").hidden = false;
    if ($("preview").getAttribute("src") !== progress.preview_url) $("preview").src = progress.preview_url;
  }
}

async function poll() {
  const job = state.job;
  if (!job) return;
  let body;
  try {
    const response = await api(`${job.status_url}?logs=1`);
    body = await response.json();
  } catch (err) {
    showError(`status: ${err}`);
    state.timer = setTimeout(poll, POLL_MS * 2);
    return;
  }
  if (state.job !== job) return;
  const where = body.status === "IN_QUEUE" ? ` · queue position ${body.queue_position}` : "";
  $("job-line").textContent = `${job.request_id}: ${body.status}${where}`;
  $("job-line").dataset.status = body.status;
  if (body.logs) $("logs").textContent = body.logs.map((l) => `${l.timestamp.slice(11, 19)} ${l.level} ${l.message}`).join("\n");
  showProgress(body.progress);
  if (body.status !== "COMPLETED") {
    state.timer = setTimeout(poll, POLL_MS);
    return;
  }
  $("cancel").disabled = true;
  if (body.error) {
    showError(`${body.error_type || "error"}: ${body.error}`);
    return;
  }
  const result = await (await api(job.response_url)).json();
  showProgress({ fraction: 1, phase_label: "Done" });
  showResult(result);
}

function showResult(result) {
  const video = result.video;
  $("result").hidden = false;
  $("result-video").src = video.url;
  $("download").href = video.url;
  $("download").setAttribute("download", video.file_name || "video.mp4");
  const meta = $("result-meta");
  meta.replaceChildren();
  const rows = { file_name: video.file_name, content_type: video.content_type, file_size: `${video.file_size} bytes`,
                 seed: result.seed, prompt: result.prompt };
  $("result-video").addEventListener("loadedmetadata", () => {
    const v = $("result-video");
    addMeta(meta, "duration", `${v.duration.toFixed(2)} s, ${v.videoWidth}x${v.videoHeight}`);
  }, { once: true });
  Object.entries(rows).forEach(([k, v]) => addMeta(meta, k, v));
}

function addMeta(list, key, value) {
  const dt = document.createElement("dt");
  dt.textContent = key;
  const dd = document.createElement("dd");
  dd.textContent = String(value);
  list.append(dt, dd);
}

$("request-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  $("submit").disabled = true;
  try {
    const input = await collectInput(true);
    updateSnippets();
    const response = await api(state.endpoint, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(input),
    });
    const body = await response.json();
    if (!response.ok) {
      showError(`${response.status}: ${JSON.stringify(body.detail || body, null, 1)}`);
      return;
    }
    clearTimeout(state.timer);
    state.job = body;
    $("result").hidden = true;
    $("preview-box").hidden = true;
    $("preview").removeAttribute("src");
    $("logs").textContent = "";
    $("progress-text").textContent = "";
    showProgress(null);
    $("cancel").disabled = false;
    poll();
  } catch (err) {
    showError(String(err));
  } finally {
    $("submit").disabled = false;
  }
});

$("cancel").addEventListener("click", async () => {
  if (!state.job) return;
  const response = await api(state.job.cancel_url, { method: "PUT" });
  const body = await response.json();
  $("progress-text").textContent = `cancel: ${body.status}`;
});

$("fields").addEventListener("change", updateSnippets);
$("endpoint").addEventListener("change", renderForm);

async function main() {
  state.spec = await (await fetch("/openapi.json")).json();
  const select = $("endpoint");
  endpointPaths().forEach((path) => select.append(new Option(endpointLabel(path), path)));
  const wanted = new URLSearchParams(window.location.search).get("endpoint");
  const match = endpointPaths().find((p) => endpointLabel(p) === wanted);
  if (match) select.value = match;
  renderForm();
  document.body.dataset.ready = "1";
}

main().catch((err) => showError(`could not load the API schema: ${err}`));
