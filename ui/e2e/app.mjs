// The web app end to end, in Debian's Chromium driven by playwright-core,
// against a real `sluice up` (tests/web_ui.rs starts it and passes its
// address and credentials). Every page is screenshotted into
// $SLUICE_SCREENSHOTS and checked with axe-core; any failure exits 1.
//
//   SLUICE_URL SLUICE_CLIENT_ID SLUICE_CLIENT_SECRET  the instance under test
//   SLUICE_SHORT_URL + _CLIENT_ID + _CLIENT_SECRET    one whose tokens live 2 s
//   SLUICE_JSONL_DIR                                   where the destination writes

import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const env = (name) => process.env[name] ?? (() => { throw new Error(`set ${name}`); })();
const url = env("SLUICE_URL");
const shots = env("SLUICE_SCREENSHOTS");
mkdirSync(shots, { recursive: true });
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const LONG = 180_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let step = 0;
const started = Date.now();
const problems = [];
const taken = [];

async function look(page, name) {
  step += 1;
  const file = `${String(step).padStart(2, "0")}-${name}.png`;
  await page.screenshot({ path: `${shots}/${file}`, fullPage: true });
  taken.push(file);
  console.log(`${((Date.now() - started) / 1000).toFixed(1)} s: ${file}`);
  await page.evaluate(axeSource + ";0");
  const violations = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ["violations"] })).violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 3) })));
  for (const v of violations.filter((v) => v.impact === "serious" || v.impact === "critical")) problems.push(`${file}: axe ${v.impact} ${v.id} (${v.help}) at ${v.nodes.join(", ")}`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 1) problems.push(`${file}: the page is ${overflow}px wider than the window`);
}

/** Opens the folded optional fields, unless they are open already (they open when they hold a value). */
async function openOptional(page) {
  const details = page.locator("details.optional").first();
  await details.waitFor({ timeout: LONG });
  if (!(await details.evaluate((d) => d.open))) await details.locator("summary").click();
}

async function signIn(page, base, id, secret) {
  await page.goto(base);
  await page.getByLabel("Client id").fill(id);
  await page.getByLabel("Client secret").fill(secret);
  await page.getByRole("button", { name: "Sign in" }).click();
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("dialog", (d) => d.accept());
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && !/Failed to load resource|Form validation failed/.test(m.text()) && problems.push(`console error: ${m.text()}`));

  // Sign in: a wrong secret is refused with the API's reason, the right one opens the app.
  await page.goto(url);
  await look(page, "sign-in");
  await signIn(page, url, env("SLUICE_CLIENT_ID"), "wrong");
  await page.getByRole("alert").filter({ hasText: "wrong client_secret" }).waitFor();
  await signIn(page, url, env("SLUICE_CLIENT_ID"), env("SLUICE_CLIENT_SECRET"));

  // A new instance has no workspace: the app offers to create one.
  await page.getByRole("heading", { name: "Create a workspace" }).waitFor();
  await look(page, "first-workspace");
  await page.getByRole("button", { name: "Create workspace" }).click();
  await page.getByRole("heading", { name: "Connections" }).waitFor();
  await page.getByText("No connections yet").waitFor();
  await look(page, "connections-empty");

  // A source through the form generated from source-faker's spec: a bad value first.
  await page.getByRole("link", { name: "Sources" }).click();
  await page.getByRole("link", { name: "New source" }).click();
  await page.getByLabel("Find a connector").fill("faker");
  await look(page, "source-choose-connector");
  await page.getByRole("button", { name: /^Faker faker/ }).click();
  const count = page.locator("#root_count");
  // Faker's fields are all optional: folded away until opened.
  await openOptional(page);
  await count.waitFor();
  await page.getByLabel("Source name").fill("Fake shop");
  await count.fill("0");
  await page.getByRole("button", { name: "Set up source" }).click();
  await page.locator("#root_count__error").filter({ hasText: ">= 1" }).waitFor();
  await look(page, "source-form-field-error");
  await count.fill("500");
  await page.getByRole("button", { name: "Set up source" }).click();
  await page.waitForURL(/#\/sources\/[0-9a-f-]{36}/, { timeout: LONG });
  await page.getByRole("heading", { name: "Fake shop" }).waitFor();
  await look(page, "source-page");

  // A destination: Sluice's JSON lines writer.
  await page.getByRole("link", { name: "Destinations" }).click();
  await page.getByText("No destinations yet").waitFor();
  await look(page, "destinations-empty");
  await page.getByRole("link", { name: "New destination" }).click();
  await page.getByLabel("Find a connector").fill("json");
  await page.getByRole("button", { name: /^Sluice JSON Lines/ }).click();
  const path = page.locator("#root_destination_path");
  await path.waitFor({ timeout: LONG });
  await page.getByLabel("Destination name").fill("Local files");
  await path.fill(env("SLUICE_JSONL_DIR"));
  await look(page, "destination-form");
  await page.getByRole("button", { name: "Set up destination" }).click();
  await page.waitForURL(/#\/destinations\/[0-9a-f-]{36}/, { timeout: LONG });
  await page.getByRole("link", { name: "Destinations" }).click();
  await page.getByRole("link", { name: "Local files" }).waitFor();
  await look(page, "destinations");

  // A destination whose check fails (no server on port 1) is kept, and its
  // secret shows masked on edit, locked until replaced.
  await page.getByRole("link", { name: "New destination" }).click();
  await page.getByLabel("Find a connector").fill("postgres");
  await page.getByRole("button", { name: /^Postgres postgres/ }).click();
  await page.locator("#root_host").waitFor({ timeout: LONG });
  await page.getByLabel("Destination name").fill("Warehouse");
  await page.locator("#root_host").fill("127.0.0.1");
  await page.locator("#root_port").fill("1");
  await page.locator("#root_database").fill("shop");
  await page.locator("#root_username").fill("loader");
  await openOptional(page);
  await page.locator("#root_password").fill("s3cret-pw");
  await page.getByRole("button", { name: "Set up destination" }).click();
  await page.getByRole("status").filter({ hasText: "Connection test failed" }).waitFor({ timeout: LONG });
  await look(page, "destination-check-failed");
  await page.getByRole("link", { name: "open it" }).click();
  // The saved destination's page, loaded: until then the new-destination
  // form, with its own #root_password, may still be the one on screen.
  await page.getByRole("heading", { level: 1, name: "Warehouse", exact: true }).waitFor({ timeout: LONG });
  const password = page.locator("#root_password");
  await password.waitFor();
  assert.equal(await password.inputValue(), "**********", "a saved secret shows masked");
  assert.equal(await password.getAttribute("readonly"), "", "and locked");
  await look(page, "destination-secret-masked");
  await page.getByRole("button", { name: "Edit Password" }).click();
  assert.equal(await password.inputValue(), "", "Edit clears it for a new value");
  await page.getByRole("button", { name: "Keep the saved Password" }).click();
  assert.equal(await password.inputValue(), "**********");
  await page.getByRole("link", { name: "Destinations" }).click();

  // The wizard: both ends, then streams from discover (one deselected), then the schedule.
  await page.getByRole("link", { name: "Connections" }).click();
  await page.getByRole("link", { name: "Set up your first connection" }).click();
  await page.getByLabel("Source", { exact: true }).selectOption({ label: "Fake shop (faker)" });
  await page.getByLabel("Destination", { exact: true }).selectOption({ label: "Local files (sluice-jsonl)" });
  await look(page, "wizard-endpoints");
  await page.getByRole("button", { name: "Next: streams" }).click();
  await page.getByLabel("Sync stream purchases").waitFor({ timeout: LONG });
  await page.getByLabel("Sync stream purchases").uncheck();
  await look(page, "wizard-streams");
  await page.getByRole("button", { name: "Next: schedule" }).click();
  await page.getByLabel("Cron").check();
  await page.getByLabel(/Cron expression/).fill("0 30 6 * * ?");
  await page.getByText("Next runs (your time)").waitFor();
  await page.getByLabel(/Cron expression/).fill("0 30 6 * *");
  await page.locator(".field-error").filter({ hasText: "6 or 7 fields" }).waitFor();
  await page.getByLabel(/Cron expression/).fill("0 30 6 * * ?");
  await page.getByText("Next runs (your time)").waitFor();
  await look(page, "wizard-schedule");
  await page.getByLabel("Manual").check();
  await page.getByLabel("Connection name").fill("Shop to files");
  await page.getByRole("button", { name: "Create connection" }).click();
  await page.waitForURL(/#\/connections\/[0-9a-f-]{36}$/);
  await page.getByRole("heading", { name: "Shop to files" }).waitFor();
  const streams = await page.locator(".facts div").filter({ hasText: "Streams" }).locator("dd").innerText();
  assert.deepEqual(streams.split(", ").sort(), ["products", "users"], `the connection syncs users and products only, not ${streams}`);
  await look(page, "connection-new");

  // Sync now: the job succeeds with its rows counted.
  await page.getByRole("button", { name: "Sync now" }).click();
  const firstJob = page.locator("table[aria-label='Job history'] tbody tr").first();
  await firstJob.getByText("succeeded").waitFor({ timeout: LONG });
  const rows = Number((await firstJob.locator("td.num").first().innerText()).replace(/\D/g, ""));
  assert.ok(rows >= 500 + 10, `the sync counted ${rows} rows (500 users and the products)`);
  await firstJob.getByRole("button", { name: /details/ }).click();
  await page.getByRole("table", { name: "Attempt 1 streams" }).getByRole("cell", { name: "users" }).waitFor();
  await look(page, "connection-synced");

  // Its log.
  await firstJob.getByRole("link", { name: "Log" }).click();
  await page.getByRole("heading", { name: /^Job #/ }).waitFor();
  await page.getByTestId("log").filter({ hasText: /\S+/ }).waitFor();
  await page.waitForFunction(() => document.querySelector("[data-testid=log]")?.textContent?.includes("succeeded") || document.querySelector("[data-testid=log]")?.textContent?.length > 200);
  await look(page, "job-log");
  await page.getByRole("link", { name: "Back to the connection" }).click();

  // A long sync, cancelled: the source asks for millions of users now.
  await page.getByRole("link", { name: "Fake shop" }).click();
  await openOptional(page);
  await page.locator("#root_count").fill("50000000");
  await page.getByRole("button", { name: "Save and test" }).click();
  await page.getByText("Connection test succeeded.").waitFor({ timeout: LONG });
  await page.goBack();
  await page.getByRole("heading", { name: "Shop to files" }).waitFor();
  await page.getByRole("button", { name: "Sync now" }).click();
  await page.getByRole("button", { name: "Cancel sync" }).waitFor();
  await page.getByText(/records read/).waitFor({ timeout: LONG });
  await page.waitForFunction(() => /[1-9][\d,]* records read/.test(document.body.innerText), null, { timeout: LONG });
  await look(page, "connection-running");
  await page.getByRole("button", { name: "Cancel sync" }).click();
  await page.locator("table[aria-label='Job history'] tbody tr").first().getByText("cancelled").waitFor({ timeout: LONG });
  await look(page, "connection-cancelled");

  // Edit: a new name and a cron schedule, kept by the platform.
  await page.getByRole("button", { name: "Edit" }).click();
  await page.getByLabel("Name", { exact: true }).fill("Shop to files, daily");
  await page.getByLabel("Cron").check();
  await page.getByLabel(/Cron expression/).fill("0 0 5 * * ?");
  await page.getByLabel("Sync stream products").waitFor({ timeout: LONG });
  await look(page, "connection-edit");
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByRole("heading", { name: "Shop to files, daily" }).waitFor();
  await page.locator(".facts div").filter({ hasText: "Next run" }).locator("dd").filter({ hasText: /\d/ }).waitFor();

  // The overview, the connectors, and the narrow screen.
  await page.getByRole("link", { name: "Connections" }).click();
  await page.getByRole("link", { name: "Shop to files" }).waitFor();
  await look(page, "connections");
  await page.getByRole("link", { name: "Connectors" }).click();
  await page.getByRole("heading", { name: "Destinations" }).waitFor();
  assert.ok(await page.getByRole("cell", { name: "PyPI airbyte-source-faker==7.2.1" }).count() >= 1, "the Faker definition runs from PyPI");
  await look(page, "definitions");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByRole("link", { name: "Connections" }).click();
  await page.getByRole("link", { name: "Shop to files" }).click();
  await page.getByRole("heading", { name: "Job history" }).waitFor();
  await look(page, "connection-390px");
  await page.getByRole("link", { name: "Sources" }).click();
  await page.getByRole("link", { name: "Fake shop" }).click();
  await openOptional(page);
  await page.locator("#root_count").waitFor();
  await look(page, "source-390px");

  // Keyboard only: a reload forgets the token (it lived in the tab's memory);
  // sign in, then reach the Sources page through the skip link and the navigation.
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto("about:blank");
  await page.goto(url);
  await page.getByLabel("Client id").waitFor();
  await page.keyboard.type(env("SLUICE_CLIENT_ID"));
  await page.keyboard.press("Tab");
  await page.keyboard.type(env("SLUICE_CLIENT_SECRET"));
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Connections" }).waitFor();
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Skip to content");
  for (const _ of ["Sluice", "Connections", "Sources"]) await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Sources");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Sources" }).waitFor();
  await context.close();

  // An expired token leads back to sign-in (an instance whose tokens live 2 s).
  const short = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const other = await short.newPage();
  await signIn(other, env("SLUICE_SHORT_URL"), env("SLUICE_SHORT_CLIENT_ID"), env("SLUICE_SHORT_CLIENT_SECRET"));
  await other.getByRole("heading", { name: "Create a workspace" }).waitFor();
  await other.waitForTimeout(3000);
  await other.getByRole("button", { name: "Create workspace" }).click();
  await other.getByText("Your session has expired").waitFor();
  await look(other, "sign-in-expired");
  assert.equal(await other.evaluate(() => document.cookie + JSON.stringify(localStorage) + JSON.stringify(sessionStorage)), "{}{}", "the token is kept in memory only");
  await short.close();
} catch (e) {
  problems.push(`${e.stack ?? e}`);
}
await browser.close();
console.log(`screenshots: ${taken.join(" ")}`);
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log("the web app passed end to end");
