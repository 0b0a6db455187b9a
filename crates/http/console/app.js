// The Once web console: one page, hash routes, built from the JSON endpoints of
// docs/design/console.md. No framework and no build step, so the broker can embed this file as it is.
//
// # Layout
// - helpers: DOM building (text only: record contents are untrusted, so nothing goes through
//   innerHTML), number and time formatting
// - api: fetch wrapper turning problem documents into ApiError, the error banner
// - settings: poll interval and hanging threshold (hash query, else localStorage)
// - router: hash parsing, one `view` per page so that a page's timers die with it
// - pages: overview, topics, topic, records, groups, transactions, reports
// - charts: rates between two polls, fsync mean/p99 from histogram buckets, SVG line charts
// - values: JSON pretty printing that keeps number literals (linear, bounded in depth and length,
//   never throwing: a record is untrusted), hex dumps
//
// One file past the house's ~800 lines on purpose: the broker serves exactly three embedded files
// and there is no build step to join modules; the sections above stand in for them.
'use strict';

// ---------------------------------------------------------------------------------------------
// helpers

const SVG_NS = 'http://www.w3.org/2000/svg';

// el('td', {class: 'num', testid: 'lag'}, 'text', node, …): attributes are set one by one and
// children appended as text nodes, so a record's bytes can never become markup.
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attributes);
  appendChildren(node, children);
  return node;
}

function svg(tag, attributes, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttributes(node, attributes);
  appendChildren(node, children);
  return node;
}

function setAttributes(node, attributes) {
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'testid') node.setAttribute('data-testid', value);
    else if (name === 'on') for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
}

function appendChildren(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const dash = '—';

function formatCount(n) {
  return n === null || n === undefined ? dash : Number(n).toLocaleString('en-US');
}

function formatBytes(n) {
  if (n === null || n === undefined) return dash;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = Number(n);
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function formatDuration(ms) {
  if (ms === null || ms === undefined) return dash;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

// Kafka timestamps may be -1 (none) or anything a producer chose, so an invalid Date is shown as
// the number rather than throwing.
function formatTime(ms) {
  if (ms === null || ms === undefined) return dash;
  const date = new Date(ms);
  if (ms < 0 || Number.isNaN(date.getTime())) return String(ms);
  return date.toISOString().replace('T', ' ').replace('Z', ' UTC');
}

function badge(text, kind, testid) {
  return el('span', {class: `badge ${kind || ''}`.trim(), testid}, text);
}

function mono(text) {
  return el('span', {class: 'mono'}, text);
}

function table(headers, rows, attributes) {
  return el('table', attributes || {},
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', typeof h === 'string' ? {} : h.attrs, typeof h === 'string' ? h : h.text)))),
    el('tbody', {}, rows));
}

function empty(text) {
  return el('p', {class: 'empty'}, text);
}

// ---------------------------------------------------------------------------------------------
// api

class ApiError extends Error {
  constructor(status, title, detail, type) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.type = type;
  }
}

// Every endpoint answers JSON or a problem document (RFC 9457); anything else (a proxy's HTML
// error page, a dropped connection) still becomes an ApiError with what can be said about it.
async function api(path, options) {
  let response;
  try {
    response = await fetch(path, Object.assign({headers: {Accept: 'application/json'}}, options || {}));
  } catch (error) {
    throw new ApiError(0, 'Cannot reach the broker', `${path}: ${error.message}`);
  }
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (response.ok) {
    if (body === null) throw new ApiError(response.status, 'Not JSON', `${path} did not answer JSON`);
    return body;
  }
  const problem = body && typeof body === 'object' ? body : {};
  throw new ApiError(response.status, problem.title || response.statusText, problem.detail, problem.type);
}

function describeError(error) {
  if (!(error instanceof ApiError)) return `Unexpected error: ${error && error.message ? error.message : error}`;
  if (error.status === 401) {
    return 'Not logged in (401): log in with your Once user name and password when the browser asks, '
      + `or reload the page if the prompt was dismissed. ${error.detail || ''}`.trim();
  }
  const head = error.status ? `${error.status} ${error.title || ''}`.trim() : error.title;
  return error.detail ? `${head}: ${error.detail}` : head;
}

// One banner for the page. A background poll names itself as the banner's owner so that its
// next success takes down its own error, and never one that a person still has to read.
const banner = {
  owner: null,
  node: () => document.getElementById('banner'),
  show(error, owner) {
    const node = this.node();
    node.replaceChildren(el('strong', {}, 'Error. '), describeError(error));
    node.hidden = false;
    this.owner = owner || null;
  },
  clear() {
    const node = this.node();
    node.replaceChildren();
    node.hidden = true;
    this.owner = null;
  },
  clearFrom(owner) {
    if (this.owner === owner) this.clear();
  },
};

// ---------------------------------------------------------------------------------------------
// settings

const DEFAULT_POLL_MS = 2000;
const DEFAULT_HANGING_AFTER_MS = 60000;

// A setting comes from the hash query first (a link can carry it), then localStorage (the page
// remembers it), then the default. Values that are not positive integers are ignored.
function setting(query, name, fallback) {
  for (const raw of [query.get(name), readStorage(name)]) {
    const value = Number(raw);
    if (raw !== null && raw !== '' && Number.isSafeInteger(value) && value > 0) return value;
  }
  return fallback;
}

// localStorage can throw (disabled storage); a setting then simply is not remembered.
function readStorage(name) {
  try { return window.localStorage.getItem(name); } catch (_) { return null; }
}

function writeStorage(name, value) {
  try { window.localStorage.setItem(name, String(value)); } catch (_) { /* not remembered */ }
}

// Below 200 ms the page would mostly measure its own polling.
function pollMs(query) {
  return Math.max(200, setting(query, 'pollMs', DEFAULT_POLL_MS));
}

function hangingAfterMs(query) {
  return setting(query, 'hanging_after_ms', DEFAULT_HANGING_AFTER_MS);
}

// ---------------------------------------------------------------------------------------------
// router

// Never throws: a hash is whatever someone typed or pasted, and route() reports what cannot be read
// inside its try (the banner), so `error` carries a malformed percent-escape there. A segment that
// does not decode is kept as typed. Everything after the first "?" is the query, "?"s included.
function parseHash() {
  const hash = window.location.hash.replace(/^#/, '') || '/';
  const at = hash.indexOf('?');
  const path = at < 0 ? hash : hash.slice(0, at);
  const search = at < 0 ? '' : hash.slice(at + 1);
  let error = null;
  const parts = path.split('/').filter((p) => p !== '').map((segment) => {
    try {
      return decodeURIComponent(segment);
    } catch (_) {
      error = error || new ApiError(400, 'Malformed link', `"${segment}" in the address is not valid percent-encoding`);
      return segment;
    }
  });
  return {parts, query: new URLSearchParams(search), error};
}

function hashFor(parts, query) {
  const path = '#/' + parts.map((p) => encodeURIComponent(p)).join('/');
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== '') params.set(name, value);
  }
  const search = params.toString();
  return search ? `${path}?${search}` : path;
}

// Setting the same hash fires no hashchange, yet the user asked to load again.
function navigate(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

// A view lives while its page is shown: timers registered through it stop when the route changes,
// and `alive` tells an await that came back late not to touch a page that is gone.
class View {
  constructor() {
    this.alive = true;
    this.timers = new Set();
  }
  after(ms, task) {
    const timer = window.setTimeout(() => { this.timers.delete(timer); if (this.alive) task(); }, ms);
    this.timers.add(timer);
  }
  close() {
    this.alive = false;
    for (const timer of this.timers) window.clearTimeout(timer);
    this.timers.clear();
  }
}

let currentView = null;
// Counts routes rendered, so that a test (or a person in devtools) can tell a fresh render from the
// page before it: main[data-render] changes, then main[data-state] says loading → ready or error.
let renders = 0;

function main() {
  return document.getElementById('main');
}

function show(view, ...content) {
  if (!view.alive) return;
  main().replaceChildren(...content.flat(Infinity));
  main().dataset.state = 'ready';
}

async function route() {
  if (currentView) currentView.close();
  const view = new View();
  currentView = view;
  const {parts, query, error: hashError} = parseHash();
  const [page, ...rest] = parts;
  banner.clear();
  // A confirmation belongs to the page that opened it (the back button can leave while it is open).
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  highlightNav(page || 'overview');
  renders += 1;
  main().dataset.render = String(renders);
  main().dataset.state = 'loading';
  main().replaceChildren(el('p', {class: 'loading'}, 'Loading…'));
  const pages = {overview: renderOverview, topics: renderTopicsRoute, groups: renderGroups,
    transactions: renderTransactions, reports: renderReports};
  const render = pages[page || 'overview'];
  try {
    if (hashError) throw hashError;
    if (!render) throw new ApiError(404, 'No such page', `#/${parts.join('/')} is not a console page`);
    await render(view, rest, query);
  } catch (error) {
    if (!view.alive) return;
    banner.show(error);
    main().replaceChildren(el('p', {class: 'empty'}, 'This page could not be loaded. ', upLink(parts, query)));
    main().dataset.state = 'error';
  }
}

// Where to go from a page that failed: the same page without its query (a record browser at an
// offset out of range goes back to the log start), else one level up.
function upLink(parts, query) {
  if ([...query.keys()].length > 0) return el('a', {href: hashFor(parts)}, 'Load it without its options');
  if (parts.length > 0) return el('a', {href: hashFor(parts.slice(0, -1))}, 'Go up');
  return null;
}

function renderTopicsRoute(view, rest, query) {
  if (rest.length === 0) return renderTopics(view);
  if (rest.length === 1) return renderTopic(view, rest[0]);
  return renderRecords(view, rest[0], rest[1], query);
}

function highlightNav(page) {
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('active', link.dataset.route === page);
  }
}

// Who /console/login said we are, once it has: what the header falls back to when the overview
// (which needs DESCRIBE on the cluster) is refused.
let loggedInAs = null;

// The header names who the broker thinks we are: the one fact that explains every 403. `caller` is
// null when the broker would not say (the overview refused, `why`, and no login yet), and
// `authorization` undefined when only /console/login answered. Log in is offered to an anonymous
// caller, and to an unknown one: /console/login answers at once, naming the caller, when the browser
// already sends a password.
function showCaller({caller, authorization}, why) {
  const node = document.getElementById('caller');
  const unknown = typeof caller !== 'string';
  const anonymous = caller === 'User:ANONYMOUS';
  node.replaceChildren();
  appendChildren(node, [
    unknown ? el('span', {class: 'mono unknown', testid: 'caller-unknown'}, 'caller unknown') : mono(caller),
    authorization === true ? badge('ACLs on', 'info') : authorization === false ? badge('ACLs off', 'muted') : null,
    anonymous || unknown ? el('button', {type: 'button', class: 'login', testid: 'login-button', on: {click: logIn},
      title: 'The browser asks for your Once user name and password (HTTP Basic) and sends them from then on'}, 'Log in') : null]);
  node.title = unknown
    ? `The broker did not say who you are: the overview, which needs DESCRIBE on the cluster, failed (${why ? describeError(why) : 'no answer'}).`
    : anonymous
      ? 'Not logged in: requests carry no credentials. Aborting a transaction needs a logged-in user.'
      : `Logged in as ${caller}`;
}

// Every read is allowed to User:ANONYMOUS, so no read ever answers 401 and the browser would never
// ask for a password. /console/login answers 401 with WWW-Authenticate until the browser sends
// credentials; the browser then keeps sending them to everything under /console/ (RFC 7617's
// protection space), which is where the endpoints and reports are.
async function logIn() {
  let answer;
  try {
    answer = await api('/console/login');
  } catch (error) {
    if (error.status === 404) {
      banner.show(new ApiError(404, 'No login on this broker', 'it does not serve /console/login, so the console cannot ask the browser to log in'));
    } else {
      banner.show(error);
    }
    return;
  }
  loggedInAs = typeof answer.caller === 'string' ? answer.caller : null;
  // The header is not redrawn by every page, so it is asked again here.
  await headerOverview(parseHash().query);
  route();
}

// The overview, also drawn into the header; a refusal leaves the header saying what is known.
async function loadOverview(query) {
  let overview;
  try {
    overview = await api(`/console/api/overview?hanging_after_ms=${hangingAfterMs(query)}`);
  } catch (error) {
    showCaller({caller: loggedInAs}, error);
    throw error;
  }
  showCaller(overview);
  return overview;
}

// For pages that want the overview only for the header: null when it is refused (a caller without
// DESCRIBE on the cluster still reads the topics, groups and transactions it may describe).
function headerOverview(query) {
  return loadOverview(query).catch(() => null);
}

// ---------------------------------------------------------------------------------------------
// overview

async function renderOverview(view, _rest, query) {
  const every = pollMs(query);
  const summary = el('div', {class: 'cards', testid: 'overview-summary'});
  const openList = el('div', {testid: 'overview-transactions'});
  const charts = {
    produce: lineChart({testid: 'chart-produce', title: 'Produced records/s', format: formatRate,
      series: [{name: 'records/s', cls: 's1'}]}),
    bytes: lineChart({testid: 'chart-bytes', title: 'Bytes/s', format: formatBytesRate, binary: true,
      series: [{name: 'produced', cls: 's1'}, {name: 'fetched', cls: 's2'}]}),
    fsync: lineChart({testid: 'chart-fsync', title: 'fsync latency per interval', format: formatMsValue,
      series: [{name: 'mean', cls: 's1'}, {name: 'p99', cls: 's3'}]}),
  };
  await refreshOverview(view, query, summary, openList);
  show(view,
    el('h1', {}, 'Overview'), summary,
    el('h2', {}, `Live (every ${formatDuration(every)})`),
    el('div', {class: 'charts'}, charts.produce.node, charts.bytes.node, charts.fsync.node),
    el('h2', {}, 'Open transactions'), openList);
  pollRates(view, every, charts, null);
  const refresh = () => refreshOverview(view, query, summary, openList)
    .then(() => banner.clearFrom('overview'), (error) => view.alive && banner.show(error, 'overview'))
    .finally(() => view.after(every, refresh));
  view.after(every, refresh);
}

async function refreshOverview(view, query, summary, openList) {
  const [overview, transactions] = await Promise.all([
    loadOverview(query),
    api(`/console/api/transactions?hanging_after_ms=${hangingAfterMs(query)}`),
  ]);
  if (!view.alive) return;
  summary.replaceChildren(...overviewCards(overview));
  const open = transactions.transactions.filter((t) => t.open);
  openList.replaceChildren(open.length === 0
    ? empty('No open transactions.')
    : table(['Transactional id', 'State', 'Age', 'Partitions', ''], open.map((t) =>
      el('tr', {class: t.hanging ? 'hanging' : null, testid: 'overview-txn-row', 'data-txn': t.transactional_id},
        el('td', {}, el('a', {href: hashFor(['transactions'], {hanging_after_ms: query.get('hanging_after_ms')})}, mono(t.transactional_id))),
        el('td', {}, t.state), el('td', {class: 'num'}, formatDuration(t.age_ms)),
        el('td', {}, partitionList(t.partitions)),
        el('td', {}, t.hanging ? badge('hanging', 'danger') : badge('open', 'warn'))))));
}

function card(title, value, detail, kind, testid) {
  return el('div', {class: `card ${kind || ''}`.trim(), testid},
    el('div', {class: 'card-title'}, title), el('div', {class: 'card-value'}, value),
    detail ? el('div', {class: 'card-detail'}, detail) : null);
}

function overviewCards(o) {
  const storage = o.storage || {};
  const storageBad = storage.below_floor || storage.latched_partitions > 0;
  return [
    card('Cluster', mono(o.cluster_id), `node ${o.node_id} · Once ${o.version}`, null, 'overview-cluster'),
    card('Storage free', formatBytes(storage.free_bytes),
      [`floor ${formatBytes(storage.min_free_bytes)}`,
        storage.below_floor ? ' · below the floor: produce refused' : '',
        storage.latched_partitions > 0 ? ` · ${storage.latched_partitions} partition(s) latched after an I/O error` : ''].join(''),
      storageBad ? 'danger' : null, 'overview-storage'),
    card('Topics', el('a', {href: '#/topics'}, formatCount(o.topics)), null, null, 'overview-topics'),
    card('Groups', el('a', {href: '#/groups'}, formatCount(o.groups)), null, null, 'overview-groups'),
    card('Open transactions', formatCount(o.transactions_open),
      o.oldest_open_transaction_ms === null || o.oldest_open_transaction_ms === undefined
        ? null : `oldest open for ${formatDuration(o.oldest_open_transaction_ms)}`,
      null, 'overview-open'),
    card('Hanging', formatCount(o.transactions_hanging), `open longer than ${formatDuration(o.hanging_after_ms)}`,
      o.transactions_hanging > 0 ? 'danger' : null, 'overview-hanging'),
    card('Reports', el('a', {href: '#/reports'}, formatCount(o.reports)), null, null, 'overview-reports'),
  ];
}

function partitionList(partitions) {
  return mono((partitions || []).map((p) => `${p.topic}-${p.partition}`).join(', ') || dash);
}

// Polls are chained (the next starts after this one ends) so a slow broker never has two in flight.
async function pollRates(view, every, charts, previous) {
  let current = previous;
  try {
    current = await api('/console/api/rates');
    if (!view.alive) return;
    if (previous) {
      const point = ratesBetween(previous, current);
      charts.produce.push([point && point.records]);
      charts.bytes.push([point && point.producedBytes, point && point.fetchedBytes]);
      charts.fsync.push([point && point.fsyncMeanMs, point && point.fsyncP99Ms]);
    }
    banner.clearFrom('rates');
  } catch (error) {
    if (view.alive) banner.show(error, 'rates');
  }
  view.after(every, () => pollRates(view, every, charts, current));
}

// ---------------------------------------------------------------------------------------------
// topics

function sum(items, f) {
  return items.reduce((total, item) => total + (Number(f(item)) || 0), 0);
}

async function loadTopics() {
  const {topics} = await api('/console/api/topics');
  return topics.slice().sort((a, b) => (a.internal - b.internal) || a.name.localeCompare(b.name));
}

async function renderTopics(view) {
  const topics = await loadTopics();
  const rows = topics.map((t) => {
    const latched = t.partitions.filter((p) => p.latched).length;
    return el('tr', {testid: 'topic-row', 'data-topic': t.name},
      el('td', {}, el('a', {href: hashFor(['topics', t.name])}, mono(t.name)), t.internal ? badge('internal', 'muted') : null,
        latched ? badge(`${latched} latched`, 'danger') : null),
      el('td', {class: 'num'}, t.partitions.length),
      el('td', {class: 'num'}, formatCount(sum(t.partitions, (p) => p.high_watermark - p.log_start_offset))),
      el('td', {class: 'num'}, formatBytes(sum(t.partitions, (p) => p.size_bytes))),
      el('td', {class: 'num'}, formatCount(sum(t.partitions, (p) => p.lso_lag))),
      el('td', {}, t.dedup ? [mono(t.dedup.source), el('div', {class: 'sub'},
        `${formatCount(t.dedup.ids)} ids · ${formatBytes(t.dedup.index_bytes)} index · ${formatCount(t.dedup.duplicates_dropped)} dropped`)] : dash),
      el('td', {class: 'num'}, formatCount(t.produced_records), el('div', {class: 'sub'}, formatBytes(t.produced_bytes))),
      el('td', {class: 'num'}, formatBytes(t.fetched_bytes)));
  });
  show(view, el('h1', {}, 'Topics'), rows.length === 0 ? empty('No topics (or none you may describe).') :
    table(['Topic', {text: 'Partitions', attrs: {class: 'num'}},
      {text: 'Offsets held', attrs: {class: 'num', title: 'Sum over partitions of high watermark − log start offset (transaction markers included)'}},
      {text: 'Size', attrs: {class: 'num'}},
      {text: 'LSO lag', attrs: {class: 'num', title: 'Sum of high watermark − last stable offset: what read_committed consumers cannot see yet'}},
      'Dedup', {text: 'Produced', attrs: {class: 'num'}}, {text: 'Fetched', attrs: {class: 'num'}}], rows));
}

// One topic, the shape of one element of the list: 404 unknown, 403 not described to this caller.
function loadTopic(name) {
  return api(`/console/api/topics/${encodeURIComponent(name)}`);
}

async function renderTopic(view, name) {
  const topic = await loadTopic(name);
  const partitions = topic.partitions.map((p) => el('tr', {testid: 'partition-row', 'data-partition': p.partition},
    el('td', {class: 'num'}, el('a', {href: hashFor(['topics', name, String(p.partition)])}, mono(p.partition))),
    el('td', {class: 'num mono'}, p.log_start_offset), el('td', {class: 'num mono'}, p.last_stable_offset),
    el('td', {class: 'num mono'}, p.high_watermark),
    el('td', {class: `num${p.lso_lag > 0 ? ' warn-text' : ''}`}, formatCount(p.lso_lag)),
    el('td', {class: 'num'}, formatBytes(p.size_bytes)),
    el('td', {}, p.latched ? badge('latched', 'danger') : badge('ok', 'ok')),
    el('td', {}, el('a', {href: hashFor(['topics', name, String(p.partition)])}, 'Browse records'))));
  const configs = Object.keys(topic.configs || {}).sort().map((key) => el('tr', {testid: 'config-row'},
    el('td', {class: 'mono'}, key), el('td', {class: 'mono'}, topic.configs[key])));
  show(view,
    el('p', {class: 'crumbs'}, el('a', {href: '#/topics'}, 'Topics'), ' / '),
    el('h1', {}, mono(topic.name), topic.internal ? badge('internal', 'muted') : null),
    el('p', {class: 'sub'}, `Produced ${formatCount(topic.produced_records)} records (${formatBytes(topic.produced_bytes)}),`
      + ` fetched ${formatBytes(topic.fetched_bytes)} since the broker started.`),
    el('h2', {}, 'Partitions'),
    table([{text: 'Partition', attrs: {class: 'num'}}, {text: 'Log start', attrs: {class: 'num'}},
      {text: 'Last stable', attrs: {class: 'num'}}, {text: 'High watermark', attrs: {class: 'num'}},
      {text: 'LSO lag', attrs: {class: 'num'}}, {text: 'Size', attrs: {class: 'num'}}, 'Storage', ''], partitions),
    el('h2', {}, 'Dedup index'), dedupSection(topic.dedup),
    el('h2', {}, 'Configs'), configs.length ? table(['Name', 'Value'], configs, {class: 'configs'}) : empty('No configs.'));
}

function dedupSection(dedup) {
  if (!dedup) return empty('Dedup is off for this topic (no dedup.source).');
  const rows = [
    ['Message id source', mono(dedup.source)], ['Window', formatDuration(dedup.window_ms)],
    ['Ids held', formatCount(dedup.ids)], ['Ids pending (not yet durable)', formatCount(dedup.pending_ids)],
    ['Index in memory', formatBytes(dedup.index_bytes)], ['Ids on disk', formatCount(dedup.disk_ids)],
    ['Disk chunks', formatCount(dedup.disk_chunks)], ['Duplicates dropped', formatCount(dedup.duplicates_dropped)],
  ];
  return el('table', {class: 'keyvalue', testid: 'dedup'}, el('tbody', {},
    rows.map(([name, value]) => el('tr', {}, el('th', {scope: 'row'}, name), el('td', {}, value)))));
}

// ---------------------------------------------------------------------------------------------
// records

const VALUE_FORMATS = ['auto', 'text', 'json', 'hex'];

async function renderRecords(view, topicName, partitionText, query) {
  const partition = Number(partitionText);
  const isolation = query.get('isolation') === 'read_committed' ? 'read_committed' : 'read_uncommitted';
  const limit = Math.min(500, setting(query, 'limit', 50));
  const params = new URLSearchParams({isolation, limit: String(limit)});
  if (query.get('timestamp') !== null) params.set('timestamp', query.get('timestamp'));
  else if (query.get('offset') !== null) params.set('offset', query.get('offset'));
  const [topic, page] = await Promise.all([
    loadTopic(topicName),
    api(`/console/api/topics/${encodeURIComponent(topicName)}/partitions/${encodeURIComponent(partitionText)}/records?${params}`),
  ]);
  const go = (changes) => navigate(hashFor(['topics', topicName, String(changes.partition ?? partition)],
    Object.assign({isolation, limit}, changes, {partition: undefined})));
  const recordsBox = el('div', {testid: 'records'});
  const drawRecords = () => recordsBox.replaceChildren(recordsTable(page.records, valueFormat()));
  drawRecords();
  show(view,
    el('p', {class: 'crumbs'}, el('a', {href: '#/topics'}, 'Topics'), ' / ',
      el('a', {href: hashFor(['topics', topicName])}, mono(topicName)), ' / '),
    el('h1', {}, 'Records in ', mono(`${topicName}-${partition}`)),
    recordControls(topic, partition, isolation, limit, query, go, drawRecords),
    pageSummary(page),
    recordsBox,
    pagerControls(page, isolation, go));
}

function valueFormat() {
  const stored = readStorage('valueFormat');
  return VALUE_FORMATS.includes(stored) ? stored : 'auto';
}

function recordControls(topic, partition, isolation, limit, query, go, drawRecords) {
  const picker = el('select', {testid: 'partition-picker', 'aria-label': 'Partition',
    on: {change: () => go({partition: picker.value})}},
  topic.partitions.map((p) => el('option', {value: p.partition, selected: p.partition === partition}, `partition ${p.partition}`)));
  const byTimestamp = query.get('timestamp') !== null;
  const mode = el('select', {testid: 'position-mode', 'aria-label': 'Start at'},
    el('option', {value: 'offset', selected: !byTimestamp}, 'offset'),
    el('option', {value: 'timestamp', selected: byTimestamp}, 'timestamp'));
  const position = el('input', {type: 'text', testid: 'position-input', size: 24, 'aria-label': 'Start position',
    placeholder: 'log start', value: (byTimestamp ? query.get('timestamp') : query.get('offset')) || ''});
  const limitInput = el('input', {type: 'number', testid: 'limit-input', min: 1, max: 500, value: limit, 'aria-label': 'Limit'});
  const committed = el('input', {type: 'checkbox', testid: 'isolation-toggle', checked: isolation === 'read_committed',
    on: {change: () => go({isolation: committed.checked ? 'read_committed' : 'read_uncommitted',
      offset: query.get('offset'), timestamp: query.get('timestamp')})}});
  const format = el('select', {testid: 'value-format', 'aria-label': 'Show keys and values as',
    on: {change: () => { writeStorage('valueFormat', format.value); drawRecords(); }}},
  VALUE_FORMATS.map((f) => el('option', {value: f, selected: f === valueFormat()}, f)));
  const form = el('form', {class: 'controls', on: {submit: (event) => {
    event.preventDefault();
    const at = parsePosition(mode.value, position.value.trim());
    go({[mode.value]: at, limit: limitInput.value});
  }}},
  el('label', {}, 'Partition ', picker),
  el('label', {}, 'Start at ', mode, ' ', position),
  el('label', {}, 'Limit ', limitInput),
  el('button', {type: 'submit', testid: 'load-records'}, 'Load'),
  el('label', {class: 'toggle', title: 'read_committed stops at the last stable offset and leaves out aborted records'},
    committed, ' read_committed'),
  el('label', {}, 'Show as ', format));
  return form;
}

// A timestamp may be typed as milliseconds or as a date ("2025-12-05T10:00:00Z"); the endpoint
// takes milliseconds.
function parsePosition(mode, text) {
  if (text === '' || mode === 'offset' || /^-?\d+$/.test(text)) return text;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? text : String(ms);
}

function pageSummary(page) {
  return el('p', {class: 'sub', testid: 'records-summary'},
    `${page.isolation} · log start `, mono(page.log_start_offset), ' · last stable ', mono(page.last_stable_offset),
    ' · high watermark ', mono(page.high_watermark), ` · showing ${page.records.length} record(s) from offset `,
    mono(page.start_offset), ' to before ', mono(page.next_offset));
}

function pagerControls(page, isolation, go) {
  const end = isolation === 'read_committed' ? page.last_stable_offset : page.high_watermark;
  const atEnd = page.next_offset >= end;
  return el('div', {class: 'pager'},
    el('button', {type: 'button', testid: 'first-page', on: {click: () => go({offset: page.log_start_offset})}}, '⇤ Log start'),
    el('button', {type: 'button', testid: 'next-page', disabled: atEnd,
      title: atEnd ? `No more records below the ${isolation === 'read_committed' ? 'last stable offset' : 'high watermark'}` : null,
      on: {click: () => go({offset: page.next_offset})}}, 'Next page →'),
    atEnd ? el('span', {class: 'sub'}, isolation === 'read_committed' && page.last_stable_offset < page.high_watermark
      ? ` End of what read_committed may see: an open transaction holds the last stable offset at ${page.last_stable_offset}.`
      : ' End of the log.') : null);
}

function recordsTable(records, format) {
  if (records.length === 0) return empty('No records here.');
  return table([{text: 'Offset', attrs: {class: 'num'}}, 'Timestamp', 'Key', 'Value', 'Headers', 'Producer', ''],
    records.map((r) => safeRecordRow(r, format)), {class: 'records'});
}

// A record holds whatever a producer sent, so one that cannot be drawn costs its own row, never the
// page (whose controls must stay usable to look at it another way).
function safeRecordRow(r, format) {
  try {
    return recordRow(r, format);
  } catch (error) {
    const offset = r && typeof r === 'object' ? r.offset : undefined;
    return el('tr', {testid: 'record-row', 'data-offset': offset, class: 'unreadable'},
      el('td', {class: 'num mono'}, offset ?? dash),
      el('td', {colspan: 6, class: 'sub'}, `This record could not be shown (${error && error.message ? error.message : error}).`));
  }
}

// Only an end-transaction marker commits or aborts; any other control record (the server says
// "control") is shown as just that, never as a transaction's outcome.
function controlKind(control) {
  if (control === 'commit') return {cls: 'commit', badge: 'COMMIT marker', kind: 'ok', text: 'Transaction committed'};
  if (control === 'abort') return {cls: 'abort', badge: 'ABORT marker', kind: 'danger', text: 'Transaction aborted'};
  return {cls: 'other', badge: 'control record', kind: 'muted', text: 'Control record (not a transaction marker)'};
}

function recordRow(r, format) {
  const control = r.control ? controlKind(r.control) : null;
  const classes = [control ? `control control-${control.cls}` : null, r.aborted ? 'aborted' : null].filter(Boolean);
  const flags = [
    control ? badge(control.badge, control.kind, 'control-marker') : null,
    r.aborted ? badge('aborted', 'danger', 'aborted-flag') : null,
    r.transactional && !control ? badge('transactional', 'info') : null,
  ];
  return el('tr', {testid: 'record-row', 'data-offset': r.offset, class: classes.join(' ') || null},
    el('td', {class: 'num mono'}, r.offset),
    el('td', {class: 'time', title: `${r.timestamp} (${r.timestamp_type})`}, formatTime(r.timestamp),
      el('div', {class: 'sub'}, r.timestamp_type)),
    el('td', {testid: 'record-key', class: 'key'}, control ? dash : bytesView(r.key, format, false)),
    el('td', {testid: 'record-value'}, control
      ? el('span', {class: 'marker'}, control.text)
      : bytesView(r.value, format, true)),
    el('td', {}, headersView(r.headers, format)),
    el('td', {class: 'mono producer'}, r.producer_id < 0 ? dash
      : `${r.producer_id} / ${r.producer_epoch}`, el('div', {class: 'sub'}, typeof r.sequence === 'number' && r.sequence >= 0 ? `seq ${r.sequence}` : '')),
    el('td', {}, flags));
}

function headersView(headers, format) {
  if (!headers || headers.length === 0) return el('span', {class: 'sub'}, dash);
  return el('dl', {class: 'headers'}, headers.map((h) => [el('dt', {class: 'mono'}, h.key), el('dd', {}, bytesView(h.value, format, false))]));
}

// What a table cell shows before "show all": enough to recognise a record, little enough that 500
// records of 64 KiB each stay a page a browser can lay out.
const SHOWN_CHARS = 2000;
const SHOWN_BYTES = 512;

// Shows {base64, text, size, truncated} as the chosen format; "auto" picks JSON when the text
// parses, else text, else hex. What cannot be shown as asked (bytes that are not UTF-8 as text)
// falls back to hex: a `hexdump -C` layout for values, bare bytes for keys and headers, which are
// short and narrow. A field the broker cut (it sends at most 64 KiB) says so under it.
function bytesView(bytes, format, dump) {
  if (bytes === null || bytes === undefined) return el('span', {class: 'null'}, 'null');
  const cut = bytes.truncated === true;
  const note = cut ? cutNote(bytes) : null;
  const text = typeof bytes.text === 'string' ? bytes.text : null;
  // The start of a cut document is not the document: it is never pretty-printed.
  if (text !== null && !cut && (format === 'auto' || format === 'json')) {
    const json = prettyJson(text);
    if (json.pretty !== null) return clippedText(json.pretty, 'json', false, note);
    if (format === 'json' || json.reason !== NOT_JSON) {
      return clippedText(text, 'text', false, el('div', {class: 'value-note', testid: 'value-note'}, `${json.reason}: shown as written`));
    }
  }
  if (text !== null && format !== 'hex') return clippedText(text, 'text', cut, note);
  return clippedBytes(base64Bytes(bytes.base64), dump, cut, note);
}

function cutNote(bytes) {
  const size = Number(bytes.size);
  const sent = base64Length(bytes.base64);
  return el('div', {class: 'value-note cut', testid: 'cut-note',
    title: 'The broker sends at most the first 64 KiB of a key, value or header value'},
  Number.isFinite(size)
    ? `cut by the broker: showing ${formatBytes(sent)} of ${formatBytes(size)} (${formatCount(size)} bytes)`
    : `cut by the broker: showing ${formatBytes(sent)}`);
}

// "show all" shows what the broker sent, so for a cut field it says "sent".
function clippedText(text, kind, cut, note) {
  if (text.length <= SHOWN_CHARS) return clipped(kind, text, note, null);
  return clipped(kind, text.slice(0, SHOWN_CHARS) + '…', note,
    {full: () => text, what: `${formatCount(text.length)} characters${cut ? ' sent' : ''}`});
}

function clippedBytes(raw, dump, cut, note) {
  const render = dump ? hexDump : hexBytes;
  const kind = dump ? 'hex' : 'hex compact';
  if (raw.length <= SHOWN_BYTES) return clipped(kind, render(raw), note, null);
  return clipped(kind, render(raw.subarray(0, SHOWN_BYTES)) + '\n…', note,
    {full: () => render(raw), what: `${formatCount(raw.length)} bytes${cut ? ' sent' : ''}`});
}

// A long value gets a button that shows the rest, computed only when asked for.
function clipped(kind, preview, note, rest) {
  const pre = el('pre', {class: `value ${kind}`}, preview);
  if (!rest && !note) return pre;
  const more = rest ? el('button', {type: 'button', class: 'link', testid: 'show-all',
    on: {click: () => { pre.textContent = rest.full(); more.remove(); }}}, `show all ${rest.what}`) : null;
  return el('div', {}, pre, note, more);
}

// ---------------------------------------------------------------------------------------------
// values

const NOT_JSON = 'not JSON';
// Past these a value is shown as written: pretty-printing is for reading, and a record is
// untrusted (20,000 nested arrays must cost the tab nothing).
const PRETTY_DEPTH_MAX = 64;
const PRETTY_CHARS_MAX = 200 * 1024;
// indents[d]: a new line at depth d, built once (at most PRETTY_DEPTH_MAX of them).
const INDENTS = Array.from({length: PRETTY_DEPTH_MAX + 1}, (_, depth) => '\n' + '  '.repeat(depth));

// Re-indents JSON text without parsing its numbers, so 12345678901234567890 stays as written
// (JSON.parse would round it to a double). {pretty: text} or {pretty: null, reason} when the text is
// not JSON or is too deep or too long to pretty-print. Linear in the text, never throws.
function prettyJson(text) {
  if (typeof text !== 'string') return {pretty: null, reason: NOT_JSON};
  try {
    JSON.parse(text);
  } catch (_) {
    return {pretty: null, reason: NOT_JSON};
  }
  try {
    return reindentJson(text);
  } catch (error) {
    return {pretty: null, reason: `not pretty-printed (${error && error.message ? error.message : error})`};
  }
}

// Assumes valid JSON (prettyJson checked), yet every loop is bounded by the text's length anyway.
function reindentJson(text) {
  const chunks = [];
  let length = 0;
  let depth = 0;
  const push = (piece) => { chunks.push(piece); length += piece.length; };
  for (let i = 0; i < text.length; i++) {
    if (length > PRETTY_CHARS_MAX) return {pretty: null, reason: `longer than ${formatBytes(PRETTY_CHARS_MAX)} pretty-printed`};
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      push(text.slice(i, j + 1));
      i = j;
    } else if (c === '{' || c === '[') {
      let next = i + 1;
      while (next < text.length && isJsonSpace(text[next])) next += 1;
      if (text[next] === (c === '{' ? '}' : ']')) { push(c + text[next]); i = next; continue; }
      depth += 1;
      if (depth > PRETTY_DEPTH_MAX) return {pretty: null, reason: `nested deeper than ${PRETTY_DEPTH_MAX} levels`};
      push(c + INDENTS[depth]);
    } else if (c === '}' || c === ']') {
      depth = Math.max(0, depth - 1);
      push(INDENTS[depth] + c);
    } else if (c === ',') {
      push(',' + INDENTS[depth]);
    } else if (c === ':') {
      push(': ');
    } else if (!isJsonSpace(c)) {
      // A number or true/false/null: copied up to the next structural character or space.
      let j = i + 1;
      while (j < text.length && !'"{}[],: \t\n\r'.includes(text[j])) j += 1;
      push(text.slice(i, j));
      i = j - 1;
    }
  }
  return {pretty: chunks.join('')};
}

function isJsonSpace(c) {
  return c === ' ' || c === '\n' || c === '\t' || c === '\r';
}

// The length of what base64 encodes, without decoding it.
function base64Length(base64) {
  const text = typeof base64 === 'string' ? base64 : '';
  const padding = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  return Math.max(0, Math.floor((text.length * 3) / 4) - padding);
}

function base64Bytes(base64) {
  const binary = window.atob(base64 || '');
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function hexBytes(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ') || '(empty)';
}

// Offset, 16 bytes in hex, and the printable ASCII beside them, as `hexdump -C` prints.
function hexDump(bytes) {
  const lines = [];
  for (let at = 0; at < bytes.length; at += 16) {
    const row = Array.from(bytes.subarray(at, at + 16));
    const hex = row.map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = row.map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${at.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  |${ascii}|`);
  }
  return lines.length ? lines.join('\n') : '(empty)';
}

// ---------------------------------------------------------------------------------------------
// groups

async function renderGroups(view) {
  const {groups} = await api('/console/api/groups');
  const sections = groups.slice().sort((a, b) => a.group.localeCompare(b.group)).map(groupSection);
  show(view, el('h1', {}, 'Consumer groups'), sections.length ? sections : empty('No consumer groups (or none you may describe).'));
}

function groupSection(g) {
  const lag = sum(g.offsets, (o) => o.lag);
  const members = g.members.length === 0 ? empty('No members.') : table(['Member', 'Instance', 'Client', 'Host', 'Assignment'],
    g.members.map((m) => el('tr', {testid: 'group-member-row'},
      el('td', {class: 'mono'}, m.member_id), el('td', {class: 'mono'}, m.group_instance_id ?? dash),
      el('td', {class: 'mono'}, m.client_id), el('td', {class: 'mono'}, m.client_host),
      el('td', {}, partitionList(m.assignment)))));
  const offsets = g.offsets.length === 0 ? empty('No committed offsets.') : table(['Topic', {text: 'Partition', attrs: {class: 'num'}},
    {text: 'Committed', attrs: {class: 'num'}}, {text: 'High watermark', attrs: {class: 'num'}}, {text: 'Lag', attrs: {class: 'num'}}],
  g.offsets.map((o) => el('tr', {testid: 'group-offset-row', 'data-topic': o.topic, 'data-partition': o.partition},
    el('td', {class: 'mono'}, o.topic), el('td', {class: 'num mono'}, o.partition),
    el('td', {class: 'num mono'}, o.committed_offset ?? dash), el('td', {class: 'num mono'}, o.high_watermark ?? dash),
    el('td', {class: `num mono${o.lag > 0 ? ' warn-text' : ''}`, testid: 'lag'}, o.lag ?? dash))));
  return el('section', {class: 'group', testid: 'group-row', 'data-group': g.group},
    el('h2', {}, mono(g.group), ' ', badge(g.state, g.state === 'Stable' ? 'ok' : g.state === 'Dead' ? 'muted' : 'warn', 'group-state'),
      el('span', {class: 'sub'}, ` ${g.protocol_type || 'no protocol type'}${g.protocol ? ' / ' + g.protocol : ''}`),
      el('span', {class: 'total-lag', testid: 'group-lag'}, `total lag ${formatCount(lag)}`)),
    el('h3', {}, `Members (${g.members.length})`), members,
    el('h3', {}, 'Committed offsets'), offsets);
}

// ---------------------------------------------------------------------------------------------
// transactions

async function renderTransactions(view, _rest, query) {
  const threshold = hangingAfterMs(query);
  const tableBox = el('div', {testid: 'transactions'});
  const refresh = async () => {
    // The overview only names the caller (for the header and the tooltips): a caller who may not
    // describe the cluster still sees the transactions it may describe.
    const [overview, list] = await Promise.all([headerOverview(query),
      api(`/console/api/transactions?hanging_after_ms=${threshold}`)]);
    const caller = overview ? overview.caller : loggedInAs;
    if (view.alive) tableBox.replaceChildren(transactionsTable(list.transactions, caller, refresh));
  };
  await refresh();
  show(view, el('h1', {}, 'Transactions'), thresholdForm(query, threshold), tableBox);
  // Refreshed in the background so that a decided transaction is seen reaching Complete*.
  const again = () => refresh()
    .then(() => banner.clearFrom('transactions'), (error) => view.alive && banner.show(error, 'transactions'))
    .finally(() => view.after(pollMs(query) * 2.5, again));
  view.after(pollMs(query) * 2.5, again);
}

function thresholdForm(query, threshold) {
  const input = el('input', {type: 'number', min: 1, step: 1, value: threshold, testid: 'hanging-after-input', 'aria-label': 'Hanging after (ms)'});
  return el('form', {class: 'controls', on: {submit: (event) => {
    event.preventDefault();
    writeStorage('hanging_after_ms', input.value);
    const rest = Object.fromEntries(query.entries());
    navigate(hashFor(['transactions'], Object.assign(rest, {hanging_after_ms: input.value})));
  }}},
  el('label', {}, 'Hanging when open longer than ', input, ' ms'), el('button', {type: 'submit'}, 'Apply'),
  el('span', {class: 'sub'}, ' (or longer than its own timeout)'));
}

function transactionsTable(transactions, caller, refresh) {
  if (transactions.length === 0) return empty('No transactional ids (or none you may describe).');
  const sorted = transactions.slice().sort((a, b) => (b.hanging - a.hanging) || (b.open - a.open)
    || a.transactional_id.localeCompare(b.transactional_id));
  return table(['Transactional id', 'State', 'Producer id / epoch', {text: 'Age', attrs: {class: 'num'}},
    {text: 'Timeout', attrs: {class: 'num'}}, 'Partitions', 'Groups', 'Status', ''],
  sorted.map((t) => el('tr', {testid: 'txn-row', 'data-txn': t.transactional_id, class: t.hanging ? 'hanging' : null,
    'data-producer-id': t.producer_id, 'data-producer-epoch': t.producer_epoch},
  el('td', {class: 'mono'}, t.transactional_id), el('td', {testid: 'txn-state'}, t.state),
  el('td', {class: 'mono', testid: 'txn-producer'}, `${t.producer_id} / ${t.producer_epoch}`),
  el('td', {class: 'num', title: t.start_ms ? `started ${formatTime(t.start_ms)}` : null}, formatDuration(t.age_ms)),
  el('td', {class: 'num'}, formatDuration(t.timeout_ms)),
  el('td', {}, partitionList(t.partitions)), el('td', {class: 'mono'}, (t.groups || []).join(', ') || dash),
  el('td', {testid: 'txn-status'}, t.hanging ? badge('hanging', 'danger') : t.open ? badge('open', 'warn') : badge('settled', 'muted')),
  el('td', {}, t.open ? abortButton(t, caller, refresh) : null))));
}

// Why this caller may not abort this transaction: the server decides (`can_abort` per row: open,
// logged in, WRITE on the id); the page only words it. `caller` is null when the broker would not
// say who we are (the overview refused).
function abortRefusal(txn, caller) {
  if (txn.can_abort === true) return null;
  const id = txn.transactional_id;
  if (!txn.open) return `${id} has no open transaction to abort.`;
  if (caller === 'User:ANONYMOUS') {
    return 'You are not logged in (User:ANONYMOUS): use Log in at the top right. Aborting needs a user logged in with a password who holds WRITE on this transactional id.';
  }
  if (typeof caller !== 'string') {
    return `You may not abort ${id}: either you are not logged in (use Log in at the top right) or you lack WRITE on this transactional id.`;
  }
  return `${caller} may not abort ${id}: it needs WRITE on this transactional id (or to be a super user).`;
}

function abortButton(txn, caller, refresh) {
  const reason = abortRefusal(txn, caller);
  const button = el('button', {type: 'button', class: 'danger', testid: 'abort-button', disabled: reason !== null,
    title: reason || `Fence ${txn.transactional_id} and abort its open transaction`,
    on: {click: () => openAbortDialog(txn, refresh)}}, 'Abort…');
  // A disabled button gets no mouse events in some browsers, so the wrapper carries the tooltip too.
  return el('span', {class: 'tooltip-host', title: reason}, button);
}

// The confirmation is in the page (not window.confirm) so that it can ask for the id itself:
// typing it is what makes aborting the wrong transaction hard. The request names the producer id and
// epoch of the row confirmed, so that the broker refuses (409 transaction-changed) if another
// producer took the id meanwhile, rather than abort a transaction nobody looked at.
function openAbortDialog(txn, refresh) {
  const id = txn.transactional_id;
  const input = el('input', {type: 'text', testid: 'confirm-input', autocomplete: 'off', spellcheck: 'false', 'aria-label': 'Transactional id'});
  const confirm = el('button', {type: 'button', class: 'danger', testid: 'confirm-abort', disabled: true}, 'Abort transaction');
  const close = el('button', {type: 'button', testid: 'confirm-cancel'}, 'Cancel');
  const reload = el('button', {type: 'button', testid: 'confirm-refresh', hidden: true}, 'Refresh the list');
  const result = el('p', {class: 'result', testid: 'abort-result', role: 'status'});
  const dialog = el('dialog', {class: 'confirm', testid: 'abort-dialog', 'aria-labelledby': 'abort-title'},
    el('h2', {id: 'abort-title'}, 'Abort transaction'),
    el('p', {}, 'This fences ', mono(id), ` (a new producer epoch: its producer gets PRODUCER_FENCED) and aborts its `,
      `${txn.state} transaction of producer id `, mono(String(txn.producer_id)), ', epoch ', mono(String(txn.producer_epoch)),
      ` on ${(txn.partitions || []).length} partition(s). Its records become aborted; read_committed consumers move on.`),
    el('label', {}, 'Type the transactional id to confirm:', input),
    result, el('div', {class: 'actions'}, close, reload, confirm));
  input.addEventListener('input', () => { confirm.disabled = input.value !== id; });
  close.addEventListener('click', () => dialog.close());
  reload.addEventListener('click', () => { dialog.close(); refresh().catch((error) => banner.show(error)); });
  dialog.addEventListener('close', () => dialog.remove());
  confirm.addEventListener('click', async () => {
    confirm.disabled = true;
    input.disabled = true;
    result.className = 'result';
    result.textContent = 'Aborting…';
    try {
      const answer = await api(`/console/api/transactions/${encodeURIComponent(id)}/abort`,
        {method: 'POST', headers: {'Content-Type': 'application/json', Accept: 'application/json'},
          body: JSON.stringify({producer_id: txn.producer_id, producer_epoch: txn.producer_epoch})});
      result.classList.add('ok');
      result.textContent = `Done: ${answer.transactional_id}: ${abortOutcome(answer)}; its producer is fenced ` +
        `(producer ${answer.producer_id}, epoch ${answer.producer_epoch}); state now ${answer.state}.`;
      close.textContent = 'Close';
      refresh().catch((error) => banner.show(error));
    } catch (error) {
      result.classList.add('error');
      result.textContent = describeError(error);
      if (error instanceof ApiError && error.status === 409 && /transaction-changed$/.test(error.type || '')) {
        // What was confirmed is no longer what is there: only a fresh look may lead to an abort.
        result.append(el('br'), 'Refresh the list and look again before aborting.');
        reload.hidden = false;
        return;
      }
      input.disabled = false;
      confirm.disabled = input.value !== id;
    }
  });
  document.body.append(dialog);
  dialog.showModal();
  input.focus();
}

// `aborted`: an Ongoing or PrepareAbort transaction was aborted; a PrepareCommit one had been
// decided and was completed as a commit; anything else had no transaction open.
function abortOutcome(answer) {
  if (answer.aborted) return `its ${answer.previous_state} transaction was aborted`;
  if (answer.previous_state === 'PrepareCommit') return 'its transaction had already been decided (PrepareCommit) and was completed as a commit';
  return `it had no transaction to abort (${answer.previous_state})`;
}

// ---------------------------------------------------------------------------------------------
// reports

async function renderReports(view, _rest, query) {
  const list = await api('/console/api/reports');
  const opened = query.get('open');
  const frameBox = el('div', {testid: 'report-view'});
  if (opened) {
    const frame = el('iframe', {sandbox: '', testid: 'report-frame', title: `Report ${opened}`, class: 'report'});
    // sandbox first, then src: the document must never load unsandboxed.
    frame.src = `/console/reports/${encodeURIComponent(opened)}`;
    frameBox.append(el('h2', {}, mono(opened), ' ',
      el('a', {href: frame.src, target: '_blank', rel: 'noopener', class: 'sub'}, 'open alone')), frame);
  }
  const rows = list.reports.map((r) => el('tr', {testid: 'report-row', 'data-report': r.name, class: r.name === opened ? 'selected' : null},
    el('td', {}, el('a', {href: hashFor(['reports'], {open: r.name}), testid: 'report-open'}, mono(r.name))),
    el('td', {class: 'num'}, formatBytes(r.bytes)), el('td', {}, formatTime(r.modified_ms))));
  show(view, el('h1', {}, 'Reports'),
    el('p', {class: 'sub'}, list.directory
      ? ['once check reports in ', mono(list.directory), ', newest first.']
      : 'No report directory: start the broker with --console-reports DIR to list once check reports here.'),
    rows.length ? table(['Report', {text: 'Size', attrs: {class: 'num'}}, 'Modified'], rows) : empty('No reports.'),
    frameBox);
}

// ---------------------------------------------------------------------------------------------
// charts

// One interval's rates from two polls of /console/api/rates. A counter that went down (the broker
// restarted) makes the interval unknown rather than negative.
function ratesBetween(before, after) {
  const seconds = (after.now_ms - before.now_ms) / 1000;
  if (!(seconds > 0)) return null;
  const rate = (a, b) => (b >= a ? (b - a) / seconds : null);
  const fsync = fsyncBetween(before.fsync, after.fsync);
  return {
    records: rate(before.produced_records, after.produced_records),
    producedBytes: rate(before.produced_bytes, after.produced_bytes),
    fetchedBytes: rate(before.fetched_bytes, after.fetched_bytes),
    fsyncMeanMs: fsync && fsync.meanMs,
    fsyncP99Ms: fsync && fsync.p99Ms,
  };
}

// Mean and p99 of the fsyncs done between two polls, in ms, or null when there were none (a mean
// of nothing is not zero). p99 interpolates inside its bucket as Prometheus' histogram_quantile.
function fsyncBetween(before, after) {
  if (!before || !after) return null;
  const count = after.count - before.count;
  if (!(count > 0) || before.buckets.length !== after.buckets.length) return null;
  const meanMs = ((after.sum_seconds - before.sum_seconds) / count) * 1000;
  const deltas = after.buckets.map(([bound, n], i) => [bound, n - before.buckets[i][1]]);
  const rank = 0.99 * count;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [bound, cumulative] of deltas) {
    if (cumulative >= rank) {
      if (bound === null) return {meanMs, p99Ms: lowerBound * 1000};
      const inBucket = cumulative - lowerCount;
      const fraction = inBucket > 0 ? (rank - lowerCount) / inBucket : 1;
      return {meanMs, p99Ms: (lowerBound + (bound - lowerBound) * fraction) * 1000};
    }
    lowerBound = bound === null ? lowerBound : bound;
    lowerCount = cumulative;
  }
  return {meanMs, p99Ms: null};
}

function formatRate(v) {
  if (v === null || v === undefined) return dash;
  return v >= 100 ? formatCount(Math.round(v)) : String(Math.round(v * 10) / 10);
}

function formatBytesRate(v) {
  if (v === null || v === undefined) return dash;
  // Below 10 B/s (an axis tick of a quiet broker) whole bytes would label two ticks alike.
  return Math.abs(v) < 10 && v !== 0 ? `${Number(v).toFixed(1)} B/s` : `${formatBytes(Math.round(v))}/s`;
}

function formatMsValue(v) {
  if (v === null || v === undefined) return dash;
  if (v === 0) return '0 ms';
  return v >= 10 ? `${Math.round(v)} ms` : `${v.toPrecision(2)} ms`;
}

// The top of the y axis: the next 1, 2 or 5 × 10^k above the largest value, or for bytes the same
// in KiB, MiB, … so that the axis reads "5 KiB/s" rather than "4.9 KiB/s".
function niceCeiling(value, binary) {
  if (!(value > 0)) return 1;
  const unit = binary ? 1024 ** Math.max(0, Math.floor(Math.log(value) / Math.log(1024))) : 1;
  const scaled = value / unit;
  const power = 10 ** Math.floor(Math.log10(scaled));
  for (const step of [1, 2, 5, 10]) if (step * power >= scaled) return step * power * unit;
  return 10 * power * unit;
}

const CHART = {width: 480, height: 170, left: 78, right: 10, top: 10, bottom: 20, points: 60};

// A line chart of the last CHART.points intervals. Each series is split into polylines at unknown
// points (null); an isolated known point is drawn as a dot.
function lineChart({testid, title, format, series, binary}) {
  const history = series.map(() => []);
  const plot = svg('svg', {viewBox: `0 0 ${CHART.width} ${CHART.height}`, class: 'chart', role: 'img', 'aria-label': title});
  const legend = el('div', {class: 'legend'});
  const node = el('figure', {class: 'chart-box', testid}, el('figcaption', {}, title), plot, legend);
  const draw = () => {
    const values = history.flat().filter((v) => v !== null && v !== undefined);
    const top = niceCeiling(Math.max(0, ...values), binary);
    const x = (i) => CHART.left + (i / (CHART.points - 1)) * (CHART.width - CHART.left - CHART.right);
    const y = (v) => CHART.height - CHART.bottom - (v / top) * (CHART.height - CHART.top - CHART.bottom);
    const parts = [];
    for (const fraction of [0, 0.5, 1]) {
      const at = y(top * fraction);
      parts.push(svg('line', {x1: CHART.left, x2: CHART.width - CHART.right, y1: at, y2: at, class: 'grid'}),
        svg('text', {x: CHART.left - 6, y: at + 4, class: 'axis', 'text-anchor': 'end'}, format(top * fraction)));
    }
    parts.push(svg('text', {x: CHART.width - CHART.right, y: CHART.height - 4, class: 'axis', 'text-anchor': 'end'}, 'now'),
      svg('text', {x: CHART.left, y: CHART.height - 4, class: 'axis'}, `${CHART.points} intervals ago`));
    history.forEach((points, s) => {
      const offset = CHART.points - points.length;
      for (const run of knownRuns(points)) {
        const coordinates = run.map((i) => `${x(offset + i).toFixed(1)},${y(points[i]).toFixed(1)}`);
        parts.push(run.length === 1
          ? svg('circle', {cx: x(offset + run[0]), cy: y(points[run[0]]), r: 2.5, class: `dot ${series[s].cls}`})
          : svg('polyline', {points: coordinates.join(' '), class: `line ${series[s].cls}`, 'data-series': series[s].name}));
      }
    });
    plot.replaceChildren(...parts);
    legend.replaceChildren(...series.map((s, i) => el('span', {class: `key ${s.cls}`},
      el('span', {class: 'swatch'}), `${s.name} `, el('strong', {}, format(history[i][history[i].length - 1])))));
  };
  draw();
  return {
    node,
    push(values) {
      values.forEach((v, i) => { history[i].push(v === undefined ? null : v); if (history[i].length > CHART.points) history[i].shift(); });
      draw();
    },
  };
}

// Index runs of consecutive known values: [1, null, 2, 3] → [[0], [2, 3]].
function knownRuns(points) {
  const runs = [];
  let run = [];
  points.forEach((v, i) => {
    if (v === null || v === undefined) { if (run.length) runs.push(run); run = []; } else run.push(i);
  });
  if (run.length) runs.push(run);
  return runs;
}

// ---------------------------------------------------------------------------------------------
// start

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', () => {
  // The header shows the caller on every page, so it is asked for once at start; pages that need
  // the overview anyway refresh it.
  headerOverview(parseHash().query);
  route();
});
