// Drives Debian's Chromium (through playwright-core, which never downloads a browser of its own) through
// recall's GraphQL explorer: open the page, type `{ version }`, run it, read the result pane.
//
//   node explorer.mjs <page url> <expected version> [screenshot.png]
//
// Exits 0 only when the result pane shows the expected version and nothing went wrong on the way: no failed
// or refused request, no request to another origin, no console error, no Content-Security-Policy violation.
// Otherwise it prints why and exits 1. Every wait is bounded; a watchdog ends the whole run.
import { chromium } from 'playwright-core';

const [pageUrl, expected, screenshot] = process.argv.slice(2);
if (!pageUrl || !expected) {
  console.error('usage: node explorer.mjs <page url> <expected version> [screenshot.png]');
  process.exit(64);
}
// Generous: the whole workspace's tests share two cores with this browser.
const STEP_MS = 30_000;
const TOTAL_MS = 120_000;
const origin = new URL(pageUrl).origin;

// Playwright kills the browser it launched when this process exits, so exiting here is enough.
const watchdog = setTimeout(() => {
  console.error(`explorer.mjs: gave up after ${TOTAL_MS} ms`);
  process.exit(1);
}, TOTAL_MS);

const problems = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  timeout: STEP_MS,
  // The flags that work as root on a machine whose network is closed; Playwright adds a fresh
  // --user-data-dir of its own.
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // A cookie of this origin: the query must carry it (sign-in will use an HTTP-only cookie).
  await context.addCookies([{ name: 'recall_probe', value: 'same-origin', url: origin, httpOnly: true }]);
  page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);

  // Errors only: GraphiQL's own components log accessibility warnings that are not ours to fix.
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`uncaught exception: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} (${r.failure()?.errorText})`));
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
  });
  page.on('request', (r) => {
    const url = new URL(r.url());
    if (url.protocol !== 'data:' && url.origin !== origin) problems.push(`request to another origin: ${r.url()}`);
  });
  // Chromium logs a refused resource as a console error too; this also catches what it only reports.
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) =>
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || '(inline)'}`),
    );
  });

  const response = await page.goto(pageUrl, { waitUntil: 'load', timeout: STEP_MS });
  if (!response || response.status() !== 200) throw new Error(`GET ${pageUrl} answered ${response?.status()}`);
  if (!response.headers()['content-security-policy']) throw new Error('the page has no Content-Security-Policy');

  // Replace the welcome text in the query editor with our query, typed as a person would.
  const editor = page.locator('.graphiql-query-editor .CodeMirror');
  await editor.waitFor({ state: 'visible' });
  await editor.click();
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.press('Delete');
  await page.keyboard.type('{ version }');
  await page.keyboard.press('Escape'); // close the completion list, if one is open
  const typed = await editor.evaluate((el) => el.CodeMirror.getValue());
  if (typed.replace(/\s+/g, ' ').trim() !== '{ version }') throw new Error(`the query editor holds ${JSON.stringify(typed)}`);

  const [request] = await Promise.all([
    page.waitForRequest(
      (r) => r.method() === 'POST' && new URL(r.url()).pathname === '/graphql' && /\bversion\b/.test(r.postData() ?? '') && !(r.postData() ?? '').includes('__schema'),
    ),
    page.locator('.graphiql-execute-button').click(),
  ]);
  const cookie = (await request.allHeaders())['cookie'] ?? '';
  if (!cookie.includes('recall_probe=same-origin')) problems.push(`the query was sent without the page's cookie (cookie: ${JSON.stringify(cookie)})`);

  const answer = await request.response();
  if (!answer || answer.status() !== 200) throw new Error(`POST /graphql answered ${answer?.status()}`);

  // The result pane is a read-only CodeMirror, empty in a fresh profile until the answer is shown.
  const result = page.locator('.graphiql-response .CodeMirror');
  await result.waitFor({ state: 'visible' });
  await page.waitForFunction(
    () => {
      const cm = document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror;
      return cm !== undefined && cm.getValue().trim() !== '';
    },
    null,
    { timeout: STEP_MS },
  );
  const shown = await result.evaluate((el) => el.CodeMirror.getValue());
  let parsed;
  try {
    parsed = JSON.parse(shown);
  } catch {
    throw new Error(`the result pane does not hold JSON: ${shown}`);
  }
  if (parsed?.data?.version !== expected) throw new Error(`the result pane shows ${shown}, not version ${expected}`);

  if (screenshot) await page.screenshot({ path: screenshot });

  // A dialog injects a <style> element (why the CSP allows inline styles): it must open without a violation.
  await page.getByRole('button', { name: /settings/i }).click();
  await page.getByRole('dialog').waitFor({ state: 'visible' });
  await page.keyboard.press('Escape');
  await page.getByRole('dialog').waitFor({ state: 'hidden' });

  if (problems.length) throw new Error(`the query ran, but:\n  ${problems.join('\n  ')}`);
  console.log(`ok: the result pane shows ${JSON.stringify(parsed)}`);
} catch (e) {
  if (screenshot && page) await page.screenshot({ path: screenshot }).catch(() => {});
  console.error(`explorer.mjs: ${e.message}`);
  if (problems.length && !e.message.includes(problems[0])) console.error(`also seen:\n  ${problems.join('\n  ')}`);
  process.exitCode = 1;
} finally {
  await browser.close().catch(() => {});
  clearTimeout(watchdog);
}
