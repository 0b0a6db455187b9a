// Drives Debian's Chromium through the Once web console (crates/http/console, docs/design/console.md)
// against a broker that a Rust test started and seeded, and checks what a person would see.
//
// Run: (cd tests/browser && npm ci --no-audit --no-fund) then
//   ONCE_CONSOLE_URL=http://127.0.0.1:PORT ONCE_CONSOLE_EXPECT='{…}' \
//   [ONCE_CONSOLE_SCREENSHOTS=DIR] [CHROMIUM=/usr/bin/chromium] node tests/browser/console.mjs
// One line per check passed, then "console: N passed, M failed"; exits 1 at the first failure
// (2 if the whole run takes longer than ONCE_CONSOLE_TIMEOUT_MS, default 240000).
//
// ONCE_CONSOLE_EXPECT, a JSON object describing what the Rust test seeded:
// {
//   "topic": "payments",              // a topic; the caller (anonymous) may describe and read it
//   "partition": 0,                    // a partition of it holding the records below
//   "first_key": "customer-0",        // UTF-8 key of the record at the partition's log start
//   "first_value_json": {"amount": 50},// that record's value: a JSON document (any JSON value)
//   "open_record_offset": 12,          // offset in topic/partition of a record written by the open
//                                      // transaction `hanging_transaction` (so above the LSO)
//   "group": "billing",                // a consumer group with a committed offset on topic/partition
//   "group_lag": 5,                    // its lag there (high watermark − committed offset)
//   "hanging_transaction": "stuck-payer", // transactional id of that open transaction; it must have
//                                      // been open longer than hanging_after_ms when the script starts
//   "hanging_after_ms": 1000,          // optional (default 1000): the threshold passed to the pages
//   "admin": {"user": "admin", "password": "…"}, // a user allowed to abort it (WRITE on the
//                                      // transactional id, or a super user); anonymous may not
//   "report": "run.html",              // a file name in --console-reports DIR
//   "traffic_topic": "console-traffic",// optional: a topic the script produces to over REST
//                                      // (POST /v3/clusters/{id}/topics/{t}/records, as admin)
//                                      // while it watches the charts, so the fsync chart must draw too
//   "markers": [{"offset": 6, "control": "commit"}], // optional: control records in topic/partition
//   "aborted_offsets": [7],            // optional: records of aborted transactions there
//   "hostile": {                       // optional (its checks print "skipped" when absent): a
//     "topic": "hostile", "partition": 0, // partition anonymous may read, holding records a
//                                      // producer could send to break the page:
//     "xss_offset": 0,                 //   key xss_key and value xss_value, both markup
//     "xss_key": "<img src=x onerror=\"window.__xss=1\">",
//     "xss_value": "<script>window.__xss=1</script>", // optional, this is the default
//     "deep_json_offset": 1,           //   a value of 20,000 nested JSON arrays: [[[…]]]
//     "truncated_offset": 2,           //   a value longer than the 64 KiB the broker sends of a
//     "truncated_size": 100000         //   field, truncated_size bytes of 'x'
//   }
// }
// What the broker must allow: User:ANONYMOUS reads every page above (with --authorization true,
// DESCRIBE on the topic, group, transactional id and cluster, READ on the topic); the admin logs in
// through the console's "Log in" button, i.e. GET /console/login answers an anonymous caller 401 with
// WWW-Authenticate, and the browser (Playwright's httpCredentials here) answers with the password.
// Order matters to the Rust side: everything is read before the abort (which writes an ABORT
// marker, so the group's lag grows by one and the open record becomes aborted), and checked after it.
// Screenshots (1280 wide, full page): overview, topics, topic, records, records-hostile (and
// records-hostile-hex), groups, transactions (the admin's, before the abort), reports .png;
// failure.png of the page where a check failed.
import assert from 'node:assert/strict';
import {mkdirSync} from 'node:fs';
import path from 'node:path';
import {chromium} from 'playwright-core';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`console.mjs: set ${name} (see the top of tests/browser/console.mjs)`);
    process.exit(2);
  }
  return value;
}

const baseUrl = required('ONCE_CONSOLE_URL').replace(/\/+$/, '');
let expected;
try {
  expected = JSON.parse(required('ONCE_CONSOLE_EXPECT'));
} catch (error) {
  console.error(`console.mjs: ONCE_CONSOLE_EXPECT is not JSON: ${error.message}`);
  process.exit(2);
}
for (const field of ['topic', 'partition', 'first_key', 'first_value_json', 'open_record_offset', 'group', 'group_lag',
  'hanging_transaction', 'admin', 'report']) {
  if (!(field in expected)) {
    console.error(`console.mjs: ONCE_CONSOLE_EXPECT lacks "${field}"`);
    process.exit(2);
  }
}
const hangingAfterMs = expected.hanging_after_ms ?? 1000;
const screenshots = process.env.ONCE_CONSOLE_SCREENSHOTS || null;
const timeoutMs = Number(process.env.ONCE_CONSOLE_TIMEOUT_MS || 240000);

// A hung browser must not hang the Rust test that waits for us.
setTimeout(() => {
  console.error(`console.mjs: gave up after ${timeoutMs} ms`);
  process.exit(2);
}, timeoutMs).unref();

// CSS attribute selector for a value that may hold quotes (transactional ids are any string).
function attr(name, value) {
  return `[${name}="${String(value).replace(/["\\]/g, '\\$&')}"]`;
}

function hash(parts, query) {
  const search = new URLSearchParams(query || {}).toString();
  return '/' + parts.map((p) => encodeURIComponent(String(p))).join('/') + (search ? `?${search}` : '');
}

let passed = 0;
let lastPage = null;

// A check that the seeding did not ask for: said, never counted as passed.
function skipped(name, why) {
  console.log(`skipped - ${name} (${why})`);
}

async function check(name, body) {
  try {
    await body();
  } catch (error) {
    console.log(`not ok - ${name}`);
    console.log(`  ${String(error && error.message ? error.message : error).split('\n').join('\n  ')}`);
    if (screenshots && lastPage && !lastPage.page.isClosed()) {
      await lastPage.page.screenshot({path: path.join(screenshots, 'failure.png'), fullPage: true}).catch(() => {});
      console.log(`  (the page at the failure: ${path.join(screenshots, 'failure.png')})`);
    }
    console.log(`console: ${passed} passed, 1 failed`);
    error.reported = true;
    throw error;
  }
  passed += 1;
  console.log(`ok ${passed} - ${name}`);
}

// One console page: collects console errors and uncaught exceptions (a CSP violation is one), and
// waits for the page's own signal that a route finished rendering (main[data-state]).
class ConsolePage {
  constructor(page) {
    this.page = page;
    this.errors = [];
    page.on('console', (message) => {
      const url = message.location().url || '';
      // The browser asks for /favicon.ico by itself; the console serves only its three files, and a
      // data: icon would break the CSP, so that one 404 is not the page's error.
      if (message.type() === 'error' && !url.endsWith('/favicon.ico')) this.errors.push(`${message.text()} (${url || 'no url'})`);
    });
    page.on('pageerror', (error) => this.errors.push(`uncaught: ${error.message}`));
    lastPage = this;
  }

  static async open(context, route) {
    const consolePage = new ConsolePage(await context.newPage());
    await consolePage.page.goto(`${baseUrl}/#${route}`);
    await consolePage.settled(null);
    return consolePage;
  }

  // Waits until a render other than `before` is ready (or failed), then checks it is clean.
  async settled(before) {
    const fresh = before === null ? '' : `:not(${attr('data-render', before)})`;
    await this.page.waitForSelector(`main[data-render]${fresh}:is([data-state="ready"], [data-state="error"])`);
    await this.assertClean();
  }

  async render(action) {
    const before = await this.page.getAttribute('main', 'data-render');
    await action();
    await this.settled(before);
  }

  async reload() {
    await this.page.reload();
    await this.settled(null);
  }

  async assertClean() {
    const banner = this.page.getByTestId('error-banner');
    if (await banner.isVisible()) assert.fail(`error banner shown: ${await banner.textContent()}`);
    assert.equal(await this.page.getAttribute('main', 'data-state'), 'ready', 'the page did not finish rendering');
    assert.deepEqual(this.errors, [], 'console errors on the page');
  }

  async screenshot(name) {
    if (!screenshots) return;
    await this.page.screenshot({path: path.join(screenshots, name), fullPage: true});
  }

  close() {
    return this.page.close();
  }
}

// Points of the longest line drawn in a chart: a polyline's pairs or a path's M/L commands.
async function chartPoints(page, testid) {
  return page.getByTestId(testid).evaluate((figure) => {
    const counts = [...figure.querySelectorAll('polyline, path')].map((line) => (line.tagName === 'polyline'
      ? (line.getAttribute('points') || '').trim().split(/\s+/).filter(Boolean).length
      : ((line.getAttribute('d') || '').match(/[MLml]/g) || []).length));
    return Math.max(0, ...counts);
  });
}

// The latest value a chart's legend shows for its first series, as a number (NaN for "—").
async function legendValue(page, testid) {
  const text = await page.getByTestId(testid).locator('.legend strong').first().textContent();
  return {text, value: Number(text.replace(/[,\s]/g, ''))};
}

// Some poll while records are produced must show them: a produce counter that never moves draws a
// flat line at 0, which waitForLine alone would pass.
async function waitForNonZeroLegend(page, testid) {
  const deadline = Date.now() + 20000;
  const seen = [];
  while (Date.now() < deadline) {
    const {text, value} = await legendValue(page, testid);
    if (value > 0) return value;
    if (seen[seen.length - 1] !== text) seen.push(text);
    await page.waitForTimeout(250);
  }
  assert.fail(`${testid} showed no non-zero rate within 20 s while records were produced (legend showed: ${seen.join(', ')})`);
}

async function waitForLine(page, testid) {
  const deadline = Date.now() + 20000;
  let points = 0;
  while (Date.now() < deadline) {
    points = await chartPoints(page, testid);
    if (points >= 2) return points;
    await page.waitForTimeout(250);
  }
  assert.fail(`${testid} drew no line of 2 points or more within 20 s (longest: ${points})`);
}

function basicAuthorization() {
  return 'Basic ' + Buffer.from(`${expected.admin.user}:${expected.admin.password}`).toString('base64');
}

// Produces a record to traffic_topic every 200 ms (at most 150) until stopped, so that the charts
// have produce and fsync traffic to draw. Errors stop it and are reported by stop().
function startTraffic(clusterId) {
  let running = true;
  let failure = null;
  const url = `${baseUrl}/v3/clusters/${encodeURIComponent(clusterId)}/topics/${encodeURIComponent(expected.traffic_topic)}/records`;
  const done = (async () => {
    for (let i = 0; running && i < 150; i++) {
      const response = await fetch(url, {method: 'POST',
        headers: {'Content-Type': 'application/json', Authorization: basicAuthorization()},
        body: JSON.stringify({value: {type: 'JSON', data: {console_test: i}}})});
      if (!response.ok) { failure = `POST ${url}: ${response.status} ${await response.text()}`; return; }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  })();
  return async () => {
    running = false;
    await done;
    if (failure) assert.fail(failure);
  };
}

async function overviewChecks(context) {
  const overview = await ConsolePage.open(context, hash([], {pollMs: 400, hanging_after_ms: hangingAfterMs}));
  const page = overview.page;
  await check('overview loads and shows the cluster', async () => {
    const clusterId = (await page.getByTestId('overview-cluster').locator('.card-value').textContent()).trim();
    assert.ok(clusterId.length > 0, 'no cluster id shown');
  });
  await check('overview lists the hanging transaction as hanging', async () => {
    const row = page.locator(`[data-testid="overview-txn-row"]${attr('data-txn', expected.hanging_transaction)}`);
    await row.waitFor();
    assert.match(await row.getAttribute('class'), /\bhanging\b/);
    assert.match(await row.textContent(), /hanging/);
    const hanging = await page.getByTestId('overview-hanging').locator('.card-value').textContent();
    assert.ok(Number(hanging) >= 1, `hanging count ${hanging}`);
  });
  let stop = null;
  if (expected.traffic_topic) {
    const response = await context.request.get(`${baseUrl}/console/api/overview`);
    stop = startTraffic((await response.json()).cluster_id);
  }
  try {
    await check('the produce chart draws a line after a few polls', async () => {
      const points = await waitForLine(page, 'chart-produce');
      assert.ok(points >= 2);
    });
    if (expected.traffic_topic) {
      await check('the produce chart shows a non-zero records/s while records are produced', async () => {
        await waitForNonZeroLegend(page, 'chart-produce');
      });
      await check('the fsync chart draws a line while records are produced', async () => {
        await waitForLine(page, 'chart-fsync');
      });
    } else {
      skipped('the produce chart shows a non-zero records/s while records are produced', 'no traffic_topic');
    }
  } finally {
    if (stop) await stop();
  }
  await check('overview polled without errors', () => overview.assertClean());
  await overview.screenshot('overview.png');
  await overview.close();
}

async function topicChecks(context) {
  const topics = await ConsolePage.open(context, '/topics');
  await check('topics page lists the topic', async () => {
    const row = topics.page.locator(`[data-testid="topic-row"]${attr('data-topic', expected.topic)}`);
    await row.waitFor();
    assert.ok((await row.textContent()).includes(expected.topic));
  });
  await topics.screenshot('topics.png');
  await topics.close();

  const topic = await ConsolePage.open(context, hash(['topics', expected.topic]));
  await check('topic page shows its partition and configs', async () => {
    await topic.page.locator(`[data-testid="partition-row"]${attr('data-partition', expected.partition)}`).waitFor();
    assert.ok(await topic.page.getByTestId('config-row').count() > 0, 'no config rows');
  });
  await topic.screenshot('topic.png');
  await topic.close();
}

function recordRow(page, offset) {
  return page.locator(`[data-testid="record-row"]${attr('data-offset', offset)}`);
}

async function recordChecks(context) {
  const records = await ConsolePage.open(context, hash(['topics', expected.topic, expected.partition]));
  const page = records.page;
  await check('record browser shows the first record: its key, its value as pretty JSON', async () => {
    const first = page.getByTestId('record-row').first();
    assert.equal((await first.getByTestId('record-key').textContent()).trim(), expected.first_key);
    const value = await first.getByTestId('record-value').locator('pre').textContent();
    assert.deepEqual(JSON.parse(value), expected.first_value_json, `value shown: ${value}`);
    if (typeof expected.first_value_json === 'object' && expected.first_value_json !== null
      && Object.keys(expected.first_value_json).length > 0) {
      assert.ok(value.includes('\n  '), `value not pretty-printed: ${value}`);
    }
  });
  await records.screenshot('records.png');
  await check('the hex switch shows the key as bytes', async () => {
    await page.getByTestId('value-format').selectOption('hex');
    const firstBytes = [...Buffer.from(expected.first_key).subarray(0, 16)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const key = await page.getByTestId('record-row').first().getByTestId('record-key').textContent();
    assert.ok(key.includes(firstBytes), `hex key "${key}" lacks "${firstBytes}"`);
    await page.getByTestId('value-format').selectOption('auto');
  });
  await check('read_uncommitted shows the open transaction\'s record', async () => {
    await page.getByTestId('position-mode').selectOption('offset');
    await page.getByTestId('position-input').fill(String(expected.open_record_offset));
    await records.render(() => page.getByTestId('load-records').click());
    assert.equal(await page.getByTestId('isolation-toggle').isChecked(), false);
    assert.equal(await recordRow(page, expected.open_record_offset).count(), 1,
      `no record-row at offset ${expected.open_record_offset} under read_uncommitted`);
  });
  await check('read_committed hides it', async () => {
    await records.render(() => page.getByTestId('isolation-toggle').check());
    assert.equal(await page.getByTestId('isolation-toggle').isChecked(), true);
    assert.match(await page.getByTestId('records-summary').textContent(), /read_committed/);
    assert.equal(await recordRow(page, expected.open_record_offset).count(), 0,
      `record ${expected.open_record_offset} of an open transaction shown under read_committed`);
  });
  await records.close();
  for (const marker of expected.markers || []) {
    await check(`offset ${marker.offset} is shown as a ${marker.control.toUpperCase()} marker`, async () => {
      const at = await ConsolePage.open(context, hash(['topics', expected.topic, expected.partition], {offset: marker.offset, limit: 1}));
      const row = recordRow(at.page, marker.offset);
      assert.match(await row.getAttribute('class'), new RegExp(`\\bcontrol-${marker.control}\\b`));
      assert.equal((await row.getByTestId('control-marker').textContent()).trim(), `${marker.control.toUpperCase()} marker`);
      await at.close();
    });
  }
  for (const offset of expected.aborted_offsets || []) {
    await check(`offset ${offset} is shown aborted, and hidden by read_committed`, () => abortedShown(context, offset));
  }
}

// Text that names a byte count however the page formats it: "100,000 bytes", "100000 B" or
// "97.7 KiB" all name 100000.
function namesSize(text, size) {
  const squeezed = text.replace(/[\s,\u00a0\u202f]/g, '');
  return squeezed.includes(String(size)) || squeezed.includes(`${(size / 1024).toFixed(1)}KiB`);
}

async function hostileChecks(context) {
  const hostile = expected.hostile;
  const names = ['hostile: markup in a key and a value is shown as text and never runs',
    'hostile: 20,000 nested JSON arrays render quickly and leave the page usable',
    'hostile: a field the broker cut says so and "show all" claims no more than was sent'];
  if (!hostile) {
    for (const name of names) skipped(name, 'ONCE_CONSOLE_EXPECT has no "hostile"');
    return;
  }
  const xssValue = hostile.xss_value ?? '<script>window.__xss=1</script>';
  const offsets = [hostile.xss_offset, hostile.deep_json_offset, hostile.truncated_offset];
  const from = Math.min(...offsets);
  let records = null;
  let renderMs = null;
  // One page holding all three: the deep record must not cost its neighbours either.
  await check(names[1], async () => {
    const started = Date.now();
    records = await ConsolePage.open(context, hash(['topics', hostile.topic, hostile.partition],
      {offset: from, limit: Math.max(...offsets) - from + 1}));
    renderMs = Date.now() - started;
    assert.ok(renderMs < 5000, `the page took ${renderMs} ms to render`);
    const format = records.page.getByTestId('value-format');
    assert.equal(await format.isVisible(), true, 'the Show-as selector is not visible');
    const deep = recordRow(records.page, hostile.deep_json_offset).getByTestId('record-value');
    const deepText = (await deep.textContent()).replace(/\s/g, '');
    assert.ok(deepText.startsWith('[[[['), `the deep value is not shown: ${deepText.slice(0, 100)}`);
    await records.screenshot('records-hostile.png');
    for (const choice of ['json', 'hex']) {
      const before = Date.now();
      await format.selectOption(choice);
      assert.ok(Date.now() - before < 5000, `switching to ${choice} took ${Date.now() - before} ms`);
      await records.assertClean();
    }
    const hex = await recordRow(records.page, hostile.deep_json_offset).getByTestId('record-value').textContent();
    assert.ok(hex.includes('5b 5b 5b 5b'), `the deep value in hex lacks "5b 5b 5b 5b": ${hex.slice(0, 200)}`);
    const keyHex = [...Buffer.from(hostile.xss_key).subarray(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const key = await recordRow(records.page, hostile.xss_offset).getByTestId('record-key').textContent();
    assert.ok(key.includes(keyHex), `the key in hex "${key.slice(0, 200)}" lacks "${keyHex}"`);
    await records.screenshot('records-hostile-hex.png');
    await format.selectOption('auto');
    await records.assertClean();
  });
  const page = records.page;
  await check(names[0], async () => {
    const row = recordRow(page, hostile.xss_offset);
    assert.equal(await row.getByTestId('record-key').locator('pre').textContent(), hostile.xss_key);
    assert.equal(await row.getByTestId('record-value').locator('pre').textContent(), xssValue);
    assert.equal(await page.evaluate(() => typeof window.__xss), 'undefined', 'window.__xss was set: markup from a record ran');
    assert.equal(await page.locator('main img, main script, main iframe').count(), 0, 'a record became an element');
  });
  await check(names[2], async () => {
    const value = recordRow(page, hostile.truncated_offset).getByTestId('record-value');
    const note = value.getByTestId('cut-note');
    assert.equal(await note.count(), 1, 'no cut indicator on the value');
    const noteText = await note.textContent();
    assert.ok(namesSize(noteText, hostile.truncated_size), `the cut indicator "${noteText}" does not name ${hostile.truncated_size} bytes`);
    const more = value.getByTestId('show-all');
    if (await more.count() > 0) {
      const label = await more.textContent();
      assert.ok(!namesSize(label, hostile.truncated_size), `"${label}" claims the whole ${hostile.truncated_size} bytes`);
      await more.click();
    }
    const shown = (await value.locator('pre').textContent()).length;
    assert.ok(shown > 0 && shown < hostile.truncated_size, `${shown} characters shown of a field cut below ${hostile.truncated_size} bytes`);
    await records.assertClean();
  });
  await records.close();
}

async function abortedShown(context, offset) {
  const at = await ConsolePage.open(context, hash(['topics', expected.topic, expected.partition], {offset, limit: 500}));
  const row = recordRow(at.page, offset);
  assert.match(await row.getAttribute('class') || '', /\baborted\b/, `record ${offset} not marked aborted`);
  assert.equal((await row.getByTestId('aborted-flag').textContent()).trim(), 'aborted');
  await at.render(() => at.page.getByTestId('isolation-toggle').check());
  assert.equal(await recordRow(at.page, offset).count(), 0, `aborted record ${offset} shown under read_committed`);
  await at.close();
}

async function groupChecks(context) {
  const groups = await ConsolePage.open(context, '/groups');
  await check('groups page shows the group\'s lag', async () => {
    const group = groups.page.locator(`[data-testid="group-row"]${attr('data-group', expected.group)}`);
    await group.waitFor();
    const row = group.locator(`[data-testid="group-offset-row"]${attr('data-topic', expected.topic)}${attr('data-partition', expected.partition)}`);
    assert.equal((await row.getByTestId('lag').textContent()).trim(), String(expected.group_lag));
  });
  await groups.screenshot('groups.png');
  await groups.close();
}

function transactionRow(page) {
  return page.locator(`[data-testid="txn-row"]${attr('data-txn', expected.hanging_transaction)}`);
}

async function anonymousTransactionChecks(context) {
  const transactions = await ConsolePage.open(context, hash(['transactions'], {hanging_after_ms: hangingAfterMs}));
  const row = transactionRow(transactions.page);
  await check('the hanging transaction is shown hanging', async () => {
    await row.waitFor();
    assert.match(await row.getAttribute('class') || '', /\bhanging\b/, 'row lacks class "hanging"');
    assert.equal((await row.getByTestId('txn-status').textContent()).trim(), 'hanging');
  });
  await check('anonymous: the abort button is disabled and says why', async () => {
    const button = row.getByTestId('abort-button');
    assert.equal(await button.isDisabled(), true, 'abort button enabled for User:ANONYMOUS');
    assert.match(await button.getAttribute('title') || '', /log/i, 'no tooltip telling to log in');
  });
  await transactions.close();
}

async function reportChecks(context) {
  const reports = await ConsolePage.open(context, '/reports');
  const page = reports.page;
  await check('reports page lists the report', async () => {
    await page.locator(`[data-testid="report-row"]${attr('data-report', expected.report)}`).waitFor();
  });
  await check('the report opens in a sandboxed frame', async () => {
    const loaded = page.waitForResponse((response) => response.url().endsWith(`/console/reports/${encodeURIComponent(expected.report)}`));
    await reports.render(() => page.locator(`[data-testid="report-row"]${attr('data-report', expected.report)}`).getByTestId('report-open').click());
    assert.equal((await loaded).status(), 200, 'report not served');
    const frameElement = page.getByTestId('report-frame');
    assert.equal(await frameElement.getAttribute('sandbox'), '', 'the frame is not fully sandboxed');
    const frame = await (await frameElement.elementHandle()).contentFrame();
    await frame.waitForLoadState('load');
    const text = (await frame.locator('body').textContent()).trim();
    assert.ok(text.length > 0, 'the report frame is empty');
    await reports.assertClean();
  });
  await reports.screenshot('reports.png');
  await reports.close();
}

async function abortChecks(admin) {
  const transactions = await ConsolePage.open(admin, hash(['transactions'], {hanging_after_ms: hangingAfterMs}));
  const page = transactions.page;
  const row = transactionRow(page);
  await check('admin: logging in makes the browser send the password from then on', async () => {
    await transactions.render(() => page.getByTestId('login-button').click());
    assert.equal(await page.getByTestId('caller').locator('.mono').textContent(), `User:${expected.admin.user}`);
    assert.equal(await page.getByTestId('login-button').count(), 0, 'still offered to log in');
  });
  await check('admin: the abort button is enabled', async () => {
    await row.waitFor();
    assert.equal(await row.getByTestId('abort-button').isEnabled(), true, 'abort button disabled for the admin');
  });
  await transactions.screenshot('transactions.png');
  // The producer id and epoch the row showed when the admin clicked, and the abort requests sent.
  let confirmed = null;
  const aborts = [];
  page.on('request', (request) => {
    if (request.method() === 'POST' && /\/console\/api\/transactions\/[^/]+\/abort$/.test(new URL(request.url()).pathname)) aborts.push(request);
  });
  await check('admin: the confirmation needs the transactional id typed', async () => {
    confirmed = {producer_id: Number(await row.getAttribute('data-producer-id')),
      producer_epoch: Number(await row.getAttribute('data-producer-epoch'))};
    await row.getByTestId('abort-button').click();
    const dialog = page.getByTestId('abort-dialog');
    await dialog.waitFor();
    assert.equal(await dialog.getByTestId('confirm-abort').isDisabled(), true);
    await dialog.getByTestId('confirm-input').fill(`${expected.hanging_transaction}x`);
    assert.equal(await dialog.getByTestId('confirm-abort').isDisabled(), true, 'enabled with a wrong id typed');
    await dialog.getByTestId('confirm-input').fill(expected.hanging_transaction);
    assert.equal(await dialog.getByTestId('confirm-abort').isEnabled(), true, 'still disabled with the id typed');
  });
  await check('admin: abort answers with the aborting state', async () => {
    const dialog = page.getByTestId('abort-dialog');
    await dialog.getByTestId('confirm-abort').click();
    const result = dialog.getByTestId('abort-result');
    await page.waitForFunction((node) => /Done|\d{3}/.test(node.textContent), await result.elementHandle());
    const text = await result.textContent();
    assert.match(text, /Ongoing transaction was aborted; its producer is fenced/, `abort result: ${text}`);
    // The dialog names what was confirmed, so that the broker refuses if another producer took the id.
    assert.equal(aborts.length, 1, `${aborts.length} abort requests sent`);
    const sent = aborts[0];
    assert.match(sent.headers()['content-type'] || '', /^application\/json\b/);
    let body;
    try { body = JSON.parse(sent.postData() || ''); } catch (error) { assert.fail(`abort body is not JSON: ${sent.postData()}`); }
    for (const field of ['producer_id', 'producer_epoch']) {
      assert.ok(Number.isSafeInteger(body[field]), `abort body lacks a number "${field}": ${JSON.stringify(body)}`);
    }
    assert.deepEqual({producer_id: body.producer_id, producer_epoch: body.producer_epoch}, confirmed,
      'the abort did not name the producer id/epoch of the row confirmed');
    await dialog.getByTestId('confirm-cancel').click();
    await dialog.waitFor({state: 'detached'});
  });
  // The abort fences the producer with a new epoch: the id is left with no transaction (Empty), or
  // CompleteAbort for a moment.
  await check('admin: the transaction then shows as not open', async () => {
    const settled = ['Empty', 'CompleteAbort'];
    const deadline = Date.now() + 20000;
    let state = null;
    while (Date.now() < deadline) {
      state = (await row.getByTestId('txn-state').textContent()).trim();
      if (settled.includes(state)) break;
      await page.waitForTimeout(500);
      await transactions.reload();
    }
    assert.ok(settled.includes(state), `state after abort: ${state}`);
    assert.equal(await row.getByTestId('abort-button').count(), 0, 'an abort button is still offered');
    assert.doesNotMatch(await row.getAttribute('class') || '', /\bhanging\b/);
    assert.notEqual((await row.getByTestId('txn-status').textContent()).trim(), 'hanging');
    await transactions.assertClean();
  });
  await transactions.close();
  await check('after the abort its record is shown aborted, and hidden by read_committed',
    () => abortedShown(admin, expected.open_record_offset));
}

async function main() {
  if (screenshots) mkdirSync(screenshots, {recursive: true});
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
  });
  try {
    const viewport = {width: 1280, height: 900};
    const anonymous = await browser.newContext({viewport});
    anonymous.setDefaultTimeout(15000);
    await overviewChecks(anonymous);
    await topicChecks(anonymous);
    await recordChecks(anonymous);
    await hostileChecks(anonymous);
    await groupChecks(anonymous);
    await anonymousTransactionChecks(anonymous);
    await reportChecks(anonymous);
    // The browser answers a 401's WWW-Authenticate with these, as a person typing them in the prompt.
    const admin = await browser.newContext({viewport,
      httpCredentials: {username: expected.admin.user, password: expected.admin.password}});
    admin.setDefaultTimeout(15000);
    await abortChecks(admin);
  } finally {
    await browser.close();
  }
  console.log(`console: ${passed} passed, 0 failed`);
}

main().catch((error) => {
  // A failure outside a check (the browser did not start, say) has not been reported yet.
  if (!error.reported) {
    console.log(`not ok - ${error && error.stack ? error.stack : error}`);
    console.log(`console: ${passed} passed, 1 failed`);
  }
  process.exitCode = 1;
});
