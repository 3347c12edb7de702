// The client against servers that misbehave (no ledger needed): garbage, HTML error pages, huge
// and hanging answers, redirects, bad summaries; and against users who misuse it.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import { afterEach, mock, test } from 'node:test';

import {
  COUNTER_MAX,
  LedgerApiError,
  LedgerBodyTooLargeError,
  LedgerClient,
  LedgerNetworkError,
  LedgerProtocolError,
  LedgerStateError,
  LedgerValidationError,
  MAX_DELAY_MS,
  RunHandle,
  RunNotStartedError,
} from '../index.mjs';

// The fake servers of the test running: each is closed as its test ends, not held to the end of
// the file.
const servers = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((done) => server.close(done));
  }
});

/** A server whose handler gets (req, res, body, n) for the n-th request (from 1). */
async function fake(handler) {
  const requests = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ method: req.method, url: req.url, headers: req.headers, body });
      handler(req, res, body, requests.length);
    });
  });
  servers.push(server);
  // In this process, on a port the system picks: LEDGER_TEST_PORTS is for servers started as
  // processes (a live `ledger api`), whose port must be chosen before they bind it.
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  return { url: `http://127.0.0.1:${server.address().port}`, requests };
}

function summaryFor(body) {
  const events = JSON.parse(body);
  const started = events.find((event) => event.type === 'RunStarted');
  return {
    appended: events.length,
    duplicates: 0,
    first_position: 1,
    last_position: events.length,
    allocated_run_ids: started ? [1] : [],
    run_refs: started?.run_ref ? { [started.run_ref]: 1 } : {},
  };
}

function ledgerLike(res, body) {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(summaryFor(body)));
}

function client(url, options = {}) {
  return new LedgerClient({ url, token: 'token-0123456789abcdef', backoffMs: 5, maxBackoffMs: 20, ...options });
}

const RUN = { sourceId: 1, connectorName: 'hostile', heartbeatIntervalMs: 0 };

/** A ledger-like server that answers `status` (503: with Retry-After 0) while `down` is set. */
async function outage(status = 503) {
  const state = { down: false };
  const server = await fake((req, res, body) => {
    if (state.down) {
      res.writeHead(status, status === 503 ? { 'retry-after': '0' } : {});
      res.end();
      return;
    }
    ledgerLike(res, body);
  });
  return Object.assign(state, server);
}

test('a 200 that is an HTML page is a protocol error, not retried', async () => {
  const server = await fake((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<html><body>Welcome to nginx!</body></html>');
  });
  const error = await client(server.url).append([]).catch((caught) => caught);
  assert.ok(error instanceof LedgerProtocolError, error);
  assert.match(error.message, /text\/html, not JSON .*Welcome to nginx/);
  assert.equal(server.requests.length, 1);
});

test('a 502 HTML page from a proxy is retried, then a LedgerApiError with a clean detail', async () => {
  const server = await fake((req, res) => {
    res.writeHead(502, 'Bad Gateway', { 'content-type': 'text/html' });
    res.end('<h1>502</h1>\u001b[2J\nupstream\u202egone');
  });
  const error = await client(server.url, { retries: 2 }).append([]).catch((caught) => caught);
  assert.ok(error instanceof LedgerApiError, error);
  assert.equal(error.status, 502);
  assert.equal(error.title, 'Bad Gateway');
  assert.equal(error.attempts, 3);
  assert.match(error.detail, /not a problem\+json answer/);
  assert.doesNotMatch(error.detail, /[\u001b\u202e\n]/); // control characters escaped
  assert.equal(server.requests.length, 3);
  assert.equal(new Set(server.requests.map((r) => r.body)).size, 1); // the same body each time
});

test('503 with Retry-After is honoured, and the same event ids are sent again', async () => {
  let firstAt;
  let secondAt;
  const server = await fake((req, res, body, n) => {
    if (n === 1) {
      firstAt = Date.now();
      res.writeHead(503, { 'content-type': 'application/problem+json', 'retry-after': '1' });
      res.end(JSON.stringify({ type: 'x', title: 'Database unreachable', status: 503, detail: 'down' }));
      return;
    }
    secondAt = Date.now();
    ledgerLike(res, body);
  });
  const run = await client(server.url).startRun(RUN);
  assert.equal(run.runId, 1);
  assert.ok(secondAt - firstAt >= 950, `${secondAt - firstAt} ms`);
  assert.equal(server.requests[0].body, server.requests[1].body);
});

// A first answer that is worth a retry, then the ledger's: the same body is sent again.
for (const [name, answer] of [
  [
    '429 Too Many Requests is retried like 503 (a proxy or rate limiter in front of the API)',
    (res) => {
      res.writeHead(429, { 'retry-after': '0' });
      res.end();
    },
  ],
  [
    'a 409 write-conflict (another writer won a race; the same events are safe) is retried',
    (res) => {
      res.writeHead(409, { 'content-type': 'application/problem+json' });
      res.end(
        JSON.stringify({
          type: 'urn:run-ledger:problem:write-conflict',
          title: 'Write conflict',
          status: 409,
          detail: 'another writer took the key first',
        }),
      );
    },
  ],
  [
    '408 (the API cut a body that stalled) is retried with the same body',
    (res) => {
      res.writeHead(408, { 'content-type': 'application/problem+json', connection: 'close' });
      res.end(JSON.stringify({ type: 'x', title: 'Request timeout', status: 408, detail: 'stalled' }));
    },
  ],
]) {
  test(name, async () => {
    const server = await fake((req, res, body, n) => (n === 1 ? answer(res) : ledgerLike(res, body)));
    const run = await client(server.url).startRun(RUN);
    assert.equal(run.runId, 1);
    assert.equal(server.requests.length, 2);
    assert.equal(server.requests[0].body, server.requests[1].body);
  });
}

test('append() fixes an event_id for each event given without one: a retry is a duplicate', async () => {
  // The first attempt reaches the ledger but its answer is lost: the retry must name the same
  // events, or the ledger stores them twice (a second run for a RunStarted).
  const server = await fake((req, res, body, n) => {
    if (n === 1) {
      req.socket.destroy();
      return;
    }
    ledgerLike(res, body);
  });
  const events = [
    { type: 'RunStarted', run_ref: 'r', source_id: 1, connector_name: 'mine' },
    { type: 'RunProgressed', run_ref: 'r', event_id: '0b8e5d0e-5f3c-4c4e-9a55-3f1f2f6c1a01' },
  ];
  await client(server.url).append(events);
  assert.equal(server.requests.length, 2);
  const [first, second] = server.requests.map((r) => JSON.parse(r.body));
  assert.match(first[0].event_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.deepEqual(second, first);
  assert.equal(first[1].event_id, events[1].event_id); // a caller's own id is kept
  assert.equal(events[0].event_id, undefined); // the caller's objects are left as they were
});

test('a hostile Retry-After is capped, and retries are bounded', async () => {
  const server = await fake((req, res) => {
    res.writeHead(503, { 'retry-after': '999999999' });
    res.end();
  });
  const started = Date.now();
  // No retry here: what it would wait is capped at 60 s.
  const error = await client(server.url, { retries: 0 }).append([]).catch((caught) => caught);
  assert.ok(error instanceof LedgerApiError);
  assert.equal(error.status, 503);
  assert.equal(error.retryAfterMs, 60_000);
  assert.ok(Date.now() - started < 5_000);
});

test('a huge answer is cut off at maxResponseBytes', async () => {
  const server = await fake((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    const chunk = Buffer.alloc(64 * 1024, 'x');
    const pump = () => {
      while (res.write(chunk)) {
        /* until the socket pushes back */
      }
    };
    res.on('drain', pump);
    res.on('error', () => {});
    pump();
  });
  const error = await client(server.url, { maxResponseBytes: 100_000 })
    .append([])
    .catch((caught) => caught);
  assert.ok(error instanceof LedgerProtocolError, error);
  assert.match(error.message, /over 100000 bytes/);
});

test('a response that hangs (before or after its headers) times out and is retried', async () => {
  for (const sendHeaders of [false, true]) {
    const server = await fake((req, res) => {
      if (sendHeaders) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"appended":');
      }
      // ... and nothing more
    });
    const started = Date.now();
    const error = await client(server.url, { timeoutMs: 200, retries: 1 })
      .append([])
      .catch((caught) => caught);
    assert.ok(error instanceof LedgerNetworkError, `${sendHeaders}: ${error}`);
    assert.match(error.message, /no complete answer within 200 ms .*2 attempt/);
    assert.equal(server.requests.length, 2);
    assert.ok(Date.now() - started < 5_000);
  }
});

test('a refused connection is a LedgerNetworkError after the retries', async () => {
  const server = await fake(() => {});
  const { url } = server;
  const last = servers.pop();
  last.closeAllConnections();
  await new Promise((done) => last.close(done));
  const error = await client(url, { retries: 2 }).append([]).catch((caught) => caught);
  assert.ok(error instanceof LedgerNetworkError, error);
  assert.match(error.message, /ECONNREFUSED/);
  assert.equal(error.attempts, 3);
});

test('summaries that are not the ledger\'s: the run does not start', async () => {
  for (const answer of [
    [],
    {},
    { appended: 1, duplicates: 0 },
    { appended: 1, duplicates: 0, run_refs: { run: '1' } },
    { appended: 1, duplicates: 0, run_refs: { run: -4 } },
    null,
  ]) {
    const server = await fake((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer));
    });
    const error = await client(server.url).startRun(RUN).catch((caught) => caught);
    assert.ok(error instanceof RunNotStartedError, `${JSON.stringify(answer)}: ${error}`);
  }
});

test('a redirect is not followed (the token stays here), nor retried', async () => {
  const elsewhere = await fake((req, res) => ledgerLike(res, req.body ?? '[]'));
  const server = await fake((req, res) => {
    res.writeHead(307, { location: `${elsewhere.url}/v1/events` });
    res.end();
  });
  const error = await client(server.url).append([]).catch((caught) => caught);
  assert.ok(error instanceof LedgerApiError, error);
  assert.equal(error.status, 307);
  assert.equal(server.requests.length, 1);
  assert.equal(elsewhere.requests.length, 0);
});

test('a 4xx is never retried; problem fields are read, odd ones ignored', async () => {
  const server = await fake((req, res) => {
    res.writeHead(400, { 'content-type': 'application/problem+json' });
    res.end(
      JSON.stringify({
        title: 'Invalid input',
        status: 400,
        detail: 'invalid input, nothing was appended:\n  line 2: records_fetched: too big',
        errors: [{ field: 'records_fetched', line: 2, message: 'too big' }, 'junk', null],
      }),
    );
  });
  const error = await client(server.url).append([]).catch((caught) => caught);
  assert.equal(error.status, 400);
  assert.equal(error.field, 'records_fetched');
  assert.equal(error.line, 2);
  assert.equal(error.errors.length, 1);
  assert.equal(server.requests.length, 1);
  const conflict = await fake((req, res) => {
    res.writeHead(409, { 'content-type': 'application/problem+json' });
    res.end(JSON.stringify({ type: 'urn:run-ledger:problem:version-conflict', status: 409 }));
  });
  const stale = await client(conflict.url).append([]).catch((caught) => caught);
  assert.equal(stale.status, 409); // the caller's expected_version is stale: not retried
  assert.equal(conflict.requests.length, 1);
});

test('the token is sent as a bearer header and never shown', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const ledger = client(server.url);
  await ledger.append([]);
  assert.equal(server.requests[0].headers.authorization, 'Bearer token-0123456789abcdef');
  assert.doesNotMatch(JSON.stringify(ledger), /0123456789/);
  const { inspect } = await import('node:util');
  assert.doesNotMatch(inspect(ledger), /0123456789/);
  assert.throws(() => new LedgerClient({ url: 'http://u:p@h', token: 'x' }), LedgerValidationError);
  assert.throws(() => new LedgerClient({ url: 'ftp://h', token: 'x' }), LedgerValidationError);
  assert.throws(() => new LedgerClient({ url: 'http://h', token: 'a b' }), LedgerValidationError);
  // A token fetch cannot send was refused by each request, as a network error, after retries.
  for (const token of ['tök€n-0123456789abcdef', 'token-0123456789abcdé', 'token-\u007f-0123456789']) {
    assert.throws(
      () => new LedgerClient({ url: 'http://h', token }),
      (error) => error instanceof LedgerValidationError && error.field === 'token' && !error.message.includes(token),
    );
  }
  assert.throws(() => new LedgerClient({ url: 'http://h', token: 'x', retries: -1 }), LedgerValidationError);
});

test('sums past the INT limit go out as several events, each within it', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const run = await client(server.url).startRun({ ...RUN, progressIntervalMs: 60_000 });
  for (let i = 0; i < 5; i += 1) run.progress({ recordsFetched: COUNTER_MAX, recordsCreated: 1 });
  const result = await run.finish({ recordsFetched: COUNTER_MAX });
  const events = server.requests.slice(1).flatMap((r) => JSON.parse(r.body));
  const fetched = events.reduce((sum, e) => sum + (e.records_fetched ?? 0), 0);
  assert.equal(fetched, 6 * COUNTER_MAX);
  assert.equal(events.filter((e) => e.type === 'RunProgressed').reduce((s, e) => s + e.records_created, 0), 5);
  for (const event of events) assert.ok((event.records_fetched ?? 0) <= COUNTER_MAX);
  assert.equal(result.totals.recordsFetched, 6 * COUNTER_MAX);
  assert.equal(events.at(-1).type, 'RunFinished');
});

test('the events are what POST /v1/events accepts', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const run = await client(server.url).startRun({ ...RUN, progressIntervalMs: 0, metadata: { a: 1 } });
  await run.progress({ recordsFetched: 2 });
  await run.fail(new RangeError('page 3 out of range'));
  const [started] = JSON.parse(server.requests[0].body);
  assert.deepEqual(Object.keys(started).sort(), [
    'actor',
    'connector_name',
    'event_id',
    'metadata',
    'occurred_at',
    'run_ref',
    'source_id',
    'type',
  ]);
  assert.match(started.event_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.match(started.occurred_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(started.metadata.a, 1);
  const [progressed] = JSON.parse(server.requests[1].body);
  assert.equal(progressed.type, 'RunProgressed');
  assert.equal(progressed.run_id, 1);
  assert.equal(progressed.run_ref, undefined);
  const [finished] = JSON.parse(server.requests[2].body);
  assert.equal(finished.type, 'RunFinished');
  assert.equal(finished.status, 'failed');
  assert.equal(finished.error_message, 'RangeError: page 3 out of range');
  assert.equal(finished.error_details.exception, 'RangeError');
  assert.match(finished.error_details.traceback, /hostile\.test\.mjs/);
});

test('a finish that could not reach the ledger resends the same events when called again', async () => {
  const server = await outage(500);
  const run = await client(server.url, { retries: 1 }).startRun({ ...RUN, progressIntervalMs: 60_000 });
  run.progress({ recordsFetched: 3 });
  server.down = true;
  await assert.rejects(run.finish(), LedgerApiError);
  assert.throws(() => run.progress({ recordsFetched: 1 }), LedgerStateError);
  server.down = false;
  const result = await run.finish();
  assert.equal(result.status, 'success');
  const bodies = server.requests.slice(1).map((r) => r.body);
  assert.equal(new Set(bodies).size, 1); // all four sendings carried the same two events
  assert.deepEqual(JSON.parse(bodies[0]).map((e) => e.type), ['RunProgressed', 'RunFinished']);
  await assert.rejects(run.finish(), LedgerStateError);
});

test('withRun records odd thrown values and hostile details without breaking', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const ledger = client(server.url);
  const circular = { a: 1 };
  circular.self = circular;
  for (const [thrown, message] of [
    ['plain string', 'thrown string: plain string'],
    [undefined, 'thrown undefined'],
    [{ code: 7 }, 'thrown object: {"code":7}'],
    [circular, 'thrown object: [object Object]'],
  ]) {
    await assert.rejects(
      ledger.withRun(RUN, (run) => {
        run.error('x'.repeat(10_000), circular);
        run.error('\ud800 lone surrogate', { deep: JSON.parse('['.repeat(50) + ']'.repeat(50)) });
        throw thrown;
      }),
      (caught) => caught === thrown,
    );
    const [finished] = JSON.parse(server.requests.at(-1).body);
    assert.equal(finished.error_message, message);
    assert.equal(finished.error_details.error_count, 2);
    assert.ok(finished.error_details.errors[0].message.length < 2_100);
    assert.ok('unserialisable' in finished.error_details.errors[0].details);
    assert.ok('clipped' in finished.error_details.errors[1].details);
    assert.equal(finished.error_details.errors[1].message[0], '\ufffd');
  }
  // A function that finishes the run itself: withRun adds nothing.
  const before = server.requests.length;
  await ledger.withRun(RUN, (run) => run.finish({ status: 'partial', errorMessage: 'half' }));
  assert.equal(server.requests.length, before + 2);
});

// The audit's values (review 4): each made fail() throw before it built the terminal event
// (V8 formats `stack` from the name and message when it is first read, and a Symbol there
// throws), withRun only warned, and the heartbeat kept the open run alive for ever.
function awkwardThrown() {
  const symbolName = new Error('upstream 500');
  symbolName.name = Symbol.for('HttpError');
  const nameGetter = new Error('name unreadable');
  Object.defineProperty(nameGetter, 'name', {
    get() {
      throw new Error('no name');
    },
  });
  const { proxy: revoked, revoke } = Proxy.revocable(new Error('revoked'), {});
  revoke();
  const causeGetter = new Error('cause unreadable');
  Object.defineProperty(causeGetter, 'cause', {
    get() {
      throw new Error('no cause');
    },
  });
  const symbolMessage = new Error();
  symbolMessage.message = Symbol('upstream');
  return [
    ['an Error whose name is a Symbol', symbolName, 'Symbol(HttpError): upstream 500'],
    ['an Error whose name getter throws', nameGetter, 'Error: name unreadable'],
    ['a revoked Proxy', revoked, 'thrown object: an error that could not be described'],
    ['an Error whose cause getter throws', causeGetter, 'Error: cause unreadable'],
    ['an Error whose message is a Symbol', symbolMessage, 'Error: Symbol(upstream)'],
  ];
}

for (const [what, thrown, message] of awkwardThrown()) {
  test(`withRun ends the run failed, its timers stopped, whatever is thrown: ${what}`, async () => {
    const server = await fake((req, res, body) => ledgerLike(res, body));
    const reported = [];
    let run;
    // Neither assert.rejects nor a promise resolved with it: both read properties of the
    // rejection (`then`), which a revoked Proxy refuses.
    let caught;
    try {
      await client(server.url).withRun(
        { ...RUN, heartbeatIntervalMs: 300, onError: (error) => reported.push(error) },
        (handle) => {
          run = handle;
          throw thrown;
        },
      );
    } catch (error) {
      caught = error;
    }
    assert.ok(caught === thrown, 'withRun rejects with what the function threw');
    assert.deepEqual(reported, []);
    assert.equal(run.status, 'failed');
    assert.equal(run.isOpen, false);
    assert.equal(run._heartbeatTimer, undefined); // nothing left to keep the run alive
    const [finished] = JSON.parse(server.requests.at(-1).body);
    assert.equal(finished.type, 'RunFinished');
    assert.equal(finished.status, 'failed');
    assert.equal(finished.error_message, message);
  });
}

test('run.fail() and run.error() called directly take the same awkward values', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const ledger = client(server.url);
  for (const [what, thrown, message] of awkwardThrown()) {
    const run = await ledger.startRun({ ...RUN, heartbeatIntervalMs: 60_000 });
    run.error(thrown, { what }); // String() of some throws: described, not thrown back
    const result = await run.fail(thrown);
    assert.equal(result.status, 'failed', what);
    assert.equal(run._heartbeatTimer, undefined, what);
    const [finished] = JSON.parse(server.requests.at(-1).body);
    assert.equal(finished.error_message, message, what);
    assert.equal(finished.error_details.errors[0].details.what, what);
    assert.equal(typeof finished.error_details.errors[0].message, 'string');
  }
  const run = await ledger.startRun(RUN);
  const unprintable = {
    toString() {
      throw new Error('no text');
    },
    toJSON() {
      throw Symbol('no JSON');
    },
  };
  run.error(unprintable, unprintable);
  assert.equal((await run.finish()).status, 'partial');
  const [finished] = JSON.parse(server.requests.at(-1).body);
  assert.deepEqual(finished.error_details.errors, [
    {
      message: 'thrown object: [object Object]',
      details: { unserialisable: 'Symbol(no JSON)' },
    },
  ]);
});

test('withRun: a fail() that breaks before it builds the terminal event still ends the run', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const reported = [];
  const broken = new TypeError('fail() broke');
  const thrown = new Error('the source broke');
  let run;
  await assert.rejects(
    client(server.url).withRun(
      { ...RUN, heartbeatIntervalMs: 60_000, onError: (error) => reported.push(error) },
      (handle) => {
        run = handle;
        run.fail = async () => {
          throw broken;
        };
        throw thrown;
      },
    ),
    (caught) => caught === thrown,
  );
  assert.deepEqual(reported, [broken]);
  assert.equal(run.status, 'failed');
  assert.equal(run._heartbeatTimer, undefined);
  const [finished] = JSON.parse(server.requests.at(-1).body);
  assert.equal(finished.status, 'failed');
  assert.equal(finished.error_message, 'an error that could not be described');
  assert.equal(finished.error_details.reason, 'undescribed-error');
});

test('a withRun whose terminal event cannot be sent is not replaced by the undescribed failure', async () => {
  const server = await outage(500);
  server.down = false;
  const reported = [];
  const thrown = new Error('the source broke');
  await assert.rejects(
    client(server.url, { retries: 1 }).withRun(
      { ...RUN, onError: (error) => reported.push(error) },
      () => {
        server.down = true;
        throw thrown;
      },
    ),
    (caught) => caught === thrown,
  );
  // The ledger's failure is reported as it is; no second, vaguer RunFinished was tried.
  assert.equal(reported.length, 1);
  assert.ok(reported[0] instanceof LedgerApiError, String(reported[0]));
  const finishes = server.requests.map((r) => JSON.parse(r.body).at(-1)).filter((e) => e.type === 'RunFinished');
  assert.equal(new Set(finishes.map((e) => e.event_id)).size, 1);
  assert.equal(finishes[0].error_message, 'Error: the source broke');
});

/** `fn` run while os.hostname() (which the client imports) says `host`. */
async function onHost(host, fn) {
  const real = os.hostname;
  os.hostname = () => host;
  syncBuiltinESMExports();
  try {
    return await fn();
  } finally {
    os.hostname = real;
    syncBuiltinESMExports();
  }
}

test('the actor stays within the ledger\'s 200 characters: a long host name is cut, the note included', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const ledger = client(server.url);
  const host = `${'h'.repeat(63)}.${'d'.repeat(63)}.example.org`;
  const name = 'c'.repeat(100);
  const run = await onHost(host, () => ledger.startRun({ ...RUN, connectorName: name }));
  await run.finish();
  const [started] = JSON.parse(server.requests[0].body);
  assert.ok(started.actor.length <= 200, `${started.actor.length}: ${started.actor}`);
  assert.equal(started.actor.length, 200); // as much of the host as fits
  assert.ok(started.actor.startsWith(`connector:${name}@hhhh`), started.actor);
  assert.match(started.actor, new RegExp(`…\\[\\d+ characters cut\\]:${process.pid}$`));
  assert.equal(started.metadata.host, host); // the whole name is kept there
  const [finished] = JSON.parse(server.requests[1].body);
  assert.equal(finished.actor, started.actor);
  // 100 emoji are 100 characters to the ledger but 200 UTF-16 units: no room for the host, the
  // whole actor is cut, still within 200 (code points, fewer than the units counted).
  const emoji = '\u{1F600}'.repeat(100);
  const wide = await onHost(host, () => ledger.startRun({ ...RUN, connectorName: emoji }));
  assert.ok(wide.actor.length <= 200, wide.actor);
  assert.match(wide.actor, /^connector:\u{1F600}+\uFFFD?…\[\d+ characters cut\]$/u);
  // A short one is as it was.
  const plain = await onHost('db-1', () => ledger.startRun(RUN));
  assert.equal(plain.actor, `connector:hostile@db-1:${process.pid}`);
});

test('a cut text fits its limit with its note: a message at 2,000 characters, details at 4,000', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const run = await client(server.url).startRun(RUN);
  run.error('x'.repeat(10_000), { blob: 'b'.repeat(10_000) });
  await run.fail(new Error('y'.repeat(10_000)));
  const [finished] = JSON.parse(server.requests.at(-1).body);
  const [recorded] = finished.error_details.errors;
  assert.equal(recorded.message, `${'x'.repeat(1_978)}…[8022 characters cut]`);
  assert.equal(recorded.message.length, 2_000);
  assert.equal(recorded.details.clipped.length, 4_000);
  assert.equal(finished.error_message.length, 2_000);
  assert.equal(finished.error_details.message.length, 2_000);
});

test('bad options are refused naming the option', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const ledger = client(server.url);
  for (const [options, field] of [
    [{ connectorName: 'x' }, 'sourceId'],
    [{ sourceId: -1, connectorName: 'x' }, 'sourceId'],
    [{ sourceId: 1, connectorName: ' x' }, 'connectorName'],
    [{ sourceId: 1, connectorName: 'x'.repeat(101) }, 'connectorName'],
    [{ sourceId: 1, connectorName: 'a\nb' }, 'connectorName'],
    [{ sourceId: 1, connectorName: 'x', metadata: [] }, 'metadata'],
    [{ sourceId: 1, connectorName: 'x\uD800' }, 'connectorName'],
    [{ sourceId: 1, connectorName: 'x', trigger: '\uDC00cron' }, 'trigger'],
    [{ sourceId: 1, connectorName: 'x', connectorVersion: '1.\uD83D' }, 'connectorVersion'],
    [{ sourceId: 1, connectorName: 'x', progressIntervalMs: -5 }, 'progressIntervalMs'],
  ]) {
    await assert.rejects(
      ledger.startRun(options),
      (error) => error instanceof LedgerValidationError && error.field === field,
      JSON.stringify(options),
    );
  }
  assert.equal(server.requests.length, 0);
  const run = await ledger.startRun(RUN);
  await assert.rejects(run.finish({ status: 'failed' }), LedgerValidationError);
  await assert.rejects(run.finish({ recordsFetched: -1 }), LedgerValidationError);
  await run.finish();
});

test('a value JSON cannot hold (a BigInt, a circle) is a LedgerValidationError naming the event; nothing is sent', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const ledger = client(server.url);
  const circle = {};
  circle.self = circle;
  const started = { type: 'RunStarted', source_id: 1, connector_name: 'x' };
  for (const [events, field, said] of [
    [[started, { ...started, metadata: { rows: 2n ** 64n } }], 'events[1]', /BigInt/],
    [[{ ...started, metadata: circle }], 'events[0]', /circular/],
  ]) {
    // A bare TypeError before: no LedgerError, naming neither the event nor the problem.
    await assert.rejects(
      ledger.append(events),
      (error) => error instanceof LedgerValidationError && error.field === field && said.test(error.message),
    );
  }
  for (const metadata of [{ rows: 5n }, circle]) {
    await assert.rejects(
      ledger.startRun({ ...RUN, metadata }),
      (error) => error instanceof LedgerValidationError && error.field === 'metadata',
    );
  }
  assert.equal(server.requests.length, 0);
});

test('a name that is not a counter is refused even when every object has it (toString, constructor)', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const run = await client(server.url).startRun(RUN);
  for (const name of ['toString', 'constructor', 'hasOwnProperty', 'valueOf']) {
    // `name in PROGRESS_FIELDS` took them for counters: the count was ignored without a word.
    assert.throws(
      () => run.progress({ [name]: 5 }),
      (error) => error instanceof LedgerValidationError && error.field === name,
    );
    await assert.rejects(run.finish({ [name]: 5 }), LedgerValidationError);
  }
  await run.finish();
});

test('a time option past what Node\'s timers keep is refused naming it and the limit', async () => {
  // setTimeout, setInterval and AbortSignal.timeout turn a delay over 2^31 - 1 ms into 1 ms:
  // a heartbeatIntervalMs of 2^31 wrote hundreds of heartbeats a second.
  assert.equal(MAX_DELAY_MS, 2 ** 31 - 1);
  const server = await fake((req, res, body) => ledgerLike(res, body));
  for (const field of ['timeoutMs', 'backoffMs', 'maxBackoffMs']) {
    for (const value of [2 ** 31, 2 ** 40, Number.MAX_SAFE_INTEGER]) {
      assert.throws(
        () => client(server.url, { [field]: value }),
        (error) =>
          error instanceof LedgerValidationError &&
          error.field === field &&
          error.message.includes('at most 2147483647'),
        `${field}: ${value}`,
      );
    }
    assert.equal(client(server.url, { [field]: MAX_DELAY_MS })[field], MAX_DELAY_MS);
  }
  const ledger = client(server.url);
  for (const field of ['progressIntervalMs', 'heartbeatIntervalMs', 'signalGraceMs']) {
    const start = field === 'signalGraceMs' ? (options) => ledger.withRun(options, async () => {}) : (options) => ledger.startRun(options);
    await assert.rejects(
      start({ ...RUN, [field]: 2 ** 31 }),
      (error) =>
        error instanceof LedgerValidationError &&
        error.field === field &&
        error.message.includes('at most 2147483647'),
      field,
    );
  }
  assert.equal(server.requests.length, 0); // refused before anything was sent
  for (const field of ['progressIntervalMs', 'heartbeatIntervalMs', 'signalGraceMs']) {
    await ledger.withRun({ ...RUN, [field]: MAX_DELAY_MS }, async () => {});
  }
  // Each run: RunStarted, then RunFinished; a heartbeat every MAX_DELAY_MS sends none now.
  assert.equal(server.requests.length, 6);
});

test('progress and heartbeat not awaited: a failing ledger does not crash the process, and nothing is lost', async () => {
  const server = await outage();
  const run = await client(server.url, { retries: 1 }).startRun({ ...RUN, progressIntervalMs: 0 });
  server.down = true;
  run.progress({ recordsFetched: 5 }); // rejects, unobserved
  run.heartbeat(); // rejects, unobserved
  await assert.rejects(run.progress({ recordsFetched: 1 }), LedgerApiError);
  server.down = false;
  await run.finish();
  const last = JSON.parse(server.requests.at(-1).body);
  const sent = last.reduce((sum, event) => sum + (event.records_fetched ?? 0), 0);
  assert.equal(sent, 6); // the counts of the failed sends went with the terminal event
  assert.equal(last.at(-1).type, 'RunFinished');
});

test('an AbortSignal stops an append: in flight, between retries, or before it starts', async () => {
  const server = await fake((req, res) => {
    res.writeHead(503, { 'retry-after': '30' }); // a long pause before the next attempt
    res.end();
  });
  const ledger = client(server.url, { retries: 5 });
  const controller = new AbortController();
  const pending = ledger.append([{ type: 'RunStarted', source_id: 1, connector_name: 'x' }], {
    signal: controller.signal,
  });
  setTimeout(() => controller.abort(new Error('shutting down')), 50);
  const started = Date.now();
  await assert.rejects(pending, /shutting down/);
  assert.ok(Date.now() - started < 5_000, 'the 30 s Retry-After pause was cut short');
  assert.equal(server.requests.length, 1); // no attempt after the abort
  await assert.rejects(ledger.get('/v1/runs', { signal: controller.signal }), /shutting down/);
  assert.equal(server.requests.length, 1); // an aborted signal sends nothing
  await assert.rejects(ledger.append([], { signal: 'soon' }), LedgerValidationError);

  const hanging = await fake(() => {}); // never answers: the abort cuts the attempt itself
  const inFlight = new AbortController();
  const request = client(hanging.url, { timeoutMs: 60_000 }).get('/v1/runs', {
    signal: inFlight.signal,
  });
  setTimeout(() => inFlight.abort(), 50);
  await assert.rejects(request, { name: 'AbortError' });
});

test('a long outage builds no backlog: one event waits, the counts stay pending', async () => {
  const server = await outage();
  const run = await client(server.url, { retries: 0 }).startRun({ ...RUN, progressIntervalMs: 0 });
  server.down = true;
  for (let attempt = 0; attempt < 50; attempt += 1) {
    await assert.rejects(run.progress({ recordsFetched: 2 }), LedgerApiError);
    await assert.rejects(run.heartbeat(), LedgerApiError);
  }
  const sizes = server.requests.slice(1).map((request) => JSON.parse(request.body).length);
  assert.ok(Math.max(...sizes) <= 1, `a send carried ${Math.max(...sizes)} events`);
  server.down = false;
  await run.finish();
  const events = JSON.parse(server.requests.at(-1).body); // nothing went through before
  assert.ok(events.length <= 3, `${events.length} events once the ledger was back`);
  const fetched = events.reduce((sum, event) => sum + (event.records_fetched ?? 0), 0);
  assert.equal(fetched, 100); // every count reported during the outage arrives
  assert.equal(events.at(-1).type, 'RunFinished');
});

/** Each count of the RunProgressed and RunFinished events the server got, once per event id
 * (a resend is a duplicate the ledger keeps once). */
function countsReceived(requests, field = 'records_fetched') {
  const events = new Map();
  for (const request of requests) {
    for (const event of JSON.parse(request.body)) events.set(event.event_id, event);
  }
  return [...events.values()].reduce((sum, event) => sum + (event[field] ?? 0), 0);
}

test('progress() per record, not awaited: a send in flight does not start the next one before the interval', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const run = await client(server.url).startRun({ ...RUN, progressIntervalMs: 60_000 });
  run.heartbeat(); // a send in flight: its event stays in the run's queue until it is through
  for (let record = 0; record < 500; record += 1) {
    run.progress({ recordsFetched: 1 });
    await new Promise((next) => setImmediate(next)); // the round trips go on meanwhile
  }
  await run.finish();
  // Each call during a round trip queued the next send: a RunProgressed per round trip (a
  // hundred here), whatever progressIntervalMs. Now the 60 s interval holds: the counts wait
  // for the terminal event.
  const types = server.requests.map((request) => JSON.parse(request.body).map((e) => e.type));
  assert.deepEqual(types, [['RunStarted'], ['RunProgressed'], ['RunProgressed', 'RunFinished']]);
  assert.equal(countsReceived(server.requests), 500);
});

test('progress() not awaited during an outage queues one send, not one per call; nothing is lost', async () => {
  const server = await outage();
  const errors = [];
  const run = await client(server.url, { retries: 0 }).startRun({
    ...RUN,
    progressIntervalMs: 0,
    onError: (error) => errors.push(error),
  });
  server.down = true;
  const calls = [];
  for (let record = 0; record < 1_000; record += 1) calls.push(run.progress({ recordsFetched: 1 }));
  await Promise.allSettled(calls);
  // Each call queued a send of its own, held in memory for the outage (600 MB in 15 s for a
  // connector calling it per record) and each an attempt: a thousand requests here.
  assert.ok(server.requests.length <= 3, `${server.requests.length} requests for 1,000 calls`);
  server.down = false;
  const back = server.requests.length;
  await run.finish();
  assert.equal(countsReceived(server.requests.slice(back)), 1_000);
  assert.deepEqual(errors, []); // a retriable failure is not a refusal: nothing was dropped
});

test('a token the ledger refuses mid-run (401) is tried again in the background once a minute; the counts are kept', async () => {
  const state = { refuse: false };
  const server = await fake((req, res, body) => {
    if (state.refuse) {
      res.writeHead(401, { 'content-type': 'application/problem+json' });
      res.end(JSON.stringify({ type: 'urn:run-ledger:problem:unauthorized', title: 'Unauthorized', status: 401, detail: 'the bearer token is not valid' }));
      return;
    }
    ledgerLike(res, body);
  });
  const errors = [];
  const run = await client(server.url).startRun({
    ...RUN,
    progressIntervalMs: 0,
    onError: (error) => errors.push(error),
  });
  await run.progress({ recordsFetched: 1 });
  state.refuse = true; // the token was rotated away
  await assert.rejects(run.progress({ recordsFetched: 2 }), { status: 401 });
  for (let record = 0; record < 100; record += 1) run.progress({ recordsFetched: 1 });
  await assert.rejects(run.heartbeat(), { status: 401 });
  await run.progress({ recordsFetched: 3 }); // counted, not sent
  // Each send was another refused token from this host: past the API's max_auth_failures (10
  // a minute) it answered 429 to every request from the host, the other connectors' too.
  assert.equal(server.requests.length, 3, 'RunStarted, the first progress, the refused one');
  assert.equal(errors.length, 1); // reported once
  assert.equal(errors[0].status, 401);
  assert.equal(run.tokenRefused, errors[0]);

  // A minute on, the next report tries the token again: refused, it waits another minute.
  mock.timers.enable({ apis: ['Date'], now: Date.now() + 60_000 });
  try {
    await assert.rejects(run.progress({ recordsFetched: 4 }), { status: 401 });
    await run.progress({ recordsFetched: 5 });
    assert.equal(server.requests.length, 4);
    state.refuse = false; // the token is valid again (the rotation was undone)
    mock.timers.tick(60_000);
    await run.progress({ recordsFetched: 6 }); // the refused events again, then the counts
    assert.equal(server.requests.length, 6);
    assert.equal(run.tokenRefused, undefined);
    assert.equal(countsReceived(server.requests), 1 + 2 + 100 + 3 + 4 + 5 + 6);
    await run.heartbeat(); // sent again
    assert.equal(server.requests.length, 7);
  } finally {
    mock.timers.reset();
  }
  assert.equal((await run.finish()).status, 'success');
});

test('a token refused (401) keeps the counts for finish(), which tries it at once', async () => {
  const state = { refuse: false };
  const server = await fake((req, res, body) => {
    if (state.refuse) {
      res.writeHead(401);
      res.end();
      return;
    }
    ledgerLike(res, body);
  });
  const run = await client(server.url).startRun({ ...RUN, progressIntervalMs: 0, onError: () => {} });
  state.refuse = true;
  await assert.rejects(run.progress({ recordsFetched: 2 }), { status: 401 });
  run.progress({ recordsFetched: 3 });
  state.refuse = false; // within the minute: finish() is the caller's own act, sent at once
  assert.equal((await run.finish()).status, 'success');
  assert.equal(countsReceived(server.requests.slice(-1)), 5); // the refused send's counts too
});

test('withRun: SIGTERM while RunStarted is on its way ends the run that started, failed, without calling the function', async () => {
  // The ledger stores RunStarted; the signal comes before its answer. The listeners were put in
  // once the run had started: the process died with the run open, for the sweeper to find.
  let child;
  const server = await fake((req, res, body) => {
    if (JSON.parse(body)[0].type === 'RunStarted') {
      child.kill('SIGTERM');
      setTimeout(() => ledgerLike(res, body), 200); // the answer after the signal
      return;
    }
    ledgerLike(res, body);
  });
  const index = new URL('../index.mjs', import.meta.url).href;
  const script =
    `import { LedgerClient } from ${JSON.stringify(index)};\n` +
    `const ledger = new LedgerClient({ url: ${JSON.stringify(server.url)}, token: 'token-0123456789abcdef' });\n` +
    `await ledger.withRun({ sourceId: 1, connectorName: 'early' }, () => { console.log('called'); });\n`;
  child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  const [code, signal] = await new Promise((done) => child.on('exit', (c, s) => done([c, s])));
  assert.ok(signal === 'SIGTERM' || code === 143, `exit ${code} ${signal}`); // as the signal would
  const events = server.requests.flatMap((r) => JSON.parse(r.body));
  assert.deepEqual(events.map((e) => e.type), ['RunStarted', 'RunFinished']);
  assert.equal(events[1].status, 'failed');
  assert.equal(events[1].error_message, 'stopped by SIGTERM');
  assert.equal(events[1].error_details.reason, 'interrupted');
  assert.equal(output, ''); // the function was not called
});

test('twelve withRun at once: no warning of a listener leak, and the process left as it was', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const warnings = [];
  const onWarning = (warning) => warnings.push(warning);
  process.on('warning', onWarning);
  const before = {
    most: process.getMaxListeners(),
    counts: ['SIGTERM', 'SIGINT', 'beforeExit'].map((name) => process.listenerCount(name)),
  };
  try {
    const ledger = client(server.url);
    let release;
    const gate = new Promise((resolve) => (release = resolve));
    const runs = Array.from({ length: 12 }, (_, n) =>
      ledger.withRun({ ...RUN, sourceId: n + 1 }, () => gate),
    );
    while (server.requests.length < 12) await new Promise((next) => setImmediate(next));
    release();
    await Promise.all(runs);
    await new Promise((next) => setImmediate(next)); // a warning is emitted on the next tick
  } finally {
    process.removeListener('warning', onWarning);
  }
  // Each withRun adds a SIGTERM, a SIGINT and a beforeExit listener until its run ends:
  // Node's limit of 10 made the eleventh "a possible EventEmitter memory leak" (three warnings).
  assert.deepEqual(
    warnings.filter((warning) => warning.name === 'MaxListenersExceededWarning').map(String),
    [],
  );
  assert.equal(process.getMaxListeners(), before.most);
  assert.deepEqual(
    ['SIGTERM', 'SIGINT', 'beforeExit'].map((name) => process.listenerCount(name)),
    before.counts,
  );
  const finished = server.requests.flatMap((r) => JSON.parse(r.body)).filter((e) => e.type === 'RunFinished');
  assert.equal(finished.length, 12);
});

test('withRun: a second SIGTERM while the first is being recorded ends the process at once (143)', async () => {
  let child;
  const server = await fake((req, res, body) => {
    const [event] = JSON.parse(body);
    if (event.type === 'RunStarted') {
      ledgerLike(res, body);
      setTimeout(() => child.kill('SIGTERM'), 50); // the function is running
      return;
    }
    child.kill('SIGTERM'); // the failure is on its way, the ledger slow to answer: again
  });
  const index = new URL('../index.mjs', import.meta.url).href;
  const script =
    `import { LedgerClient } from ${JSON.stringify(index)};\n` +
    `const ledger = new LedgerClient({ url: ${JSON.stringify(server.url)}, token: 'token-0123456789abcdef' });\n` +
    `await ledger.withRun({ sourceId: 1, connectorName: 'twice', signalGraceMs: 600000 }, () => new Promise((r) => setTimeout(r, 600000)));\n`;
  const started = Date.now();
  child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'ignore' });
  const [code, signal] = await new Promise((done) => child.on('exit', (c, s) => done([c, s])));
  assert.deepEqual([code, signal], [143, null]); // process.exit(128 + 15), not the grace's end
  assert.ok(Date.now() - started < 60_000, 'it waited for signalGraceMs');
  const events = server.requests.flatMap((r) => JSON.parse(r.body));
  assert.deepEqual(events.map((e) => e.type), ['RunStarted', 'RunFinished']);
  assert.equal(events[1].error_message, 'stopped by SIGTERM'); // on its way when it ended
});

test('withRun: a function that never settles still ends the run failed before Node exits', async () => {
  // Nothing keeps the child alive but the pending promise: the event loop empties, and Node
  // would exit (status 13) with the run left open, heartbeat or not (its timer is unref'ed).
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const index = new URL('../index.mjs', import.meta.url).href;
  const script =
    `import { LedgerClient } from ${JSON.stringify(index)};\n` +
    `const ledger = new LedgerClient({ url: ${JSON.stringify(server.url)}, token: 'token-0123456789abcdef' });\n` +
    `await ledger.withRun({ sourceId: 1, connectorName: 'forgetful' }, () => new Promise(() => {}));\n`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'ignore' });
  const code = await new Promise((done) => child.on('exit', done));
  assert.notEqual(code, 0); // Node still reports the unsettled await
  const events = server.requests.flatMap((r) => JSON.parse(r.body));
  assert.deepEqual(events.map((e) => e.type), ['RunStarted', 'RunFinished']);
  const finished = events.at(-1);
  assert.equal(finished.status, 'failed');
  assert.match(finished.error_message, /never settled/);
  assert.equal(finished.error_details.reason, 'never-settled');
});

test('pages() follows rel="next" on the same API and refuses a link to elsewhere', async () => {
  const server = await fake((req, res) => {
    const headers = { 'content-type': 'application/json' };
    if (req.url === '/v1/runs/1/events') headers.link = '</v1/runs/1/events?cursor=1>; rel="next"';
    if (req.url === '/v1/runs/1/events?cursor=1') headers.link = '<https://elsewhere.example/steal>; rel="next"';
    if (req.url === '/v1/runs/2/events') headers.link = '<//elsewhere.example/steal>; rel="next"';
    res.writeHead(200, headers);
    res.end(JSON.stringify([{ position: req.url.length }]));
  });
  const seen = [];
  await assert.rejects(
    (async () => {
      for await (const page of client(server.url).pages('/v1/runs/1/events')) seen.push(page);
    })(),
    (error) => error instanceof LedgerProtocolError && /off this API/.test(error.message),
  );
  assert.equal(seen.length, 2); // both pages of this API, then the foreign link refused
  await assert.rejects(
    (async () => {
      for await (const page of client(server.url).pages('/v1/runs/2/events')) seen.push(page);
    })(),
    LedgerProtocolError,
  );
  assert.deepEqual(
    server.requests.map((r) => r.url),
    ['/v1/runs/1/events', '/v1/runs/1/events?cursor=1', '/v1/runs/2/events'],
  );
});

test('stuck() sends the moment and thresholds as the API names them, and follows every page', async () => {
  const server = await fake((req, res) => {
    const headers = { 'content-type': 'application/json' };
    const url = new URL(req.url, 'http://x');
    const first = !url.searchParams.has('cursor'); // then a second page, run 2
    if (first) {
      url.searchParams.set('cursor', '1-1');
      headers.link = `<${url.pathname}${url.search}>; rel="next"`;
    }
    res.writeHead(200, headers);
    res.end(JSON.stringify([{ run_id: first ? 1 : 2 }]));
  });
  const asked = client(server.url);
  assert.deepEqual((await asked.stuck()).map((run) => run.run_id), [1, 2]);
  await asked.stuck({ asOf: new Date(Date.UTC(2026, 2, 2, 2, 30)), olderThan: '2h', pageSize: 2 });
  await asked.stuck({ asOf: '2026-03-02T04:30:00+02:00' }); // the + sent as %2B, not a space
  await asked.stuck({ atPosition: 0, maxRuntime: '6h' });
  assert.deepEqual(
    server.requests.map((r) => r.url).filter((url) => !url.includes('cursor')),
    [
      '/v1/stuck',
      '/v1/stuck?older_than=2h&as_of=2026-03-02T02%3A30%3A00.000Z&limit=2',
      '/v1/stuck?as_of=2026-03-02T04%3A30%3A00%2B02%3A00',
      '/v1/stuck?max_runtime=6h&at_position=0',
    ],
  );
});

test('stuck() refuses an option that cannot be right, naming it, before sending anything', async () => {
  const server = await fake((req, res) => res.end('[]'));
  const asked = client(server.url);
  const refusals = [
    [{ asOf: '2026-03-02T00:00:00Z', atPosition: 3 }, 'asOf', /not both/],
    [{ asOf: new Date(Number.NaN) }, 'asOf', /Invalid Date/],
    [{ asOf: new Date(8.64e15) }, 'asOf', /years 1 to 9999, got 275760/],
    [{ asOf: new Date(Date.UTC(-1, 0, 1)) }, 'asOf', /years 1 to 9999/],
    [{ asOf: '' }, 'asOf', /Date or ISO-8601 text/],
    [{ asOf: 1772409600000 }, 'asOf', /Date or ISO-8601 text/],
    [{ atPosition: -1 }, 'atPosition', />= 0/],
    [{ atPosition: 1.5 }, 'atPosition', /integer/],
    [{ atPosition: '3' }, 'atPosition', /number/],
    [{ atPosition: 2 ** 53 }, 'atPosition', /integer|at most/],
    [{ pageSize: 0 }, 'pageSize', />= 1/],
    [{ pageSize: 1001 }, 'pageSize', /at most 1000/],
    [{ olderThan: 7200 }, 'olderThan', /duration/],
    [{ maxRuntime: '' }, 'maxRuntime', /duration/],
  ];
  for (const [options, field, words] of refusals) {
    await assert.rejects(
      asked.stuck(options),
      (error) => error instanceof LedgerValidationError && error.field === field && words.test(error.message),
      JSON.stringify(options),
    );
  }
  assert.equal(server.requests.length, 0);
});

test('pages() refuses a next link back to a page already read (a loop, not more pages)', async () => {
  const server = await fake((req, res) => {
    const back = req.url === '/v1/runs' ? '/v1/runs?cursor=a' : '/v1/runs';
    res.writeHead(200, { 'content-type': 'application/json', link: `<${back}>; rel="next"` });
    res.end('[]');
  });
  const seen = [];
  await assert.rejects(
    (async () => {
      for await (const page of client(server.url).pages('/v1/runs')) seen.push(page);
    })(),
    (error) => error instanceof LedgerProtocolError && /already read/.test(error.message),
  );
  assert.equal(seen.length, 2);
  assert.deepEqual(server.requests.map((r) => r.url), ['/v1/runs', '/v1/runs?cursor=a']);
});

test('a 500 stored-event-unreadable is not retried: no retry changes the ledger\'s history', async () => {
  const server = await fake((req, res) => {
    res.writeHead(500, { 'content-type': 'application/problem+json' });
    res.end(JSON.stringify({
      type: 'urn:run-ledger:problem:stored-event-unreadable',
      title: 'Stored event unreadable',
      status: 500,
      detail: 'cannot project position 2',
    }));
  });
  await assert.rejects(client(server.url, { retries: 3 }).get('/v1/runs/1?at_position=2'), (error) => {
    assert.ok(error instanceof LedgerApiError);
    assert.equal(error.status, 500);
    assert.equal(error.retriable, false);
    return true;
  });
  assert.equal(server.requests.length, 1);
});

test('an event larger than maxBodyBytes alone fails at once, named, and nothing is sent', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const ledger = client(server.url, { maxBodyBytes: 600 });
  const big = { type: 'RunStarted', event_id: 'big-1', source_id: 1, connector_name: 'x', metadata: { blob: 'x'.repeat(1000) } };
  const small = { type: 'RunProgressed', event_id: 'small-1', run_id: 1 };
  const error = await ledger.append([small, big]).catch((caught) => caught);
  assert.ok(error instanceof LedgerBodyTooLargeError, String(error));
  assert.equal(error.index, 1);
  assert.equal(error.eventId, 'big-1');
  assert.equal(error.limit, 600);
  assert.equal(error.status, undefined);
  assert.equal(error.retriable, false);
  assert.match(error.message, /event 1 \(RunStarted event_id big-1\) is \d+ bytes .* maxBodyBytes of 600 bytes/);
  // Together over the limit, each within it: append is all or nothing, so it is not split.
  const together = await ledger.append([small, { ...small, event_id: 'small-2', records: 'y'.repeat(300) }, { ...small, event_id: 'small-3', records: 'y'.repeat(300) }]).catch((caught) => caught);
  assert.ok(together instanceof LedgerBodyTooLargeError);
  assert.equal(together.index, undefined);
  assert.match(together.message, /3 events are \d+ bytes together, over maxBodyBytes of 600/);
  // A run: metadata too large for any request is a start refused at once, naming the event.
  const start = await ledger.startRun({ ...RUN, metadata: { blob: 'x'.repeat(1000) } }).catch((caught) => caught);
  assert.ok(start instanceof RunNotStartedError);
  assert.ok(start.cause instanceof LedgerBodyTooLargeError);
  assert.match(start.message, /event 0 \(RunStarted event_id [0-9a-f-]{36}\) .* maxBodyBytes of 600 bytes/);
  assert.equal(server.requests.length, 0);
});

test('a run reports what fits and is refused, at once, what no request can carry', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const ledger = client(server.url, { maxBodyBytes: 1_000 });
  const reported = [];
  const run = await ledger.startRun({ ...RUN, progressIntervalMs: 60_000, onError: (e) => reported.push(e) });
  run.progress({ recordsFetched: 3 });
  // The pending counts and a terminal event that fit apart but not together: two requests,
  // in order, each within the limit.
  const finished = await run.finish({ errorMessage: 'm'.repeat(500) });
  assert.equal(finished.status, 'success');
  const bodies = server.requests.slice(1).map((r) => r.body);
  assert.deepEqual(bodies.map((b) => JSON.parse(b).map((e) => e.type)), [['RunProgressed'], ['RunFinished']]);
  for (const body of bodies) assert.ok(Buffer.byteLength(body) <= 1_000);
  // A terminal event too large alone: the named error at once, nothing sent that could only
  // get 413; a short failed RunFinished ends the run in its place.
  const failing = await ledger.startRun({ ...RUN, onError: (e) => reported.push(e) });
  const sent = server.requests.length;
  const huge = new Error('e'.repeat(1_900));
  const error = await failing.fail(huge).catch((caught) => caught);
  assert.ok(error instanceof LedgerBodyTooLargeError, String(error));
  assert.equal(error.index, 0);
  assert.match(error.message, /RunFinished/);
  assert.equal(failing.status, 'failed');
  assert.equal(server.requests.length, sent + 1);
  const [replacement] = JSON.parse(server.requests.at(-1).body);
  assert.notEqual(replacement.event_id, error.eventId);
  assert.equal(replacement.error_details.reason, 'outcome-refused');
  await assert.rejects(failing.fail(huge), LedgerStateError); // ended: asked again, nothing sent
  assert.equal(server.requests.length, sent + 1);
  // A heartbeat too large alone (a limit below any event): refused once, reported, dropped;
  // the next report does not send it again first.
  const tiny = client(server.url, { maxBodyBytes: 100 });
  const open = new RunHandle(tiny, { ...RUN, onError: (e) => reported.push(e) });
  open.runId = 7;
  await assert.rejects(open.heartbeat(), LedgerBodyTooLargeError);
  assert.equal(open._ready.length, 0);
  assert.ok(reported.some((e) => e instanceof LedgerBodyTooLargeError));
});

test('a 413 for a one-event body is the same named error, not retried', async () => {
  const server = await fake((req, res) => {
    res.writeHead(413, { 'content-type': 'application/problem+json' });
    res.end(JSON.stringify({
      type: 'urn:run-ledger:problem:content-too-large',
      title: 'Content too large',
      status: 413,
      detail: 'the request body is over the limit of 300 bytes ([api] max_body_bytes)',
    }));
  });
  const ledger = client(server.url);
  const event = { type: 'RunProgressed', event_id: 'one-1', run_id: 1, records: 'z'.repeat(400) };
  const error = await ledger.append([event]).catch((caught) => caught);
  assert.ok(error instanceof LedgerBodyTooLargeError, String(error));
  assert.equal(error.status, 413);
  assert.equal(error.index, 0);
  assert.equal(error.eventId, 'one-1');
  assert.equal(error.limit, 300);
  assert.ok(error.cause instanceof LedgerApiError);
  assert.match(error.message, /event 0 \(RunProgressed event_id one-1\) .* \[api\] max_body_bytes of 300 bytes/);
  assert.equal(server.requests.length, 1);
  // Several events: the batch's, as the API said it (a LedgerApiError 413), not retried either.
  const batch = await ledger.append([event, { ...event, event_id: 'one-2' }]).catch((caught) => caught);
  assert.ok(batch instanceof LedgerApiError);
  assert.equal(batch.status, 413);
  assert.equal(server.requests.length, 2);
});

/** A ledger-like server that answers `answer(res, events)` instead when it returns true. */
async function refusing(answer) {
  return fake((req, res, body) => {
    if (!answer(res, JSON.parse(body))) ledgerLike(res, body);
  });
}

function problem(res, status, detail) {
  res.writeHead(status, { 'content-type': 'application/problem+json' });
  res.end(JSON.stringify({ type: 'urn:run-ledger:problem:x', title: 'Refused', status, detail }));
  return true;
}

const typesOf = (request) => JSON.parse(request.body).map((event) => event.type);

test('a terminal event refused for good (413) ends the run with a short failed one; the counts go alone first', async () => {
  let refusals = 0;
  const server = await refusing((res, events) => {
    const finished = events.find((event) => event.type === 'RunFinished');
    if (finished && finished.error_details?.reason !== 'outcome-refused') {
      refusals += 1;
      return problem(res, 413, `the request body is over the limit of 300 bytes\n${'\ud800'.repeat(500)}`);
    }
    return false;
  });
  const reported = [];
  const run = await client(server.url).startRun({ ...RUN, progressIntervalMs: 60_000, onError: (e) => reported.push(e) });
  run.progress({ recordsFetched: 9 });
  run.error('bad row', { row: 1 });
  const error = await run.finish().catch((caught) => caught);
  // The refusal of the terminal event on its own is what finish() says; the run is ended all
  // the same. Alone, the API's 413 is that event's (LedgerBodyTooLargeError, as for append()).
  assert.ok(error instanceof LedgerBodyTooLargeError, String(error));
  assert.equal(error.status, 413);
  assert.equal(error.limit, 300);
  assert.equal(run.refusedOutcome, error);
  assert.equal(run.status, 'failed');
  assert.equal(refusals, 2); // together, then alone; neither retried
  const [, together, counts, alone, last] = server.requests;
  assert.deepEqual(typesOf(together), ['RunProgressed', 'RunFinished']);
  assert.deepEqual(typesOf(counts), ['RunProgressed']);
  assert.equal(counts.body, JSON.stringify([JSON.parse(together.body)[0]])); // the same fact
  assert.equal(alone.body, JSON.stringify([JSON.parse(together.body)[1]]));
  assert.deepEqual(typesOf(last), ['RunFinished']);
  const [finished] = JSON.parse(last.body);
  assert.equal(finished.status, 'failed');
  assert.match(
    finished.error_message,
    /^the ledger refused this run's partial outcome: event 0 \(RunFinished event_id [-0-9a-f]+\) is \d+ bytes as a request of its own, over the API's \[api\] max_body_bytes of 300 bytes/,
  );
  assert.doesNotMatch(finished.error_message, /\p{Cs}|\n/u);
  assert.ok(finished.error_message.length <= 320, finished.error_message);
  assert.deepEqual(finished.error_details, { reason: 'outcome-refused', refused_status: 'partial', error_count: 1 });
  assert.equal(server.requests.length, 5);
  assert.deepEqual(reported, []);
  // Ended: no second terminal event.
  await assert.rejects(run.finish(), LedgerStateError);
});

test('counts and the terminal event refused together (413) go apart: the run ends with its own status', async () => {
  // A proxy whose body limit is lower than maxBodyBytes: each event fits, the two do not. The
  // terminal event alone first meets a 503 (retries: 0): finish() again sends it as it was.
  const server = await fake((req, res, body, n) => {
    const events = JSON.parse(body);
    if (events.length > 1) return problem(res, 413, 'the request body is over the limit of 1024 bytes');
    if (n === 4) return problem(res, 503, 'the database is unreachable');
    return ledgerLike(res, body);
  });
  const reported = [];
  const run = await client(server.url, { retries: 0 }).startRun({
    ...RUN,
    progressIntervalMs: 60_000,
    onError: (e) => reported.push(e),
  });
  run.progress({ recordsFetched: 9 });
  run.error('bad row', { row: 1 });
  const outage = await run.finish().catch((caught) => caught);
  assert.ok(outage instanceof LedgerApiError && outage.status === 503, String(outage));
  assert.equal(run.status, undefined);
  const result = await run.finish();
  assert.equal(result.status, 'partial');
  assert.equal(run.status, 'partial');
  assert.equal(run.refusedOutcome, undefined);
  assert.deepEqual(reported, []);
  const [, together, counts, first, again] = server.requests;
  const [progressed, finished] = JSON.parse(together.body);
  assert.equal(finished.status, 'partial');
  assert.equal(counts.body, JSON.stringify([progressed])); // the same events, one at a time
  assert.equal(first.body, JSON.stringify([finished]));
  assert.equal(again.body, first.body); // same event id: a duplicate if the 503 had stored it
  assert.equal(server.requests.length, 5);
});

test('counts refused with the terminal event are reported; the terminal event alone still ends the run', async () => {
  const server = await refusing((res, events) =>
    events.some((event) => event.type === 'RunProgressed') ? problem(res, 400, 'item 1: records_fetched: bad') : false,
  );
  const reported = [];
  const ledger = client(server.url);
  let handle;
  const value = await ledger.withRun({ ...RUN, progressIntervalMs: 60_000, onError: (e) => reported.push(e) }, (run) => {
    handle = run;
    run.progress({ recordsFetched: 2 });
    return 'done';
  });
  assert.equal(value, 'done');
  assert.deepEqual(server.requests.slice(1).map(typesOf), [['RunProgressed', 'RunFinished'], ['RunProgressed'], ['RunFinished']]);
  assert.equal(reported.length, 1); // the counts' own refusal
  assert.equal(reported[0].status, 400);
  const [finished] = JSON.parse(server.requests.at(-1).body);
  assert.equal(finished.status, 'success'); // its own outcome, not a replacement
  assert.equal(finished.event_id, JSON.parse(server.requests[1].body)[1].event_id);
  assert.equal(handle.status, 'success');
  assert.equal(handle.refusedOutcome, undefined);
});

test('a terminal event too large for maxBodyBytes is replaced as a refused one is', async () => {
  const server = await fake((req, res, body) => ledgerLike(res, body));
  const ledger = client(server.url, { maxBodyBytes: 1_000 });
  const error = await ledger
    .withRun(RUN, () => {
      throw new Error('e'.repeat(1_900));
    })
    .catch((caught) => caught);
  assert.equal(error.message, 'e'.repeat(1_900)); // the function's error, rethrown
  assert.deepEqual(server.requests.slice(1).map(typesOf), [['RunFinished']]);
  const [finished] = JSON.parse(server.requests.at(-1).body);
  assert.match(finished.error_message, /^the ledger refused this run's failed outcome: event 0 \(RunFinished/);
});

test('a refusal that is not about the event (409: the run already ended) is not replaced', async () => {
  const server = await refusing((res, events) =>
    events.some((event) => event.type === 'RunFinished') ? problem(res, 409, 'run 1 has ended') : false,
  );
  const run = await client(server.url).startRun({ ...RUN, progressIntervalMs: 60_000 });
  run.progress({ recordsFetched: 1 });
  const error = await run.finish().catch((caught) => caught);
  assert.equal(error.status, 409);
  assert.equal(run.refusedOutcome, undefined);
  // Not split either: the counts alone would not change who may write to the run.
  assert.deepEqual(server.requests.slice(1).map(typesOf), [['RunProgressed', 'RunFinished']]);
});

test('append() that gives up says the events as sent: sent again, they are duplicates (review 56)', async () => {
  // No answer on any attempt: each may have been stored. The ids the client gave are on the
  // error, so the caller's own resend names the same events, not new ones stored twice.
  const down = await fake((req) => req.socket.destroy());
  const events = [{ type: 'RunStarted', run_ref: 'r', source_id: 1, connector_name: 'mine' }];
  const error = await client(down.url, { retries: 1 }).append(events).catch((caught) => caught);
  assert.ok(error instanceof LedgerNetworkError, error);
  assert.equal(events[0].event_id, undefined); // the caller's objects are left as they were
  const sent = JSON.parse(down.requests[0].body);
  assert.deepEqual(error.events, sent);
  assert.ok(!Object.keys(error).includes('events')); // not printed with the error
  const up = await fake((req, res, body) => ledgerLike(res, body));
  await client(up.url).append(error.events);
  assert.deepEqual(JSON.parse(up.requests[0].body), sent);
  // A refusal carries them too (a 4xx the caller may correct and resend).
  const refusing = await fake((req, res) => {
    res.writeHead(409, { 'content-type': 'application/problem+json' });
    res.end('{"type": "urn:run-ledger:problem:version-conflict", "title": "Version conflict", "status": 409, "detail": "no"}');
  });
  const conflict = await client(refusing.url).append(events).catch((caught) => caught);
  assert.ok(conflict instanceof LedgerApiError, conflict);
  assert.deepEqual(conflict.events, JSON.parse(refusing.requests[0].body));
});

test('a base URL with a query or a fragment is refused: the paths would go after it (review 56)', () => {
  for (const url of ['http://127.0.0.1:8080/?x=1', 'http://127.0.0.1:8080#top', 'http://h/ledger?']) {
    assert.throws(() => client(url), (error) => error instanceof LedgerValidationError && error.field === 'url', url);
  }
  assert.equal(client('http://127.0.0.1:8080/ledger/').url, 'http://127.0.0.1:8080/ledger');
});
