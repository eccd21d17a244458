// The console's Queue & budget panel in a real browser: Debian's chromium
// driven by npm puppeteer-core, run by
// tests/integration/test_console_budget.py::test_queue_panel_in_chromium.
//
//   node console_budget_test.js BASE A_SID A_TOKEN QUEUED_SIDS LIMIT
//   env CHROMIUM (default /usr/bin/chromium), SCREENSHOTS (a directory; empty = none)
//
// QUEUED_SIDS (comma-separated, creation order) are account A's calls
// waiting on a key allowed LIMIT requests per window, whose budget is all
// taken. Logs in as A, opens the panel and waits until it lists exactly
// those calls in that order and the budget figures show them (queued count,
// the limit, used/left, a wait), then checks the page live-updates (a
// canceled call leaves the list without a reload). Exits 0 and prints
// "console_budget_test: OK" only when every step passed.
const path = require('path');
const puppeteer = require('puppeteer-core');

const [BASE, A_SID, A_TOKEN, SIDS, LIMIT] = process.argv.slice(2);
if (!LIMIT) {
  console.error('usage: node console_budget_test.js BASE A_SID A_TOKEN QUEUED_SIDS LIMIT');
  process.exit(2);
}
const QUEUED = SIDS.split(',');
const SHOTS = process.env.SCREENSHOTS || '';
const STEP_MS = 20000;

function step(name) { console.log('console_budget_test: ' + name); }

const text = (page, sel) => page.$eval(sel, (el) => el.textContent);

async function main() {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
      '--lang=en-US'],
  });
  const outside = [];
  const errors = [];
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 820 });
    page.on('request', (r) => { if (!r.url().startsWith(BASE) && !r.url().startsWith('data:')) outside.push(r.url()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });

    step('log in as A and open Queue & budget');
    await page.authenticate({ username: A_SID, password: A_TOKEN });
    await page.goto(BASE + '/console/#/queue', { waitUntil: 'load' });

    step('the queued calls, next to be dialled first');
    await page.waitForFunction((sids) => {
      const rows = [...document.querySelectorAll('table.queue tr[data-sid]')];
      return rows.length === sids.length && rows.every((r, i) => r.dataset.sid === sids[i]);
    }, { timeout: STEP_MS }, QUEUED);
    const count = await text(page, '#q-count');
    if (!count.startsWith(`${QUEUED.length} of your calls`)) throw new Error('count line: ' + count);

    step('the budget figures');
    await page.waitForFunction((n) => document.querySelector('#b-queued') &&
      document.querySelector('#b-queued').textContent === String(n), { timeout: STEP_MS }, QUEUED.length);
    const limit = await text(page, '#b-limit');
    if (!limit.startsWith(`${LIMIT} per `)) throw new Error('limit shown: ' + limit);
    const used = Number(await text(page, '#b-used'));
    const left = Number(await text(page, '#b-left'));
    if (!(used >= 1 && left === Number(LIMIT) - used)) throw new Error(`used ${used}, left ${left}`);
    const oldest = await text(page, '#b-oldest');
    if (!/ s$/.test(oldest)) throw new Error('oldest wait: ' + oldest);
    if (await text(page, '#b-state') !== 'open') throw new Error('dialling state: ' + await text(page, '#b-state'));
    const html = await page.content();
    if (html.includes('ak_')) throw new Error('the page shows a Kaphila key');
    // The first row's wait grows while it waits (the panel refreshes by itself).
    const w0 = await page.$eval('table.queue tr[data-sid] td:last-child', (el) => el.textContent);
    await page.waitForFunction((w) => document.querySelector('table.queue tr[data-sid] td:last-child').textContent !== w,
      { timeout: STEP_MS }, w0);
    if (SHOTS) await page.screenshot({ path: path.join(SHOTS, 'queue.png') });

    step('a canceled call leaves the list without a reload');
    const st = await page.evaluate(async (acct, sid) => {
      const s = await (await fetch('/console/api/session')).json();
      const r = await fetch(`/console/api/2010-04-01/Accounts/${acct}/Calls/${sid}.json`, {
        method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'X-Twigate-CSRF': s.csrf_token },
        body: 'Status=canceled' });
      return r.status;
    }, A_SID, QUEUED[0]);
    if (st !== 200) throw new Error('cancel answered ' + st);
    await page.waitForFunction((sids) => {
      const rows = [...document.querySelectorAll('table.queue tr[data-sid]')];
      return rows.length === sids.length && rows.every((r, i) => r.dataset.sid === sids[i]);
    }, { timeout: STEP_MS }, QUEUED.slice(1));
    await page.waitForFunction((n) => document.querySelector('#b-queued').textContent === String(n),
      { timeout: STEP_MS }, QUEUED.length - 1);

    step('a narrow window');
    await page.setViewport({ width: 390, height: 780 });
    await page.waitForSelector('#b-queued', { visible: true, timeout: STEP_MS });

    if (outside.length) throw new Error('requests left the origin: ' + outside.join(', '));
    if (errors.length) throw new Error('page errors: ' + errors.join('; '));
    console.log('console_budget_test: OK');
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error('console_budget_test: FAILED: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
