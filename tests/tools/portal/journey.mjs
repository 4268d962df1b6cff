#!/usr/bin/env node
// A patient's journey through the gateway's portal in a real browser (Debian chromium driven by
// playwright-core): open the portal, sign in at the OpenID provider's login and consent pages,
// read the record, reload, sign out (not with --keep) and come back; or cancel at the provider.
// It asserts nothing itself: it prints what the browser saw, as one JSON object on stdout, and
// the Rust test judges it.
//
//   node journey.mjs --portal https://127.0.0.1:PORT/portal/ --login ACCOUNT [--cancel | --keep]
//       [--wish-not-with ODS] [--chromium /usr/bin/chromium] [--screenshot FILE.png]
//
// With --wish-not-with, after the reload it saves the sharing choice "do not share with" that
// organisation through the portal's form, then withdraws it, snapshotting both pages.
//
// The gateway's development certificate is not in the browser's trust store, so certificate
// errors are ignored for this browser context only.

import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

function fail(message) {
  process.stderr.write(`journey.mjs: ${message}\n`);
  process.exit(1);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      portal: { type: 'string' },
      login: { type: 'string' },
      cancel: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      'wish-not-with': { type: 'string' },
      chromium: { type: 'string', default: process.env.HIE_TEST_CHROMIUM ?? '/usr/bin/chromium' },
      screenshot: { type: 'string' },
    },
    strict: true,
  }));
} catch (err) {
  fail(err.message);
}
if (!args.portal || !args.login) fail('usage: node journey.mjs --portal URL --login ACCOUNT [--cancel]');

const PORTAL_HEADERS = [
  'content-security-policy', 'x-frame-options', 'x-content-type-options', 'referrer-policy',
  'cache-control', 'strict-transport-security',
];

async function snapshot(page, response) {
  const headers = response ? await response.allHeaders() : {};
  return {
    url: page.url(),
    status: response ? response.status() : null,
    title: await page.title(),
    text: await page.locator('body').innerText(),
    headers: Object.fromEntries(PORTAL_HEADERS.map((name) => [name, headers[name] ?? null])),
  };
}

const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  // Root in CI containers cannot use Chromium's user-namespace sandbox.
  args: ['--no-sandbox'],
});
const report = {};
const consoleErrors = [];
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on('console', (message) => { if (message.type() === 'error') consoleErrors.push(message.text()); });
  page.setDefaultTimeout(15000);

  // 1. Not signed in: the sign-in page.
  report.start = await snapshot(page, await page.goto(args.portal));

  // 2. Sign in: the portal sends the browser to the provider, whose login form we fill in.
  let last;
  page.on('response', (response) => { if (response.request().isNavigationRequest()) last = response; });
  await page.click('#sign-in');
  await page.waitForSelector('input[name=login]');
  report.provider_login_url = page.url();
  if (args.cancel) {
    await page.click('text=Cancel');
    await page.waitForURL((url) => url.pathname.startsWith('/portal/'));
    report.cancelled = await snapshot(page, last);
    process.stdout.write(`${JSON.stringify(report)}\n`);
    process.exit(0);
  }
  await page.fill('input[name=login]', args.login);
  await page.fill('input[name=password]', 'any-password');
  await page.click('button[type=submit]');
  // A consent page may follow (first sign-in for this client).
  await page.waitForURL((url) => url.pathname.startsWith('/portal/') || url.pathname.startsWith('/interaction/'));
  if (new URL(page.url()).pathname.startsWith('/interaction/')) {
    await page.click('button[type=submit]');
    await page.waitForURL((url) => url.pathname.startsWith('/portal/'));
  }
  await page.waitForLoadState('load');
  report.record = await snapshot(page, last);
  report.cookies = (await context.cookies()).map(({ name, httpOnly, secure, sameSite, path }) => ({ name, httpOnly, secure, sameSite, path }));
  // The session cookie's value, for the test to present elsewhere (another instance).
  report.session_cookie = (await context.cookies()).find((c) => c.name === '__Host-hie-portal')?.value ?? null;
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });

  // 3. Reload: the session holds.
  report.reloaded = await snapshot(page, await page.reload());

  // 3a. A sharing choice saved through the form, then withdrawn.
  if (args['wish-not-with']) {
    await page.selectOption('#wish', 'not-with');
    await page.fill('#organisation', args['wish-not-with']);
    const [saved] = await Promise.all([page.waitForNavigation(), page.click('#save-wish')]);
    report.wished = await snapshot(page, saved);
    const [withdrawn] = await Promise.all([page.waitForNavigation(), page.click('.withdraw')]);
    report.withdrawn = await snapshot(page, withdrawn);
  }

  // 4. Sign out (only shown when signed in), then come back.
  if (!args.keep && await page.locator('#sign-out').count()) {
    await Promise.all([page.waitForNavigation(), page.click('#sign-out')]);
    report.signed_out = await snapshot(page, last);
    report.cookies_after_sign_out = (await context.cookies()).map(({ name }) => name);
    report.after = await snapshot(page, await page.goto(args.portal));
  }
  report.console_errors = consoleErrors;
  report.csp_violations = consoleErrors.filter((text) => text.includes('Content Security Policy'));
} catch (err) {
  fail(`${err?.stack ?? err}`);
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(report)}\n`);
