// What the browser scripts share: their arguments, the browser, and one-line checks.
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

// The script's arguments (`names`), or its usage and exit 2; the output folder is created.
export function args(script, names) {
  const values = process.argv.slice(2);
  if (values.length < names.length || values.some((v) => !v)) {
    console.error(`usage: node ${script} ${names.join(" ")}`);
    process.exit(2);
  }
  mkdirSync(values[1], { recursive: true });
  return values;
}

// Headless Chromium (CHROMIUM: the binary).
export function launch() {
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  return chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-gpu"] });
}

export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
  console.log(`ok: ${message}`);
}
