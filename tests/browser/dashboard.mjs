// Drives the dashboard of a running `flywheel up --demo` in headless Chromium, as an operator
// would: the overview's live counts change while the demo runs; a run logged through the MLflow
// API shows its metric charts; once version 2 serves, the model page shows lineage and charts;
// "Roll back" on the deployment (confirmed) asks to move `production` back to version 1, and
// "Approve" on the model page (confirmed) applies it. Screenshots go to the output folder.
//
// usage: node dashboard.mjs REGISTRY_URL OUTPUT_DIR   (CHROMIUM: the browser binary)
import { join } from "node:path";
import { args, check, launch } from "./common.mjs";

const [base, output] = args("dashboard.mjs", ["REGISTRY_URL", "OUTPUT_DIR"]);

async function until(what, probe, seconds) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${seconds} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function api(path, init) {
  const response = await fetch(base + path, init);
  const body = await response.json();
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status} ${JSON.stringify(body)}`);
  return body;
}

const browser = await launch();
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("pageerror", (e) => errors.push(e.message));
  const shot = (name) => page.screenshot({ path: join(output, `${name}.png`), fullPage: true });
  const count = async (id) => Number(await page.locator(`#${id}`).innerText());
  const imagesLoaded = (selector) =>
    page.$$eval(selector, (images) => images.length > 0 && images.every((i) => i.complete && i.naturalWidth > 0));

  // 1. The overview, live: counts change as the demo registers, trains and deploys.
  await page.goto(base + "/");
  await page.locator("#models").waitFor();
  await until("the event stream to connect", async () => (await page.locator("#live").innerText()) === "live", 30);
  const first = (await count("datasets")) + (await count("models")) + (await count("jobs")) + (await count("deployments"));
  await until("the overview's counts to change", async () => {
    const now = (await count("datasets")) + (await count("models")) + (await count("jobs")) + (await count("deployments"));
    return now > first;
  }, 120);
  check(true, `overview counts moved live from ${first} (no reload)`);
  await until("an event in the live list", async () => (await page.locator("#events li").count()) > 0, 60);
  await shot("01-overview");

  // 2. A run logged through the MLflow API: its page charts the metric over steps.
  const experiment = await api("/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default");
  const run = await api("/api/2.0/mlflow/runs/create", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ experiment_id: experiment.experiment.experiment_id, run_name: "browser-test", start_time: Date.now() }),
  });
  const runId = run.run.info.run_id;
  const metrics = Array.from({ length: 20 }, (_, step) => ({ key: "loss", value: 1 / (step + 1), timestamp: Date.now(), step }));
  await api("/api/2.0/mlflow/runs/log-batch", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ run_id: runId, metrics, params: [{ key: "lr", value: "0.1" }] }),
  });
  await page.goto(`${base}/#/runs/${runId}`);
  await page.locator("#metrics_table").waitFor();
  await until("the run's metric chart", () => imagesLoaded("img.chart"), 20);
  const svg = await (await fetch(`${base}/dashboard/charts/runs/${runId}/loss`)).text();
  check((svg.match(/points="([^"]*)"/)?.[1] || "").trim().split(" ").length === 20, "the loss chart draws all 20 steps");
  check((await page.locator("#params_table").innerText()).includes("lr"), "the run page lists its parameters");
  await shot("02-run");

  // 3. Wait for the demo's loop: version 2 serving.
  await until(
    "version 2 to serve (the demo's loop)",
    async () => (await api("/api/v1/deployments")).some((d) => d.deployment === "churn" && d.version === 2 && d.status === "serving"),
    300,
  );

  // 4. The model page: lineage graph, metric chart, versions, audit log.
  await page.goto(`${base}/#/models/churn`);
  await page.locator("#versions_table").waitFor();
  await until("the lineage graph and charts", () => imagesLoaded("#page img"), 20);
  const lineage = await (await fetch(`${base}/dashboard/charts/models/churn/lineage.svg`)).text();
  for (const kind of ["dataset", "version", "deployment"]) {
    check(lineage.includes(`data-kind="${kind}"`), `the lineage graph has a ${kind} node`);
  }
  check((lineage.match(/class="edge"/g) || []).length >= 3, "the lineage graph joins its nodes");
  check((await page.locator("#versions_table tbody tr").count()) === 2, "two versions listed");
  check((await page.locator("#aliases").innerText()).includes("production → v2"), "production points at v2");
  check((await page.locator("#audit_table tbody tr").count()) > 0, "the audit log is shown");
  await shot("03-model");

  // 5. The deployment page: charts, history; roll back with confirmation.
  await page.goto(`${base}/#/deployments/churn`);
  await page.locator("#history_table").waitFor();
  await until("the deployment's charts", () => imagesLoaded("img.chart"), 20);
  check((await page.locator("img.chart").count()) === 4, "traffic, requests, errors and latency charts");
  check((await page.locator("#history_table").innerText()).includes("rolled out"), "the rollout history lists the rollouts");
  await shot("04-deployment");
  await page.locator("#rollback").click();
  await page.locator("#confirm[open]").waitFor();
  await shot("05-rollback-confirmation");
  await page.locator("#confirm_ok").click();
  const notice = await until("the rollback's answer", async () => {
    const box = page.locator("#notice");
    return (await box.isVisible()) ? box.innerText() : undefined;
  }, 20);
  check(/rolling churn back to v1/.test(notice), `rollback answered: ${notice}`);

  // 6. `production` is protected: the rollback waits for an approval — approve it.
  await page.goto(`${base}/#/models/churn`);
  await page.locator("#promotions_table").waitFor();
  const approve = page.locator("#promotions_table button.approve").first();
  if (await approve.count()) {
    await approve.click();
    await page.locator("#confirm[open]").waitFor();
    await page.locator("#confirm_ok").click();
  }
  await until("production to point at v1", async () => (await page.locator("#aliases").innerText()).includes("production → v1"), 30);
  check(true, "the rollback moved production to v1");
  await shot("06-model-after-rollback");

  // 7. Monitoring and delivery pages.
  await page.goto(`${base}/#/monitoring/churn`);
  await page.locator("#windows_table").waitFor();
  await until("the drift chart and histogram", () => imagesLoaded("img.chart"), 20);
  check((await page.locator("#windows_table").innerText()).includes("drift"), "windows with drift are listed");
  await shot("07-monitoring");
  await page.goto(`${base}/#/delivery`);
  await page.locator("#delivery_table").waitFor();
  check((await page.locator("#delivery_table").innerText()).includes("churn"), "delivery metrics for churn");
  await shot("08-delivery");
  await page.goto(`${base}/#/jobs`);
  await page.locator("#jobs_table").waitFor();
  await shot("09-jobs");
  check(errors.length === 0, `no script errors in the pages (${errors.join("; ")})`);
} finally {
  await browser.close();
}
console.log("browser test passed");
