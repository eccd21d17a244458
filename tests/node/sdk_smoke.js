// Smoke test of the official twilio-node SDK (npm twilio@6.2.0) against a
// running twigate. Run by tests/integration/test_node_sdk.py, which starts
// the daemon and passes:
//   BASE_URL     http://127.0.0.1:PORT of twigate
//   ACCOUNT_SID  AC... of a configured account
//   AUTH_TOKEN   its auth token
//   FROM_NUMBER  optional, default +15005550006
// Exits 0 when every check passed; prints the failing check and exits 1 otherwise.
'use strict';

const assert = require('node:assert/strict');
const http = require('node:http');
const twilio = require('twilio');

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`sdk_smoke: environment variable ${name} is required`);
    process.exit(2);
  }
  return v;
}

const BASE_URL = need('BASE_URL');
const ACCOUNT_SID = need('ACCOUNT_SID');
const AUTH_TOKEN = need('AUTH_TOKEN');
const FROM = process.env.FROM_NUMBER || '+15005550006';
const TERMINAL = new Set(['completed', 'busy', 'failed', 'no-answer', 'canceled']);
const LIVE_TWIML = '<Response><Pause length="600"/></Response>';
const HANGUP_TWIML = '<Response><Hangup/></Response>';

const used = new Set();
function freshNumber() {
  // +1415 + 3 digits + 4 digits in 1000..9999: never a simulator outcome suffix
  for (;;) {
    const mid = 200 + Math.floor(Math.random() * 800);
    const last = 1000 + Math.floor(Math.random() * 9000);
    const n = `+1415${mid}${last}`;
    if (!used.has(n)) { used.add(n); return n; }
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(fn, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(30);
  }
}

async function waitForStatus(client, sid, statuses, timeoutMs = 10000) {
  const want = new Set(statuses);
  const seen = [];
  try {
    return await waitFor(async () => {
      const c = await client.calls(sid).fetch();
      if (seen[seen.length - 1] !== c.status) seen.push(c.status);
      return want.has(c.status) ? c : null;
    }, timeoutMs, `${sid} to reach ${[...want]}`);
  } catch (e) {
    throw new Error(`${e.message}; statuses seen: ${seen}`);
  }
}

// A webhook receiver: records every request and validates its signature with
// the SDK's own twilio.validateRequest.
async function startReceiver(token) {
  const received = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const url = `http://127.0.0.1:${server.address().port}${req.url}`;
      const params = req.method === 'POST' ? Object.fromEntries(new URLSearchParams(body)) : {};
      const signature = req.headers['x-twilio-signature'] || '';
      received.push({
        method: req.method, url, params, signature, headers: req.headers,
        valid: twilio.validateRequest(token, signature, url, params),
      });
      res.writeHead(200, { 'Content-Type': 'text/xml' });
      res.end('<Response/>');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    server,
    received,
    url: (p) => `http://127.0.0.1:${server.address().port}${p}`,
  };
}

async function expectRestException(promise, status, code) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof twilio.RestException, `not a RestException: ${err}`);
    assert.equal(err.status, status, `status of ${err.message}`);
    assert.equal(err.code, code, `code of ${err.message}`);
    assert.equal(err.moreInfo, `https://www.twilio.com/docs/errors/${code}`);
    assert.equal(typeof err.message, 'string');
    return err;
  }
  throw new Error(`expected RestException ${status}/${code}, the call succeeded`);
}

async function main() {
  const client = twilio(ACCOUNT_SID, AUTH_TOKEN);
  client.api.baseUrl = BASE_URL;
  const rx = await startReceiver(AUTH_TOKEN);
  const step = (name) => console.log(`sdk_smoke: ${name}`);

  try {
    // -- create, fetch
    step('create');
    const to = freshNumber();
    const call = await client.calls.create({
      to, from: FROM, twiml: LIVE_TWIML,
      statusCallback: rx.url('/status'),
      statusCallbackEvent: ['initiated', 'ringing', 'answered', 'completed'],
    });
    assert.match(call.sid, /^CA[0-9a-fA-F]{32}$/);
    assert.equal(call.accountSid, ACCOUNT_SID);
    assert.equal(call.status, 'queued');
    assert.equal(call.direction, 'outbound-api');
    assert.equal(call.to, to);
    assert.equal(call.from, FROM);
    assert.ok(call.dateCreated instanceof Date && !isNaN(call.dateCreated), 'dateCreated');

    step('fetch');
    const fetched = await client.calls(call.sid).fetch();
    assert.equal(fetched.sid, call.sid);
    assert.equal(fetched.toFormatted, `(${to.slice(2, 5)}) ${to.slice(5, 8)}-${to.slice(8)}`);

    // -- update Status=completed on the live call
    step('update status=completed');
    await waitForStatus(client, call.sid, ['in-progress']);
    await client.calls(call.sid).update({ status: 'completed' });
    const done = await waitForStatus(client, call.sid, TERMINAL);
    assert.equal(done.status, 'completed');
    assert.match(done.duration, /^\d+$/);
    assert.ok(done.endTime instanceof Date);

    // -- the status callbacks twigate sent validate with twilio.validateRequest
    step('status callbacks');
    await waitFor(() => rx.received.some((r) => r.params.CallSid === call.sid
                                         && r.params.CallStatus === 'completed'),
                  10000, 'the completed status callback');
    const mine = rx.received.filter((r) => r.params.CallSid === call.sid);
    const statuses = mine
      .sort((a, b) => Number(a.params.SequenceNumber) - Number(b.params.SequenceNumber))
      .map((r) => r.params.CallStatus);
    assert.deepEqual(statuses, ['initiated', 'ringing', 'in-progress', 'completed']);
    for (const r of mine) {
      assert.equal(r.method, 'POST');
      assert.ok(r.signature, 'X-Twilio-Signature missing');
      assert.ok(r.valid, `twilio.validateRequest rejected ${r.url} ${JSON.stringify(r.params)}`);
      assert.equal(r.headers['user-agent'], 'TwilioProxy/1.1');
      // the validator is not a rubber stamp: tampering or the wrong token fails
      assert.equal(twilio.validateRequest(AUTH_TOKEN, r.signature, r.url,
                                          { ...r.params, CallStatus: 'forged' }), false);
      assert.equal(twilio.validateRequest('0'.repeat(32), r.signature, r.url, r.params), false);
    }

    // -- remove
    step('remove');
    assert.equal(await client.calls(call.sid).remove(), true);
    await expectRestException(client.calls(call.sid).fetch(), 404, 20404);

    // -- list / each / page across pages
    step('paging');
    const pagedTo = freshNumber();
    const created = [];
    for (let i = 0; i < 3; i++) {
      created.push((await client.calls.create({ to: pagedTo, from: FROM, twiml: HANGUP_TWIML })).sid);
    }
    for (const sid of created) await waitForStatus(client, sid, TERMINAL);
    const newestFirst = [...created].reverse();

    const listed = await client.calls.list({ to: pagedTo, pageSize: 2 });
    assert.deepEqual(listed.map((c) => c.sid), newestFirst);

    const eached = [];
    await client.calls.each({ to: pagedTo, pageSize: 2 }, (c) => { eached.push(c.sid); });
    assert.deepEqual(eached, newestFirst);

    const limited = await client.calls.list({ to: pagedTo, limit: 2 });
    assert.equal(limited.length, 2);

    const page0 = await client.calls.page({ to: pagedTo, pageSize: 2 });
    assert.deepEqual(page0.instances.map((c) => c.sid), newestFirst.slice(0, 2));
    const page1 = await page0.nextPage();
    assert.ok(page1, 'no second page');
    assert.deepEqual(page1.instances.map((c) => c.sid), newestFirst.slice(2));
    assert.equal(page1.nextPage(), undefined, 'a third page after the last');

    // -- validation errors surface as RestException
    step('validation error');
    await expectRestException(
      client.calls.create({ to: 'not-a-number', from: FROM, twiml: HANGUP_TWIML }), 400, 21211);

    // -- wrong credentials
    step('auth error');
    const bad = twilio(ACCOUNT_SID, '0'.repeat(32));
    bad.api.baseUrl = BASE_URL;
    await expectRestException(bad.calls(created[0]).fetch(), 401, 20003);

    console.log('sdk_smoke: OK');
  } finally {
    rx.server.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error('sdk_smoke: FAILED');
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
  },
);
