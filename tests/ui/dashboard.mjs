// The dashboard end to end, in Debian's headless Chromium driven by playwright-core. Started
// by tests/it/ui.rs, which runs the worker, the broker and database, a receiver, and a small
// control server this script calls to publish an event and to make the receiver answer 200.
//
// Environment: BASE_URL (the worker's admin listener), CONTROL_URL, RECEIVER_URL,
// COMPANY, COMPANY_TOKEN, OTHER_COMPANY_TOKEN, ADMIN_TOKEN, SCREENSHOTS (a directory).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("BASE_URL");
const control = env("CONTROL_URL");
const screenshots = env("SCREENSHOTS");
mkdirSync(screenshots, { recursive: true });

const TIMEOUT = 20_000;

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function post(path) {
  const response = await fetch(`${control}${path}`, { method: "POST" });
  check(response.ok, `${path}: ${response.status}`);
  return response.text();
}

async function shot(page, name) {
  await page.screenshot({ path: join(screenshots, `${name}.png`), fullPage: true });
}

async function signIn(page, token) {
  await page.goto(`${base}/ui/`);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  // An API answering 4xx is part of the flow (the browser logs each as a failed load); what
  // must not happen is a script error or a blocked resource (a Content-Security-Policy
  // violation).
  page.on("console", (message) => {
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
      errors.push(message.text());
    }
  });

  // A company token: the page opens that company's settings.
  await signIn(page, env("COMPANY_TOKEN"));
  await page.getByText(`Company ${env("COMPANY")}`).waitFor();
  check(!page.url().includes(env("COMPANY_TOKEN")), "the token must not be in the URL");
  await shot(page, "01-signed-in");

  // An outage while reloading keeps the session (only a refused token signs out).
  await page.route("**/v1/session", (route) =>
    route.fulfill({
      status: 503,
      contentType: "application/json",
      body: '{"error":{"code":"unavailable","message":"database unavailable"}}',
    }),
  );
  await page.reload();
  await page.locator("#error-token").filter({ hasText: "database unavailable" }).waitFor();
  await page.unroute("**/v1/session");
  await page.reload();
  await page.getByText(`Company ${env("COMPANY")}`).waitFor();

  // Add a webhook; the API's validation error shows next to its field, then is fixed.
  await page.getByRole("button", { name: "Add webhook" }).click();
  await page.getByLabel("Name").fill("CRM sync");
  await page.getByLabel("URL", { exact: true }).fill("ftp://example.com/hook");
  await page.getByLabel("All deal events").check();
  await page.getByRole("button", { name: "Save webhook" }).click();
  const urlError = page.locator("#error-url");
  await urlError.filter({ hasText: "http" }).waitFor();
  check(
    (await page.getByLabel("URL", { exact: true }).getAttribute("aria-invalid")) === "true",
    "the URL field is marked invalid",
  );
  await shot(page, "02-validation-error");
  await page.getByLabel("URL", { exact: true }).fill(env("RECEIVER_URL"));
  await page.getByRole("button", { name: "Save webhook" }).click();

  // The generated secret is shown once, with a copy button.
  const secret = page.getByLabel("New signing secret");
  await secret.waitFor();
  check((await secret.inputValue()).startsWith("whsec_"), "a whsec_ secret is shown");
  await page.getByRole("button", { name: "Copy secret" }).click();
  await shot(page, "03-secret-once");
  await page.getByRole("button", { name: "Done" }).click();
  await page.getByRole("cell", { name: "CRM sync", exact: true }).waitFor();
  await page.getByRole("cell", { name: "deal.*", exact: true }).waitFor();
  await shot(page, "04-webhook-listed");

  // An event to a receiver that fails: the delivery ends Failed, with its attempts and bodies.
  await post("/publish");
  const failedRow = page.locator("#failed-rows tr").filter({ hasText: "deal.won" });
  await failedRow.getByRole("cell", { name: "Failed", exact: true }).waitFor();
  await page.getByRole("button", { name: "Attempts of CRM sync" }).click();
  const attempts = page.locator("#attempt-rows tr");
  await attempts.nth(4).waitFor();
  await attempts.first().getByText("Request body").click();
  const requestBody = attempts.first().locator("pre").first();
  await requestBody.waitFor();
  check((await requestBody.textContent()).includes('"event": "deal.won"'), "pretty JSON");
  await attempts.first().getByRole("cell", { name: "500", exact: true }).waitFor();
  // Five failures in a row opened the endpoint's circuit: the webhook's health says so.
  await page.getByText(/Paused since/).first().waitFor();
  await shot(page, "05-failed-with-attempts");

  // The receiver recovers; Retry delivers (a manual retry probes the open circuit), and the
  // page shows it without a reload.
  await post("/receiver/ok");
  await failedRow.getByRole("button", { name: /^Retry/ }).click();
  await failedRow.getByRole("cell", { name: "Succeeded", exact: true }).waitFor();
  await page.getByText(/Last success/).first().waitFor();
  await page.getByText(/Paused since/).waitFor({ state: "detached" });
  await shot(page, "06-retried-succeeded");

  // Edit: the API's refusal of a header shows beside the field, as does a line that is not
  // a header; then a rate limit and a header are saved, and the form shows them again.
  await page.getByRole("button", { name: "Edit CRM sync" }).click();
  await page.getByLabel("Rate limit").fill("20");
  const headers = page.getByLabel("Headers", { exact: true });
  await headers.fill("Connection: close");
  await page.getByRole("button", { name: "Save webhook" }).click();
  const headersError = page.locator("#error-headers");
  await headersError.filter({ hasText: "cannot be given" }).waitFor();
  check((await headers.getAttribute("aria-invalid")) === "true", "the headers field is marked");
  await headers.fill("X-Tenant: acme\nno colon here");
  await page.getByRole("button", { name: "Save webhook" }).click();
  await headersError.filter({ hasText: "Line 2" }).waitFor();
  await shot(page, "07-header-error");
  await headers.fill("X-Tenant: acme");
  await page.getByRole("button", { name: "Save webhook" }).click();
  await page.locator("#editor").waitFor({ state: "hidden" });
  await page.getByRole("button", { name: "Edit CRM sync" }).click();
  check((await page.getByLabel("Rate limit").inputValue()) === "20", "the rate limit is kept");
  check((await headers.inputValue()) === "x-tenant: acme", "the header is kept");
  await page.getByRole("button", { name: "Cancel" }).click();

  // The page works on a phone's width.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByRole("button", { name: "Add webhook" }).waitFor();
  await shot(page, "08-phone");
  check(errors.length === 0, `errors in the page: ${errors.join("; ")}`);

  // Another company's token never sees this company's webhooks.
  const other = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const otherPage = await other.newPage();
  otherPage.setDefaultTimeout(TIMEOUT);
  await signIn(otherPage, env("OTHER_COMPANY_TOKEN"));
  await otherPage.getByText("No webhooks yet.").waitFor();
  check((await otherPage.getByText("CRM sync").count()) === 0, "another company's webhook shown");
  await shot(otherPage, "09-other-company");

  // The admin token picks a company first.
  const admin = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const adminPage = await admin.newPage();
  adminPage.setDefaultTimeout(TIMEOUT);
  await signIn(adminPage, env("ADMIN_TOKEN"));
  await adminPage.getByLabel("Company id").fill(env("COMPANY"));
  await adminPage.getByRole("button", { name: "Open company" }).click();
  await adminPage.getByRole("cell", { name: "CRM sync", exact: true }).waitFor();
  await shot(adminPage, "10-admin");
  console.log("dashboard: every step passed");
} finally {
  await browser.close();
}
