// decnet-events console. Served as /console.js under a CSP that forbids
// inline script, inline style and eval: keep it that way (text goes in with
// textContent, never parsed as markup; no style attributes; no string-to-code).
//
// One page holds one or two streams (the `also` selector: DECNET's
// AttackerDetail holds the attacker and identities streams at once), each in
// its own panel with its own ticket, reconnect loop and counters.
//
// Token handling: the JWT lives in this page's memory and is sent only as a
// Bearer header to POST /api/v1/auth/sse-ticket; streams are opened with the
// single-use ticket. It is written to localStorage only while "remember token
// on this device" is ticked (rememberToken, the one write), never logged and
// never put in a URL this page requests.
(() => {
  'use strict';
  const API = '/api/v1';
  const TOKEN_KEY = 'decnet-events.remembered-token';
  // Written by earlier versions of the console (the token unasked): removed.
  const LEGACY_KEYS = ['decnet-events.token', 'decnet-events.attacker', 'decnet-events.extra'];
  const MAX_ROWS = 500;
  const MAX_LOG_ROWS = 200;
  const BACKOFF_MAX_MS = 15000;
  // A stream still not open after this long is most likely queued by the
  // browser (HTTP/1.1: six connections per server, each open stream holds one).
  const SLOW_OPEN_MS = 8000;
  // Names every stream may send besides its own; `error` is handled apart.
  const COMMON = ['snapshot', 'resync', 'message'];
  const BADGE = {
    snapshot: 'b-snap', resync: 'b-warn', error: 'b-bad', console: '', observation: 'b-obs',
    'fingerprint.rotated': 'b-fp', 'attacker.scored': 'b-score', 'attribution.state_changed': 'b-attr',
    'attribution.multi_actor_suspected': 'b-multi', formed: 'b-attr', merged: 'b-score', unmerged: 'b-fp',
    'mutation.failed': 'b-bad', 'mutation.applied': 'b-attr', status: 'b-score', 'message/logs': 'b-obs',
    'message/stats': 'b-score', 'message/histogram': 'b-fp', 'message/error': 'b-bad',
  };

  // ---------- small helpers ----------
  const enc = encodeURIComponent;
  function compact(v) {
    if (v === undefined) return '';
    try { return JSON.stringify(v); } catch (_) { return String(v); }
  }
  function str(v) {
    if (v === null || v === undefined) return '';
    return typeof v === 'string' ? v : compact(v);
  }
  function fixed(v, digits) { return typeof v === 'number' ? v.toFixed(digits) : str(v); }
  function plural(n, one, many) { return `${n} ${n === 1 ? one : (many || one + 's')}`; }
  function isoTs(ts) {
    if (ts === null || ts === undefined || ts === '') return '';
    let ms = NaN;
    if (typeof ts === 'number' || (typeof ts === 'string' && /^\d+(\.\d+)?$/.test(ts))) {
      const n = Number(ts);
      ms = n < 1e11 ? n * 1000 : n;                       // epoch seconds or milliseconds
    } else if (typeof ts === 'string') {
      let s = ts.trim().replace(' ', 'T');
      if (/T\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(s)) s += 'Z'; // naive timestamps are UTC
      ms = Date.parse(s);
    }
    if (!Number.isFinite(ms)) return String(ts);
    try { return new Date(ms).toISOString(); } catch (_) { return String(ts); }
  }
  function localTime(d) {
    const p = (n, w) => String(n).padStart(w, '0');
    return `${p(d.getHours(), 2)}:${p(d.getMinutes(), 2)}:${p(d.getSeconds(), 2)}.${p(d.getMilliseconds(), 3)}`;
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function parse(data) {
    try { return JSON.parse(data); } catch (_) { return null; }
  }
  function obj(v) { return v && typeof v === 'object' ? v : {}; }
  function yesNo(v) { return v === true ? 'yes' : v === false ? 'no' : str(v); }

  // ---------- the six streams ----------
  // key: the path parameter (or the logs search), null for the kind-wide streams.
  // names: the event names the kind sends (DECNET's dashboard listens to these).
  // columns: [header, cell(row), class?] of the snapshot table.
  const KINDS = {
    attacker: {
      about: 'one attacker: observations, fingerprints, scores, attribution',
      key: { label: 'attacker uuid', placeholder: '00000000-0000-0000-0000-000000000000', required: true },
      path: (k) => `/attackers/${enc(k)}/events`,
      names: ['observation', 'fingerprint.rotated', 'attacker.scored', 'attribution.state_changed',
        'attribution.multi_actor_suspected'],
      rows: (d) => d.observations,
      meta: (d, n) => `${str(d.attacker_uuid) || '?'} · ${plural(n, 'observation')}`,
      columns: [
        ['primitive', (o) => str(o.primitive)],
        ['value', (o) => compact(o.value), 'v'],
        ['confidence', (o) => fixed(o.confidence, 3), 'n'],
        ['ts (UTC)', (o) => isoTs(o.ts)],
        ['source', (o) => str(o.source)],
      ],
    },
    identities: {
      about: 'every identity: formed, linked, merged, assigned to campaigns',
      key: null,
      path: () => '/identities/events',
      names: ['formed', 'observation.linked', 'merged', 'unmerged', 'campaign.assigned'],
      rows: (d) => d.identities,
      meta: (d, n) => `${plural(n, 'identity', 'identities')} (newest first)`,
      columns: [
        ['uuid', (r) => str(r.uuid)],
        ['campaign', (r) => str(r.campaign_id)],
        ['confidence', (r) => fixed(r.confidence, 3), 'n'],
        ['observations', (r) => str(r.observation_count), 'n'],
        ['last seen (UTC)', (r) => isoTs(r.last_seen_at)],
        ['updated (UTC)', (r) => isoTs(r.updated_at)],
        ['notes', (r) => str(r.notes)],
      ],
    },
    campaigns: {
      about: 'every campaign: formed, identities assigned, merged',
      key: null,
      path: () => '/campaigns/events',
      names: ['formed', 'identity.assigned', 'merged', 'unmerged'],
      rows: (d) => d.campaigns,
      meta: (d, n) => `${plural(n, 'campaign')} (newest first)`,
      columns: [
        ['uuid', (r) => str(r.uuid)],
        ['confidence', (r) => fixed(r.confidence, 3), 'n'],
        ['identities', (r) => str(r.identity_count), 'n'],
        ['first seen (UTC)', (r) => isoTs(r.first_seen_at)],
        ['last seen (UTC)', (r) => isoTs(r.last_seen_at)],
        ['notes', (r) => str(r.notes)],
      ],
    },
    orchestrator: {
      about: 'the orchestrator: traffic, files, emails between deckies',
      key: null,
      path: () => '/orchestrator/events/stream',
      names: ['traffic', 'file', 'email'],
      rows: (d) => d.events,
      meta: (d, n) => `${plural(n, 'event')} (newest first)`,
      columns: [
        ['ts (UTC)', (r) => isoTs(r.ts)],
        ['kind', (r) => str(r.kind)],
        ['protocol', (r) => str(r.protocol)],
        ['action', (r) => str(r.action)],
        ['src', (r) => str(r.src_decky_uuid)],
        ['dst', (r) => str(r.dst_decky_uuid)],
        ['success', (r) => yesNo(r.success), (r) => (r.success === true ? 'ok' : r.success === false ? 'bad' : '')],
        ['payload', (r) => str(r.payload), 'v'],
      ],
    },
    topology: {
      about: 'one MazeNET topology: status, mutations, deckies',
      key: { label: 'topology id', placeholder: 'c0ffee00-5eed-4a11-9e55-70b0109ee001', required: true },
      path: (k) => `/topologies/${enc(k)}/events`,
      names: ['mutation.enqueued', 'mutation.applying', 'mutation.applied', 'mutation.failed', 'status',
        'decky.service_added', 'decky.service_removed', 'decky.state'],
      rows: (d) => d.in_flight,
      meta: (d, n) => `${str(d.topology_id) || '?'} · status ${str(d.status) || '?'} · ${plural(n, 'mutation')} in flight`,
      columns: [
        ['id', (r) => str(r.id)],
        ['op', (r) => str(r.op)],
        ['state', (r) => str(r.state)],
        ['requested (UTC)', (r) => isoTs(r.requested_at)],
        ['reason', (r) => str(r.reason)],
        ['payload', (r) => str(r.payload), 'v'],
      ],
    },
    logs: {
      about: 'logs, stats and histogram (DECNET\'s /stream)',
      key: { label: 'search (optional)', placeholder: 'text, or column:value (service:ssh)', required: false },
      path: () => '/stream',
      names: [],
      logs: true,
      columns: [
        ['id', (r) => str(r.id), 'n'],
        ['timestamp (UTC)', (r) => isoTs(r.timestamp)],
        ['decky', (r) => str(r.decky)],
        ['service', (r) => str(r.service)],
        ['event', (r) => str(r.event_type)],
        ['attacker ip', (r) => str(r.attacker_ip)],
        ['line', (r) => str(r.msg || r.raw_line), 'v'],
      ],
    },
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $('form'), kind: $('kind'), key: $('key'), keyname: $('keyname'), token: $('token'), extra: $('extra'),
    also: $('also'), alsokey: $('alsokey'), alsokeyname: $('alsokeyname'),
    show: $('show'), remember: $('remember'), disconnect: $('disconnect'), forget: $('forget'),
    subtitle: $('subtitle'), panels: $('panels'), paneltpl: $('paneltpl'),
    prompt: $('prompt'), prompttext: $('prompttext'), promptuse: $('promptuse'), promptdiscard: $('promptdiscard'),
  };

  let pendingToken = '';       // a token from another origin's link, awaiting the user's answer

  // ---------- the two stream pickers and their panels ----------
  // A picker is a kind selector and its key field; the second may pick no kind.
  // keys: the key field's value per kind, kept while another kind is shown.
  const pickers = [
    { kind: ui.kind, key: ui.key, keyname: ui.keyname, keys: {}, shown: '' },
    { kind: ui.also, key: ui.alsokey, keyname: ui.alsokeyname, keys: {}, shown: '' },
  ];

  // A panel shows one stream: its state, counters, snapshot and live events.
  // The panel element carries data-state (idle|connecting|open|retry|error|closed)
  // and data-live-events (live frames since Connect) for tests and tools.
  function makePanel(n) {
    const root = ui.paneltpl.content.firstElementChild.cloneNode(true);
    root.id = `panel${n + 1}`;
    root.dataset.panel = String(n + 1);
    const part = (name) => root.querySelector(`[data-part="${name}"]`);
    const p = {
      n, root, status: part('status'), counters: part('counters'), snaptitle: part('snaptitle'),
      snapmeta: part('snapmeta'), notice: part('notice'), snaphead: part('snaphead'), snapbody: part('snapbody'),
      events: part('events'), clear: part('clear'),
      session: null,           // the panel's active connection attempt chain, or null
      counts: new Map(),       // frames received by event name
      live: 0,                 // live frames (not snapshot, resync, error) since Connect
      reconnects: 0,
      pendingNotice: '',       // resync notice shown with the snapshot that follows it
      logRows: [],             // the logs kind's rows, newest first
      logStats: null,
    };
    p.clear.addEventListener('click', () => p.events.replaceChildren());
    p.events.addEventListener('click', (e) => {
      const row = e.target instanceof Element ? e.target.closest('.row') : null;
      if (row) row.classList.toggle('open');
    });
    ui.panels.appendChild(root);
    return p;
  }
  const panels = [makePanel(0), makePanel(1)];
  const main = panels[0];
  const NOT_LIVE = new Set(['snapshot', 'resync', 'error']);

  // ---------- token storage (opt-in only) ----------
  function storedToken() {
    try { return localStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; }
  }
  // The only write to localStorage, and only while the user has ticked the box.
  function rememberToken(token) {
    if (!ui.remember.checked || !token) return;
    try { localStorage.setItem(TOKEN_KEY, token); } catch (_) { /* storage unavailable */ }
  }
  function forgetStoredToken() {
    try {
      localStorage.removeItem(TOKEN_KEY);
      for (const k of LEGACY_KEYS) localStorage.removeItem(k);
    } catch (_) { /* storage unavailable */ }
  }
  function currentToken() { return ui.token.value.trim().replace(/^Bearer\s+/i, ''); }

  // ---------- status, counters, event log ----------
  // state: idle | connecting | open | retry (a reconnect is scheduled)
  //        | error (stopped; a retry would not help) | closed (stopped by the user)
  function setStatus(p, text, state) {
    p.status.textContent = text;
    p.root.dataset.state = state;
  }
  function count(p, name) {
    p.counts.set(name, (p.counts.get(name) || 0) + 1);
    if (!NOT_LIVE.has(name)) {
      p.live += 1;
      p.root.dataset.liveEvents = String(p.live);
    }
    renderCounters(p);
  }
  function resetCounts(p) {
    p.counts.clear();
    p.live = 0;
    p.reconnects = 0;
    p.root.dataset.liveEvents = '0';
  }
  function renderCounters(p) {
    const chips = [];
    const chip = (label, value) => {
      const c = el('span', 'chip', label + ' ');
      c.appendChild(el('b', '', String(value)));
      chips.push(c);
    };
    chip('live events', p.live);
    for (const [name, n] of p.counts) chip(name, n);
    chip('reconnects', p.reconnects);
    if (p.session && p.session.lastId) chip('last id', p.session.lastId);
    p.counters.replaceChildren(...chips);
  }
  function log(p, name, id, data, title) {
    const row = el('div', 'row');
    const t = el('span', 't', localTime(new Date()));
    if (title) t.title = title;
    const text = typeof data === 'string' ? data : compact(data);
    row.append(t, el('span', 'badge ' + (BADGE[name] || ''), name), el('span', 'id', id || ''), el('span', 'p', text));
    p.events.insertBefore(row, p.events.firstChild);
    while (p.events.childElementCount > MAX_ROWS) p.events.lastElementChild.remove();
  }

  // ---------- the snapshot panel ----------
  function setHead(p, kind) {
    p.snaphead.replaceChildren(...KINDS[kind].columns.map(([h]) => el('th', '', h)));
  }
  function renderTable(p, kind, rows, emptyText) {
    const cols = KINDS[kind].columns;
    const trs = rows.map((r) => {
      r = obj(r);
      const tr = el('tr');
      for (const [, cell, cls] of cols) {
        const text = cell(r);
        const td = el('td', typeof cls === 'function' ? cls(r) : (cls || ''), text);
        td.title = text;
        tr.appendChild(td);
      }
      return tr;
    });
    if (!trs.length) {
      const td = el('td', 'dim', emptyText);
      td.colSpan = cols.length;
      const tr = el('tr');
      tr.appendChild(td);
      trs.push(tr);
    }
    p.snapbody.replaceChildren(...trs);
  }
  // kind: the panel's kind, or '' for none (the second panel is then hidden).
  function resetPanel(p, kind) {
    p.root.hidden = !kind;
    p.root.dataset.kind = kind;
    p.notice.hidden = true;
    p.logRows = [];
    p.logStats = null;
    p.snapbody.replaceChildren();
    if (!kind) { p.snaphead.replaceChildren(); return; }
    const k = KINDS[kind];
    p.snaptitle.textContent = (k.logs ? 'Logs' : 'Snapshot') + (p.n ? ' · ' + kind : '');
    p.snapmeta.textContent = k.logs ? 'waiting for stats and logs' : 'no snapshot yet';
    setHead(p, kind);
  }
  function showNotice(p) {
    p.notice.textContent = p.pendingNotice;
    p.notice.hidden = !p.pendingNotice;
    p.pendingNotice = '';
  }
  function renderSnapshot(p, kind, d) {
    const k = KINDS[kind];
    d = obj(d);
    const raw = k.rows(d);
    const rows = Array.isArray(raw) ? raw : [];
    renderTable(p, kind, rows, 'no rows');
    p.snapmeta.textContent = `${k.meta(d, rows.length)} · received ${localTime(new Date())}`;
    showNotice(p);
    return rows.length;
  }
  function renderLogs(p) {
    const s = obj(p.logStats);
    const stats = p.logStats
      ? `${s.total_logs ?? '?'} logs · ${s.unique_attackers ?? '?'} attackers · ${s.active_deckies ?? '?'}/${s.deployed_deckies ?? '?'} deckies active`
      : 'no stats yet';
    p.snapmeta.textContent = `${stats} · ${plural(p.logRows.length, 'row')} shown (newest ${MAX_LOG_ROWS} kept) · ${localTime(new Date())}`;
    renderTable(p, 'logs', p.logRows, 'no log rows yet');
  }
  function onLogsMessage(p, d, id) {
    const type = typeof d.type === 'string' ? d.type : '?';
    const name = 'message/' + type;
    count(p, name);
    if (type === 'stats') {
      p.logStats = d.data;
      renderLogs(p);
      log(p, name, id, d.data);
    } else if (type === 'logs') {
      const rows = Array.isArray(d.data) ? d.data.map(obj) : [];
      const seen = new Set(rows.map((r) => r.id));
      p.logRows = rows.concat(p.logRows.filter((r) => !seen.has(r.id)))
        .sort((a, b) => (Number(b.id) || 0) - (Number(a.id) || 0))
        .slice(0, MAX_LOG_ROWS);
      renderLogs(p);
      showNotice(p);
      log(p, name, id, `${plural(rows.length, 'row')}: ${compact(d.data)}`);
    } else if (type === 'histogram') {
      const buckets = Array.isArray(d.data) ? d.data : [];
      const total = buckets.reduce((n, b) => n + (Number(obj(b).count) || 0), 0);
      log(p, name, id, `${plural(buckets.length, 'bucket')}, ${total} in all: ${compact(d.data)}`);
    } else {
      log(p, name, id, d);
    }
  }

  // ---------- the form ----------
  // Show `kind` ('' for none, second picker only) in picker i.
  function showKind(i, kind) {
    const pk = pickers[i];
    if (pk.shown) pk.keys[pk.shown] = pk.key.value;
    pk.shown = kind;
    pk.kind.value = kind;
    const k = kind ? KINDS[kind] : null;
    if (i === 0) ui.subtitle.textContent = k.about;
    pk.keyname.textContent = !k ? 'no second stream' : k.key ? k.key.label : 'no key (kind-wide stream)';
    pk.key.placeholder = k && k.key ? k.key.placeholder : '';
    pk.key.disabled = !(k && k.key);
    pk.key.value = k && k.key ? (pk.keys[kind] || '') : '';
    if (!panels[i].session) resetPanel(panels[i], kind);
  }
  // What picker i asks for: {kind, key}, null for none, or {missing: label}.
  function wanted(i) {
    const pk = pickers[i];
    const kind = pk.kind.value;
    if (!Object.prototype.hasOwnProperty.call(KINDS, kind)) return null;
    const k = KINDS[kind];
    const key = k.key ? pk.key.value.trim() : '';
    if (k.key && k.key.required && !key) return { kind, key, missing: (i ? 'second stream: ' : '') + k.key.label };
    return { kind, key };
  }
  function extraNames() {
    return ui.extra.value.split(',').map((x) => x.trim()).filter((x) => x && !/[\r\n]/.test(x));
  }
  // The fragment mirrors the streams shown (never the token), so a reload reopens them.
  function writeFragment(first, second) {
    const f = new URLSearchParams();
    f.set('kind', first.kind);
    if (first.key) f.set('key', first.key);
    if (second) {
      f.set('also', second.kind);
      if (second.key) f.set('alsokey', second.key);
    }
    if (ui.extra.value.trim()) f.set('events', extraNames().join(','));
    try { history.replaceState(null, '', location.pathname + location.search + '#' + f.toString()); } catch (_) { /* ignore */ }
  }

  // ---------- connection lifecycle ----------
  function closeEs(s) {
    if (s && s.es) { s.es.close(); s.es = null; }
  }
  function teardown(s) {
    if (!s) return;
    closeEs(s);
    if (s.ctl) { s.ctl.abort(); s.ctl = null; }
    clearTimeout(s.timer);
    clearTimeout(s.slow);
    clearInterval(s.tick);
  }
  function isCurrent(s) { return s === s.panel.session; }
  function syncButtons() { ui.disconnect.disabled = !panels.some((p) => p.session); }
  // Stop panel p's stream; state 'error' (nothing will retry) or 'closed' (the user's doing).
  function stop(p, reason, state) {
    teardown(p.session);
    p.session = null;
    syncButtons();
    setStatus(p, 'stopped: ' + reason, state || 'error');
    renderCounters(p);
  }
  function stopAll(reason, state) {
    for (const p of panels) if (p.session || !p.root.hidden) stop(p, reason, state);
  }

  // byUser: a click or Enter (the token may be remembered); otherwise a link opened the page.
  function connect(byUser) {
    const token = currentToken();
    const first = wanted(0);
    const second = wanted(1);
    for (const p of panels) { teardown(p.session); p.session = null; }
    if (!second) resetPanel(panels[1], '');
    if (!token) { stopAll('a JWT is required'); ui.token.focus(); return; }
    for (const [i, want] of [first, second].entries()) {
      if (want && want.missing) {
        stopAll(`${want.missing} is required`);
        pickers[i].key.focus();
        return;
      }
    }
    if (byUser) rememberToken(token);
    writeFragment(first, second);
    const extra = extraNames();
    [first, second].forEach((want, i) => { if (want) start(panels[i], token, want, extra); });
    syncButtons();
  }

  function start(p, token, want, extra) {
    const { kind, key } = want;
    const k = KINDS[kind];
    const names = [...new Set([...COMMON, ...k.names, ...extra])].filter((n) => n !== 'error' && n !== 'open');
    resetCounts(p);
    p.pendingNotice = '';
    resetPanel(p, kind);
    p.session = { panel: p, token, kind, key, names, es: null, ctl: null, timer: 0, tick: 0, slow: 0, attempt: 0, lastId: '', prevId: '', opened: false };
    renderCounters(p);
    log(p, 'console', '', `opening ${kind}${key ? ' ' + key : ''}`);
    open(p.session);
  }

  async function mint(s) {
    s.ctl = new AbortController();
    let res;
    try {
      res = await fetch(API + '/auth/sse-ticket', {
        method: 'POST', cache: 'no-store', credentials: 'same-origin', signal: s.ctl.signal,
        headers: { Authorization: 'Bearer ' + s.token },
      });
    } catch (_) {
      throw Object.assign(new Error('network error'), { fatal: false });
    }
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON */ }
    s.ctl = null;
    if (res.ok && body && typeof body.ticket === 'string' && body.ticket) return body.ticket;
    throw Object.assign(new Error(`${res.status} ${detailOf(res, body)}`), { fatal: res.status === 401 || res.status === 403 });
  }
  function detailOf(res, body) {
    if (body && body.detail !== undefined) return str(body.detail);
    return res.statusText || 'unexpected response';
  }

  // The stream's URL: the ticket, the key, and where to resume. Never the token.
  function streamUrl(s, ticket) {
    const q = new URLSearchParams();
    q.set('ticket', ticket);
    if (KINDS[s.kind].logs) {
      if (s.key) q.set('search', s.key);
      if (s.lastId) q.set('lastEventId', s.lastId);
    } else if (s.lastId) {
      q.set('last_event_id', s.lastId);
    }
    return API + KINDS[s.kind].path(s.key) + '?' + q.toString();
  }

  // A ticket, or false after stopping or scheduling a retry.
  async function ticketFor(s) {
    try {
      return await mint(s);
    } catch (err) {
      if (!isCurrent(s)) return false;                 // disconnected meanwhile
      if (err.fatal) stop(s.panel, 'ticket refused (' + err.message + '); paste a valid token and Connect');
      else retry(s, 'ticket request failed (' + err.message + ')');
      return false;
    }
  }

  // The page's own protocol ('h2', 'http/1.1'), '' when the browser does not say.
  function pageProtocol() {
    try { return str((performance.getEntriesByType('navigation')[0] || {}).nextHopProtocol); } catch (_) { return ''; }
  }
  // Say so when a stream does not open: the browser queues it without an error.
  function watchSlowOpen(s, what) {
    clearTimeout(s.slow);
    s.slow = setTimeout(() => {
      if (!isCurrent(s) || s.opened) return;
      const h1 = /^http\/1/.test(pageProtocol());
      setStatus(s.panel, `connecting: ${what} still pending after ${SLOW_OPEN_MS / 1000}s` + (h1
        ? ' (this page uses HTTP/1.1, where the browser opens at most 6 connections to this server and each open' +
          ' stream, in any tab, holds one: close some, or serve decnet-events over HTTPS, which multiplexes them on one)'
        : ''), 'connecting');
    }, SLOW_OPEN_MS);
  }

  async function open(s) {
    const p = s.panel;
    setStatus(p, 'connecting (requesting ticket)', 'connecting');
    watchSlowOpen(s, 'the ticket request');
    const ticket = await ticketFor(s);
    if (!ticket || !isCurrent(s)) return;
    setStatus(p, 'connecting', 'connecting');
    watchSlowOpen(s, 'the stream request');
    s.opened = false;
    s.prevId = '';
    const es = new EventSource(streamUrl(s, ticket));
    s.es = es;
    es.addEventListener('open', () => {
      if (!isCurrent(s)) return;
      s.opened = true;
      clearTimeout(s.slow);
      s.attempt = 0;                                     // backoff resets after a successful open
      setStatus(p, `live: ${s.kind}${s.key ? ' ' + s.key : ''}`, 'open');
      if (s.lastId) log(p, 'console', '', `connected, resuming after id ${s.lastId}`);
    });
    for (const name of s.names) es.addEventListener(name, (e) => onFrame(s, name, e));
    es.addEventListener('error', (e) => onError(s, e));
  }

  function onFrame(s, name, e) {
    if (!isCurrent(s)) return;
    const p = s.panel;
    // EventSource repeats the last id on frames that carry none: show an id only when it is new.
    const id = e.lastEventId && e.lastEventId !== s.prevId ? e.lastEventId : '';
    s.prevId = e.lastEventId;
    if (e.lastEventId) s.lastId = e.lastEventId;
    const d = parse(e.data);
    if (name === 'message' && KINDS[s.kind].logs && d && typeof d === 'object' && !Array.isArray(d)) {
      onLogsMessage(p, d, id);
      return;
    }
    count(p, name);
    if (name === 'snapshot' && !KINDS[s.kind].logs) {
      const n = renderSnapshot(p, s.kind, d);
      log(p, name, id, plural(n, 'row'));
    } else if (name === 'resync') {
      const dd = obj(d);
      p.pendingNotice = `resynced: ${dd.dropped ?? '?'} frames dropped` + (dd.reason ? ` (${dd.reason})` : '') + ` at ${localTime(new Date())}`;
      log(p, name, id, d === null ? e.data : d);
    } else if (d && typeof d === 'object' && !Array.isArray(d)) {
      const title = [d.topic && 'topic ' + d.topic, d.type && 'type ' + d.type, d.ts && 'ts ' + isoTs(d.ts)]
        .filter(Boolean).join(' · ');
      log(p, name, id, d, title);
    } else {
      log(p, name, id, d === null ? String(e.data) : d);
    }
  }

  function onError(s, e) {
    if (!isCurrent(s)) return;
    clearTimeout(s.slow);
    if (e instanceof MessageEvent) {                    // a server-sent `event: error`
      count(s.panel, 'error');
      const d = obj(parse(e.data));
      const msg = typeof d.message === 'string' ? d.message : String(e.data);
      log(s.panel, 'error', '', msg);
      // The server ends the stream after it: reconnect now, with a fresh ticket
      // (a token that expired or was revoked gets its ticket refused, and that stops).
      closeEs(s);
      retry(s, msg === 'Session expired' ? 'session expired' : `stream error (${msg})`);
      return;
    }
    // Transport error: never let EventSource retry with the spent ticket.
    const opened = s.opened;
    closeEs(s);
    if (opened) retry(s, 'disconnected');
    else diagnose(s);
  }

  // The stream failed before it opened, and EventSource does not say why: ask
  // once with fetch (a fresh ticket) to tell a refusal (404, 422...) from an outage.
  async function diagnose(s) {
    setStatus(s.panel, 'stream did not open, checking why', 'retry');
    const ticket = await ticketFor(s);
    if (!ticket || !isCurrent(s)) return;
    s.ctl = new AbortController();
    let res;
    try {
      res = await fetch(streamUrl(s, ticket), {
        cache: 'no-store', credentials: 'same-origin', signal: s.ctl.signal, headers: { Accept: 'text/event-stream' },
      });
    } catch (_) {
      s.ctl = null;
      if (isCurrent(s)) retry(s, 'stream unreachable');
      return;
    }
    if (res.ok) {
      s.ctl.abort();                                      // it opens now: let EventSource have it
      s.ctl = null;
      if (isCurrent(s)) retry(s, 'stream closed before it opened');
      return;
    }
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON */ }
    s.ctl = null;
    if (!isCurrent(s)) return;
    const why = `${res.status} ${detailOf(res, body)}`;
    if (res.status === 429 || res.status >= 500) retry(s, `stream refused (${why})`);
    else stop(s.panel, `stream refused (${why})`);
  }

  function retry(s, why) {
    const p = s.panel;
    const delay = Math.min(1000 * 2 ** Math.min(s.attempt, 4), BACKOFF_MAX_MS);
    s.attempt += 1;
    clearTimeout(s.slow);
    const at = Date.now() + delay;
    const show = () => setStatus(p, `${why}, reconnecting in ${Math.max(1, Math.ceil((at - Date.now()) / 1000))}s`, 'retry');
    show();
    clearInterval(s.tick);
    clearTimeout(s.timer);
    s.tick = setInterval(show, 250);
    s.timer = setTimeout(() => {
      clearInterval(s.tick);
      if (!isCurrent(s)) return;
      p.reconnects += 1;
      renderCounters(p);
      open(s);                                           // always with a freshly minted ticket
    }, delay);
  }

  // ---------- a token from another origin's link ----------
  function askAbout(token, why) {
    pendingToken = token;
    ui.prompttext.textContent = `${why} Use that token only if you trust the link ` +
      '(it is not stored unless you tick "remember").';
    ui.prompt.hidden = false;
    ui.promptdiscard.focus();
  }
  function answer(use) {
    const token = pendingToken;
    pendingToken = '';
    ui.prompt.hidden = true;
    if (!use) { log(main, 'console', '', 'token from the link discarded'); return; }
    ui.token.value = token;
    connect(true);
  }

  // ---------- wiring ----------
  ui.form.addEventListener('submit', (e) => { e.preventDefault(); connect(true); });
  ui.kind.addEventListener('change', () => showKind(0, ui.kind.value));
  ui.also.addEventListener('change', () => showKind(1, ui.also.value));
  ui.promptuse.addEventListener('click', () => answer(true));
  ui.promptdiscard.addEventListener('click', () => answer(false));
  ui.disconnect.addEventListener('click', () => stopAll('disconnected by user', 'closed'));
  ui.remember.addEventListener('change', () => {
    if (ui.remember.checked) {
      rememberToken(currentToken());
      log(main, 'console', '', 'the token will be remembered on this device (untick or Forget to remove it)');
    } else {
      forgetStoredToken();
      log(main, 'console', '', 'the remembered token was removed from this device');
    }
  });
  ui.forget.addEventListener('click', () => {
    forgetStoredToken();
    ui.remember.checked = false;
    ui.token.value = '';
    if (pendingToken) answer(false);
    for (const p of panels) if (p.session) stop(p, 'token forgotten', 'closed'); // they held the token for their reconnects
    log(main, 'console', '', 'token forgotten (cleared from this page and from this device)');
  });
  ui.show.addEventListener('change', () => { ui.token.type = ui.show.checked ? 'text' : 'password'; });

  // The origin of the page whose link opened this one: '' when none is known.
  function referrerOrigin() {
    if (!document.referrer) return '';
    try { return new URL(document.referrer).origin; } catch (_) { return 'an unknown page'; }
  }

  // Read the fragment (#token=..&kind=..&key=..&also=..&alsokey=..&events=..,
  // or #token=..&attacker=..): prefill the form, drop the token from the address
  // bar, and decide whether to connect. foreign: the token must be confirmed first.
  function intake(foreign) {
    const frag = new URLSearchParams(location.hash.replace(/^#/, ''));
    const fragToken = (frag.get('token') || '').trim();
    const known = (k) => Object.prototype.hasOwnProperty.call(KINDS, k);
    let kind = frag.get('kind');
    let key = frag.get('key');
    if (!known(kind)) kind = null;
    if (!kind && frag.get('attacker')) { kind = 'attacker'; key = frag.get('attacker'); }
    if (!kind && frag.get('topology')) { kind = 'topology'; key = frag.get('topology'); }
    const also = known(frag.get('also')) ? frag.get('also') : (frag.has('also') ? '' : null);
    if (frag.has('token')) {
      frag.delete('token');
      const rest = frag.toString();
      try { history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : '')); } catch (_) { /* ignore */ }
    }
    if (frag.has('events')) ui.extra.value = frag.get('events') || '';
    if (kind) {
      showKind(0, kind);
      if (key !== null && KINDS[kind].key) ui.key.value = key;
    }
    if (also !== null) {
      showKind(1, also);
      const alsoKey = frag.get('alsokey');
      if (also && alsoKey !== null && KINDS[also].key) ui.alsokey.value = alsoKey;
    }
    const second = wanted(1);
    const ready = kind && !wanted(0).missing && !(second && second.missing);
    if (fragToken && foreign) {
      askAbout(fragToken, foreign);
    } else if (fragToken) {
      ui.token.value = fragToken;
      if (ready) connect(false);                         // a pasted demo link starts streaming at once
    } else if (ready && !foreign && currentToken()) {
      connect(false);                                    // a reload with a remembered token
    }
  }

  try { for (const k of LEGACY_KEYS) localStorage.removeItem(k); } catch (_) { /* storage unavailable */ }
  ui.remember.checked = Boolean(storedToken());
  ui.token.value = storedToken();
  showKind(0, 'attacker');
  showKind(1, '');
  for (const p of panels) renderCounters(p);
  const from = referrerOrigin();
  intake(from && from !== location.origin ? `This page was opened from a link on ${from} that carries a token.` : '');
  // A later fragment change may come from a page holding a reference to this
  // window (no reload, the referrer unchanged): always confirm its token.
  window.addEventListener('hashchange', () => intake('The address changed after this page loaded, and it carries a token.'));
})();
