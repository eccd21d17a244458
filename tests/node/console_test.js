// The web console in a real browser: Debian's chromium driven by npm
// puppeteer-core (no browser download), run by
// tests/integration/test_console.py::test_console_in_chromium.
//
//   node console_test.js BASE A_SID A_TOKEN B_SID B_TOKEN VOICE_URL
//   env CHROMIUM (default /usr/bin/chromium), SCREENSHOTS (a directory; empty = none)
//
// Logs in as account A with the browser's Basic prompt, places a call with
// the official twilio-node SDK and waits for it to appear in the list
// without a reload (SSE), opens its timeline and finds its webhook exchange,
// presses 5 on the far end's keypad and waits for the <Gather> action
// request (VOICE_URL answers a Gather whose action is /gathered), checks
// that a POST without the CSRF token is refused, hangs up from the page,
// sees a call join a filtered list (Status=in-progress) and leave it live,
// then logs in as account B and sees none of it. Exits 0 and prints
// "console_test: OK" only when every step passed.
const path = require('path');
const puppeteer = require('puppeteer-core');
const twilio = require('twilio');

const [BASE, A_SID, A_TOKEN, B_SID, B_TOKEN, VOICE_URL] = process.argv.slice(2);
if (!VOICE_URL) {
  console.error('usage: node console_test.js BASE A_SID A_TOKEN B_SID B_TOKEN VOICE_URL');
  process.exit(2);
}
const SHOTS = process.env.SCREENSHOTS || '';
const STEP_MS = 20000;   // a generous bound for one step on a loaded machine

async function shot(page, name) {
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, name + '.png') });
}

function step(name) { console.log('console_test: ' + name); }

async function main() {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
      '--lang=en-US'],
  });
  const outside = [];
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 820 });
    // Any request that leaves this origin is a failure (no CDNs, no fonts).
    page.on('request', (r) => { if (!r.url().startsWith(BASE) && !r.url().startsWith('data:')) outside.push(r.url()); });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    // Chrome reports the expected 403 of the CSRF check as a failed load; that is not a page error.
    page.on('console', (m) => { if (m.type() === 'error' && !m.text().includes('Failed to load resource')) errors.push(m.text()); });

    step('log in as A');
    await page.authenticate({ username: A_SID, password: A_TOKEN });
    await page.goto(BASE + '/console/', { waitUntil: 'load' });
    await page.waitForFunction(() => document.querySelector('#live').textContent === 'live', { timeout: STEP_MS });

    step('a call created through the SDK appears live');
    const client = twilio(A_SID, A_TOKEN);
    client.api.baseUrl = BASE;
    const call = await client.calls.create({ to: '+14155550123', from: '+15005550006', url: VOICE_URL });
    await page.waitForSelector(`tr[data-sid="${call.sid}"]`, { timeout: STEP_MS });
    await page.waitForFunction((sid) => {
      const row = document.querySelector(`tr[data-sid="${sid}"]`);
      return row && row.textContent.includes('in-progress');
    }, { timeout: STEP_MS }, call.sid);
    await shot(page, 'calls');

    step('its timeline shows the webhook exchange');
    await page.click(`tr[data-sid="${call.sid}"] a`);
    await page.waitForFunction((url) => [...document.querySelectorAll('.ex.webhook summary')]
      .some((s) => s.textContent.includes(url)), { timeout: STEP_MS }, VOICE_URL);
    const gatherShown = await page.$eval('.ex.webhook .code-block', (el) => el.textContent);
    if (!gatherShown.includes('<Gather')) throw new Error('the TwiML answer is not shown: ' + gatherShown);
    const sig = await page.$eval('.ex.webhook .sig code', (el) => el.textContent);
    if (!/^[A-Za-z0-9+/]{27}=$/.test(sig)) throw new Error('no X-Twilio-Signature shown: ' + sig);

    step('the keypad presses 5 and the <Gather> action request appears');
    await page.waitForSelector('.key[data-key="5"]', { timeout: STEP_MS });
    // The prompt must have been played (the Gather is listening) before a key counts.
    await page.waitForFunction(() => document.querySelector('.transcript') &&
      document.querySelector('.transcript').textContent.includes('Press a key'), { timeout: STEP_MS });
    await page.click('.key[data-key="5"]');
    await page.waitForFunction(() => [...document.querySelectorAll('.ex.webhook summary')]
      .some((s) => s.textContent.includes('/gathered')), { timeout: STEP_MS });
    await shot(page, 'timeline');

    step('a state change without the CSRF token is refused');
    const refused = await page.evaluate(async (sid, acct) => {
      const r = await fetch(`/console/api/2010-04-01/Accounts/${acct}/Calls/${sid}.json`, {
        method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: 'Status=completed' });
      return r.status;
    }, call.sid, A_SID);
    if (refused !== 403) throw new Error('POST without the CSRF token answered ' + refused);

    step('hang up from the page');
    await page.click('#hangup');
    await page.waitForFunction(() => document.querySelector('.call .head .badge') &&
      document.querySelector('.call .head .badge').textContent === 'completed', { timeout: STEP_MS });

    step('place a test call with inline TwiML from the far end page');
    await page.goto(BASE + '/console/#/farend', { waitUntil: 'load' });
    await page.waitForSelector('#place-call', { timeout: STEP_MS });
    await page.click('input[name="kind"][value="twiml"]');
    await shot(page, 'farend');
    await page.click('#place-call');
    await page.waitForFunction(() => /^#\/calls\/CA/.test(location.hash), { timeout: STEP_MS });
    const sid2 = await page.evaluate(() => location.hash.slice('#/calls/'.length));
    await page.waitForFunction(() => document.querySelector('.transcript') &&
      document.querySelector('.transcript').textContent.includes('Press a key.'), { timeout: STEP_MS });
    await page.click('.key[data-key="1"]');
    await page.waitForFunction(() => document.querySelector('#toast').textContent === 'Pressed 1',
      { timeout: STEP_MS });

    step('the debugger shows its 11100 (a <Gather> with no action), linked to the call');
    await page.goto(BASE + '/console/#/debugger', { waitUntil: 'load' });
    await page.waitForFunction((sid) => [...document.querySelectorAll('.notes li')].some((li) =>
      li.textContent.includes('11100') && li.querySelector(`a[href="#/calls/${sid}"]`)),
    { timeout: STEP_MS }, sid2);
    await shot(page, 'debugger');

    // The panel on a rate-limited key, with its screenshot, is console_budget_test.js.
    step('the queue page shows the credits from Kaphila and the key\'s unlimited budget');
    await page.goto(BASE + '/console/#/queue', { waitUntil: 'load' });
    await page.waitForFunction(() => document.querySelector('#credits') &&
      /^[0-9.]+$/.test(document.querySelector('#credits').textContent), { timeout: STEP_MS });
    await page.waitForFunction(() => document.querySelector('#b-limit') &&
      document.querySelector('#b-limit').textContent === 'unlimited' &&
      document.querySelector('#b-left').textContent === 'unlimited', { timeout: STEP_MS });

    step('a narrow window');
    await page.setViewport({ width: 390, height: 780 });
    await page.goto(BASE + '/console/#/calls', { waitUntil: 'load' });
    await page.waitForSelector(`tr[data-sid="${call.sid}"]`, { timeout: STEP_MS });
    await shot(page, 'narrow');

    step('a filtered list updates live too: a call joins it and leaves it');
    await page.setViewport({ width: 1280, height: 820 });
    await page.goto(BASE + '/console/#/calls?Status=in-progress', { waitUntil: 'load' });
    await page.waitForFunction(() => document.querySelector('#calls-h') &&
      document.querySelector('.head .muted').textContent.includes('updating live'), { timeout: STEP_MS });
    const live = await client.calls.create({ to: '+14155550124', from: '+15005550006', url: VOICE_URL });
    await page.waitForSelector(`tr[data-sid="${live.sid}"]`, { timeout: STEP_MS });
    await client.calls(live.sid).update({ status: 'completed' });
    await page.waitForFunction((sid) => !document.querySelector(`tr[data-sid="${sid}"]`),
      { timeout: STEP_MS }, live.sid);

    step('account B sees none of it');
    const ctx = await browser.createBrowserContext();
    const pb = await ctx.newPage();
    await pb.setViewport({ width: 1280, height: 600 });
    await pb.authenticate({ username: B_SID, password: B_TOKEN });
    await pb.goto(BASE + '/console/', { waitUntil: 'load' });
    await pb.waitForFunction(() => document.querySelector('#live').textContent === 'live', { timeout: STEP_MS });
    await pb.waitForSelector('.calls tbody', { timeout: STEP_MS });
    const seenByB = await pb.evaluate((sid) => document.body.innerHTML.includes(sid), call.sid);
    if (seenByB) throw new Error("account B's console shows A's call");
    const st = await pb.evaluate(async (sid, acct) => (await fetch(
      `/console/api/2010-04-01/Accounts/${acct}/Calls/${sid}/Events.json`)).status, call.sid, A_SID);
    if (st !== 401 && st !== 404) throw new Error("B fetched A's call events: " + st);
    const sim = await pb.evaluate(async (sid) => (await fetch(`/console/api/sim/${sid}`)).status, call.sid);
    if (sim !== 404) throw new Error("B read A's transcript: " + sim);
    await ctx.close();

    if (outside.length) throw new Error('requests left the origin: ' + outside.join(', '));
    if (errors.length) throw new Error('page errors: ' + errors.join('; '));
    console.log('console_test: OK');
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error('console_test: FAILED: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
