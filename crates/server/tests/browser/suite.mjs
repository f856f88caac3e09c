// The hosted pages and the admin console in a real browser: Debian's Chromium driven by
// Playwright (npm playwright-core, no downloaded browser). crates/server/tests/api/browser.rs
// starts the service and runs this with:
//   PORTCULLIS_URL      the public listener, e.g. http://127.0.0.1:41234
//   PORTCULLIS_ADMIN    the admin listener
//   PORTCULLIS_TOKEN    the admin token
//   PORTCULLIS_PYTHON   the interop virtualenv's python (pyotp computes every TOTP code)
//   SCREENSHOTS         where each step's screenshot goes
// It exits non-zero, with a screenshot of the failing page, when a step does not hold.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const BASE = env("PORTCULLIS_URL");
const ADMIN = env("PORTCULLIS_ADMIN");
const TOKEN = env("PORTCULLIS_TOKEN");
const PYTHON = env("PORTCULLIS_PYTHON");
const SCREENSHOTS = env("SCREENSHOTS");
const HERE = path.dirname(fileURLToPath(import.meta.url));
const TOTP_REFERENCE = path.join(HERE, "..", "interop", "totp_reference.py");

const PASSWORD = "correct horse battery staple";
const CAROL_PASSWORD = "lantern orchard velvet compass";

mkdirSync(SCREENSHOTS, { recursive: true });

/** The TOTP code of an otpauth:// URI at `seconds`, from pyotp. */
function pyotpCode(uri, seconds) {
  return execFileSync(PYTHON, [TOTP_REFERENCE, "code", String(seconds)], { input: uri })
    .toString()
    .trim();
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

/** Waits for the next 30-second TOTP step (a step is accepted once). */
async function nextStep(usedAt) {
  const step = Math.floor(usedAt / 30);
  while (Math.floor(nowSeconds() / 30) === step) {
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** Submits a form and returns the status of the page it leads to (after redirects). */
async function submit(page, button) {
  const [response] = await Promise.all([page.waitForNavigation(), page.click(button)]);
  // The answer of the post itself, before a 303 is followed.
  let request = response.request();
  while (request.redirectedFrom()) request = request.redirectedFrom();
  const first = await request.response();
  return { status: first.status(), url: page.url() };
}

async function notice(page) {
  return (await page.textContent("#notice")) ?? "";
}

async function logIn(page, username, password) {
  await page.goto(`${BASE}/login`);
  await page.fill("input[name=username]", username);
  await page.fill("input[name=password]", password);
  return submit(page, "#login button[type=submit]");
}

async function signOut(page) {
  await page.goto(`${BASE}/account`);
  await submit(page, "header button");
  assert.match(page.url(), /\/login$/);
}

const steps = [];
function step(name, run) {
  steps.push({ name, run });
}

step("registers two accounts on the register page", async ({ user }) => {
  for (const [username, password] of [["alice", PASSWORD], ["carol", CAROL_PASSWORD]]) {
    await user.goto(`${BASE}/register`);
    await user.fill("input[name=username]", username);
    await user.fill("input[name=password]", password);
    const { status } = await submit(user, "#register button[type=submit]");
    assert.equal(status, 201);
    assert.match(await notice(user), new RegExp(`Account ${username} created`));
  }
  await shot(user, "01-registered");

  await user.goto(`${BASE}/register`);
  await user.fill("input[name=username]", "weakling");
  await user.fill("input[name=password]", "password1234567");
  const { status } = await submit(user, "#register button[type=submit]");
  assert.equal(status, 400);
  assert.match(await notice(user), /Choose another password/);
  await shot(user, "02-weak-password-refused");
});

step("logs in and sees its sessions on the account page", async ({ user }) => {
  const { status, url } = await logIn(user, "alice", PASSWORD);
  assert.equal(status, 303);
  assert.match(url, /\/account$/);
  assert.equal(await user.textContent("#username"), "alice");
  assert.match(await user.textContent("#sessions tbody"), /this browser/);
  await shot(user, "03-account");
});

let totpUri;
let lastCodeAt;
step("enrols TOTP with a code from pyotp and gets recovery codes", async ({ user }) => {
  await user.goto(`${BASE}/account`);
  await submit(user, "#two-factor button[type=submit]");
  assert.ok(await user.isVisible(".qr svg"), "the QR code is shown");
  totpUri = await user.getAttribute("#otpauth-uri", "href");
  assert.match(totpUri, /^otpauth:\/\/totp\//);
  await shot(user, "04-totp-enrolment");
  lastCodeAt = nowSeconds();
  await user.fill("input[name=code]", pyotpCode(totpUri, lastCodeAt));
  const { status } = await submit(user, "#confirm-totp button[type=submit]");
  assert.equal(status, 200);
  const codes = await user.$$eval("#recovery-codes code", (items) => items.map((i) => i.textContent));
  assert.equal(codes.length, 10);
  await shot(user, "05-recovery-codes");
  await user.goto(`${BASE}/account`);
  assert.match(await user.textContent("#two-factor-status"), /^On/);
});

step("logs in with the second factor", async ({ user }) => {
  await signOut(user);
  const { status } = await logIn(user, "alice", PASSWORD);
  assert.equal(status, 200);
  assert.ok(await user.isVisible("#second-factor"), "the second-factor step is shown");
  await shot(user, "06-second-factor");
  await user.fill("#second-factor input[name=code]", "000000");
  const wrong = await submit(user, "#second-factor button[type=submit]");
  assert.equal(wrong.status, 401);
  assert.match(await notice(user), /code is wrong/);
  await nextStep(lastCodeAt);
  await user.fill("#second-factor input[name=code]", pyotpCode(totpUri, nowSeconds()));
  const right = await submit(user, "#second-factor button[type=submit]");
  assert.equal(right.status, 303);
  assert.match(right.url, /\/account$/);
  await shot(user, "07-logged-in-with-second-factor");
  await signOut(user);
});

step("is throttled after wrong passwords, with the time to wait", async ({ user }) => {
  let last;
  for (let i = 0; i < 6; i++) {
    last = await logIn(user, "carol", "not the password at all");
    if (last.status === 429) break;
    assert.equal(last.status, 401);
    assert.match(await notice(user), /Wrong username or password/);
  }
  assert.equal(last.status, 429);
  assert.match(await notice(user), /Too many attempts\. Try again in \d+ (seconds|minutes?)\./);
  await shot(user, "08-throttled");
});

step("unlocks the account from the admin console", async ({ admin, user }) => {
  await admin.goto(`${ADMIN}/admin/`);
  await admin.fill("input[name=token]", "not the token");
  const wrong = await submit(admin, "#console-login button[type=submit]");
  assert.equal(wrong.status, 401);
  await admin.fill("input[name=token]", TOKEN);
  const right = await submit(admin, "#console-login button[type=submit]");
  assert.equal(right.status, 303);
  // The console polls the admin API with its cookie: the lockout and the events show.
  await admin.waitForSelector("#restriction-rows td:has-text('u:')");
  await admin.waitForSelector("#event-rows td:has-text('lockout')");
  assert.match(await admin.textContent("#attack-signal"), /No|Yes/);
  await shot(admin, "09-console-lockout");

  await admin.fill("#unlock-username", "carol");
  await admin.click("#unlock-form button[type=submit]");
  await admin.waitForSelector("#restriction-rows td:text-is('none')");
  await admin.waitForSelector("#event-rows td:text-is('unlock')");

  await admin.fill("#allow-network", "198.51.100.0/24");
  await admin.click("#allow-form button[type=submit]");
  await admin.waitForSelector("#allowlist-rows li:has-text('198.51.100.0/24')");
  await admin.click("#allowlist-rows li:has-text('198.51.100.0/24') button");
  await admin.waitForSelector("#allowlist-rows li:has-text('198.51.100.0/24')", { state: "detached" });
  await shot(admin, "10-console-unlocked");

  const { status, url } = await logIn(user, "carol", CAROL_PASSWORD);
  assert.equal(status, 303, "carol logs in once unlocked");
  assert.match(url, /\/account$/);
  await signOut(user);
});

step("solves a challenge through the ALTCHA widget", async ({ stranger }) => {
  // Two more usernames failing from this address make it risky (three of the ten before a
  // ban): its next attempt without a trusted device must solve a challenge first.
  for (const username of ["dave", "erin"]) {
    const { status } = await logIn(stranger, username, "not the password at all");
    assert.equal(status, 401);
  }
  const asked = await logIn(stranger, "carol", CAROL_PASSWORD);
  assert.equal(asked.status, 401);
  assert.ok(await stranger.isVisible("altcha-widget"), "the widget is shown");
  // The widget solves on load and fills the form's `altcha` field.
  await stranger.waitForFunction(
    () => document.querySelector("#login input[name=altcha]")?.value?.length > 0,
    null,
    { timeout: 60_000 },
  );
  await shot(stranger, "11-challenge-solved");
  await stranger.fill("input[name=password]", CAROL_PASSWORD);
  const { status, url } = await submit(stranger, "#login button[type=submit]");
  assert.equal(status, 303, "the solved challenge lets the login through");
  assert.match(url, /\/account$/);
  await shot(stranger, "12-logged-in-after-challenge");
});

step("refuses a form post without its CSRF token", async ({ stranger }) => {
  const response = await stranger.request.post(`${BASE}/account/logout-all`, {
    form: { csrf: "forged" },
    maxRedirects: 0,
  });
  assert.equal(response.status(), 403);
});

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const pages = {};
for (const name of ["user", "admin", "stranger"]) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  pages[name] = await context.newPage();
  pages[name].setDefaultTimeout(20_000);
}
let failed = false;
for (const { name, run } of steps) {
  try {
    await run(pages);
    console.log(`ok - ${name}`);
  } catch (error) {
    failed = true;
    console.log(`not ok - ${name}\n${error.stack}`);
    for (const [who, page] of Object.entries(pages)) {
      await page.screenshot({ path: path.join(SCREENSHOTS, `failed-${who}.png`), fullPage: true })
        .catch(() => {});
    }
    break;
  }
}
await browser.close();
process.exit(failed ? 1 : 0);
