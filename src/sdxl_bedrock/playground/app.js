// The sdxl-bedrock playground: builds a Bedrock SDXL request from the form, sends it to the
// response-stream endpoint, and reads the AWS event stream frame by frame (progress, previews, result).
// Plain script, no build step, nothing fetched from elsewhere.
"use strict";

// SDXL's Bedrock model id, on the default checkpoint; a --model-alias id reaches another checkpoint.
const DEFAULT_MODEL_ID = "stability.stable-diffusion-xl-v1";
const MAX_PROMPTS = 10;
const PING_RETRY_MS = 2000;
const CLOCK_TICK_MS = 100;

const $ = (id) => document.getElementById(id);
const utf8 = new TextDecoder();

// The uploaded pictures ({name, base64, dataUrl, width, height}), the run in flight (its controller, the
// body it sent, when it started, the clock that shows how long it has run) and the server's options.
const state = { init: null, mask: null, controller: null, options: null, sent: null, startedAt: 0, clock: null };

// ---- the model id: SDXL's, or a --model-alias for another checkpoint of the library -------------------

// The model id the chooser names (the options of checkpoints without an alias are disabled).
function chosenModelId() {
  return $("model").value || DEFAULT_MODEL_ID;
}

// The response-stream path for a model id; an ARN's ":" and "/" are escaped, as the SDKs send them.
function streamPath(modelId) {
  return `/model/${encodeURIComponent(modelId)}/invoke-with-response-stream`;
}

// The entry of options.models a model id names (undefined before the options arrive).
function modelEntry(modelId) {
  return (state.options?.models || []).find((model) => model.model_id === modelId);
}

// "…/house" for an ARN: the chooser's label; the full id stands beside it.
function shortId(modelId) {
  return modelId.includes("/") ? `…/${modelId.split("/").pop()}` : modelId;
}

// The chooser: SDXL's id on the default checkpoint, each alias on its checkpoint, and each checkpoint
// without an alias, disabled (a Bedrock request cannot name it), with how to give it one.
function setupModels(models) {
  const chosen = $("model").value;
  const unreachable = [];
  const options = models.map((model) => {
    if (model.model_id === null) {
      unreachable.push(model.checkpoint);
      const option = new Option(`${model.checkpoint} (no Bedrock id)`, "");
      option.disabled = true;
      option.title = `add --model-alias ID=${model.checkpoint} to reach it from Bedrock`;
      return option;
    }
    if (model.default) return new Option(`${model.checkpoint} (default)`, model.model_id);
    if (model.checkpoint === null) {
      const option = new Option(`${shortId(model.model_id)} (its checkpoint left the library)`, model.model_id);
      option.disabled = true;
      return option;
    }
    return new Option(`${model.checkpoint} (alias ${shortId(model.model_id)})`, model.model_id);
  });
  $("model").replaceChildren(...options);
  const known = models.some((model) => model.model_id === chosen && model.checkpoint !== null);
  $("model").value = known ? chosen : DEFAULT_MODEL_ID;
  $("model-note").hidden = unreachable.length === 0;
  $("model-note").textContent = unreachable
    .map((name) => `${name}: add --model-alias ID=${name} to reach it from Bedrock`)
    .join("; ");
  showModelId();
}

function showModelId() {
  $("model-id").textContent = chosenModelId();
}

// ---- AWS event-stream frames ------------------------------------------------------------------------
// A frame: total length (uint32 BE), headers length (uint32 BE), CRC32 of those 8 bytes, the headers,
// the payload, and a CRC32 of everything before it.

const PRELUDE_BYTES = 12;
const MESSAGE_CRC_BYTES = 4;
const STRING_HEADER = 7;
const BYTES_HEADER = 6;
// Value sizes of the fixed-size header types (0 true, 1 false, 2 byte, 3 short, 4 int, 5 long,
// 8 timestamp, 9 uuid); 6 (bytes) and 7 (string) carry a uint16 length instead.
const FIXED_HEADER_SIZES = { 0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16 };

const CRC32_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC32_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function viewOf(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function decodeHeaders(bytes) {
  const view = viewOf(bytes);
  const headers = {};
  let offset = 0;
  while (offset < bytes.length) {
    const nameLength = view.getUint8(offset);
    const name = utf8.decode(bytes.subarray(offset + 1, offset + 1 + nameLength));
    const type = view.getUint8(offset + 1 + nameLength);
    offset += 2 + nameLength;
    if (type === STRING_HEADER || type === BYTES_HEADER) {
      const valueLength = view.getUint16(offset);
      const value = bytes.subarray(offset + 2, offset + 2 + valueLength);
      headers[name] = type === STRING_HEADER ? utf8.decode(value) : value;
      offset += 2 + valueLength;
    } else if (type in FIXED_HEADER_SIZES) {
      headers[name] = type <= 1 ? type === 0 : bytes.subarray(offset, offset + FIXED_HEADER_SIZES[type]);
      offset += FIXED_HEADER_SIZES[type];
    } else {
      throw new Error(`event stream: unknown header type ${type}`);
    }
  }
  return headers;
}

// One whole frame -> {headers, payload}; throws when a length or checksum does not add up.
function decodeFrame(frame) {
  const view = viewOf(frame);
  const totalLength = view.getUint32(0);
  const headersLength = view.getUint32(4);
  if (totalLength !== frame.length || PRELUDE_BYTES + headersLength + MESSAGE_CRC_BYTES > totalLength) {
    throw new Error("event stream: a frame's lengths do not add up");
  }
  if (crc32(frame.subarray(0, 8)) !== view.getUint32(8)) {
    throw new Error("event stream: prelude checksum mismatch");
  }
  if (crc32(frame.subarray(0, totalLength - MESSAGE_CRC_BYTES)) !== view.getUint32(totalLength - MESSAGE_CRC_BYTES)) {
    throw new Error("event stream: message checksum mismatch");
  }
  const payloadStart = PRELUDE_BYTES + headersLength;
  return {
    headers: decodeHeaders(frame.subarray(PRELUDE_BYTES, payloadStart)),
    payload: frame.subarray(payloadStart, totalLength - MESSAGE_CRC_BYTES),
  };
}

// Returns push(bytes) -> the frames completed by those bytes (a frame may span several reads), and
// push.pending() -> how many bytes wait for the rest of their frame.
function createFrameParser() {
  let buffered = new Uint8Array(0);
  function push(bytes) {
    const joined = new Uint8Array(buffered.length + bytes.length);
    joined.set(buffered);
    joined.set(bytes, buffered.length);
    buffered = joined;
    const frames = [];
    while (buffered.length >= PRELUDE_BYTES) {
      const totalLength = viewOf(buffered).getUint32(0);
      if (totalLength < PRELUDE_BYTES + MESSAGE_CRC_BYTES) throw new Error("event stream: frame too short");
      if (buffered.length < totalLength) break;
      frames.push(decodeFrame(buffered.subarray(0, totalLength)));
      buffered = buffered.subarray(totalLength);
    }
    return frames;
  }
  push.pending = () => buffered.length;
  return push;
}

function base64ToBytes(base64) {
  const binary = atob(base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function parseJson(bytes) {
  try {
    return JSON.parse(utf8.decode(bytes));
  } catch {
    return null;
  }
}

// A frame -> {chunk: model JSON} | {error: {type, message}} | null for events we do not know.
function interpretFrame(frame) {
  const { headers } = frame;
  const messageType = headers[":message-type"];
  if (messageType === "exception" || messageType === "error") {
    const payload = parseJson(frame.payload) || {};
    return {
      error: {
        type: headers[":exception-type"] || headers[":error-code"] || "error",
        message: payload.message || headers[":error-message"] || utf8.decode(frame.payload),
      },
    };
  }
  if (messageType === "event" && headers[":event-type"] === "chunk") {
    const payload = parseJson(frame.payload);
    return { chunk: JSON.parse(utf8.decode(base64ToBytes(payload.bytes))) };
  }
  return null;
}

// Reads the whole stream, calling onMessage with each interpreted frame.
async function readEventStream(body, onMessage) {
  const reader = body.getReader();
  const parse = createFrameParser();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    for (const frame of parse(value)) {
      const message = interpretFrame(frame);
      if (message) onMessage(message);
    }
  }
  if (parse.pending() > 0) throw new Error("event stream: the stream ended in the middle of a frame");
}

// ---- the form -> the request body ---------------------------------------------------------------------

// A control's value as the API wants it: a number, a string, or undefined when left empty.
function fieldValue(id) {
  const control = $(id);
  if (control.value === "") return undefined;
  return control.type === "number" ? Number(control.value) : control.value;
}

function readPrompts() {
  return [...document.querySelectorAll(".prompt-row")].map((row) => {
    const weight = row.querySelector(".prompt-weight").value;
    const prompt = { text: row.querySelector(".prompt-text").value };
    if (weight !== "") prompt.weight = Number(weight);
    return prompt;
  });
}

// The Bedrock SDXL body for what the form says. No checks here: the server's messages are the checks.
function formToBody() {
  const body = { text_prompts: readPrompts() };
  const fields = ["cfg_scale", "seed", "steps", "sampler", "style_preset"];
  // Without a CLIP model on the server the control is hidden, and the field left to its default, NONE.
  if (state.options?.clip_guidance) fields.push("clip_guidance_preset");
  if (!state.init) {
    fields.push("width", "height");
  } else {
    body.init_image = state.init.base64;
    const mode = fieldValue("init_image_mode");
    fields.push("init_image_mode");
    fields.push(...(mode === "STEP_SCHEDULE" ? ["step_schedule_start", "step_schedule_end"] : ["image_strength"]));
    fields.push("mask_source");
  }
  for (const field of fields) {
    const value = fieldValue(field);
    if (value !== undefined) body[field] = value;
  }
  if (state.init && state.mask) body.mask_image = state.mask.base64;
  if ($("progress-enabled").checked) {
    body.extras = { progress: true };
    const every = fieldValue("preview-every");
    if (every !== undefined) body.extras.progress_preview_every = every;
  }
  const loras = readAdapters();
  if (loras.length > 0) body.extras = { ...body.extras, loras };
  return body;
}

// ---- the request and response views, and the boto3 snippet ----------------------------------------------

// A copy of a body or response with the long base64 strings shortened for reading.
function abbreviated(value) {
  if (typeof value === "string" && value.length > 120) return `<base64, ${value.length} characters>`;
  if (Array.isArray(value)) return value.map(abbreviated);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, abbreviated(inner)]));
  }
  return value;
}

function codeElement(text) {
  const code = document.createElement("code");
  code.textContent = text;
  return code;
}

// The request as sent: its path (with the model id), which checkpoint that id means, the body.
function showRequest(body, modelId) {
  $("request-path").textContent = `POST ${streamPath(modelId)}`;
  const checkpoint = modelEntry(modelId)?.checkpoint;
  const means = modelId === DEFAULT_MODEL_ID ? "the default checkpoint" : "a --model-alias for checkpoint";
  $("request-model").replaceChildren(
    "modelId ",
    codeElement(modelId),
    ...(checkpoint ? [`: ${means} `, codeElement(checkpoint)] : []),
  );
  $("request-json").textContent = JSON.stringify(abbreviated(body), null, 2);
  $("boto3-snippet").textContent = boto3Snippet(body, modelId);
}

function showResponse(lines, json) {
  const text = json === undefined ? "" : `\n\n${JSON.stringify(abbreviated(json), null, 2)}`;
  $("response-json").textContent = lines.join("\n") + text;
}

// Python source for code the snippet computes (a file read) rather than a literal.
class PythonCode {
  constructor(source) {
    this.source = source;
  }
}

// A Python literal in ruff's layout: on one line when it fits, else one item per line.
function toPython(value, indent = "") {
  if (value instanceof PythonCode) return value.source;
  if (value === null || value === undefined) return "None";
  if (typeof value === "boolean") return value ? "True" : "False";
  if (typeof value !== "object") return JSON.stringify(value);
  const inner = indent + "    ";
  const items = Array.isArray(value)
    ? value.map((item) => toPython(item, inner))
    : Object.entries(value).map(([key, item]) => `${JSON.stringify(key)}: ${toPython(item, inner)}`);
  const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  const oneLine = `${open}${items.join(", ")}${close}`;
  if (items.length === 0 || (indent.length + oneLine.length <= 90 && !oneLine.includes("\n"))) return oneLine;
  return `${open}\n${items.map((item) => `${inner}${item},`).join("\n")}\n${indent}${close}`;
}

function boto3Snippet(body, modelId) {
  const { extras, ...request } = body;
  // invoke_model sends the adapters in its body like any other field; only the progress keys are the
  // response stream's alone.
  const { loras, ...streamOnly } = extras || {};
  if (loras) request.extras = { loras };
  const usesFiles = "init_image" in request;
  if (usesFiles) request.init_image = new PythonCode(`b64(${JSON.stringify(state.init.name)})`);
  if ("mask_image" in request) request.mask_image = new PythonCode(`b64(${JSON.stringify(state.mask.name)})`);
  const lines = ["import base64", "import json", "", "import boto3", ""];
  if (usesFiles) {
    lines.push(
      "",
      "def b64(path):",
      '    with open(path, "rb") as file:',
      "        return base64.b64encode(file.read()).decode()",
      "",
      "",
    );
  }
  lines.push(
    "client = boto3.client(",
    '    "bedrock-runtime",',
    `    endpoint_url=${JSON.stringify(window.location.origin)},`,
    '    region_name="us-east-1",',
    '    aws_access_key_id="any",  # any key works unless the server has keys configured',
    '    aws_secret_access_key="any",',
    ")",
    `body = ${toPython(request)}`,
  );
  if (loras) lines.push("# extras.loras: this server's LoRA adapters (GET /sdapi/v1/loras lists them).");
  if (Object.keys(streamOnly).length > 0) {
    lines.push("# The page also sends extras.progress to stream progress; invoke_model returns only the result.");
  }
  lines.push(
    `response = client.invoke_model(modelId=${JSON.stringify(modelId)}, body=json.dumps(body))`,
    'artifact = json.loads(response["body"].read())["artifacts"][0]',
    'print(artifact["seed"], artifact["finishReason"])',
    'with open("result.png", "wb") as file:',
    '    file.write(base64.b64decode(artifact["base64"]))',
  );
  return lines.join("\n");
}

function refreshViews() {
  showRequest(formToBody(), chosenModelId());
}

// ---- generating -------------------------------------------------------------------------------------------

function requestHeaders() {
  const headers = { "Content-Type": "application/json", "X-Amzn-Bedrock-Accept": "application/json" };
  const apiKey = $("api-key").value.trim();
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  return headers;
}

// A refused request: the error type is x-amzn-ErrorType up to the colon, the words are the body's message.
async function errorFromResponse(response) {
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  const errorType = (response.headers.get("x-amzn-ErrorType") || "").split(":")[0];
  return {
    type: errorType || `HTTP ${response.status}`,
    message: (json && json.message) || text || response.statusText,
    json,
  };
}

function responseHeaderLines(response, names) {
  const lines = [`HTTP ${response.status} ${response.headers.get("content-type") || ""}`.trim()];
  for (const name of names) {
    const value = response.headers.get(name);
    if (value) lines.push(`${name}: ${value}`);
  }
  return lines;
}

async function generate() {
  const body = formToBody();
  const modelId = chosenModelId();
  state.controller?.abort();
  const controller = new AbortController();
  state.controller = controller;
  resetOutput();
  showRequest(body, modelId);
  state.sent = body;
  setBusy(true);
  let progressChunks = 0;
  let result;
  try {
    const response = await fetch(streamPath(modelId), {
      method: "POST",
      headers: requestHeaders(),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const error = await errorFromResponse(response);
      showError(error.type, error.message);
      showResponse(responseHeaderLines(response, ["x-amzn-ErrorType", "x-amzn-RequestId"]), error.json);
      return;
    }
    const headerLines = responseHeaderLines(response, ["x-amzn-RequestId", "X-Amzn-Bedrock-Content-Type"]);
    showResponse([...headerLines, "(streaming…)"]);
    await readEventStream(response.body, (message) => {
      if (message.error) {
        showError(message.error.type, message.error.message);
        showResponse([...headerLines, `exception frame: ${message.error.type}`], { message: message.error.message });
      } else if (message.chunk.progress) {
        progressChunks += 1;
        showProgress(message.chunk.progress);
      } else {
        result = message.chunk;
        showResult(result);
        showResponse([...headerLines, `${progressChunks} progress chunks, then the result chunk:`], result);
      }
    });
    if (!result && $("error").hidden) showError("StreamError", "The stream ended before the result arrived.");
  } catch (error) {
    if (error.name === "AbortError") setStatus("Cancelled.");
    else showError(error.name || "Error", error.message);
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      setBusy(false);
    }
  }
}

// ---- showing progress, results and errors -----------------------------------------------------------

function setBusy(busy) {
  $("generate").disabled = busy;
  $("generate").textContent = busy ? "Generating…" : "Generate";
  $("cancel").hidden = !busy;
  if (busy) {
    setStatus("");
    startClock();
  } else {
    stopClock();
  }
}

// How long the run has taken, shown while it runs and kept when it ends.
function startClock() {
  state.startedAt = performance.now();
  showElapsed();
  $("elapsed").hidden = false;
  state.clock = setInterval(showElapsed, CLOCK_TICK_MS);
}

function stopClock() {
  clearInterval(state.clock);
  state.clock = null;
  showElapsed();
}

function showElapsed() {
  $("elapsed").textContent = `${((performance.now() - state.startedAt) / 1000).toFixed(1)} s`;
}

function setStatus(text) {
  $("status").textContent = text;
}

function resetOutput() {
  $("error").hidden = true;
  $("progress-box").hidden = true;
  $("result-meta").hidden = true;
  $("result-image").hidden = true;
  $("live-preview").hidden = true;
  $("stage-empty").hidden = false;
  $("previews").replaceChildren();
}

// Small pictures (the previews, a tiny model's output) are scaled up without blurring.
function showPicture(image, src) {
  image.onload = () => image.classList.toggle("pixelated", image.naturalWidth < 256);
  image.src = src;
  image.hidden = false;
  $("stage-empty").hidden = true;
}

// Why an image-to-image run counts fewer steps than the body asked for: only its window of the schedule
// runs (the first step is steps - int(steps * start), as diffusers' img2img computes it). "" when none.
function windowNote(body, windowSteps) {
  if (!body || !("init_image" in body)) return "";
  const defaults = state.options.defaults;
  const total = body.steps ?? defaults.steps;
  if (windowSteps >= total) return "";
  if (body.init_image_mode === "STEP_SCHEDULE") {
    const start = body.step_schedule_start ?? defaults.step_schedule_start;
    const end = body.step_schedule_end ?? defaults.step_schedule_end;
    return ` (step_schedule_start ${start} to step_schedule_end ${end} runs ${windowSteps} of ${total} steps)`;
  }
  const strength = body.image_strength ?? defaults.image_strength;
  return ` (image_strength ${strength} runs the last ${windowSteps} of ${total} steps)`;
}

function showProgress({ step, steps, preview }) {
  $("progress-box").hidden = false;
  $("progress").max = steps;
  $("progress").value = step;
  $("progress-text").textContent = `step ${step} of ${steps}${windowNote(state.sent, steps)}`;
  if (preview) {
    const src = `data:image/jpeg;base64,${preview}`;
    if ($("result-image").hidden) showPicture($("live-preview"), src);
    const thumb = document.createElement("img");
    thumb.src = src;
    thumb.alt = `preview at step ${step}`;
    thumb.title = `step ${step}`;
    $("previews").append(thumb);
  }
}

function showResult(result) {
  const artifact = result.artifacts[0];
  $("live-preview").hidden = true;
  const src = `data:image/png;base64,${artifact.base64}`;
  showPicture($("result-image"), src);
  $("result-seed").textContent = String(artifact.seed);
  $("result-finish").textContent = artifact.finishReason;
  $("result-finish").className = artifact.finishReason === "SUCCESS" ? "ok" : "warn";
  $("download").href = src;
  $("download").download = `sdxl-${artifact.seed}.png`;
  $("result-meta").hidden = false;
  setStatus(artifact.finishReason === "CONTENT_FILTERED" ? "The content filter blurred this picture." : "Done.");
}

function showError(type, message) {
  $("error-type").textContent = type;
  $("error-message").textContent = message;
  $("error").hidden = false;
  $("live-preview").hidden = true;
  setStatus("");
}

// ---- inputs: pictures, prompts, sizes, modes --------------------------------------------------------------

function readImageFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onerror = () => reject(reader.error);
    reader.onload = () => {
      const dataUrl = reader.result;
      const picture = { name: file.name || "image.png", dataUrl, base64: dataUrl.slice(dataUrl.indexOf(",") + 1) };
      const probe = new Image();
      probe.onload = () => resolve({ ...picture, width: probe.naturalWidth, height: probe.naturalHeight });
      probe.onerror = () => resolve(picture); // not a picture the browser reads: the server will say so
      probe.src = dataUrl;
    };
    reader.readAsDataURL(file);
  });
}

// One image slot ("init" or "mask"): its file input, drop zone, thumbnail and remove button.
function setupImageSlot(slot) {
  const input = $(`${slot}-image`);
  const drop = $(`${slot}-drop`);
  input.addEventListener("change", () => input.files[0] && setImage(slot, input.files[0]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("dragging");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    const file = event.dataTransfer.files[0];
    if (file) setImage(slot, file);
  });
  $(`${slot}-clear`).addEventListener("click", () => clearImage(slot));
}

async function setImage(slot, file) {
  state[slot] = await readImageFile(file);
  const picture = state[slot];
  $(`${slot}-thumb`).src = picture.dataUrl;
  $(`${slot}-thumb`).hidden = false;
  $(`${slot}-drop`).classList.add("filled");
  $(`${slot}-info`).textContent = picture.width ? `${picture.name}, ${picture.width}×${picture.height}` : picture.name;
  $(`${slot}-clear`).hidden = false;
  if (slot === "mask" && !$("mask_source").value) $("mask_source").value = "MASK_IMAGE_WHITE";
  updateMode();
}

function clearImage(slot) {
  state[slot] = null;
  $(`${slot}-image`).value = "";
  $(`${slot}-thumb`).hidden = true;
  $(`${slot}-thumb`).removeAttribute("src");
  $(`${slot}-drop`).classList.remove("filled");
  $(`${slot}-info`).textContent = "";
  $(`${slot}-clear`).hidden = true;
  if (slot === "init") clearImage("mask");
  updateMode();
}

// Text-to-image without an init image, image-to-image with one, masked with a mask source.
function updateMode() {
  const hasImage = Boolean(state.init);
  $("size-fields").hidden = hasImage;
  $("image-fields").hidden = !hasImage;
  $("mask-slot").hidden = !hasImage;
  const masked = hasImage && $("mask_source").value;
  $("mode").textContent = masked ? "masked image-to-image" : hasImage ? "image-to-image" : "text-to-image";
  const initMode = $("init_image_mode").value;
  for (const label of document.querySelectorAll("[data-mode]")) label.hidden = label.dataset.mode !== initMode;
  refreshViews();
}

function addPromptRow(text = "", weight = 1) {
  const row = $("prompt-template").content.firstElementChild.cloneNode(true);
  row.querySelector(".prompt-text").value = text;
  row.querySelector(".prompt-weight").value = String(weight);
  row.querySelector(".remove-prompt").addEventListener("click", () => {
    row.remove();
    updatePromptRows();
  });
  $("prompts").append(row);
  updatePromptRows();
  return row;
}

function updatePromptRows() {
  const rows = document.querySelectorAll(".prompt-row");
  for (const row of rows) {
    row.classList.toggle("negative", Number(row.querySelector(".prompt-weight").value) < 0);
    row.querySelector(".remove-prompt").disabled = rows.length === 1;
  }
  $("add-prompt").disabled = $("add-negative").disabled = rows.length >= MAX_PROMPTS;
  refreshViews();
}

// ---- adapters: the LoRAs of the server's library (--lora-dir), sent as extras.loras ---------------------

function loraEntry(name) {
  return (state.options?.loras || []).find((lora) => lora.name === name);
}

// "ink (Ink Style)": the name the request sends, and the file's own alias where it differs.
function loraTitle(lora) {
  return lora.alias && lora.alias !== lora.name ? `${lora.name} (${lora.alias})` : lora.name;
}

function loraAbout(lora) {
  return `${lora.parts.join(", ")}, rank ${lora.rank}`;
}

function adapterRows() {
  return [...document.querySelectorAll(".adapter-row")];
}

// extras.loras as the form says: [{name, weight}], the weight left out when empty (the server's 1.0).
function readAdapters() {
  return adapterRows().map((row) => {
    const adapter = { name: row.dataset.name };
    const weight = row.querySelector(".adapter-weight").value;
    if (weight !== "") adapter.weight = Number(weight);
    return adapter;
  });
}

function addAdapterRow(name, weight = 1) {
  const lora = loraEntry(name);
  const row = $("adapter-template").content.firstElementChild.cloneNode(true);
  row.dataset.name = name;
  row.querySelector(".adapter-name").textContent = loraTitle(lora);
  row.querySelector(".adapter-about").textContent = loraAbout(lora);
  const input = row.querySelector(".adapter-weight");
  input.value = String(weight);
  input.setAttribute("aria-label", `weight of ${name}`);
  const remove = row.querySelector(".remove-adapter");
  remove.setAttribute("aria-label", `remove adapter ${name}`);
  remove.addEventListener("click", () => {
    row.remove();
    updateAdapterRows();
    $("adapter-choice").focus();
  });
  $("adapters").append(row);
  updateAdapterRows();
  return row;
}

// The chooser offers the adapters not yet chosen, until the request holds as many as the server takes.
function updateAdapterRows() {
  const { loras = [], max_loras_per_request: max } = state.options;
  const rows = adapterRows();
  const chosen = new Set(rows.map((row) => row.dataset.name));
  const left = loras.filter((lora) => !chosen.has(lora.name));
  $("adapter-choice").replaceChildren(
    ...left.map((lora) => new Option(`${loraTitle(lora)} (rank ${lora.rank})`, lora.name)),
  );
  const full = rows.length >= max;
  $("adapter-choice").disabled = full || left.length === 0;
  $("add-adapter").disabled = full || left.length === 0;
  $("adapters-limit").textContent = full
    ? `${max} adapters: the most this server takes per request (--max-loras-per-request).`
    : `Up to ${max} per request. Weight 1: as trained; 0: no effect; below 0: subtracted.`;
  refreshViews();
}

// The section for the options' adapters; without any, a line saying how a server gets them.
function setupAdapters({ loras = [], lora_library: library }) {
  const listed = new Set(loras.map((lora) => lora.name));
  // A chosen adapter that has left the library would only be refused.
  for (const row of adapterRows()) if (!listed.has(row.dataset.name)) row.remove();
  $("adapters-controls").hidden = loras.length === 0;
  $("adapters-absent").hidden = loras.length > 0;
  $("adapters-absent").replaceChildren(
    ...(library
      ? ["No adapters in this server's ", codeElement("--lora-dir"), " folders yet (its log names refused files)."]
      : ["No adapters: start the server with ", codeElement("--lora-dir DIR"), ", a folder of LoRA .safetensors."]),
  );
  updateAdapterRows();
}

function fillSelect(id, values) {
  $(id).append(...values.map((value) => new Option(value, value)));
}

function setupOptions(options) {
  fillSelect("sampler", options.sampler);
  $("sampler").options[0].textContent = `server default (${options.default_sampler})`;
  fillSelect("style_preset", options.style_preset);
  fillSelect("clip_guidance_preset", options.clip_guidance_preset);
  $("clip_guidance_preset").value = "NONE";
  $("clip-guidance-field").hidden = !options.clip_guidance;
  $("clip-guidance-absent").hidden = options.clip_guidance;
  fillSelect("init_image_mode", options.init_image_mode);
  fillSelect("mask_source", options.mask_source);
  setupSizes(options.sizes);
}

// The sizes the server takes: SDXL's nine, or with --relaxed-sizes any multiple of `step` up to `max`.
function setupSizes({ relaxed, step, max, sdxl }) {
  $("size-preset").append(...sdxl.map(([w, h]) => new Option(`${w} × ${h}`, `${w}x${h}`)));
  for (const id of ["width", "height"]) Object.assign($(id), { min: step, max, step });
  for (const label of document.querySelectorAll("[data-size=custom]")) label.hidden = !relaxed;
  if (relaxed) {
    $("size-rule").textContent = `width and height: any multiple of ${step} from ${step} to ${max} (--relaxed-sizes)`;
  } else {
    $("size-preset").querySelector('option[value=""]').remove();
    $("size-rule").textContent = "This server takes SDXL's nine sizes only (serve --relaxed-sizes allows others).";
  }
  syncSizePreset();
}

function syncSizePreset() {
  const size = `${$("width").value}x${$("height").value}`;
  const known = [...$("size-preset").options].some((option) => option.value === size);
  $("size-preset").value = known ? size : "";
}

// Asks /ping until the model is ready; once a wait ends, the library's checkpoints and adapters are read
// again (while the server loads, only the default checkpoint is known and no adapter).
async function watchServer(waited = false) {
  const pill = $("server-status");
  try {
    const response = await fetch("/ping");
    if (response.ok) {
      pill.textContent = "model ready";
      pill.className = "pill ready";
      if (waited) await reloadModels();
      return;
    }
    const error = await errorFromResponse(response);
    pill.textContent = error.type === "ModelNotReadyException" ? "model loading…" : `${error.type}: ${error.message}`;
    pill.className = "pill waiting";
    if (response.status === 429) setTimeout(() => watchServer(true), PING_RETRY_MS);
  } catch {
    pill.textContent = "server unreachable";
    pill.className = "pill down";
  }
}

async function copySnippet() {
  const text = $("boto3-snippet").textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard API (an insecure origin): select the text so that Ctrl+C copies it.
    window.getSelection().selectAllChildren($("boto3-snippet"));
    $("copy-snippet").textContent = "Press Ctrl+C";
    return;
  }
  $("copy-snippet").textContent = "Copied";
  setTimeout(() => ($("copy-snippet").textContent = "Copy"), 1500);
}

async function fetchOptions() {
  const response = await fetch("/playground/options.json");
  return response.json();
}

async function reloadModels() {
  const { models, loras, lora_library, max_loras_per_request } = await fetchOptions();
  Object.assign(state.options, { models, loras, lora_library, max_loras_per_request });
  setupModels(state.options.models);
  setupAdapters(state.options);
  refreshViews();
}

async function init() {
  state.options = await fetchOptions();
  setupOptions(state.options);
  setupModels(state.options.models);
  setupAdapters(state.options);
  setupImageSlot("init");
  setupImageSlot("mask");
  addPromptRow("a lighthouse on a cliff at sunset, oil painting", 1);

  const form = $("request-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    generate();
  });
  form.addEventListener("input", (event) => {
    if (event.target.classList.contains("prompt-weight")) updatePromptRows();
    if (event.target.id === "width" || event.target.id === "height") syncSizePreset();
    refreshViews();
  });
  form.addEventListener("change", updateMode);
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  $("size-preset").addEventListener("change", () => {
    if (!$("size-preset").value) return;
    [$("width").value, $("height").value] = $("size-preset").value.split("x");
  });
  $("add-prompt").addEventListener("click", () => addPromptRow("", 1).querySelector("textarea").focus());
  $("add-negative").addEventListener("click", () => addPromptRow("", -1).querySelector("textarea").focus());
  $("add-adapter").addEventListener("click", () => {
    addAdapterRow($("adapter-choice").value).querySelector(".adapter-weight").focus();
  });
  $("random-seed").addEventListener("click", () => {
    $("seed").value = "0";
    refreshViews();
  });
  $("reuse-seed").addEventListener("click", () => {
    $("seed").value = $("result-seed").textContent;
    refreshViews();
  });
  $("cancel").addEventListener("click", () => state.controller?.abort());
  $("copy-snippet").addEventListener("click", copySnippet);
  // The chooser sits in the top bar, outside the form: its changes are heard here.
  $("model").addEventListener("change", () => {
    showModelId();
    refreshViews();
  });
  updateMode();
  watchServer();
  document.body.dataset.ready = "true";
}

init();
