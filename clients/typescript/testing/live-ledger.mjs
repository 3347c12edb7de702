// A live `ledger api` for the client's tests: a migrated database (a temp SQLite file, or a
// fresh MariaDB database when LEDGER_TEST_MYSQL_URL is set), a config with one token, the server
// on a free port, /healthz polled with a deadline. stop() kills the server and drops what was
// created; it also runs at process exit, so nothing outlives a failed test. A SIGKILL of node
// skips exit handlers: the pytest wrapper (tests/clients/test_typescript_client.py) starts node
// in a session of its own and kills its process group, servers included.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(HERE, '..', '..', '..');
const STARTUP_DEADLINE_MS = 60_000;
const COMMAND_TIMEOUT_MS = 120_000;
const POLL_MS = 50; // polling interval while waiting for a condition, not a wait for it

/** The `ledger` executable: $LEDGER_BIN, else the repository's .venv, else `ledger` on PATH. */
export function ledgerBin() {
  if (process.env.LEDGER_BIN) return process.env.LEDGER_BIN;
  const venv = join(REPO, '.venv', 'bin', 'ledger');
  return existsSync(venv) ? venv : 'ledger';
}

/** The Python next to `ledger` (it has SQLAlchemy and PyMySQL). */
function pythonBin() {
  const bin = ledgerBin();
  const beside = join(dirname(bin), 'python');
  return bin.includes('/') && existsSync(beside) ? beside : 'python3';
}

/** The backends to test: SQLite always, MariaDB when LEDGER_TEST_MYSQL_URL names a server. */
export function backends() {
  const all = process.env.LEDGER_TEST_MYSQL_URL ? ['sqlite', 'mariadb'] : ['sqlite'];
  const only = process.env.LEDGER_TS_BACKENDS; // e.g. "mariadb": the pytest wrapper's split
  if (!only) return all;
  const wanted = only.split(',').map((name) => name.trim());
  if (wanted.includes('mariadb') && !process.env.LEDGER_TEST_MYSQL_URL) {
    throw new Error('LEDGER_TS_BACKENDS names mariadb but LEDGER_TEST_MYSQL_URL is not set');
  }
  return wanted;
}

/** A free port on 127.0.0.1: any (the system's choice), or one of LEDGER_TEST_PORTS
 * (`18700-18799`) when it is set, so suites sharing a machine keep to their own ports. */
export async function freePort() {
  const range = /^(\d+)-(\d+)$/.exec(process.env.LEDGER_TEST_PORTS ?? '');
  if (!range) return listenOn(0);
  const [low, high] = [Number(range[1]), Number(range[2])];
  const start = Math.floor(Math.random() * (high - low + 1));
  for (let i = 0; i <= high - low; i++) {
    const port = low + ((start + i) % (high - low + 1));
    try {
      return await listenOn(port);
    } catch {
      // taken: the next one
    }
  }
  throw new Error(`no free port in LEDGER_TEST_PORTS=${process.env.LEDGER_TEST_PORTS}`);
}

function listenOn(wanted) {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(wanted, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, {
    encoding: 'utf8',
    timeout: COMMAND_TIMEOUT_MS,
    ...options,
  });
  if (result.error || result.status !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} failed (${result.error?.message ?? `exit ${result.status}`}):\n` +
        `${result.stdout}\n${result.stderr}`,
    );
  }
  return result.stdout;
}

// The same as `run`, without blocking Node's event loop: while a command runs, pooled
// keep-alive sockets still see the server close them, so the next fetch does not reuse a dead
// one ("fetch failed" when `ledger project` took longer than the server's keep-alive).
function runAsync(command, args) {
  return new Promise((resolveRun, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), COMMAND_TIMEOUT_MS);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      if (status === 0) resolveRun(stdout);
      else {
        reject(
          new Error(
            `${command} ${args.join(' ')} failed (${signal ?? `exit ${status}`}):\n${stdout}\n${stderr}`,
          ),
        );
      }
    });
  });
}

// Create or drop a MariaDB database next to LEDGER_TEST_MYSQL_URL's, through SQLAlchemy.
const MYSQL_ADMIN = `
import sys
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
action, base, name = sys.argv[1:4]
engine = create_engine(make_url(base).set(database=None))
with engine.begin() as conn:
    if action == "create":
        conn.execute(text(f"CREATE DATABASE \`{name}\` CHARACTER SET utf8mb4"))
    else:
        conn.execute(text(f"DROP DATABASE IF EXISTS \`{name}\`"))
engine.dispose()
print(make_url(base).set(database=name).render_as_string(hide_password=False))
`;

const live = new Set();
// Not run when node is killed by a signal: see the note at the top.
process.on('exit', () => {
  for (const ledger of live) ledger.killNow();
});

/** Start a live ledger API on `backend`; call stop() when done (also on failure).
 * `maxBodyBytes` sets its `[api] max_body_bytes` (the API's default when not given). */
export async function startLedger(backend = 'sqlite', { maxBodyBytes } = {}) {
  const folder = mkdtempSync(join(tmpdir(), 'ledger-ts-'));
  const token = `ts-client-${randomBytes(16).toString('hex')}`;
  const ledger = {
    backend,
    folder,
    token,
    process: undefined,
    dbUrl: undefined,
    mysqlName: undefined,
    output: '',
    killNow() {
      if (this.process && this.process.exitCode === null && this.process.signalCode === null) {
        this.process.kill('SIGKILL');
      }
      if (this.mysqlName) {
        try {
          run(pythonBin(), ['-c', MYSQL_ADMIN, 'drop', process.env.LEDGER_TEST_MYSQL_URL, this.mysqlName]);
        } catch {
          // dropped by the next run's cleanup at worst; never hide the test's own failure
        }
        this.mysqlName = undefined;
      }
      rmSync(this.folder, { recursive: true, force: true });
    },
    async stop() {
      live.delete(this);
      const child = this.process;
      if (child && child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((done) => child.once('exit', done));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      this.killNow();
    },
    /** Bring ingestion_runs up to date (`ledger api` alone runs no projector). */
    project() {
      return runAsync(ledgerBin(), ['project', '--db', this.dbUrl]);
    },
  };
  live.add(ledger);
  try {
    if (backend === 'mariadb') {
      ledger.mysqlName = `ledger_ts_${randomBytes(6).toString('hex')}`;
      ledger.dbUrl = run(pythonBin(), [
        '-c',
        MYSQL_ADMIN,
        'create',
        process.env.LEDGER_TEST_MYSQL_URL,
        ledger.mysqlName,
      ]).trim();
    } else {
      ledger.dbUrl = `sqlite:///${join(folder, 'ledger.db')}`;
    }
    run(ledgerBin(), ['migrate', '--db', ledger.dbUrl]);
    const config = join(folder, 'ledger.toml');
    writeFileSync(
      config,
      '[api]\n' +
        (maxBodyBytes === undefined ? '' : `max_body_bytes = ${maxBodyBytes}\n`) +
        '[[api.tokens]]\nname = "ts-client"\nscopes = ["append", "read", "operate"]\n' +
        'env = "LEDGER_TS_TEST_TOKEN"\n',
    );
    const port = await freePort();
    ledger.url = `http://127.0.0.1:${port}`;
    ledger.process = spawn(
      ledgerBin(),
      ['api', '--listen', `127.0.0.1:${port}`, '--config', config, '--db', ledger.dbUrl],
      {
        env: { ...process.env, LEDGER_TS_TEST_TOKEN: token },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    for (const stream of [ledger.process.stdout, ledger.process.stderr]) {
      stream.setEncoding('utf8');
      stream.on('data', (text) => {
        ledger.output = (ledger.output + text).slice(-20_000);
      });
    }
    const deadline = Date.now() + STARTUP_DEADLINE_MS;
    for (;;) {
      if (ledger.process.exitCode !== null) {
        throw new Error(`ledger api exited (${ledger.process.exitCode}):\n${ledger.output}`);
      }
      try {
        const response = await fetch(`${ledger.url}/healthz`, { signal: AbortSignal.timeout(1000) });
        if (response.ok) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        throw new Error(`no /healthz within ${STARTUP_DEADLINE_MS} ms:\n${ledger.output}`);
      }
      await new Promise((done) => setTimeout(done, POLL_MS));
    }
    return ledger;
  } catch (error) {
    await ledger.stop();
    throw error;
  }
}

/** GET a path of the API as JSON with the ledger's token. */
export async function getJson(ledger, path) {
  const response = await fetch(ledger.url + path, {
    headers: { Authorization: `Bearer ${ledger.token}` },
    signal: AbortSignal.timeout(30_000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`GET ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

/** GET every page of a paged list of the API (`GET /v1/runs`, `GET /v1/runs/{id}/events`):
 * the entries of each page in order, following `Link: <…>; rel="next"` to the last. */
export async function getAllPages(ledger, path) {
  const entries = [];
  for (let next = path; next; ) {
    const response = await fetch(ledger.url + next, {
      headers: { Authorization: `Bearer ${ledger.token}` },
      signal: AbortSignal.timeout(30_000),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`GET ${next}: ${response.status} ${text}`);
    entries.push(...JSON.parse(text));
    const link = /^<([^>]+)>; rel="next"$/.exec(response.headers.get('link') ?? '');
    next = link ? link[1] : null;
  }
  return entries;
}

/** The run's ingestion_runs row (after projecting) and its audit timeline. `GET /v1/runs/{id}`
 * answers `{ row, ledger, ... }` (the row beside the write-side state): the row is `.row`. */
export async function runState(ledger, runId) {
  await ledger.project();
  const detail = await getJson(ledger, `/v1/runs/${runId}`);
  if (!detail.projected || !detail.row) {
    throw new Error(`run ${runId} has no ingestion_runs row after projecting: ${JSON.stringify(detail)}`);
  }
  return {
    row: detail.row,
    events: await getAllPages(ledger, `/v1/runs/${runId}/events`),
  };
}

/** Poll `check` until it returns a truthy value or the deadline passes. */
export async function eventually(check, { deadlineMs = 30_000, what = 'the condition' } = {}) {
  const deadline = Date.now() + deadlineMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what} not reached within ${deadlineMs} ms${last ? `: ${last.message}` : ''}`);
    }
    await new Promise((done) => setTimeout(done, POLL_MS));
  }
}
