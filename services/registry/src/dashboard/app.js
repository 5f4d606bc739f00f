// The dashboard: one page per part of the loop, routed by the URL's hash, refreshed whenever
// the event stream says something happened (at most every half second). Charts are SVG the
// registry draws; actions ask for confirmation, then call the platform's APIs.
"use strict";

const $ = (selector) => document.querySelector(selector);
const text = (value) => (value === null || value === undefined ? "" : String(value));
const page = () => $("#page");
const when = (ms) => (ms ? new Date(ms).toLocaleString() : "");
const fixed = (value, digits = 3) => (typeof value === "number" ? value.toFixed(digits) : text(value));
const duration = (seconds) => {
  if (typeof seconds !== "number") return "–";
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
};

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "onclick") node.addEventListener("click", value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : text(child));
  return node;
}

const link = (href, label) => el("a", { href }, label);

function table(id, headers, rows) {
  return el(
    "table",
    { id },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))),
  );
}

function chart(src, alt) {
  return el("img", { class: "chart", src: `${src}${src.includes("?") ? "&" : "?"}t=${Date.now()}`, alt });
}

// Who is signed in (from GET /api/v1/session): with authentication on, the session cookie is
// HTTP-only, so the page knows only the name, role and the CSRF token its changes must carry.
let session = null;

class SignInNeeded extends Error {}

async function get(path) {
  const response = await fetch(path);
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) throw new SignInNeeded(body.message || "sign in");
  if (!response.ok) throw new Error(body.message || `${path}: HTTP ${response.status}`);
  return body;
}

async function send(method, path, body) {
  const headers = { "content-type": "application/json", "x-flywheel-actor": "dashboard" };
  if (session && session.csrf_token) headers["x-csrf-token"] = session.csrf_token;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (response.status === 401) throw new SignInNeeded(answer.message || "sign in");
  if (!response.ok) throw new Error(answer.message || `HTTP ${response.status}`);
  return answer;
}

async function loadSession() {
  const response = await fetch("/api/v1/session");
  session = response.ok ? await response.json() : null;
  const who = $("#who");
  who.replaceChildren();
  if (session && session.auth) {
    who.append(`${session.name} (${session.role}) `);
    who.append(el("button", { id: "sign_out", onclick: async () => {
      await fetch("/api/v1/session", { method: "DELETE" });
      location.reload();
    } }, "Sign out"));
  }
}

function signInPage(reason) {
  const input = el("input", { id: "token", type: "password", autocomplete: "off", placeholder: "fwt_…", size: "60" });
  const form = el("form", { id: "sign_in" }, el("p", {}, reason), el("label", {}, "API token ", input), " ", el("button", { class: "primary", type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch("/api/v1/session", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: input.value }),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) return notice(answer.message || `HTTP ${response.status}`, true);
    await loadSession();
    listen();
    render();
  });
  return [el("h2", {}, "Sign in"), form];
}

function notice(message, bad = false) {
  const box = $("#notice");
  box.textContent = message;
  box.className = bad ? "bad" : "good";
  box.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => (box.hidden = true), 8000);
}

// Every action asks first, in the page's own dialog.
function confirmAction(question) {
  const dialog = $("#confirm");
  $("#confirm_text").textContent = question;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

function action(label, question, run, attributes = {}) {
  return el(
    "button",
    {
      ...attributes,
      onclick: async () => {
        if (!(await confirmAction(question))) return;
        try {
          notice(await run());
          refreshSoon();
        } catch (e) {
          notice(e instanceof SignInNeeded ? `sign in again: ${e.message}` : e.message, true);
        }
      },
    },
    label,
  );
}

// ---------------------------------------------------------------- pages

const summary = (counts) =>
  Object.entries(counts)
    .map(([status, n]) => `${n} ${status}`)
    .join(" · ");
const total = (counts) => Object.values(counts).reduce((a, b) => a + b, 0);

function card(title, id, count, sub, extra = "") {
  return el("div", { class: `card ${extra}` }, el("h2", {}, title), el("p", { class: "count", id }, count), el("p", { class: "sub" }, sub));
}

async function overviewPage() {
  const [overview, jobs, deployments, alerts] = await Promise.all([
    get("/api/v1/overview"),
    get("/api/v1/dashboard/jobs"),
    get("/api/v1/deployments"),
    get("/api/v1/alerts?open=true"),
  ]);
  return [
    el(
      "section",
      { class: "cards", "aria-label": "the loop" },
      card("Datasets", "datasets", overview.datasets, `${overview.dataset_versions} versions`),
      card("Jobs", "jobs", total(overview.jobs), summary(overview.jobs)),
      card("Models", "models", overview.models, `${overview.model_versions} versions`),
      card("Deployments", "deployments", total(overview.deployments), summary(overview.deployments)),
      card("Open alerts", "open_alerts", overview.open_alerts, "", "alerts"),
    ),
    el(
      "section",
      { class: "grid" },
      el(
        "div",
        {},
        el("h2", {}, "Jobs"),
        jobsTable(jobs.slice(0, 10)),
        el("h2", {}, "Deployments"),
        deploymentsTable(deployments),
        el("h2", {}, "Open alerts"),
        table(
          "alerts_table",
          ["deployment", "rule", "severity", "message"],
          alerts.map((a) => [link(`#/monitoring/${a.deployment}`, a.deployment), a.rule, a.severity, a.message]),
        ),
      ),
      el("div", {}, el("h2", {}, "Events"), events),
    ),
  ];
}

function jobsTable(jobs, withActions = false) {
  return table(
    "jobs_table",
    ["job", "model", "status", "attempt", "runner", "progress", "version", "detail", ...(withActions ? [""] : [])],
    jobs.map((j) => [
      j.job_id.slice(0, 8),
      link(`#/models/${j.model}`, j.model),
      el("span", { class: `status ${j.status}` }, j.status),
      j.attempt,
      text(j.runner),
      typeof j.progress === "number"
        ? el(
            "span",
            {},
            el("progress", { max: "1", value: String(j.progress), title: text(j.progress_message) }),
            " ",
            Object.entries(j.metrics || {})
              .slice(0, 3)
              .map(([k, x]) => `${k} ${fixed(x)}`)
              .join(", "),
          )
        : "",
      j.registered_version ? link(`#/models/${j.model}`, `v${j.registered_version}`) : "",
      j.detail,
      ...(withActions
        ? [
            ["queued", "dispatched", "running"].includes(j.status)
              ? action("Cancel", `Cancel job ${j.job_id.slice(0, 8)} of ${j.model}?`, async () => {
                  await send("POST", `/api/v1/jobs/${j.job_id}/cancel`);
                  return `job ${j.job_id.slice(0, 8)} cancelled`;
                }, { class: "danger" })
              : "",
          ]
        : []),
    ]),
  );
}

function deploymentsTable(deployments) {
  return table(
    "deployments_table",
    ["deployment", "model", "version", "status", "detail"],
    deployments.map((d) => [
      link(`#/deployments/${d.deployment}`, d.deployment),
      link(`#/models/${d.model}`, d.model),
      d.version ? `v${d.version}` : "",
      el("span", { class: `status ${d.status}` }, d.status),
      d.detail,
    ]),
  );
}

async function modelsPage() {
  const found = await get("/api/2.0/mlflow/registered-models/search?max_results=1000");
  const models = found.registered_models || [];
  return [
    el("h2", {}, "Models"),
    table(
      "models_table",
      ["model", "aliases", "latest version", "updated"],
      models.map((m) => [
        link(`#/models/${m.name}`, m.name),
        (m.aliases || []).map((a) => `${a.alias} → v${a.version}`).join(", "),
        (m.latest_versions || []).map((v) => `v${v.version}`).join(", "),
        when(m.last_updated_timestamp),
      ]),
    ),
  ];
}

async function modelPage(name) {
  const model = await get(`/api/v1/dashboard/models/${encodeURIComponent(name)}`);
  const aliases = Object.entries(model.aliases);
  const versionOptions = model.versions.map((v) => el("option", { value: v.version }, `v${v.version}`));
  const promoteVersion = el("select", { id: "promote_version" }, versionOptions);
  const promoteAlias = el("input", { id: "promote_alias", value: "production", size: "12" });
  return [
    el("h2", {}, `Model ${model.name}`),
    el(
      "p",
      { id: "aliases" },
      aliases.length ? aliases.map(([alias, version]) => el("span", { class: "tag" }, `${alias} → v${version}`)) : "no aliases",
    ),
    el(
      "div",
      { class: "actions" },
      el("label", {}, "version ", promoteVersion),
      el("label", {}, " alias ", promoteAlias),
      action("Promote", `Point ${name}'s alias at the chosen version?`, async () => {
        const version = Number(promoteVersion.value);
        const answer = await send("POST", `/api/v1/models/${name}/versions/${version}/promotions`, { alias: promoteAlias.value });
        return `promotion ${answer.id}: ${answer.status}`;
      }, { id: "promote" }),
      model.last_training
        ? action("Retrain", `Train ${name} again with ${model.last_training.trainer.name || model.last_training.trainer.kind} on the latest version of ${model.last_training.dataset.name}?`, async () => {
            const last = model.last_training;
            const answer = await send("POST", `/api/v1/models/${name}/retrain`, { dataset: last.dataset.name, trainer: last.trainer, resources: last.resources });
            return `training requested (${text(answer.request_id)})`;
          }, { id: "retrain" })
        : "",
    ),
    el(
      "div",
      { class: "charts" },
      el("img", { class: "lineage", id: "lineage", src: `/dashboard/charts/models/${name}/lineage.svg?t=${Date.now()}`, alt: "lineage graph" }),
      chart(`/dashboard/charts/models/${name}/metrics.svg`, "metrics by version"),
    ),
    el("h2", {}, "Versions"),
    table(
      "versions_table",
      ["version", "aliases", "metrics", "gates", "run", "dataset", "registered"],
      model.versions.map((v) => [
        `v${v.version}`,
        v.aliases.join(", "),
        Object.entries(v.metrics)
          .slice(0, 6)
          .map(([k, x]) => `${k} ${fixed(x)}`)
          .join(" · "),
        v.gates.length
          ? el("span", { class: v.gates_passed ? "good" : "bad" }, v.gates.map((g) => `${g.passed ? "✓" : "✗"} ${g.metric} ${g.op} ${g.threshold}`).join(", "))
          : el("span", { class: "muted" }, "no gates"),
        v.run_id ? link(`#/runs/${v.run_id}`, v.run_id.slice(0, 8)) : "",
        v.dataset ? `${v.dataset.name}@${v.dataset.version.slice(0, 8)}` : "",
        `${when(v.created_at)} by ${v.created_by}`,
      ]),
    ),
    el("h2", {}, "Promotions and approvals"),
    table(
      "promotions_table",
      ["id", "version", "alias", "requested by", "status", ""],
      model.promotions.map((p) => [
        p.id,
        `v${p.version}`,
        p.alias,
        p.requested_by,
        el("span", { class: `status ${p.status}` }, p.status),
        p.status === "pending"
          ? el(
              "span",
              {},
              action("Approve", `Approve v${p.version} as ${p.alias}?`, async () => {
                const answer = await send("POST", `/api/v1/promotions/${p.id}/approve`, { comment: "approved in the dashboard" });
                return `promotion ${p.id}: ${answer.status}`;
              }, { class: "approve" }),
              action("Reject", `Reject v${p.version} as ${p.alias}?`, async () => {
                const answer = await send("POST", `/api/v1/promotions/${p.id}/reject`, { comment: "rejected in the dashboard" });
                return `promotion ${p.id}: ${answer.status}`;
              }, { class: "danger" }),
            )
          : "",
      ]),
    ),
    el("h2", {}, "Deployments"),
    deploymentsTable(model.deployments),
    el("h2", {}, "Audit log"),
    table(
      "audit_table",
      ["when", "action", "actor", "change"],
      model.audit.map((a) => [when(a.at), a.action, a.actor, a.after ? JSON.stringify(a.after).slice(0, 160) : ""]),
    ),
  ];
}

async function runPage(id) {
  const run = await get(`/api/v1/dashboard/runs/${encodeURIComponent(id)}`);
  const keys = Object.keys(run.metrics);
  return [
    el("h2", {}, `Run ${run.name || run.run_id}`),
    el("p", {}, `${run.status} · started ${when(run.start_time)}${run.end_time ? ` · ended ${when(run.end_time)}` : ""}`),
    el("div", { class: "charts" }, keys.map((k) => chart(`/dashboard/charts/runs/${run.run_id}/${encodeURIComponent(k)}`, `${k} by step`))),
    el(
      "section",
      { class: "grid" },
      el("div", {}, el("h2", {}, "Metrics"), table("metrics_table", ["metric", "value"], keys.map((k) => [k, fixed(run.metrics[k], 4)]))),
      el("div", {}, el("h2", {}, "Parameters"), table("params_table", ["param", "value"], Object.entries(run.params))),
    ),
  ];
}

async function jobsPage() {
  const jobs = await get("/api/v1/dashboard/jobs");
  return [el("h2", {}, "Job queue"), jobsTable(jobs, true)];
}

async function deploymentsPage() {
  return [el("h2", {}, "Deployments"), deploymentsTable(await get("/api/v1/deployments"))];
}

async function deploymentPage(name) {
  const [deployments, history] = await Promise.all([get("/api/v1/deployments"), get(`/api/v1/deployments/${encodeURIComponent(name)}/history`)]);
  const deployment = deployments.find((d) => d.deployment === name) || { deployment: name, status: "unknown" };
  const base = `/dashboard/charts/deployments/${name}`;
  return [
    el("h2", {}, `Deployment ${name}`),
    el(
      "p",
      { id: "deployment_status" },
      el("span", { class: `status ${deployment.status}` }, deployment.status),
      " ",
      link(`#/models/${deployment.model}`, text(deployment.model)),
      deployment.version ? ` v${deployment.version}` : "",
      ` · ${deployment.detail}`,
    ),
    el(
      "div",
      { class: "actions" },
      action("Roll back", `Roll ${name} back to the version that served before?`, async () => {
        const answer = await send("POST", `/api/v1/deployments/${name}/rollback`);
        const how = answer.promotion ? ` (promotion ${answer.promotion.id}: ${answer.promotion.status})` : "";
        return `rolling ${name} back to v${answer.to_version}${how}`;
      }, { id: "rollback", class: "danger" }),
      link(`#/monitoring/${name}`, "monitoring →"),
    ),
    el(
      "div",
      { class: "charts" },
      chart(`${base}/traffic`, "traffic split"),
      chart(`${base}/requests`, "request rate"),
      chart(`${base}/errors`, "error rate"),
      chart(`${base}/latency`, "latency"),
    ),
    el("h2", {}, "Rollout history"),
    table("history_table", ["when", "event", "detail"], history.history.map((h) => [when(h.time), h.event, h.detail])),
  ];
}

async function monitoringPage(name) {
  const [history, alerts] = await Promise.all([get(`/api/v1/deployments/${encodeURIComponent(name)}/history`), get("/api/v1/alerts")]);
  const windows = history.windows;
  const features = windows.length ? windows[windows.length - 1].features : [];
  const selected = monitoringPage.feature && features.includes(monitoringPage.feature) ? monitoringPage.feature : features[0];
  const picker = el("select", { id: "feature" }, features.map((f) => el("option", f === selected ? { value: f, selected: "selected" } : { value: f }, f)));
  const histogram = el("img", { class: "chart", id: "histogram", alt: "reference vs current", src: `/dashboard/charts/deployments/${name}/histogram?feature=${encodeURIComponent(selected || "")}&t=${Date.now()}` });
  picker.addEventListener("change", () => {
    monitoringPage.feature = picker.value;
    histogram.src = `/dashboard/charts/deployments/${name}/histogram?feature=${encodeURIComponent(picker.value)}&t=${Date.now()}`;
  });
  return [
    el("h2", {}, `Monitoring ${name}`),
    el("div", { class: "charts" }, chart(`/dashboard/charts/deployments/${name}/drift`, "drift per feature"), el("div", {}, el("label", {}, "feature ", picker), histogram)),
    el("h2", {}, "Windows"),
    table(
      "windows_table",
      ["window end", "version", "rows", "drifted share", "dataset drift", "drifted features"],
      windows
        .slice(-30)
        .reverse()
        .map((w) => [
          when(w.window_end),
          `v${w.version}`,
          w.count,
          fixed(w.drift_share, 2),
          w.dataset_drift ? el("span", { class: "bad" }, "drift") : "no",
          w.columns
            .filter((c) => c.drifted)
            .map((c) => `${c.column} (${c.method} ${fixed(c.statistic)})`)
            .join(", "),
        ]),
    ),
    el("h2", {}, "Alerts"),
    table("alerts_table", ["rule", "severity", "status", "message"], alerts.filter((a) => a.deployment === name).map((a) => [a.rule, a.severity, a.status, a.message])),
  ];
}

async function deliveryPage() {
  const delivery = await get("/api/v1/delivery");
  return [
    el("h2", {}, "Delivery"),
    el("p", { class: "muted" }, "Computed from the event log: lead time from a training request to its version serving, rollouts per day, the share rolled back, and the time from drift to a recovered model."),
    table(
      "delivery_table",
      ["model", "median lead time", "rollouts", "per day", "change failure rate", "drift → recovered (median)", "episodes"],
      delivery.models.map((m) => [
        link(`#/models/${m.model}`, m.model),
        duration(m.median_lead_time_seconds),
        m.deployments,
        fixed(m.deployments_per_day, 2),
        m.change_failure_rate === null ? "–" : `${(100 * m.change_failure_rate).toFixed(0)} %`,
        duration(m.median_recovery_seconds),
        m.recoveries.length,
      ]),
    ),
    chart("/dashboard/charts/delivery.svg", "rollouts per day"),
    el("h2", {}, "Lead times"),
    table(
      "lead_times_table",
      ["model", "version", "requested", "serving", "lead time"],
      delivery.models.flatMap((m) => m.lead_times.map((l) => [m.model, `v${l.version}`, new Date(l.requested_at).toLocaleString(), new Date(l.serving_at).toLocaleString(), duration(l.seconds)])),
    ),
  ];
}

// ---------------------------------------------------------------- routing and live updates

const routes = [
  [/^#?\/?$/, overviewPage],
  [/^#\/models$/, modelsPage],
  [/^#\/models\/(.+)$/, modelPage],
  [/^#\/runs\/(.+)$/, runPage],
  [/^#\/jobs$/, jobsPage],
  [/^#\/deployments$/, deploymentsPage],
  [/^#\/deployments\/(.+)$/, deploymentPage],
  [/^#\/monitoring\/(.+)$/, monitoringPage],
  [/^#\/delivery$/, deliveryPage],
];

async function render() {
  const hash = location.hash || "#/";
  for (const [pattern, view] of routes) {
    const match = hash.match(pattern);
    if (!match) continue;
    try {
      const content = await view(...match.slice(1).map(decodeURIComponent));
      if (document.querySelector("dialog[open]")) return; // never redraw under a question
      page().replaceChildren(...content);
      document.body.dataset.page = view.name;
    } catch (e) {
      if (e instanceof SignInNeeded) page().replaceChildren(...signInPage(e.message));
      else page().replaceChildren(el("p", { class: "bad" }, e.message));
    }
    return;
  }
  page().replaceChildren(el("p", {}, "No such page. ", link("#/", "Back to the overview")));
}

let pending = null;
function refreshSoon() {
  if (pending) return;
  pending = setTimeout(() => {
    pending = null;
    render();
  }, 500);
}

const events = el("ol", { id: "events", class: "events" });

let source = null;
function listen() {
  const live = $("#live");
  if (source) source.close();
  source = new EventSource("/api/v1/events/stream");
  source.onopen = () => {
    live.textContent = "live";
    live.className = "live on";
  };
  source.onerror = () => {
    live.textContent = "reconnecting";
    live.className = "live off";
  };
  const onEvent = (message) => {
    const envelope = JSON.parse(message.data);
    const data = envelope.payload || {};
    const what = data.model || data.deployment || data.dataset || data.job_id || "";
    events.prepend(el("li", {}, `${new Date(envelope.time).toLocaleTimeString()} `, el("strong", {}, message.type), ` ${text(what)}${data.version ? " v" + data.version : ""}`));
    while (events.children.length > 100) events.lastChild.remove();
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

window.addEventListener("hashchange", render);
loadSession().finally(() => {
  render();
  listen();
});
