// The client against a live `ledger api` (SQLite, and MariaDB when LEDGER_TEST_MYSQL_URL is set).

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createServer, request as httpRequest } from 'node:http';
import { readFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  DEFAULT_MAX_BODY_BYTES,
  LedgerApiError,
  LedgerBodyTooLargeError,
  LedgerClient,
  LedgerStateError,
  LedgerValidationError,
  MAX_MESSAGE_CHARS,
  MAX_TRACEBACK_CHARS,
  RunNotStartedError,
} from '../index.mjs';
import {
  REPO,
  backends,
  eventually,
  getJson,
  ledgerBin,
  runState,
  startLedger,
} from '../testing/live-ledger.mjs';

const CLIENT = fileURLToPath(new URL('../index.mjs', import.meta.url));

/** A child Node process running `script` (an ES module) with the ledger's URL and token in its
 * environment: the child, what it has printed so far, and its [exit code, signal]. */
function runScript(script, ledger) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, URL: ledger.url, TOKEN: ledger.token },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = { stdout: '', stderr: '' };
  child.stdout.on('data', (chunk) => (output.stdout += chunk));
  child.stderr.on('data', (chunk) => (output.stderr += chunk));
  const exited = new Promise((resolve) => child.once('exit', (c, s) => resolve([c, s])));
  return { child, output, exited };
}

function types(events) {
  return events.map((event) => event.type);
}

const EMOJI = '\u{1F600}'; // two UTF-16 code units: a cut between them leaves a lone surrogate

/** Every string in `value`, keys included, as the ledger stored it. */
function strings(value) {
  if (typeof value === 'string') return [value];
  if (value === null || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([key, item]) => [key, ...strings(item)]);
}

/** No lone surrogate (with the u flag, \p{Cs} matches only an unpaired one). */
function assertWellFormed(value) {
  for (const text of strings(value)) assert.doesNotMatch(text, /\p{Cs}/u, JSON.stringify(text));
}

/** A proxy in front of the API that swallows the answer to the first sending of each of the
 * first `drop` distinct POST bodies (the request reaches the ledger and is committed; the
 * client never hears back and times out). */
function droppingProxy(target, drop) {
  const seen = { posts: 0, dropped: 0, bodies: [] };
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (req.method === 'POST') {
        seen.posts += 1;
        seen.bodies.push(body.toString('utf8'));
      }
      const upstream = httpRequest(
        new URL(req.url, target),
        { method: req.method, headers: req.headers },
        (answer) => {
          const parts = [];
          answer.on('data', (part) => parts.push(part));
          answer.on('end', () => {
            const first = seen.bodies.indexOf(body.toString('utf8')) === seen.bodies.length - 1;
            if (req.method === 'POST' && first && seen.dropped < drop) {
              seen.dropped += 1; // committed upstream; this reply is lost
              return;
            }
            res.writeHead(answer.statusCode, answer.headers);
            res.end(Buffer.concat(parts));
          });
        },
      );
      upstream.end(body);
    });
  });
  // In this process, on a port the system picks (LEDGER_TEST_PORTS is for the `ledger api`
  // processes, whose port is chosen before they bind it).
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        seen,
        close: () =>
          new Promise((done) => {
            server.closeAllConnections();
            server.close(done);
          }),
      });
    });
  });
}


/** The members index.d.ts declares for `export declare class NAME { … }`: each line of its
 * body indented two spaces that names a property, getter or method. */
function declaredMembers(name) {
  const text = readFileSync(new URL('../index.d.ts', import.meta.url), 'utf8');
  const start = text.indexOf(`export declare class ${name} `);
  assert.ok(start >= 0, `index.d.ts declares no class ${name}`);
  const body = text.slice(text.indexOf('{', start) + 1, text.indexOf('\n}', start));
  const member = /^ {2}(?:readonly |private |static )*(?:get )?([A-Za-z$][\w$]*)\??\s*[:(<]/gm;
  return new Set([...body.matchAll(member)].map((found) => found[1]));
}

/** The public members of `value` at run time: its own properties, and its class's getters
 * and methods, but those named with a leading underscore (private by the client's rule). */
function publicMembers(value) {
  const names = new Set(Object.keys(value));
  for (let proto = Object.getPrototypeOf(value); proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    if (proto === Error.prototype) break;
    for (const key of Object.getOwnPropertyNames(proto)) names.add(key);
  }
  names.delete('constructor');
  return [...names].filter((key) => !key.startsWith('_') && !['name', 'message', 'stack', 'cause'].includes(key)).sort();
}

for (const backend of backends()) {
  describe(`against a live ledger api on ${backend}`, () => {
    let ledger;
    let client;

    before(async () => {
      ledger = await startLedger(backend);
      client = new LedgerClient({ url: ledger.url, token: ledger.token, backoffMs: 20 });
    });
    after(async () => {
      await ledger?.stop();
    });

    test('index.d.ts declares every public member of a live run handle, client and API error', async () => {
      // RunHandle.startedEventId (RunStarted's event id), maxErrorDetails and onError were
      // set on every handle but not declared: a TypeScript caller could not read them.
      const run = await client.startRun({ sourceId: 7, connectorName: 'ts-declared', heartbeatIntervalMs: 0 });
      const members = publicMembers(run);
      assert.ok(members.includes('startedEventId') && members.includes('runId'), members.join());
      assert.match(run.startedEventId, /^[0-9a-f-]{36}$/);
      const refused = await client
        .append([{ type: 'RunProgressed', run_id: run.runId, records_fetched: -1 }])
        .then(() => assert.fail('a negative count was appended'), (error) => error);
      assert.ok(refused instanceof LedgerApiError, String(refused));
      await run.finish();
      for (const [name, value] of [['RunHandle', run], ['LedgerClient', client], ['LedgerApiError', refused]]) {
        const declared = declaredMembers(name);
        const missing = publicMembers(value).filter((key) => !declared.has(key));
        assert.deepEqual(missing, [], `${name}: not in index.d.ts`);
      }
      const stored = execFileSync(
        ledgerBin(),
        ['events', '--run', String(run.runId), '--format', 'jsonl', '--db', ledger.dbUrl],
        { encoding: 'utf8' },
      );
      const first = JSON.parse(stored.split('\n')[0]);
      assert.deepEqual([first.type, first.event_id], ['RunStarted', run.startedEventId]);
    });

    test('a whole run: progress is coalesced, the ledger has the right counters', async () => {
      const run = await client.startRun({
        sourceId: 7,
        connectorName: 'ts-whole-run',
        trigger: 'test',
        metadata: { page_size: 100 },
        progressIntervalMs: 60_000, // nothing goes out until finish: all of it coalesced
        heartbeatIntervalMs: 0,
      });
      for (let page = 0; page < 50; page += 1) {
        await run.progress({ recordsFetched: 10, recordsCreated: 7, recordsUpdated: 2 });
      }
      run.progress({ recordsSkipped: 1, claimsCreated: 3, coverageCellsUpdated: 4 });
      const result = await run.finish();
      assert.equal(result.status, 'success');

      const { row, events } = await runState(ledger, run.runId);
      assert.equal(row.status, 'success');
      assert.equal(row.sourceId, 7);
      assert.equal(row.connectorName, 'ts-whole-run');
      assert.deepEqual(
        [row.recordsFetched, row.recordsCreated, row.recordsUpdated, row.recordsSkipped],
        [500, 350, 100, 1],
      );
      assert.equal(row.claimsCreated, 3);
      assert.equal(row.coverageCellsUpdated, 4);
      assert.notEqual(row.completedAt, null);
      // 51 progress() calls, one RunProgressed: coalesced, and flushed before RunFinished.
      assert.deepEqual(types(events), ['RunStarted', 'RunProgressed', 'RunFinished']);
      assert.match(events[0].actor, /^connector:ts-whole-run@/);

      // The timeline a page at a time, each page audited as the whole one is.
      const pages = [];
      for await (const page of client.pages(`/v1/runs/${run.runId}/events?limit=1`)) {
        pages.push(page);
      }
      assert.equal(pages.length, 3);
      assert.deepEqual(pages.flat(), events);
      assert.deepEqual(await client.get(`/v1/runs/${run.runId}/events`), events);
    });

    test('the stuck runs: get() answers a page, pages() every page in order, once each', async () => {
      // Five runs silent for three hours (a connector's late report keeps its occurred_at).
      const silentSince = Date.now() - 3 * 3_600_000;
      const started = [0, 1, 2, 3, 4].map((i) => ({
        type: 'RunStarted',
        source_id: 22,
        connector_name: 'ts-stuck',
        occurred_at: new Date(silentSince + i * 1000).toISOString(),
      }));
      const runIds = (await client.append(started)).allocated_run_ids;
      assert.equal(runIds.length, 5);
      const path = '/v1/stuck?older_than=2h&limit=2';
      const first = await client.get(path);
      assert.deepEqual(first.map((run) => run.run_id), runIds.slice(0, 2));
      assert.deepEqual(Object.keys(first[0]).sort(), [
        'connector_name', 'last_event_at', 'rule', 'run_id', 'source_id', 'started_at', 'version',
      ]);
      assert.equal(first[0].rule, 'stale');
      const pages = [];
      for await (const page of client.pages(path)) pages.push(page.map((run) => run.run_id));
      assert.deepEqual(pages, [runIds.slice(0, 2), runIds.slice(2, 4), runIds.slice(4)]);
      const refused = await client.get('/v1/stuck?cursor=not-a-cursor').catch((caught) => caught);
      assert.ok(refused instanceof LedgerApiError, String(refused));
      assert.equal(refused.status, 400);
      assert.equal(refused.field, 'cursor');
      // Ended, they are stuck no more (the runs of the other tests are not silent for 2h).
      await client.append(runIds.map((runId) => ({ type: 'RunFinished', run_id: runId, status: 'failed' })));
      assert.deepEqual(await client.get('/v1/stuck?older_than=2h'), []);
    });

    test('stuck() as of a past moment lists the runs stuck then, ended since', async () => {
      // Three runs silent for three hours, then ended: stuck at the moment they were recorded,
      // not now. Only this test's connector is looked at (other tests' runs share the ledger).
      const silentSince = Date.now() - 3 * 3_600_000;
      const started = [0, 1, 2].map((i) => ({
        type: 'RunStarted',
        source_id: 23,
        connector_name: 'ts-stuck-as-of',
        occurred_at: new Date(silentSince + i * 1000).toISOString(),
      }));
      const summary = await client.append(started);
      const runIds = summary.allocated_run_ids;
      const [entry] = await client.get(`/v1/runs/${runIds[2]}/events`);
      const ours = (runs) => runs.filter((run) => run.connector_name === 'ts-stuck-as-of').map((run) => run.run_id);
      await client.append(runIds.map((runId) => ({ type: 'RunFinished', run_id: runId, status: 'success' })));
      assert.deepEqual(ours(await client.stuck({ olderThan: '2h' })), []);
      const atPosition = summary.last_position;
      assert.deepEqual(ours(await client.stuck({ olderThan: '2h', atPosition, pageSize: 1 })), runIds);
      assert.deepEqual(ours(await client.stuck({ olderThan: '2h', asOf: entry.recorded_at })), runIds);
      // A Date holds milliseconds, the ledger microseconds: the next millisecond holds the event.
      const nextMs = new Date(Date.parse(entry.recorded_at) + 1);
      assert.deepEqual(ours(await client.stuck({ olderThan: '2h', asOf: nextMs })), runIds);
      // Before they were recorded, they were not in the ledger: nothing.
      assert.deepEqual(ours(await client.stuck({ olderThan: '2h', asOf: new Date(silentSince) })), []);
      assert.deepEqual(await client.stuck({ atPosition: 0 }), []);
      const refused = await client.get('/v1/stuck?as_of=yesterday').catch((caught) => caught);
      assert.ok(refused instanceof LedgerApiError, String(refused));
      assert.equal(refused.status, 400);
      assert.equal(refused.field, 'as_of');
    });

    test('progress goes out at most once per interval, and the rest before finish', async () => {
      const run = await client.startRun({
        sourceId: 1,
        connectorName: 'ts-interval',
        progressIntervalMs: 0, // every call may send
        heartbeatIntervalMs: 0,
      });
      await run.progress({ recordsFetched: 1 });
      await run.progress({ recordsFetched: 2 });
      run.progressIntervalMs = 60_000;
      run.progress({ recordsFetched: 4 }); // held: sent with the terminal event
      await run.heartbeat(); // the pending deltas, not an empty heartbeat
      await run.heartbeat(); // now an all-zero RunProgressed
      run.progress({ recordsCreated: 5 });
      run.error('row 9 had no id', { row: 9 });
      const result = await run.finish();
      assert.equal(result.status, 'partial');
      const { row, events } = await runState(ledger, run.runId);
      assert.deepEqual(types(events), [
        'RunStarted',
        'RunProgressed',
        'RunProgressed',
        'RunProgressed',
        'RunProgressed',
        'RunProgressed',
        'RunFinished',
      ]);
      assert.equal(row.recordsFetched, 7);
      assert.equal(row.recordsCreated, 5);
      assert.equal(row.status, 'partial');
      assert.equal(row.errorMessage, '1 error(s); first: row 9 had no id');
      assert.deepEqual(row.errorDetails.errors, [{ message: 'row 9 had no id', details: { row: 9 } }]);
    });

    test('withRun: a function that throws ends the run failed with its message', async () => {
      let runId;
      await assert.rejects(
        client.withRun({ sourceId: 2, connectorName: 'ts-throws' }, (run) => {
          runId = run.runId;
          run.progress({ recordsFetched: 3 });
          throw new TypeError('source sent a number where a list was expected');
        }),
        TypeError,
      );
      const { row } = await runState(ledger, runId);
      assert.equal(row.status, 'failed');
      assert.equal(row.errorMessage, 'TypeError: source sent a number where a list was expected');
      assert.equal(row.errorDetails.exception, 'TypeError');
      assert.match(row.errorDetails.traceback, /live\.test\.mjs/);
      assert.equal(row.recordsFetched, 3); // the pending deltas went out first
    });

    test('withRun: a function that rejects ends the run failed; returns are success', async () => {
      class SourceGoneError extends Error {}
      let runId;
      await assert.rejects(
        client.withRun({ sourceId: 2, connectorName: 'ts-rejects' }, async (run) => {
          runId = run.runId;
          await new Promise((resolve) => setImmediate(resolve));
          throw new SourceGoneError('connection reset by api.example.org');
        }),
        SourceGoneError,
      );
      let okId;
      const value = await client.withRun({ sourceId: 2, connectorName: 'ts-returns' }, async (run) => {
        okId = run.runId;
        await run.progress({ recordsFetched: 2, recordsCreated: 2 });
        return 'done';
      });
      assert.equal(value, 'done');
      const failed = await runState(ledger, runId);
      assert.equal(failed.row.status, 'failed');
      assert.equal(failed.row.errorMessage, 'SourceGoneError: connection reset by api.example.org');
      const ok = await runState(ledger, okId);
      assert.equal(ok.row.status, 'success');
      assert.equal(ok.row.recordsCreated, 2);
    });

    // Review 4's audit: fail() threw while it described such an error, withRun only warned,
    // and the heartbeat kept the run open in the ledger for ever (RunStarted and heartbeats).
    test('withRun: an error whose name is a Symbol, or a revoked Proxy, still ends the run failed', async () => {
      const symbolName = new Error('upstream 500');
      symbolName.name = Symbol.for('HttpError');
      const { proxy: revoked, revoke } = Proxy.revocable(new Error('gone'), {});
      revoke();
      for (const [thrown, message] of [
        [symbolName, 'Symbol(HttpError): upstream 500'],
        [revoked, 'thrown object: an error that could not be described'],
      ]) {
        const reported = [];
        let run;
        let caught;
        try {
          await client.withRun(
            {
              sourceId: 2,
              connectorName: 'ts-awkward-error',
              heartbeatIntervalMs: 300,
              onError: (error) => reported.push(error),
            },
            async (handle) => {
              run = handle;
              await run.heartbeat();
              throw thrown;
            },
          );
        } catch (error) {
          caught = error; // not assert.rejects: it reads the revoked Proxy's properties
        }
        assert.ok(caught === thrown);
        assert.deepEqual(reported, []);
        assert.equal(run.isOpen, false);
        const { row, events } = await runState(ledger, run.runId);
        assert.equal(row.status, 'failed');
        assert.equal(row.errorMessage, message);
        assert.equal(events.at(-1).type, 'RunFinished');
        assert.deepEqual(types(events).slice(0, 2), ['RunStarted', 'RunProgressed']);
      }
    });

    test('a 100-character connector name on a host with a long name: the run starts, its actor within 200', async () => {
      const host = `${'h'.repeat(63)}.${'d'.repeat(63)}.ingest.example.org`;
      const name = 'c'.repeat(100);
      const real = os.hostname;
      os.hostname = () => host;
      syncBuiltinESMExports(); // the client's `import { hostname }` sees it
      let run;
      try {
        run = await client.startRun({ sourceId: 3, connectorName: name, heartbeatIntervalMs: 0 });
      } finally {
        os.hostname = real;
        syncBuiltinESMExports();
      }
      run.error('one bad row');
      assert.equal((await run.finish()).status, 'partial');
      const { row, events } = await runState(ledger, run.runId);
      assert.equal(row.status, 'partial');
      assert.equal(row.connectorName, name);
      assert.ok(run.actor.length <= 200, run.actor);
      // As much of the host name as fits (how much depends on the pid's digits), then the note.
      assert.match(
        run.actor,
        new RegExp(`^connector:${name}@h{40,}[hd.]*…\\[\\d+ characters cut\\]:${process.pid}$`),
      );
      assert.equal(run.actor.length, 200);
      assert.deepEqual(new Set(events.map((event) => event.actor)), new Set([run.actor]));
    });

    // The audit's cases (issue 16): each outcome was refused with 400 "surrogates not allowed"
    // or was too large to send, never retried, and the run stayed open with its counts lost.
    describe('withRun records the outcome of a function whose error text the ledger would refuse', () => {
      for (const [what, fn, check] of [
        [
          'an emoji exactly where the message is cut to 2,000 characters',
          () => {
            // 2,009 characters: 1,980 kept, then "…[29 characters cut]", 2,000 in all; the
            // emoji's two halves sit on either side of the cut.
            throw new Error(`${'m'.repeat(MAX_MESSAGE_CHARS - 21)}${EMOJI}${'x'.repeat(28)}`);
          },
          (row) => {
            assert.equal(row.status, 'failed');
            assert.equal(
              row.errorDetails.message,
              `${'m'.repeat(MAX_MESSAGE_CHARS - 21)}\ufffd…[29 characters cut]`,
            );
            assert.equal(row.errorDetails.message.length, MAX_MESSAGE_CHARS);
          },
        ],
        [
          'an error name holding a lone surrogate',
          () => {
            const error = new Error('source gone');
            error.name = 'Source\ud800Error';
            throw error;
          },
          (row) => {
            assert.equal(row.errorDetails.exception, 'Source\ufffdError');
            assert.equal(row.errorMessage, 'Source\ufffdError: source gone');
          },
        ],
        [
          'a 64,000-character stack cut through an emoji',
          () => {
            // 64,001 characters: the last 63,980 kept after "[21 characters cut]…", 64,000 in
            // all; the cut falls between the emoji's halves.
            const error = new Error('deep');
            error.stack = `${'h'.repeat(20)}${EMOJI}${'y'.repeat(MAX_TRACEBACK_CHARS - 21)}`;
            throw error;
          },
          (row) => {
            assert.equal(row.errorMessage, 'Error: deep');
            assert.equal(
              row.errorDetails.traceback,
              `[21 characters cut]…\ufffd${'y'.repeat(MAX_TRACEBACK_CHARS - 21)}`,
            );
          },
        ],
        [
          'run.error() details holding lone surrogates, then a normal return',
          (run) => {
            run.error('bad', { record: 'caf\udce9', ['key\ud800']: ['\udfff'] });
            return 'done';
          },
          (row) => {
            assert.equal(row.status, 'partial');
            assert.deepEqual(row.errorDetails.errors, [
              { message: 'bad', details: { record: 'caf\ufffd', 'key\ufffd': ['\ufffd'] } },
            ]);
          },
        ],
        [
          'a 200,000-character error name, over a tight maxBodyBytes',
          () => {
            const error = new Error('too long a name');
            error.name = 'N'.repeat(200_000);
            throw error;
          },
          (row) => {
            assert.equal(row.status, 'failed');
            // The note of the cut counts in the 2,000 characters.
            assert.equal(row.errorDetails.exception, `${'N'.repeat(1_976)}…[198024 characters cut]`);
            assert.ok(row.errorMessage.startsWith('NNNN'));
          },
        ],
      ]) {
        test(what, async () => {
          const reported = [];
          // retries: 1 as the audit ran it; maxBodyBytes as a client set to a lower API limit.
          const strict = new LedgerClient({
            url: ledger.url,
            token: ledger.token,
            retries: 1,
            backoffMs: 20,
            maxBodyBytes: 128 * 1024,
          });
          let runId;
          await strict
            .withRun(
              {
                sourceId: 5,
                connectorName: 'ts-unstorable-text',
                progressIntervalMs: 60_000, // the counts go with the terminal event
                heartbeatIntervalMs: 0,
                onError: (error) => reported.push(error),
              },
              (run) => {
                runId = run.runId;
                run.progress({ recordsFetched: 3 });
                return fn(run);
              },
            )
            .catch(() => {}); // the function's own error, rethrown
          assert.deepEqual(reported, []);
          const { row, events } = await runState(ledger, runId);
          assert.notEqual(row.status, 'running');
          assert.deepEqual(types(events), ['RunStarted', 'RunProgressed', 'RunFinished']);
          assert.equal(row.recordsFetched, 3);
          assertWellFormed(events);
          check(row);
        });
      }
    });

    for (const mode of ['return', 'throw']) {
      test(`a terminal event the ledger refuses for good is replaced by a short failed one (${mode})`, async () => {
        const reported = [];
        const strict = new LedgerClient({ url: ledger.url, token: ledger.token, retries: 1, backoffMs: 20 });
        const broke = new Error('the source broke');
        let runId;
        // 300 errors of 6 kB each: a RunFinished over the ledger's 1 MiB limit of one event.
        const outcome = await strict
          .withRun(
            {
              sourceId: 6,
              connectorName: 'ts-refused-outcome',
              progressIntervalMs: 60_000,
              heartbeatIntervalMs: 0,
              maxErrorDetails: 300,
              onError: (error) => reported.push(error),
            },
            (run) => {
              runId = run.runId;
              run.progress({ recordsFetched: 4, recordsCreated: 2 });
              for (let i = 0; i < 300; i += 1) run.error('e'.repeat(2_000), { blob: 'b'.repeat(3_900) });
              if (mode === 'throw') throw broke;
            },
          )
          .then(() => assert.fail('withRun hid the refusal'), (caught) => caught);
        // A return: the refusal is withRun's error. A throw: the function's, the refusal reported.
        const refusal = mode === 'return' ? outcome : reported[0];
        if (mode === 'throw') assert.equal(outcome, broke);
        assert.ok(refusal instanceof LedgerApiError, String(refusal));
        assert.equal(refusal.status, 400);
        const { row, events } = await runState(ledger, runId);
        assert.equal(row.status, 'failed');
        const refused = mode === 'return' ? 'partial' : 'failed';
        assert.match(row.errorMessage, new RegExp(`^the ledger refused this run's ${refused} outcome: 400 `));
        assert.match(row.errorMessage, /1,048,576-byte limit/);
        assert.ok(row.errorMessage.length < 400, row.errorMessage);
        assert.equal(row.errorDetails.refused_status, refused);
        assert.equal(row.errorDetails.error_count, 300);
        // The counts batched with the refused event went on their own, before it.
        assert.deepEqual(types(events), ['RunStarted', 'RunProgressed', 'RunFinished']);
        assert.equal(row.recordsFetched, 4);
        assert.equal(row.recordsCreated, 2);
      });
    }

    // The review of issue 16: pending counts and the terminal event refused together (their
    // request over a body limit lower than the client's maxBodyBytes, as a proxy's may be) were
    // recorded as a short `failed` run, though the outcome fitted on its own.
    describe('an API whose max_body_bytes is lower than maxBodyBytes', () => {
      let small;
      before(async () => {
        small = await startLedger(backend, { maxBodyBytes: 1024 });
      });
      after(async () => {
        await small?.stop();
      });

      test('counts and outcome refused together go apart: the run ends with its own status', async () => {
        const proxy = await droppingProxy(small.url, 0); // drops nothing: it shows the bodies
        try {
          const reported = [];
          const unaware = new LedgerClient({ url: proxy.url, token: small.token, backoffMs: 20 });
          const run = await unaware.startRun({
            sourceId: 8,
            connectorName: 'ts-split-outcome',
            progressIntervalMs: 60_000, // the counts go with the terminal event
            heartbeatIntervalMs: 0,
            onError: (error) => reported.push(error),
          });
          run.progress({ recordsFetched: 5, recordsCreated: 4 });
          run.error('r'.repeat(300), { row: 1 });
          const result = await run.finish();
          assert.equal(result.status, 'partial');
          assert.equal(run.refusedOutcome, undefined);
          assert.deepEqual(reported, []);

          const [, together, counts, outcome] = proxy.seen.bodies.map((body) => JSON.parse(body));
          assert.deepEqual(types(together), ['RunProgressed', 'RunFinished']);
          assert.ok(Buffer.byteLength(JSON.stringify(together)) > 1024); // refused: 413
          assert.deepEqual(counts, [together[0]]); // the same events, alone: same ids
          assert.deepEqual(outcome, [together[1]]);
          assert.equal(proxy.seen.posts, 4);

          const { row, events } = await runState(small, run.runId);
          assert.equal(row.status, 'partial');
          assert.equal(row.errorMessage, `1 error(s); first: ${'r'.repeat(300)}`);
          assert.equal(row.recordsFetched, 5);
          assert.equal(row.recordsCreated, 4);
          // One RunFinished: the one refused together, stored as it was (the bodies above).
          assert.deepEqual(types(events), ['RunStarted', 'RunProgressed', 'RunFinished']);
        } finally {
          await proxy.close();
        }
      });
    });

    test('a timed-out POST is retried with the same event ids: no duplicate', async () => {
      const proxy = await droppingProxy(ledger.url, 2);
      try {
        const flaky = new LedgerClient({
          url: proxy.url,
          token: ledger.token,
          timeoutMs: 1_500,
          retries: 3,
          backoffMs: 10,
        });
        // The first reply lost: RunStarted committed, the retry is a duplicate that still
        // names the run (run_refs).
        const run = await flaky.startRun({
          sourceId: 4,
          connectorName: 'ts-retry',
          progressIntervalMs: 0,
          heartbeatIntervalMs: 0,
        });
        // The second reply lost: RunProgressed committed, resent as the same fact.
        await run.progress({ recordsFetched: 11, recordsCreated: 10 });
        await run.finish();
        assert.equal(proxy.seen.dropped, 2);
        assert.equal(proxy.seen.posts, 5); // 2 sent twice, RunFinished once
        assert.equal(proxy.seen.bodies[0], proxy.seen.bodies[1]);
        assert.equal(proxy.seen.bodies[2], proxy.seen.bodies[3]);

        const { row, events } = await runState(ledger, run.runId);
        assert.deepEqual(types(events), ['RunStarted', 'RunProgressed', 'RunFinished']);
        assert.equal(row.recordsFetched, 11); // not 22
        assert.equal(row.recordsCreated, 10);
        const runs = await getJson(ledger, '/v1/runs?connector=ts-retry');
        assert.equal(runs.length, 1); // one run, not two
      } finally {
        await proxy.close();
      }
    });

    test('a 4xx surfaces as LedgerApiError with the problem detail, and is not retried', async () => {
      const error = await client
        .append([{ type: 'RunProgressed', run_id: 1, records_fetched: -3 }])
        .then(
          () => assert.fail('a negative count was appended'),
          (caught) => caught,
        );
      assert.ok(error instanceof LedgerApiError);
      assert.equal(error.status, 400);
      assert.equal(error.title, 'Invalid input');
      assert.match(error.detail, /records_fetched/);
      assert.equal(error.field, 'records_fetched');
      assert.equal(error.item, 1);
      assert.equal(error.attempts, 1);
      assert.equal(error.retriable, false);

      // A stream rule: RunFinished after RunFinished (409).
      const run = await client.startRun({ sourceId: 1, connectorName: 'ts-409' });
      await run.finish();
      const conflict = await client
        .append([{ type: 'RunFinished', run_id: run.runId, status: 'success' }])
        .then(() => assert.fail('appended after the end'), (caught) => caught);
      assert.equal(conflict.status, 409);
      assert.equal(conflict.runId, run.runId);
      assert.ok(conflict.rule);
    });

    test('bad counts are refused client-side naming the field; a finished handle refuses use', async () => {
      const run = await client.startRun({ sourceId: 1, connectorName: 'ts-guards', heartbeatIntervalMs: 0 });
      for (const [counts, field] of [
        [{ recordsFetched: -1 }, 'recordsFetched'],
        [{ recordsCreated: 1.5 }, 'recordsCreated'],
        [{ recordsUpdated: 2 ** 31 }, 'recordsUpdated'],
        [{ recordsSkipped: Number.NaN }, 'recordsSkipped'],
        [{ claimsCreated: '3' }, 'claimsCreated'],
        [{ coverageCellsUpdated: 10n }, 'coverageCellsUpdated'],
        [{ recordsFetchd: 1 }, 'recordsFetchd'],
      ]) {
        assert.throws(
          () => run.progress(counts),
          (error) => error instanceof LedgerValidationError && error.field === field,
          field,
        );
      }
      // Sums past the ledger's INT limit are split into events that each fit.
      run.progress({ recordsFetched: 2 ** 31 - 1 });
      await run.progress({ recordsFetched: 5 });
      await run.finish();
      assert.throws(() => run.progress({ recordsFetched: 1 }), LedgerStateError);
      assert.throws(() => run.heartbeat(), LedgerStateError);
      await assert.rejects(run.finish(), LedgerStateError);
      await assert.rejects(run.fail(new Error('late')), LedgerStateError);
      const { events } = await runState(ledger, run.runId);
      assert.deepEqual(types(events), ['RunStarted', 'RunProgressed', 'RunProgressed', 'RunFinished']);
    });

    test('an event over the API\'s max_body_bytes is its 413, named, not retried', async () => {
      // A client allowed more than the API takes: the API's 413 is read as the event's.
      const generous = new LedgerClient({
        url: ledger.url,
        token: ledger.token,
        backoffMs: 20,
        maxBodyBytes: 2 * DEFAULT_MAX_BODY_BYTES,
      });
      const event = {
        type: 'RunStarted',
        event_id: 'ts-too-large-1',
        source_id: 9,
        connector_name: 'ts-too-large',
        metadata: { blob: 'x'.repeat(DEFAULT_MAX_BODY_BYTES) },
      };
      const error = await generous.append([event]).catch((caught) => caught);
      assert.ok(error instanceof LedgerBodyTooLargeError, String(error));
      assert.equal(error.status, 413);
      assert.equal(error.eventId, 'ts-too-large-1');
      assert.equal(error.index, 0);
      assert.equal(error.limit, DEFAULT_MAX_BODY_BYTES); // the API's default, as it said it
      // The 413 itself is not retried (the API reads a refused body to its end before it
      // answers, so the client reads the 413 rather than a reset connection).
      assert.equal(error.cause.status, 413);
      // The default client knows the limit: nothing is sent.
      const local = await client.append([event]).catch((caught) => caught);
      assert.ok(local instanceof LedgerBodyTooLargeError);
      assert.equal(local.status, undefined);
    });

    test('a wrong token gets 401 as LedgerApiError; the run does not start', async () => {
      const stranger = new LedgerClient({ url: ledger.url, token: 'not-a-token-of-this-ledger' });
      const error = await stranger
        .startRun({ sourceId: 1, connectorName: 'ts-401' })
        .then(() => assert.fail('started with a wrong token'), (caught) => caught);
      assert.ok(error instanceof RunNotStartedError);
      assert.ok(error.cause instanceof LedgerApiError);
      assert.equal(error.cause.status, 401);
      assert.equal(error.cause.title, 'Unauthorized');
      assert.match(error.cause.detail, /not valid/);
      assert.ok(!error.message.includes('not-a-token-of-this-ledger'));
    });

    test('a token refused mid-run (rotated away) waits a minute before it is sent again: the host is not locked out', async () => {
      // The same process, its token rotated away after the run started: its fetch sends a
      // token the ledger no longer has.
      let rotated = false;
      const stale = 'Bearer ts-rotated-away-0123456789abcdef';
      const fetchAs = (url, init) =>
        fetch(url, rotated ? { ...init, headers: { ...init.headers, Authorization: stale } } : init);
      const errors = [];
      const connector = new LedgerClient({ url: ledger.url, token: ledger.token, retries: 0, fetch: fetchAs });
      const run = await connector.startRun({
        sourceId: 1,
        connectorName: 'ts-rotated',
        heartbeatIntervalMs: 0,
        progressIntervalMs: 0,
        onError: (error) => errors.push(error),
      });
      rotated = true;
      for (let page = 0; page < 30; page += 1) {
        await run.progress({ recordsFetched: 10 }).catch(() => {});
      }
      // Another connector on this host, its token valid: each refused token counted against
      // the host's address, and past [api] max_auth_failures (10 a minute) the API answered
      // 429 to every request from it (RunNotStartedError here).
      const neighbour = new LedgerClient({ url: ledger.url, token: ledger.token, retries: 0 });
      const other = await neighbour.startRun({ sourceId: 2, connectorName: 'ts-same-host', heartbeatIntervalMs: 0 });
      await other.finish();
      assert.deepEqual(errors.map((error) => error.status), [401]);
      rotated = false; // the rotation undone: the counts kept go with the terminal event
      assert.equal((await run.finish()).status, 'success');
      const { row } = await runState(ledger, run.runId);
      assert.equal(row.recordsFetched, 300);
      assert.equal(row.status, 'success');
    });

    for (const [signal, message, code] of [
      ['SIGTERM', 'stopped by SIGTERM', 143],
      ['SIGINT', 'interrupted by Ctrl-C (SIGINT)', 130],
    ]) {
      test(`a process that gets ${signal} inside withRun records "${message}"`, async () => {
        const script = `
          import { LedgerClient } from ${JSON.stringify(CLIENT)};
          const client = new LedgerClient({ url: process.env.URL, token: process.env.TOKEN });
          await client.withRun({ sourceId: 9, connectorName: 'ts-${signal}' }, async (run) => {
            await run.progress({ recordsFetched: 6 });
            run.progress({ recordsCreated: 4 });
            process.stdout.write('started ' + run.runId + '\\n');
            await new Promise(() => setInterval(() => {}, 1000)); // works forever
          });
        `;
        const { child, output, exited } = runScript(script, ledger);
        try {
          const runId = await eventually(() => Number(/started (\d+)/.exec(output.stdout)?.[1]), {
            what: `the child's run to start (stderr: ${output.stderr})`,
          });
          child.kill(signal);
          const [exitCode, bySignal] = await exited;
          assert.ok(bySignal === signal || exitCode === code, `${exitCode} ${bySignal} ${output.stderr}`);
          const { row } = await runState(ledger, runId);
          assert.equal(row.status, 'failed');
          assert.equal(row.errorMessage, message);
          // `reason` is a key the ledger writes itself: a connector's is kept under `reported`.
          assert.equal(row.errorDetails.reported.reason, 'interrupted');
          assert.equal(row.errorDetails.signal, signal);
          assert.equal(row.recordsFetched, 6);
          assert.equal(row.recordsCreated, 4); // pending deltas flushed first
        } finally {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        }
      });
    }

    for (const [mode, status, message] of [
      ['return', 'success', null],
      ['throw', 'failed', 'Error: the connector broke'],
    ]) {
      test(`SIGTERM while withRun sends its terminal event (${mode}) waits for it`, async () => {
        // The fetch holds the terminal request until the signal has been delivered, so the
        // signal lands exactly between "fn settled" and "the terminal event is stored".
        const script = `
          import { LedgerClient } from ${JSON.stringify(CLIENT)};
          const held = (url, init) => {
            if (init?.body?.includes('"RunFinished"')) {
              process.stdout.write('sending\\n');
              const alive = setInterval(() => {}, 1000); // a held request keeps Node running
              return new Promise((resolve) => process.once('SIGTERM', resolve))
                .then(() => clearInterval(alive))
                .then(() => fetch(url, init));
            }
            return fetch(url, init);
          };
          const client = new LedgerClient({ url: process.env.URL, token: process.env.TOKEN, fetch: held });
          await client.withRun({ sourceId: 9, connectorName: 'ts-end-${mode}' }, async (run) => {
            process.stdout.write('started ' + run.runId + '\\n');
            run.progress({ recordsFetched: 3 });
            if (${JSON.stringify(mode)} === 'throw') throw new Error('the connector broke');
          }).catch(() => {});
        `;
        const { child, output, exited } = runScript(script, ledger);
        try {
          await eventually(() => output.stdout.includes('sending'), {
            what: `the child's terminal request (stdout: ${output.stdout}, stderr: ${output.stderr})`,
          });
          const runId = Number(/started (\d+)/.exec(output.stdout)?.[1]);
          child.kill('SIGTERM');
          const [exitCode, bySignal] = await exited;
          assert.ok(bySignal === 'SIGTERM' || exitCode === 143, `${exitCode} ${bySignal} ${output.stderr}`);
          const { row } = await runState(ledger, runId);
          assert.equal(row.status, status, JSON.stringify(row));
          assert.equal(row.errorMessage, message);
          assert.equal(row.recordsFetched, 3);
        } finally {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        }
      });
    }

    test('examples/legacy-connector.mjs reports a run with non-zero counters', async () => {
      const child = spawn(process.execPath, ['examples/legacy-connector.mjs'], {
        cwd: REPO,
        env: { ...process.env, LEDGER_API_URL: ledger.url, LEDGER_API_TOKEN: ledger.token },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      child.stderr.on('data', (chunk) => (stderr += chunk));
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      const exitCode = await new Promise((resolve) => child.once('exit', resolve));
      clearTimeout(timer);
      assert.equal(exitCode, 0, stderr);
      const summary = JSON.parse(stdout.trim().split('\n').pop());
      const { row } = await runState(ledger, summary.runId);
      assert.equal(row.status, 'success');
      assert.equal(row.connectorName, 'legacy-weather-stations');
      assert.ok(row.recordsFetched > 0 && row.recordsCreated > 0, JSON.stringify(row));
      assert.equal(row.recordsFetched, summary.totals.recordsFetched);
      assert.notEqual(row.completedAt, null);
      assert.notEqual(row.duration, null);
    });
  });
}
