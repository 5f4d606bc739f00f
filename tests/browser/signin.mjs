// The dashboard with authentication on, in headless Chromium: signed out it asks for a token;
// a wrong one is refused; a viewer signs in (the session cookie is HTTP-only, Secure,
// SameSite=Strict — the page's script cannot read it) and may look but not promote; after
// signing out, an operator signs in and promotes; a request forged without the CSRF token is
// refused even with the cookie.
//
// usage: node signin.mjs REGISTRY_URL OUTPUT_DIR VIEWER_TOKEN OPERATOR_TOKEN   (CHROMIUM: browser)
import { join } from "node:path";
import { args, check, launch } from "./common.mjs";

const [base, output, viewer, operator] = args("signin.mjs", ["REGISTRY_URL", "OUTPUT_DIR", "VIEWER_TOKEN", "OPERATOR_TOKEN"]);

const browser = await launch();
const errors = [];
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(e.message));
  const shot = (name) => page.screenshot({ path: join(output, `${name}.png`), fullPage: true });
  const signIn = async (token) => {
    await page.locator("#sign_in").waitFor();
    await page.locator("#token").fill(token);
    await page.locator("#sign_in button[type=submit]").click();
  };
  const promote = async () => {
    await page.goto(base + "/#/models/churn");
    await page.locator("#promote").waitFor();
    await page.evaluate(() => { document.querySelector("#notice").hidden = true; });
    await page.locator("#promote").click();
    await page.locator("#confirm_ok").click();
    await page.locator("#notice:not([hidden])").waitFor();
    return { text: await page.locator("#notice").innerText(), bad: (await page.locator("#notice").getAttribute("class")) === "bad" };
  };

  // Signed out: the page asks for a token; a wrong one is refused.
  await page.goto(base + "/");
  await page.locator("#sign_in").waitFor();
  await shot("11-sign-in");
  check(true, "signed out, the dashboard asks for a token");
  await signIn("fwt_0000000000000000_" + "0".repeat(64));
  await page.locator("#notice.bad").waitFor();
  check((await page.locator("#notice").innerText()).includes("unknown token"), "a wrong token is refused");

  // A viewer: sees the overview, cannot read the cookie, cannot promote.
  await signIn(viewer);
  await page.locator("#models").waitFor();
  check((await page.locator("#who").innerText()).includes("vera (viewer)"), "signed in as the viewer");
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "flywheel_session");
  check(session && session.httpOnly && session.secure && session.sameSite === "Strict", "the session cookie is HTTP-only, Secure, SameSite=Strict");
  check(!(await page.evaluate(() => document.cookie)).includes("flywheel_session"), "the page's script cannot read the session");
  await page.locator("#live.on").waitFor({ timeout: 30000 });
  check(true, "the live event stream connects with the session");
  const refused = await promote();
  check(refused.bad && refused.text.includes("operator"), `a viewer may not promote (${refused.text})`);
  await shot("12-viewer-refused");

  // Sign out; an operator signs in and promotes.
  await page.locator("#sign_out").click();
  await page.waitForFunction(() => document.querySelector("#who").innerText === "");
  check(true, "signed out");
  await signIn(operator);
  await page.waitForFunction(() => document.querySelector("#who").innerText.includes("olga (operator)"));
  check(true, "signed in as the operator");
  const done = await promote();
  check(!done.bad && done.text.includes("promotion"), `the operator promotes (${done.text})`);
  await shot("13-operator-promoted");

  // A forged request from the page, with the cookie but without the CSRF token.
  const forged = await page.evaluate(async () => {
    const response = await fetch("/api/v1/models/churn/versions/1/promotions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ alias: "staging" }),
    });
    return response.status;
  });
  check(forged === 403, `a request without the CSRF token is refused (${forged})`);
  check(errors.length === 0, `no script errors (${errors.join("; ")})`);
  console.log("sign-in test passed");
} finally {
  await browser.close();
}
