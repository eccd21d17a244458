// twigate console (docs/console.md). Plain ES module, no dependencies, no
// network beyond this origin. The data comes from twigate's REST API mounted
// under /console/api/2010-04-01 (the browser's Basic login covers it), the
// live list from /console/api/stream (server-sent events), the far end from
// /console/api/sim. Every state-changing request carries X-Twigate-CSRF.
// The DOM is built with createElement/textContent only: no data ever goes
// through innerHTML.

const S = { session: null, calls: new Map(), live: false, view: null, timers: [] };
const STATUSES = ['queued', 'ringing', 'in-progress', 'completed', 'busy', 'failed',
  'no-answer', 'canceled'];
const LIVE = new Set(['queued', 'ringing', 'in-progress']);

// ---- small helpers ----
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}
const $ = (sel) => document.querySelector(sel);
const apiBase = () => S.session.api_base + S.session.account_sid;
const fmtTime = (s) => (s ? new Date(s).toLocaleString() : '—');
const shortTime = (s) => (s ? new Date(s).toLocaleTimeString() : '—');

function toast(msg, bad = true) {
  const t = $('#toast');
  t.textContent = msg;
  t.className = 'toast ' + (bad ? 'bad' : 'good');
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
}

async function get(path) {
  const r = await fetch(path.startsWith('/console/') ? path : apiBase() + path,
    { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.message || `HTTP ${r.status}`);
  return body;
}

// A 403 may be a token from before a restart of twigate (the key is drawn
// at start-up): the session is fetched again and the request retried once.
async function post(path, fields, retried) {
  const r = await fetch(path.startsWith('/console/') ? path : apiBase() + path, {
    method: 'POST', credentials: 'same-origin',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded',
      'X-Twigate-CSRF': S.session.csrf_token, Accept: 'application/json' },
    body: new URLSearchParams(fields || {}).toString(),
  });
  const body = await r.json().catch(() => ({}));
  if (r.status === 403 && !retried) {
    S.session = await get('/console/api/session');
    return post(path, fields, true);
  }
  if (!r.ok) throw new Error(body.message || body.error || `HTTP ${r.status}`);
  return body;
}

// A Twilio list's page URI, as the console serves it.
const consolePath = (uri) => (uri ? '/console/api' + uri : null);

function badge(status) {
  return h('span', { class: 'badge s-' + status }, status);
}

function later(fn, ms) { S.timers.push(setInterval(fn, ms)); }

function pretty(body, type) {
  if (!body) return '';
  if ((type || '').includes('json') || /^\s*[{[]/.test(body)) {
    try { return JSON.stringify(JSON.parse(body), null, 2); } catch (e) { /* as is */ }
  }
  if (/^\s*</.test(body)) return prettyXml(body);
  return body;
}

function prettyXml(xml) {
  const doc = new DOMParser().parseFromString(xml, 'application/xml');
  if (doc.querySelector('parsererror')) return xml;
  const out = [];
  const walk = (node, depth) => {
    const pad = '  '.repeat(depth);
    if (node.nodeType === Node.TEXT_NODE) {
      const t = node.textContent.trim();
      if (t) out.push(pad + t);
      return;
    }
    if (node.nodeType !== Node.ELEMENT_NODE) return;
    const attrs = [...node.attributes].map((a) => ` ${a.name}="${a.value}"`).join('');
    const kids = [...node.childNodes].filter((n) => n.nodeType === Node.ELEMENT_NODE ||
      (n.nodeType === Node.TEXT_NODE && n.textContent.trim()));
    if (!kids.length) out.push(`${pad}<${node.tagName}${attrs}/>`);
    else if (kids.length === 1 && kids[0].nodeType === Node.TEXT_NODE) {
      out.push(`${pad}<${node.tagName}${attrs}>${kids[0].textContent.trim()}</${node.tagName}>`);
    } else {
      out.push(`${pad}<${node.tagName}${attrs}>`);
      kids.forEach((k) => walk(k, depth + 1));
      out.push(`${pad}</${node.tagName}>`);
    }
  };
  walk(doc.documentElement, 0);
  return out.join('\n');
}

// ---- the live stream ----
function connectStream() {
  const es = new EventSource('/console/api/stream');
  const live = $('#live');
  es.onopen = () => { live.textContent = 'live'; live.className = 'live on'; };
  es.onerror = () => { live.textContent = 'reconnecting…'; live.className = 'live off'; };
  es.addEventListener('call', (ev) => {
    const c = JSON.parse(ev.data);
    const old = S.calls.get(c.sid);
    S.calls.set(c.sid, c);
    if (S.view && S.view.onCall) S.view.onCall(c, old);
  });
}

// ---- Calls ----
function callRow(c, fresh) {
  return h('tr', { 'data-sid': c.sid, class: fresh ? 'fresh' : null },
    h('td', null, badge(c.status)),
    h('td', { class: 'nowrap' }, h('a', { href: '#/calls/' + c.sid, class: 'mono' }, c.to_formatted || c.to)),
    h('td', { class: 'mono nowrap hide-narrow' }, c.from_formatted || c.from),
    h('td', null, fmtTime(c.start_time || c.date_created)),
    h('td', { class: 'num hide-narrow' }, c.duration != null ? c.duration + ' s' : '—'),
    h('td', { class: 'hide-narrow' }, c.direction));
}

function viewCalls(params) {
  const q = new URLSearchParams(params);
  const filtered = ['Status', 'To', 'From', 'StartTime>'].some((k) => q.get(k));
  const tbody = h('tbody');
  const empty = h('p', { class: 'muted empty', hidden: true }, 'No calls match.');
  const pager = h('div', { class: 'pager' });
  const form = h('form', { class: 'filters', role: 'search', onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const p = new URLSearchParams();
    for (const [k, v] of f) if (v) p.set(k, v);
    location.hash = '#/calls' + (p.toString() ? '?' + p : '');
  } },
  h('label', null, 'Status', h('select', { name: 'Status' }, h('option', { value: '' }, 'any'),
    STATUSES.map((s) => h('option', { value: s, selected: q.get('Status') === s }, s)))),
  h('label', null, 'To', h('input', { name: 'To', value: q.get('To') || '', placeholder: '+15551234567', inputmode: 'tel' })),
  h('label', null, 'From', h('input', { name: 'From', value: q.get('From') || '', inputmode: 'tel' })),
  h('label', null, 'Started after', h('input', { name: 'StartTime>', type: 'date', value: q.get('StartTime>') || '' })),
  h('button', { type: 'submit' }, 'Filter'),
  filtered ? h('a', { href: '#/calls', class: 'button ghost' }, 'Clear') : null);

  const main = h('section', { 'aria-labelledby': 'calls-h' },
    h('div', { class: 'head' }, h('h1', { id: 'calls-h' }, 'Calls'),
      h('span', { class: 'muted' }, filtered ? 'filtered, newest first, updating live' : 'newest first, updating live')),
    form,
    h('div', { class: 'card flush' }, h('table', { class: 'calls' },
      h('caption', { class: 'sr-only' }, 'Calls, newest first'),
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'To'),
        h('th', { scope: 'col', class: 'hide-narrow' }, 'From'), h('th', { scope: 'col' }, 'Started'),
        h('th', { scope: 'col', class: 'num hide-narrow' }, 'Duration'), h('th', { scope: 'col', class: 'hide-narrow' }, 'Direction'))),
      tbody), empty),
    pager);

  const page = q.get('page');
  const load = async (path) => {
    const list = await get(path);
    tbody.replaceChildren(...list.calls.map((c) => callRow(c)));
    list.calls.forEach((c) => S.calls.set(c.sid, c));
    empty.hidden = list.calls.length > 0;
    pager.replaceChildren(...[
      list.previous_page_uri ? h('a', { class: 'button ghost', href: '#/calls?page=' + encodeURIComponent(list.previous_page_uri) }, '← Newer') : null,
      list.next_page_uri ? h('a', { class: 'button ghost', href: '#/calls?page=' + encodeURIComponent(list.next_page_uri) }, 'Older →') : null,
    ].filter(Boolean));
  };
  const p = new URLSearchParams(q);
  p.delete('page');
  p.set('PageSize', '50');
  load(page ? consolePath(page) : '/Calls.json?' + p).catch((e) => toast(e.message));

  // The stream sends every changed call of the account; a filtered first page
  // keeps the ones its filters would list (the API's: Status, To and From
  // exact, started on or after the date), and drops a row whose call no
  // longer matches (a status filter's call that moved on).
  const matches = (c) => (!q.get('Status') || c.status === q.get('Status')) &&
    (!q.get('To') || c.to === q.get('To')) &&
    (!q.get('From') || c.from === q.get('From')) &&
    (!q.get('StartTime>') || (c.start_time != null && new Date(c.start_time) >= new Date(q.get('StartTime>'))));

  return { node: main, onCall: (c, old) => {
    if (page) return;
    const row = tbody.querySelector(`tr[data-sid="${c.sid}"]`);
    if (filtered && !matches(c)) {
      if (row) row.remove();
      empty.hidden = tbody.rows.length > 0;
      return;
    }
    const changed = !old || old.status !== c.status || old.date_updated !== c.date_updated;
    if (row && !changed) return;
    const fresh = callRow(c, changed);
    if (row) row.replaceWith(fresh);
    else tbody.prepend(fresh);
    empty.hidden = true;
    while (tbody.rows.length > 50) tbody.deleteRow(-1);
  } };
}

// ---- a call's timeline ----
function isKaphila(ev) {
  const p = ev.request.parameters || {};
  return 'callId' in p || (ev.response && ev.response.content_type === 'application/json' &&
    !('CallSid' in p));
}

function exchange(ev, i, sig) {
  const kap = isKaphila(ev);
  const req = ev.request, res = ev.response || {};
  const ok = res.response_code >= 200 && res.response_code < 300;
  const params = Object.entries(req.parameters || {}).filter(([, v]) => v !== '');
  let path = req.url;
  try { path = new URL(req.url).pathname; } catch (e) { /* keep */ }
  return h('li', { class: 'ex ' + (kap ? 'kaphila' : 'webhook') },
    h('details', { open: !kap && i < 2 },
      h('summary', null,
        h('span', { class: 'tag ' + (kap ? 'k' : 'w') }, kap ? 'Kaphila' : 'Webhook'),
        h('span', { class: 'mono path' }, `${req.method} ${kap ? path : req.url}`),
        h('span', { class: 'code ' + (ok ? 'ok' : 'err') }, res.response_code || '—'),
        h('span', { class: 'muted' }, res.request_duration != null ? res.request_duration + ' ms' : ''),
        h('span', { class: 'muted when' }, shortTime(res.date_created))),
      h('div', { class: 'ex-body' },
        h('h4', null, 'Request parameters'),
        params.length ? h('dl', { class: 'params' }, params.map(([k, v]) => [h('dt', null, k), h('dd', { class: 'mono' }, typeof v === 'string' ? v : JSON.stringify(v))]))
          : h('p', { class: 'muted' }, 'none'),
        sig ? h('p', { class: 'sig' }, h('span', { class: 'muted' }, 'X-Twilio-Signature '),
          h('code', { class: 'mono' }, sig)) : null,
        h('h4', null, `Answer ${res.response_code || ''} ${res.content_type || ''}`),
        h('pre', { class: 'code-block' }, pretty(res.response_body, res.content_type) || '(empty)'))));
}

function ladder(c) {
  const steps = [['queued', c.date_created], ['ringing', null],
    ['in-progress', c.start_time], [LIVE.has(c.status) ? 'ends…' : c.status, c.end_time]];
  const order = { queued: 0, ringing: 1, 'in-progress': 2 };
  const at = LIVE.has(c.status) ? order[c.status] : 3;
  return h('ol', { class: 'ladder', 'aria-label': 'Status ladder' }, steps.map(([name, t], i) =>
    h('li', { class: i < at ? 'done' : i === at ? 'now' : 'todo' },
      h('span', { class: 'dot', 'aria-hidden': 'true' }), h('b', null, name),
      h('span', { class: 'muted' }, t ? shortTime(t) : i <= at && i !== 3 ? '' : ''))));
}

function viewCall(sid) {
  const head = h('div', { class: 'head' });
  const ladderBox = h('div');
  const actions = h('div', { class: 'card' });
  const exList = h('ol', { class: 'exchanges', 'aria-live': 'polite' });
  const notes = h('div');
  const recs = h('div');
  const far = h('div');
  const node = h('section', { class: 'call' },
    h('p', null, h('a', { href: '#/calls' }, '← All calls')),
    head, ladderBox,
    h('div', { class: 'grid' },
      h('div', null, h('h2', null, 'Requests and answers'), exList, notes, recs),
      h('div', null, actions, far)));
  let call = null, lastEvents = -1;

  const renderHead = () => {
    head.replaceChildren(h('h1', null, `${call.to_formatted || call.to}`),
      badge(call.status), h('span', { class: 'muted mono sid' }, call.sid),
      h('span', { class: 'muted' }, `from ${call.from_formatted || call.from} · ${call.direction}` +
        (call.duration != null ? ` · ${call.duration} s` : '')));
    ladderBox.replaceChildren(ladder(call));
    renderActions();
  };
  const renderActions = () => {
    const live = LIVE.has(call.status);
    const url = h('input', { id: 'redir-url', type: 'url', placeholder: 'https://example.com/voice' });
    const twiml = h('textarea', { id: 'redir-twiml', rows: 3, placeholder: '<Response><Say>Hello</Say></Response>' });
    const act = (fields, what) => post(`/Calls/${sid}.json`, fields)
      .then((c) => { toast(what, false); S.calls.set(c.sid, c); call = c; renderHead(); })
      .catch((e) => toast(e.message));
    actions.replaceChildren(h('h2', null, 'Actions'), ...(live ? [
        h('button', { class: 'danger', id: 'hangup', onclick: () => act({ Status: call.status === 'in-progress' ? 'completed' : 'canceled' }, 'Hung up') }, 'Hang up'),
        h('label', { for: 'redir-url' }, 'Redirect to a URL'),
        h('div', { class: 'row' }, url, h('button', { onclick: () => url.value && act({ Url: url.value }, 'Redirected') }, 'Redirect')),
        h('label', { for: 'redir-twiml' }, 'Or run this TwiML'),
        twiml, h('button', { onclick: () => twiml.value && act({ Twiml: twiml.value }, 'TwiML sent') }, 'Run TwiML'),
      ] : [h('p', { class: 'muted' }, 'The call has ended.')]));
  };

  const loadEvents = async () => {
    const list = await get(`/Calls/${sid}/Events.json?PageSize=200`);
    if (list.events.length === lastEvents) return;
    const sigs = await get(`/console/api/calls/${sid}/signatures`).catch(() => ({ signatures: [] }));
    lastEvents = list.events.length;
    exList.replaceChildren(...list.events.map((ev, i) => exchange(ev, i, sigs.signatures[i])));
    if (!list.events.length) exList.replaceChildren(h('li', { class: 'muted' }, 'No requests yet.'));
  };
  const loadSide = async () => {
    const [n, r] = await Promise.all([get(`/Calls/${sid}/Notifications.json`),
      get(`/Calls/${sid}/Recordings.json`)]);
    notes.replaceChildren(h('h2', null, 'Notifications'), n.notifications.length
      ? h('ul', { class: 'notes' }, n.notifications.map(noteItem))
      : h('p', { class: 'muted' }, 'None.'));
    recs.replaceChildren(h('h2', null, 'Recordings'), r.recordings.length
      ? h('ul', { class: 'recs' }, r.recordings.map((x) => h('li', null,
        h('span', { class: 'mono' }, x.sid), h('span', { class: 'muted' }, ` ${x.duration ?? '?'} s · ${x.status}`),
        x.status === 'completed' ? h('audio', { controls: true, preload: 'none', src: `${apiBase()}/Recordings/${x.sid}.mp3`, 'aria-label': 'Recording ' + x.sid }) : null)))
      : h('p', { class: 'muted' }, 'None.'));
  };
  const load = async () => {
    call = await get(`/Calls/${sid}.json`);
    S.calls.set(sid, call);
    renderHead();
    await Promise.all([loadEvents(), loadSide()]);
    if (S.session.simulator) far.replaceChildren(farEnd(sid, () => call));
  };
  load().catch((e) => toast(e.message));
  later(() => { if (call && LIVE.has(call.status)) loadEvents().catch(() => {}); }, 1000);
  return { node, onCall: (c) => {
    if (c.sid !== sid || !call) return;
    const ended = LIVE.has(call.status) && !LIVE.has(c.status);
    call = c;
    renderHead();
    loadEvents().catch(() => {});
    if (ended) loadSide().catch(() => {});
  } };
}

// message_text is form-encoded (Msg=…&sourceComponent=…), as on Twilio.
function noteText(t) {
  if (!t) return '';
  try {
    const p = new URLSearchParams(t);
    if (p.get('Msg')) return p.get('Msg') + (p.get('url') ? ` (${p.get('url')})` : '');
  } catch (e) { /* as is */ }
  return t.slice(0, 400);
}

function noteItem(n) {
  return h('li', { class: 'note lvl-' + (n.log === '0' ? 'error' : 'warning') },
    h('span', { class: 'badge ' + (n.log === '0' ? 's-failed' : 's-busy') }, n.log === '0' ? 'error' : 'warning'),
    h('a', { href: n.more_info, rel: 'noopener noreferrer', target: '_blank', class: 'mono' }, n.error_code),
    h('span', { class: 'msg' }, noteText(n.message_text)),
    n.call_sid ? h('a', { href: '#/calls/' + n.call_sid, class: 'mono small' }, ' ' + n.call_sid) : null,
    h('span', { class: 'muted small' }, ' ' + fmtTime(n.date_created)));
}

// ---- the far end: keypad, hang up as the callee, live transcript ----
function farEnd(sid, getCall) {
  const transcript = h('ol', { class: 'transcript', 'aria-live': 'polite', 'aria-label': 'What the caller hears' });
  const sound = h('input', { type: 'checkbox', id: 'sound' });
  let spoken = 0;
  const press = (d) => post(`/console/api/sim/${sid}/digits`, { Digits: d })
    .then(() => toast(`Pressed ${d}`, false)).catch((e) => toast(e.message));
  const keys = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#'];
  const box = h('div', { class: 'card far' },
    h('h2', null, 'The far end'),
    h('p', { class: 'muted small' }, 'You are the callee: press keys, hang up, hear what the caller says.'),
    h('div', { class: 'keypad', role: 'group', 'aria-label': 'Keypad' },
      keys.map((k) => h('button', { class: 'key', 'data-key': k, 'aria-label': 'Press ' + k, onclick: () => press(k) }, k))),
    h('div', { class: 'row' },
      h('button', { class: 'danger', id: 'callee-hangup', onclick: () => post(`/console/api/sim/${sid}/hangup`)
        .then(() => toast('The callee hung up', false)).catch((e) => toast(e.message)) }, 'Hang up as callee'),
      h('label', { class: 'inline', for: 'sound' }, sound, ' Sound (speak aloud)')),
    h('h3', null, 'Transcript'), transcript);
  const load = async () => {
    const t = await get(`/console/api/sim/${sid}`);
    const lines = t.events.filter((e) => ['tts.played', 'play.finished', 'dtmf.received', 'call.answered',
      'call.hangup', 'call.completed', 'gather.completed', 'recording.started'].includes(e.event) || e.body.text);
    transcript.replaceChildren(...lines.map((e) => h('li', { class: 'ev-' + e.event.replace('.', '-') },
      h('span', { class: 'muted mono' }, (e.t_ms / 1000).toFixed(1) + 's '),
      e.body.text ? h('q', null, e.body.text) : e.body.digit ? `pressed ${e.body.digit}` : e.event)));
    const said = t.events.filter((e) => e.event === 'tts.played' && e.body.text);
    if (sound.checked && 'speechSynthesis' in window) {
      said.slice(spoken).forEach((e) => speechSynthesis.speak(new SpeechSynthesisUtterance(e.body.text)));
    }
    spoken = said.length;
  };
  load().catch(() => {});
  later(() => { if (LIVE.has(getCall().status)) load().catch(() => {}); }, 1000);
  return box;
}

function viewFarEnd() {
  const form = h('form', { class: 'card stack', onsubmit: async (e) => {
    e.preventDefault();
    const f = Object.fromEntries(new FormData(form));
    const fields = { To: f.To, From: f.From };
    if (f.kind === 'url') fields.Url = f.Url; else fields.Twiml = f.Twiml;
    try {
      const c = await post('/Calls.json', fields);
      location.hash = '#/calls/' + c.sid;
    } catch (err) { toast(err.message); }
  } },
  h('label', null, 'To', h('input', { name: 'To', required: true, value: '+15551230100', inputmode: 'tel' })),
  h('label', null, 'From', h('input', { name: 'From', required: true, value: '+15005550006', inputmode: 'tel' })),
  h('fieldset', null, h('legend', null, 'What the call runs'),
    h('label', { class: 'inline' }, h('input', { type: 'radio', name: 'kind', value: 'url', checked: true }), ' Voice URL'),
    h('input', { name: 'Url', type: 'url', placeholder: 'https://example.com/voice', 'aria-label': 'Voice URL' }),
    h('label', { class: 'inline' }, h('input', { type: 'radio', name: 'kind', value: 'twiml' }), ' Inline TwiML'),
    h('textarea', { name: 'Twiml', rows: 8, 'aria-label': 'Inline TwiML' },
      '<Response>\n  <Say>Hello from the twigate console.</Say>\n  <Gather numDigits="1" timeout="20">\n    <Say>Press a key.</Say>\n  </Gather>\n  <Say>Goodbye.</Say>\n</Response>')),
  h('p', { class: 'muted small' }, 'A <Gather> in inline TwiML has no URL to send its result to unless you give it an action: the Debugger then shows error 11100.'),
  h('button', { type: 'submit', id: 'place-call' }, 'Place test call'));
  return { node: h('section', null, h('div', { class: 'head' }, h('h1', null, 'Test a call without a phone')),
    S.session.simulator ? [h('p', { class: 'muted' }, 'Places a call on the built-in simulator; its page has the keypad, the callee\'s hang-up and the live transcript.'), form]
      : h('p', { class: 'card' }, 'The far end is available when twigate runs on its built-in simulator (kaphila.url = sim).')) };
}

// ---- Debugger ----
function viewDebugger(params) {
  const q = new URLSearchParams(params);
  const list = h('ul', { class: 'notes' });
  const form = h('form', { class: 'filters', onsubmit: (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) p.set(k, v);
    location.hash = '#/debugger?' + p;
  } },
  h('label', null, 'Level', h('select', { name: 'Log' }, h('option', { value: '' }, 'all'),
    h('option', { value: '0', selected: q.get('Log') === '0' }, 'error'),
    h('option', { value: '1', selected: q.get('Log') === '1' }, 'warning'))),
  h('label', null, 'Code', h('input', { name: 'code', value: q.get('code') || '', inputmode: 'numeric', placeholder: '11200' })),
  h('button', { type: 'submit' }, 'Filter'));
  const p = new URLSearchParams({ PageSize: '200' });
  if (q.get('Log')) p.set('Log', q.get('Log'));
  let shown = null;
  const load = () => get('/Notifications.json?' + p).then((r) => {
    const code = q.get('code');
    const items = r.notifications.filter((n) => !code || n.error_code === code);
    const key = items.map((n) => n.sid).join();
    if (key === shown) return;
    shown = key;
    list.replaceChildren(...(items.length ? items.map(noteItem) : [h('li', { class: 'muted' }, 'No notifications. Errors and warnings from webhooks and TwiML appear here.')]));
  }).catch((e) => toast(e.message));
  load();
  later(load, 3000);   // new notifications appear without a reload
  return { node: h('section', null, h('div', { class: 'head' }, h('h1', null, 'Debugger'),
    h('span', { class: 'muted' }, 'notifications across your calls; each code links to its meaning')), form, h('div', { class: 'card' }, list)) };
}

// ---- Queue and budget ----
// A duration in ms, as a person reads it.
function fmtMs(ms) {
  if (ms == null || ms < 0) return '—';
  if (ms < 1000) return (ms / 1000).toFixed(1) + ' s';
  const s = Math.round(ms / 1000);
  if (s < 60) return s + ' s';
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// The key's figures from GET /console/api/queue (docs/console.md says what
// each means). Each <dd> has an id the browser test reads.
function budgetFigures(key) {
  const b = key.budget;
  const row = (id, label, value, hint) => [h('dt', null, label),
    h('dd', { id, title: hint || null }, value)];
  if (!b) return [row('b-none', 'Budget', 'not started: no Kaphila request on this key yet')];
  const limit = b.limit > 0 ? `${b.limit} per ${fmtMs(b.window_ms)}` : b.limit === 0 ? 'unlimited' : 'asking Kaphila…';
  return [
    row('b-queued', 'Queued calls', String(b.queued_calls), 'created, waiting for their turn and the budget'),
    row('b-oldest', 'Oldest wait', b.queued_calls ? fmtMs(b.oldest_wait_ms) : '—'),
    row('b-used', 'Used', String(b.used), 'requests counted in the current window'),
    row('b-left', 'Left', b.left < 0 ? 'unlimited' : String(b.left)),
    row('b-limit', 'Limit', limit),
    row('b-live', 'Live calls', String(b.live), 'dialled calls holding a reserve for their commands and hang-up'),
    row('b-waiting', 'Commands waiting', String(b.waiting_commands), 'hang-ups and live calls\' commands waiting for a slot'),
    // The engine's own figure (docs/kaphila.md): a new call is dialled only
    // while more is left than this.
    row('b-reserve', 'Reserved', String(b.reserved), 'kept for live calls to finish: 2 per live call plus the commands waiting; new calls are dialled only while Left exceeds it'),
    row('b-credits', 'Credits', b.credits < 0 ? 'unknown' : String(b.credits)),
    row('b-state', 'Dialling', b.paused ? 'paused: out of credits (402)' : b.closed_ms > 0 ? `closed by a 429 for ${fmtMs(b.closed_ms)}` : 'open'),
    row('b-429', '429s received', String(b.received_429), 'refusals from Kaphila since twigate started'),
  ];
}

function viewQueue() {
  const tbody = h('tbody');
  const count = h('p', { id: 'q-count', class: 'muted' }, 'Loading…');
  const figures = h('dl', { class: 'params budget' }, h('dt', null, 'Budget'), h('dd', null, '…'));
  const keyNote = h('p', { class: 'muted' });
  const updated = h('p', { class: 'muted small' });
  // A light poll while this panel is shown (route() clears it): the figures
  // are the engine's, published every second.
  const load = () => {
    if (document.hidden) return;
    get('/console/api/queue').then((r) => {
      const q = r.queue;
      tbody.replaceChildren(...(q.calls.length ? q.calls.map((c, i) => h('tr', { 'data-sid': c.sid },
        h('td', { class: 'num' }, String(i + 1)),
        h('td', null, h('a', { href: '#/calls/' + c.sid, class: 'mono' }, c.to)),
        h('td', { class: 'mono' }, c.from),
        h('td', null, shortTime(c.date_created)),
        h('td', { class: 'num' }, fmtMs(c.wait_ms))))
        : [h('tr', null, h('td', { colspan: 5, class: 'muted' }, 'None of your calls is waiting.'))]));
      count.textContent = !q.complete ? `More than ${q.count} of your calls are queued; the list shows ${q.calls.length} of them, not necessarily the oldest.`
        : q.count > q.calls.length ? `${q.count} of your calls are queued; the ${q.calls.length} next to be dialled are listed.`
          : `${q.count} of your calls ${q.count === 1 ? 'is' : 'are'} queued.`;
      if (!r.key) {
        figures.replaceChildren(h('dt', null, 'Budget'), h('dd', null, 'this account has no Kaphila key'));
        keyNote.textContent = '';
      } else {
        figures.replaceChildren(...budgetFigures(r.key).flat());
        keyNote.textContent = `Key ${r.key.label} (a label: the first 8 hex digits of the key's SHA-256, as in /metrics). ` +
          (r.key.accounts > 1 ? `This key is shared by ${r.key.accounts} accounts: the budget and its queue are theirs together, the list above shows your calls only.`
            : 'The budget is this key\'s own.');
      }
      updated.textContent = 'Updated ' + new Date(r.now_ms).toLocaleTimeString() + ' · every 2 s while this page is open';
    }).catch((e) => toast(e.message));
  };
  load();
  later(load, 2000);
  // Asked once per visit: each ask is a request to Kaphila with your key.
  const me = h('dl', { class: 'params credits' }, h('dt', null, 'Kaphila'), h('dd', null, '…'));
  get('/console/api/kaphila/me').then((m) => me.replaceChildren(
    h('dt', null, 'Credits'), h('dd', { id: 'credits' }, String(m.credits ?? '—')),
    h('dt', null, 'Calls (answered)'), h('dd', null, `${m.totalCalls ?? '—'} (${m.successfulCalls ?? '—'})`),
    h('dt', null, 'Rate limit'), h('dd', null, m.rateLimit === 0 ? 'unlimited' : m.rateLimit != null ? `${m.rateLimit} per window` : '—'),
    h('dt', null, 'Key name'), h('dd', null, m.name || '—')))
    .catch((e) => me.replaceChildren(h('dt', null, 'Kaphila'), h('dd', null, 'unavailable: ' + e.message)));
  return { node: h('section', null, h('div', { class: 'head' }, h('h1', null, 'Queue & budget')),
    h('div', { class: 'grid' },
      h('div', null, h('div', { class: 'card flush' }, h('table', { class: 'queue' }, h('caption', null, 'Your queued calls, next to be dialled first'),
        h('thead', null, h('tr', null, h('th', { scope: 'col', class: 'num' }, '#'), h('th', { scope: 'col' }, 'To'),
          h('th', { scope: 'col' }, 'From'), h('th', { scope: 'col' }, 'Created'), h('th', { scope: 'col', class: 'num' }, 'Waiting'))), tbody)),
      count),
      h('div', null, h('div', { class: 'card' }, h('h2', null, 'Request budget'), figures, keyNote, updated),
        h('div', { class: 'card' }, h('h2', null, 'Kaphila account'), h('p', { class: 'muted small' }, 'From Kaphila\'s /api/me, asked once per visit.'), me)))) };
}

// ---- routing ----
function route() {
  $('#toast').hidden = true;
  S.timers.forEach(clearInterval);
  S.timers = [];
  const [path, query] = location.hash.replace(/^#/, '').split('?');
  const parts = path.split('/').filter(Boolean);
  let v;
  if (parts[0] === 'calls' && parts[1]) v = viewCall(parts[1]);
  else if (parts[0] === 'debugger') v = viewDebugger(query);
  else if (parts[0] === 'queue') v = viewQueue();
  else if (parts[0] === 'farend') v = viewFarEnd();
  else v = viewCalls(query);
  S.view = v;
  const sect = parts[0] || 'calls';
  document.querySelectorAll('nav a').forEach((a) => {
    if (a.dataset.nav === sect) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
  const main = $('#main');
  main.replaceChildren(v.node);
  document.title = `${sect[0].toUpperCase() + sect.slice(1)} · twigate console`;
}

async function start() {
  try {
    S.session = await get('/console/api/session');
  } catch (e) {
    $('#main').replaceChildren(h('p', { class: 'card' }, 'Not signed in: reload the page and log in with your Account SID and auth token (or an API key).'));
    return;
  }
  $('#account').textContent = S.session.friendly_name;
  $('#account').title = S.session.account_sid;
  window.addEventListener('hashchange', route);
  route();
  connectStream();
}

start();
