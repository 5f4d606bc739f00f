// The overview: counts and tables from the registry's API, refreshed whenever the event stream
// says something happened (at most every half second).
"use strict";

const text = (value) => (value === null || value === undefined ? "" : String(value));

function fill(table, rows, columns) {
  const body = document.querySelector(`#${table} tbody`);
  body.replaceChildren(
    ...rows.map((row) => {
      const tr = document.createElement("tr");
      for (const column of columns) {
        const td = document.createElement("td");
        td.textContent = text(typeof column === "function" ? column(row) : row[column]);
        tr.append(td);
      }
      return tr;
    }),
  );
}

function summary(counts) {
  return Object.entries(counts)
    .map(([status, n]) => `${n} ${status}`)
    .join(" · ");
}

const total = (counts) => Object.values(counts).reduce((a, b) => a + b, 0);

async function get(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function refresh() {
  const [overview, jobs, deployments, alerts] = await Promise.all([
    get("/api/v1/overview"),
    get("/api/v1/jobs"),
    get("/api/v1/deployments"),
    get("/api/v1/alerts?open=true"),
  ]);
  for (const key of ["datasets", "dataset_versions", "models", "model_versions", "open_alerts"]) {
    document.getElementById(key).textContent = overview[key];
  }
  document.getElementById("jobs").textContent = total(overview.jobs);
  document.getElementById("jobs_detail").textContent = summary(overview.jobs);
  document.getElementById("deployments").textContent = total(overview.deployments);
  document.getElementById("deployments_detail").textContent = summary(overview.deployments);
  fill("jobs_table", jobs.slice(0, 20), [(j) => j.job_id.slice(0, 8), "model", "status", "attempt", "registered_version", "detail"]);
  fill("deployments_table", deployments, ["deployment", "model", "version", "status", "detail"]);
  fill("alerts_table", alerts, ["deployment", "rule", "severity", "message"]);
}

let pending = null;
function refreshSoon() {
  if (pending) return;
  pending = setTimeout(() => {
    pending = null;
    refresh().catch((e) => console.warn(e));
  }, 500);
}

function listen() {
  const live = document.getElementById("live");
  const list = document.getElementById("events");
  const source = new EventSource("/api/v1/events/stream");
  source.onopen = () => {
    live.textContent = "live";
    live.className = "live on";
  };
  source.onerror = () => {
    live.textContent = "reconnecting";
    live.className = "live off";
  };
  source.onmessage = null;
  const onEvent = (message) => {
    const envelope = JSON.parse(message.data);
    const item = document.createElement("li");
    const time = new Date(envelope.time).toLocaleTimeString();
    const data = envelope.payload || {};
    const what = data.model || data.deployment || data.dataset || data.job_id || "";
    item.innerHTML = "";
    const strong = document.createElement("strong");
    strong.textContent = message.type;
    item.append(`${time} `, strong, ` ${text(what)}${data.version ? " v" + data.version : ""}`);
    list.prepend(item);
    while (list.children.length > 100) list.lastChild.remove();
    refreshSoon();
  };
  // Server-sent events are named by event type; listen to every type the catalogue has.
  for (const type of window.FLYWHEEL_EVENT_TYPES) source.addEventListener(type, onEvent);
}

window.FLYWHEEL_EVENT_TYPES = [
  "dataset.version.created", "dataset.validation.completed", "training.requested",
  "training.job.queued", "training.job.dispatched", "training.job.started", "training.job.progress",
  "training.job.completed", "training.job.failed", "training.job.cancelled",
  "model.version.registered", "model.version.gates_evaluated", "model.version.alias_changed",
  "model.version.approval_requested", "model.version.approved", "model.version.rejected",
  "deployment.requested", "deployment.rollout_started", "deployment.traffic_shifted",
  "deployment.rolled_out", "deployment.rolled_back", "deployment.failed",
  "monitor.report.created", "monitor.alert.raised", "monitor.alert.resolved",
];

refresh().catch((e) => console.warn(e));
listen();
