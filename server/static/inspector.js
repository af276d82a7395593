// The inspector: images from disk to the server's REST API (binary tensors), results drawn on canvases.
"use strict";

const OUTPUTS = ["LABEL", "PROBS", "SALIENCY", "MASK", "ERASED_LABEL", "CORRECTED_LABEL"];
const TYPES = { INT64: BigInt64Array, FP32: Float32Array, BOOL: Uint8Array, UINT8: Uint8Array };
const $ = (id) => document.getElementById(id);
const state = { model: null, samples: [], results: [], page: 0 };

function headers(extra = {}) {
  const token = $("token").value.trim();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (ignored) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function say(message, error = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", error);
}

async function loadModels() {
  const index = await (await api("/v2/repository/index", { method: "POST", body: "{}" })).json();
  $("model").replaceChildren(...index.map((m) => new Option(m.name, m.name)));
  await loadModel();
}

async function loadModel() {
  const name = $("model").value;
  const metadata = await api(`/v2/models/${encodeURIComponent(name)}`);
  const body = await metadata.json();
  const config = await (await api(`/v2/models/${encodeURIComponent(name)}/config`)).json();
  const defaults = JSON.parse(metadata.headers.get("miscause-parameters") || "{}");
  const methods = JSON.parse(metadata.headers.get("miscause-methods") || "[]");
  const [, height, width] = body.inputs[0].shape;
  state.model = { name, height, width, maxBatch: config.max_batch_size || 1,
                  classes: JSON.parse(metadata.headers.get("miscause-classes") || "[]") };
  $("method").replaceChildren(...methods.map((m) => new Option(m, m)));
  $("method").value = defaults.saliency_method;
  $("top-percent").value = defaults.top_percent;
  $("box").value = defaults.box;
  state.samples = await (await api(`/samples/${encodeURIComponent(name)}`)).json();
  $("samples").hidden = !state.samples.length;
  $("samples").textContent = `or inspect the model's ${state.samples.length} sample image(s)`;
  say(`${name}: ${width}x${height} images, ${state.model.classes.length} classes. Add images to inspect.`);
}

// An image file as RGB bytes [H, W, 3] at the model's size, and a data URL of it for display.
async function pixels(file) {
  const bitmap = await createImageBitmap(file);
  const { width, height } = state.model;
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0, width, height);
  const rgba = context.getImageData(0, 0, width, height).data;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return rgb;
}

// One binary inference request (Triton's binary tensor data extension); outputs by name as typed arrays.
async function infer(images) {
  const { name, height, width } = state.model;
  const bytes = new Uint8Array(images.length * height * width * 3);
  images.forEach((image, i) => bytes.set(image, i * image.length));
  const request = {
    inputs: [{ name: "IMAGE", datatype: "UINT8", shape: [images.length, height, width, 3],
               parameters: { binary_data_size: bytes.length } }],
    outputs: OUTPUTS.map((output) => ({ name: output, parameters: { binary_data: true } })),
    parameters: { saliency_method: $("method").value, top_percent: Number($("top-percent").value),
                  box: Number($("box").value) },
  };
  const header = new TextEncoder().encode(JSON.stringify(request));
  const response = await api(`/v2/models/${encodeURIComponent(name)}/infer`, {
    method: "POST", body: new Blob([header, bytes]),
    headers: { "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": String(header.length) },
  });
  const buffer = await response.arrayBuffer();
  const length = Number(response.headers.get("Inference-Header-Content-Length") || buffer.byteLength);
  const answer = JSON.parse(new TextDecoder().decode(buffer.slice(0, length)));
  const outputs = {};
  let offset = length;
  for (const output of answer.outputs) {
    const size = output.parameters.binary_data_size;
    const values = new TYPES[output.datatype](buffer.slice(offset, offset + size));
    outputs[output.name] = Array.from(values, Number);
    offset += size;
  }
  return outputs;
}

async function inspect(files) {
  files = [...files].filter((file) => file.type.startsWith("image/"));
  if (!files.length || !state.model) return;
  const { height, width, maxBatch } = state.model;
  const area = height * width;
  const classes = state.model.classes.length;
  state.results = [];
  state.page = 0;
  try {
    for (let start = 0; start < files.length; start += maxBatch) {
      say(`Inspecting images ${start + 1} to ${Math.min(start + maxBatch, files.length)} of ${files.length}...`);
      const chunk = files.slice(start, start + maxBatch);
      const images = await Promise.all(chunk.map(pixels));
      const out = await infer(images);
      chunk.forEach((file, i) => {
        const probs = out.PROBS.slice(i * classes, (i + 1) * classes);
        state.results.push({
          name: file.name, image: images[i], label: out.LABEL[i], confidence: probs[out.LABEL[i]],
          saliency: out.SALIENCY.slice(i * area, (i + 1) * area), mask: out.MASK.slice(i * area, (i + 1) * area),
          erased: out.ERASED_LABEL[i], corrected: out.CORRECTED_LABEL[i],
        });
      });
      render();
    }
    say(`${files.length} image(s) inspected with ${$("method").value}, p ${$("top-percent").value}%, b ${$("box").value}.`);
  } catch (error) {
    say(error.message, true);
  }
}

// Heat colour of a saliency value in [0, 1]: black, red, yellow, white.
function heat(v) {
  return [Math.min(255, 3 * 255 * v), Math.min(255, Math.max(0, 3 * 255 * v - 255)), Math.max(0, 3 * 255 * v - 510)];
}

function draw(canvas, result, view) {
  const { width, height } = state.model;
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const picture = context.createImageData(width, height);
  const top = Math.max(...result.saliency) || 1;
  for (let p = 0; p < width * height; p++) {
    let rgb = [result.image[3 * p], result.image[3 * p + 1], result.image[3 * p + 2]];
    if (view === "saliency") {
      const grey = (rgb[0] + rgb[1] + rgb[2]) / 3;
      const hot = heat(result.saliency[p] / top);
      rgb = hot.map((c) => 0.35 * grey + 0.65 * c);
    } else if (view === "erased" && result.mask[p]) {
      rgb = [128, 128, 128];
    }
    picture.data.set([rgb[0], rgb[1], rgb[2], 255], 4 * p);
  }
  context.putImageData(picture, 0, 0);
}

function render() {
  const size = Number($("page-size").value);
  const pages = Math.max(1, Math.ceil(state.results.length / size));
  state.page = Math.min(state.page, pages - 1);
  const classes = state.model.classes;
  const cards = state.results.slice(state.page * size, (state.page + 1) * size).map((result) => {
    const card = document.createElement("article");
    card.className = "card";
    card.dataset.label = classes[result.label];
    card.dataset.erasedLabel = classes[result.erased];
    card.dataset.correctedLabel = classes[result.corrected];
    card.innerHTML = `<h2></h2><div class="views">
        <figure><canvas class="image"></canvas><figcaption>image</figcaption></figure>
        <figure><canvas class="saliency"></canvas><figcaption>saliency</figcaption></figure>
        <figure><canvas class="erased"></canvas><figcaption>erased</figcaption></figure></div>
      <dl class="labels"><dt>label</dt><dd class="label"></dd><dt>erased</dt><dd class="erased-label"></dd>
        <dt>corrected</dt><dd class="corrected-label"></dd></dl>`;
    card.querySelector("h2").textContent = result.name;
    card.querySelector(".label").textContent = `${classes[result.label]} (${result.confidence.toFixed(3)})`;
    card.querySelector(".erased-label").textContent = classes[result.erased];
    card.querySelector(".corrected-label").textContent = classes[result.corrected];
    card.querySelector(".erased-label").classList.toggle("changed", result.erased !== result.label);
    card.querySelector(".corrected-label").classList.toggle("changed", result.corrected !== result.label);
    for (const view of ["image", "saliency", "erased"]) draw(card.querySelector(`canvas.${view}`), result, view);
    return card;
  });
  $("results").replaceChildren(...cards);
  $("pager").hidden = pages < 2;
  $("page").textContent = `page ${state.page + 1} of ${pages} (${state.results.length} images)`;
}

// The model repository's sample images, fetched as files.
async function samples() {
  const name = encodeURIComponent(state.model.name);
  return Promise.all(state.samples.map(async (sample) => {
    const blob = await (await api(`/samples/${name}/${encodeURIComponent(sample)}`)).blob();
    return new File([blob], sample, { type: blob.type });
  }));
}

function turn(step) {
  state.page += step;
  state.page = Math.max(0, state.page);
  render();
}

$("files").addEventListener("change", (event) => inspect(event.target.files));
$("samples").addEventListener("click", () => samples().then(inspect).catch((error) => say(error.message, true)));
$("model").addEventListener("change", () => loadModel().catch((error) => say(error.message, true)));
$("page-size").addEventListener("change", () => state.results.length && render());
$("previous").addEventListener("click", () => turn(-1));
$("next").addEventListener("click", () => turn(1));
$("token").addEventListener("change", () => {
  sessionStorage.setItem("miscause-token", $("token").value);
  loadModels().catch((error) => say(error.message, true));
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  inspect(event.dataTransfer.files);
});
$("token").value = sessionStorage.getItem("miscause-token") || "";
loadModels().catch((error) => say(`${error.message}${$("token").value ? "" : " (set the token?)"}`, true));
