// The MetaCluster dashboard: plain JavaScript, no build step. The API key lives in this
// tab's sessionStorage only; every call sends it as a Bearer token. Live status and
// progress come from each job's event stream (Server-Sent Events read with fetch, since
// EventSource cannot send an Authorization header).
"use strict";

const KEY = "metacluster.apiKey";
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const following = new Map(); // job id -> AbortController
let apiKey = sessionStorage.getItem(KEY);

const $ = (selector) => document.querySelector(selector);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function say(text, isError) {
  const message = $("#message");
  message.textContent = text;
  message.className = isError ? "error" : "";
}

function uuid() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${apiKey}` }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const problem = await response.json();
      detail = `${problem.code}: ${problem.detail}`;
    } catch (_) { /* not a problem+json body */ }
    throw new Error(`${response.status} ${detail}`);
  }
  return response;
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  return typeof value === "number" && !Number.isInteger(value) ? value.toPrecision(digits) : String(value);
}

function bytes(n) {
  if (typeof n !== "number") return "–";
  return n < 10000 ? `${n} B` : `${(n / 1024).toFixed(1)} KiB`;
}

function renderJob(job) {
  let row = document.querySelector(`tr[data-job-id="${CSS.escape(job.id)}"]`);
  if (!row) {
    row = el("tr");
    row.dataset.jobId = job.id;
    $("#jobs tbody").prepend(row);
  }
  row.dataset.status = job.status;
  row.replaceChildren();
  const m = job.metrics || {};
  const id = el("td", job.id.length > 16 ? `${job.id.slice(0, 15)}…` : job.id, "job");
  id.title = job.id;
  row.append(id);
  const status = el("td");
  status.append(el("span", job.status, `status ${job.status}`));
  if (job.error) status.append(el("div", `${job.error.code}: ${job.error.message}`, "error"));
  row.append(status);
  row.append(el("td", job.stage || ""));
  const progress = el("td", undefined, "progress");
  const bar = el("progress");
  bar.max = 1;
  bar.value = job.progress || 0;
  progress.append(bar, el("span", ` ${Math.round(100 * (job.progress || 0))}%`, "pct"));
  row.append(progress);
  row.append(el("td", m.metric ? `${m.metric} ${fmt(m.before)} → ${fmt(m.after)}` : ""));
  row.append(el("td", m.bytes_after ? `${bytes(m.bytes_before)} → ${bytes(m.bytes_after)}` : "", "num"));
  row.append(el("td", m.ratio ? `${fmt(m.ratio, 3)}×` : "", "num ratio"));
  const created = new Date(job.created_at);
  row.append(el("td", created.toLocaleString([], { dateStyle: "short", timeStyle: "short" })));
  const actions = el("td", undefined, "actions");
  if (job.report_url) {
    const button = el("button", "Report", "report");
    button.type = "button";
    button.addEventListener("click", () => openReport(job));
    actions.append(button);
  }
  const artifact = (job.artifacts || []).find((a) => a.name === "model.mcz");
  if (artifact) {
    const button = el("button", "Download", "download");
    button.type = "button";
    button.addEventListener("click", () => download(artifact));
    actions.append(button);
  }
  if (!FINAL.has(job.status)) {
    const button = el("button", "Cancel", "cancel");
    button.type = "button";
    button.addEventListener("click", () => cancel(job.id));
    actions.append(button);
  }
  row.append(actions);
}

function applyEvent(jobId, event) {
  const row = document.querySelector(`tr[data-job-id="${CSS.escape(jobId)}"]`);
  if (!row) return;
  const cells = row.children;
  if (event.kind === "status" && event.data && event.data.status) {
    const span = cells[1].querySelector(".status");
    span.textContent = event.data.status;
    span.className = `status ${event.data.status}`;
    row.dataset.status = event.data.status;
  }
  if (event.stage) cells[2].textContent = event.stage;
  if (typeof event.progress === "number") {
    cells[3].querySelector("progress").value = event.progress;
    cells[3].querySelector(".pct").textContent = ` ${Math.round(100 * event.progress)}%`;
  }
}

// Follow a job's event stream until its final event; reconnect with Last-Event-ID.
async function follow(jobId) {
  if (following.has(jobId)) return;
  const controller = new AbortController();
  following.set(jobId, controller);
  let last = 0;
  try {
    for (let attempt = 0; attempt < 1000 && !controller.signal.aborted; attempt++) {
      let final = false;
      try {
        const headers = { Accept: "text/event-stream" };
        if (last) headers["Last-Event-ID"] = String(last);
        const response = await api(`/v1/jobs/${jobId}/events`, { headers, signal: controller.signal });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart());
            if (!data.length) continue; // a heartbeat or retry line
            const event = JSON.parse(data.join("\n"));
            last = event.seq;
            applyEvent(jobId, event);
            if (event.kind === "status" && FINAL.has((event.data || {}).status)) final = true;
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      const job = await (await api(`/v1/jobs/${jobId}`)).json();
      renderJob(job);
      if (final || FINAL.has(job.status)) return;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  } finally {
    following.delete(jobId);
  }
}

async function loadJobs() {
  const page = await (await api("/v1/jobs?limit=50")).json();
  for (const job of page.items.slice().reverse()) {
    renderJob(job);
    if (!FINAL.has(job.status)) follow(job.id);
  }
}

async function openReport(job) {
  try {
    const html = await (await api(job.report_url)).text();
    $("#report-job").textContent = job.id;
    $("#report-frame").srcdoc = html; // sandboxed: no scripts, no access to this page
    $("#report").hidden = false;
    $("#report").scrollIntoView();
  } catch (error) {
    say(`report: ${error.message}`, true);
  }
}

async function download(artifact) {
  try {
    // ?redirect=false: streamed by the API even where storage signs URLs elsewhere.
    const response = await api(`${artifact.url}?redirect=false`);
    const blob = await response.blob();
    const link = el("a");
    link.href = URL.createObjectURL(blob);
    link.download = artifact.name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  } catch (error) {
    say(`download: ${error.message}`, true);
  }
}

async function cancel(jobId) {
  try {
    renderJob(await (await api(`/v1/jobs/${jobId}/cancel`, { method: "POST" })).json());
  } catch (error) {
    say(`cancel: ${error.message}`, true);
  }
}

async function upload(path, files) {
  const form = new FormData();
  for (const file of files) form.append("file", file, file.name);
  return (await api(path, { method: "POST", body: form })).json();
}

// The method's choices come with the page (one <option> per registered method): its
// summary, whether K or a byte budget applies, and its options with their defaults.
function chosenMethod() {
  const option = $("#method").selectedOptions[0];
  return {
    name: option.value,
    summary: option.title,
    usesK: option.dataset.usesK === "true",
    options: JSON.parse(option.dataset.options || "{}"),
  };
}

function showMethod() {
  const method = chosenMethod();
  $("#method-summary").textContent = method.summary;
  const fields = $("#method-options");
  fields.replaceChildren();
  for (const [name, value] of Object.entries(method.options)) {
    const input = el("input");
    input.dataset.option = name;
    if (typeof value === "boolean") {
      input.type = "checkbox";
      input.checked = value;
    } else {
      input.type = "number";
      input.value = String(value);
      input.size = 5;
    }
    const label = el("label", `${name} `);
    label.append(input);
    fields.append(label);
  }
  for (const input of document.querySelectorAll("#size input")) input.disabled = !method.usesK;
  $("#size-none").hidden = method.usesK;
}

// The form's choices over the typed config: method, its options, and the size (K, a
// target ratio or a byte budget) unless the config already sets one.
function formConfig() {
  const text = $("#config").value.trim();
  const config = text ? JSON.parse(text) : {};
  const method = chosenMethod();
  if (config.method === undefined) config.method = method.name;
  if (config.method === method.name && Object.keys(method.options).length) {
    const options = {};
    for (const input of document.querySelectorAll("#method-options input")) {
      options[input.dataset.option] = input.type === "checkbox" ? input.checked : Number(input.value);
    }
    config.method_options = Object.assign(options, config.method_options || {});
  }
  const sized = ["k", "target_ratio", "max_bytes"].some((key) => config[key] !== undefined);
  if (method.usesK && !sized) {
    const kind = document.querySelector('input[name="size"]:checked').value;
    const field = { k: "#k", target_ratio: "#target-ratio", max_bytes: "#max-bytes" }[kind];
    const value = $(field).value.trim();
    if (value) config[kind] = Number(value);
  }
  return config;
}

async function startJob(event) {
  event.preventDefault();
  const button = $("#start");
  button.disabled = true;
  try {
    const config = formConfig();
    say("uploading the model…");
    const model = await upload("/v1/models", $("#model-files").files);
    let dataset = $("#dataset-name").value.trim();
    if ($("#dataset-file").files.length) {
      say("uploading the dataset…");
      dataset = (await upload("/v1/datasets", $("#dataset-file").files)).id;
    }
    const response = await api("/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": uuid() },
      body: JSON.stringify({ model_id: model.id, dataset, config }),
    });
    const job = await response.json();
    for (const input of document.querySelectorAll('#job-form input[type="file"]')) input.value = "";
    renderJob(job);
    say(`job ${job.id} started (model ${model.id}, ${model.family}, ${model.edges} edges)`);
    follow(job.id);
  } catch (error) {
    say(error.message, true);
  } finally {
    button.disabled = false;
  }
}

async function signIn(event) {
  event.preventDefault();
  apiKey = $("#api-key").value.trim();
  try {
    await api("/v1/jobs?limit=1");
  } catch (error) {
    apiKey = null;
    $("#signin").append(el("p", `sign-in failed: ${error.message}`, "error"));
    return;
  }
  sessionStorage.setItem(KEY, apiKey);
  $("#api-key").value = "";
  showApp();
}

function signOut() {
  for (const controller of following.values()) controller.abort();
  sessionStorage.removeItem(KEY);
  location.reload();
}

function showApp() {
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#sign-out").hidden = false;
  $("#who").textContent = `key ${apiKey.slice(0, 12)}…`;
  loadJobs().catch((error) => say(error.message, true));
}

document.addEventListener("DOMContentLoaded", () => {
  $("#signin-form").addEventListener("submit", signIn);
  $("#job-form").addEventListener("submit", startJob);
  $("#method").addEventListener("change", showMethod);
  showMethod();
  $("#sign-out").addEventListener("click", signOut);
  $("#refresh").addEventListener("click", () => loadJobs().catch((e) => say(e.message, true)));
  $("#close-report").addEventListener("click", () => { $("#report").hidden = true; });
  if (apiKey) showApp();
});
