// @run-ledger/client: report ingestion runs to run-ledger's HTTP API (POST /v1/events).
//
// Dependency-free ES module for Node >= 18 (global fetch, crypto.randomUUID). Shaped like the
// Python SDK (connectors/sdk.py):
//
//   const client = new LedgerClient({ url, token });
//   await client.withRun({ sourceId: 1, connectorName: 'SOURCE_1' }, async (run) => {
//     for await (const page of pages()) run.progress({ recordsFetched: page.length });
//   });
//
// * startRun appends RunStarted (with a run_ref, so a retry whose first reply was lost still
//   learns its run id from `run_refs`); if it cannot, the run did not start.
// * progress sums deltas and sends at most one RunProgressed per progressIntervalMs; what is
//   pending goes out before the terminal event, in the same request.
// * A heartbeat (an all-zero RunProgressed, or the pending deltas) goes out every
//   heartbeatIntervalMs while the run is open, so a long but alive run is never timed out.
// * Every POST is retried with the same body (event ids fixed before the first attempt) on
//   network errors, timeouts, 408, 429 and 503 (Retry-After honoured) and other 5xx, with bounded jittered
//   backoff; never on 4xx, which throws LedgerApiError with the problem+json fields.
// * withRun guarantees a terminal event whatever the function does: returns (success or
//   partial), throws or rejects (failed, with the error), or the process gets SIGTERM/SIGINT
//   (failed, "stopped by SIGTERM" / "interrupted by Ctrl-C (SIGINT)", then the signal is
//   re-raised so the process ends as it would have), or never settles while nothing else keeps
//   Node alive (failed, "the function given to withRun never settled", before Node exits).
//   Pending counts and the terminal event refused together for what they hold (a 4xx: 400,
//   413, 422, or over maxBodyBytes) go apart: the counts alone, then the terminal event alone,
//   as it was. Only a terminal event refused on its own is replaced by a short `failed`
//   RunFinished saying so: the run never stays open for want of a storable outcome. Any
//   thrown value is described without throwing (a Symbol name, a getter that throws, a
//   revoked Proxy); should fail() break all the same, a `failed` RunFinished saying the error
//   could not be described ends the run.
// * Every string the client cuts (messages, names, stacks, details, the actor) fits its limit
//   with the note of the cut, and is well formed after the cut: a lone surrogate, which the
//   ledger refuses, becomes U+FFFD.

import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';

export const VERSION = '0.1.0';
/** The ledger's counters are INT(11): a delta must stay below 2**31. */
export const COUNTER_MAX = 2 ** 31 - 1;
export const MAX_MESSAGE_CHARS = 2_000;
export const MAX_DETAILS_CHARS = 4_000;
export const MAX_TRACEBACK_CHARS = 64_000;
// error_details nest at most 20 levels in the ledger; a recorded error's details sit 3 down.
const MAX_DETAILS_DEPTH = 17;
const CONNECTOR_NAME_MAX = 100;
// The ledger refuses a longer actor (ACTOR_NAME_MAX in ledger/events.py).
const ACTOR_NAME_MAX = 200;
// The least of a host name worth keeping in an actor cut to fit (with its note).
const ACTOR_HOST_MIN = 40;
const RUN_REF = 'run';
const DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;
/** The API's default `[api] max_body_bytes`: a larger body is answered 413. */
export const DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024;
const MAX_RETRY_AFTER_MS = 60_000;
// The longest delay setTimeout, setInterval and AbortSignal.timeout keep (2^31 - 1 ms, about
// 24.8 days): a longer one fires after 1 ms instead, so a heartbeat interval of 2^31 wrote
// hundreds of heartbeats a second. Every time option is held to it.
export const MAX_DELAY_MS = 2_147_483_647;
// How much of a refusal the short RunFinished that replaces a refused one quotes.
const REFUSAL_CHARS = 200;
// After a 401 a run's background sends (progress, heartbeats) wait this long before trying
// the token again: the API's default [api] auth_failure_window is a minute and its
// max_auth_failures 10, so one a minute stays below the limit that locks the host out.
const TOKEN_RETRY_MS = 60_000;

/** progress() option -> RunProgressed field */
export const PROGRESS_FIELDS = Object.freeze({
  recordsFetched: 'records_fetched',
  recordsCreated: 'records_created',
  recordsUpdated: 'records_updated',
  recordsSkipped: 'records_skipped',
  claimsCreated: 'claims_created',
  coverageCellsUpdated: 'coverage_cells_updated',
});
const COUNTER_NAMES = Object.keys(PROGRESS_FIELDS);

const NEVER_SETTLED =
  'the function given to withRun never settled: the event loop emptied with the run open';
const SIGNALS = Object.freeze({
  SIGTERM: { number: 15, message: 'stopped by SIGTERM' },
  SIGINT: { number: 2, message: 'interrupted by Ctrl-C (SIGINT)' },
});

// ------------------------------------------------------------------------------ errors

/** Every error this client throws. */
export class LedgerError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Refused before anything was sent: `field` names the option that is wrong. */
export class LedgerValidationError extends LedgerError {
  constructor(field, message) {
    super(`${field}: ${message}`);
    this.field = field;
  }
}

/** A run handle used when it cannot be (finished, or not yet started). */
export class LedgerStateError extends LedgerError {}

/** The ledger answered with an error (a problem+json body, RFC 9457, when it is the ledger). */
export class LedgerApiError extends LedgerError {
  constructor({ status, title, detail, type, errors, body, retryAfterMs, attempts }) {
    super(`${status} ${title}: ${detail}`);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.type = type;
    this.errors = errors ?? [];
    const first = this.errors[0] ?? {};
    this.field = typeof first.field === 'string' ? first.field : undefined;
    this.line = Number.isInteger(first.line) ? first.line : undefined;
    this.item = Number.isInteger(first.item) ? first.item : undefined;
    for (const [from, to] of [
      ['run_id', 'runId'],
      ['rule', 'rule'],
      ['expected_version', 'expectedVersion'],
      ['actual_version', 'actualVersion'],
    ]) {
      if (body && body[from] !== undefined && body[from] !== null) this[to] = body[from];
    }
    this.retryAfterMs = retryAfterMs;
    this.attempts = attempts;
  }

  /** A 5xx, 429, 408 (the API cut a body that stalled on the way) or a 409 write-conflict
   * (another writer won a race for a key; the same events again are safe): the request may
   * succeed later. Any other 4xx is the request's own fault (a version conflict included), and
   * a 500 stored-event-unreadable is the ledger's history, which no retry changes. */
  get retriable() {
    const type = String(this.type ?? '');
    return (
      (this.status >= 500 && !type.endsWith(':stored-event-unreadable')) ||
      this.status === 429 ||
      this.status === 408 ||
      (this.status === 409 && type.endsWith(':write-conflict'))
    );
  }
}

/** No usable answer: connection refused or reset, DNS, or a timeout, on every attempt. */
export class LedgerNetworkError extends LedgerError {
  constructor(message, { cause, attempts }) {
    super(message, { cause });
    this.attempts = attempts;
  }
}

/** An answer that is not what the ledger API sends (not JSON, not the expected shape). */
export class LedgerProtocolError extends LedgerError {
  constructor(message, { status, attempts } = {}) {
    super(message);
    this.status = status;
    this.attempts = attempts;
  }
}

/**
 * A body over the limit (`maxBodyBytes`, or the API's `[api] max_body_bytes` when it answered
 * 413): `index` and `eventId` name the event that alone is over it (undefined when only the
 * events together are), `bytes` its size (or the body's) and `limit` the limit (undefined when
 * a 413 did not say it); `status` is 413 when the API refused it, undefined when nothing was
 * sent. No retry or split can send such an event: it is never retried.
 */
export class LedgerBodyTooLargeError extends LedgerError {
  constructor(message, { index, eventId, bytes, limit, status, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.index = index;
    this.eventId = eventId;
    this.bytes = bytes;
    this.limit = limit;
    this.status = status;
  }

  get retriable() {
    return false;
  }
}

/** The JSON body of `events` as POST /v1/events takes it, and its size in bytes. */
function bodyOf(events) {
  let body;
  try {
    body = JSON.stringify(events);
  } catch (error) {
    // A BigInt or a circular value (a toJSON that throws): a bare TypeError, no LedgerError,
    // that named neither the event nor the problem's place.
    throw unsendable(events, error);
  }
  return { body, bytes: Buffer.byteLength(body, 'utf8') };
}

/** The LedgerValidationError for events JSON.stringify threw on: the first that fails alone. */
function unsendable(events, error) {
  const index = events.findIndex((event) => attempt(() => (JSON.stringify(event), false), true));
  return new LedgerValidationError(
    index < 0 ? 'events' : `events[${index}]`,
    `cannot be sent as JSON (${jsonFailure(error)}): nothing was sent`,
  );
}

/** The first line of what JSON.stringify threw, printable. */
function jsonFailure(error) {
  const what = textOf(attempt(() => error.message, undefined)) || 'a value JSON cannot hold';
  return printable(what.split('\n')[0], 200);
}

/** `error` of append(), carrying `events` as they were sent, each with the event_id it went
 * with (one the client gave it included): the caller's own resend of them after a network
 * error is then a duplicate of what the ledger may have stored, not the same facts stored
 * again under new ids. Not enumerable: an error logged does not print every event. A reason of
 * the caller's AbortSignal is left as it is. */
function withSentEvents(error, events) {
  if (error instanceof LedgerError && !Object.hasOwn(error, 'events')) {
    Object.defineProperty(error, 'events', { value: events, enumerable: false });
  }
  return error;
}

/** The error for event `index` of a batch, alone `bytes` long, over `limit`. */
function eventTooLarge(events, index, bytes, limit, extra = {}) {
  const event = events[index];
  const id = event && typeof event === 'object' ? event.event_id : undefined;
  const type = event && typeof event === 'object' ? event.type : undefined;
  const where = extra.status === 413 ? "the API's [api] max_body_bytes" : 'maxBodyBytes';
  const limitText = limit === undefined ? 'its limit' : `${where} of ${limit} bytes`;
  return new LedgerBodyTooLargeError(
    `event ${index} (${printable(String(type), 60)} event_id ${printable(String(id), 80)}) ` +
      `is ${bytes} bytes as a request of its own, over ${limitText}: no request can carry it ` +
      '(make its details or metadata smaller, or raise the limit)',
    { index, eventId: id, bytes, limit, ...extra },
  );
}

/** RunStarted could not be recorded, so the run did not start. */
export class RunNotStartedError extends LedgerError {}

// ------------------------------------------------------------------------------ helpers

function checkOption(name, value, { min = 0, max, integer = true } = {}) {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new LedgerValidationError(name, `must be a number >= ${min}, got ${describe(value)}`);
  }
  if (integer && !Number.isSafeInteger(value)) {
    throw new LedgerValidationError(name, `must be an integer, got ${describe(value)}`);
  }
  if (max !== undefined && value > max) {
    throw new LedgerValidationError(name, `must be at most ${max}, got ${describe(value)}`);
  }
  return value;
}

/** A delay in ms, as Node's timers take it: they turn one over MAX_DELAY_MS into 1 ms. */
function checkDelay(name, value, { min = 0 } = {}) {
  return checkOption(name, value, { min, max: MAX_DELAY_MS });
}

function describe(value) {
  if (typeof value === 'bigint') return `${value}n (a BigInt)`;
  if (typeof value === 'string') return JSON.stringify(clip(value, 60));
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) {
    return String(value);
  }
  return `a ${Array.isArray(value) ? 'array' : typeof value}`;
}

/** A counter delta: an integer from 0 to COUNTER_MAX (undefined is 0). */
function counter(field, value) {
  if (value === undefined) return 0;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > COUNTER_MAX) {
    throw new LedgerValidationError(
      field,
      `a count must be an integer from 0 to ${COUNTER_MAX}, got ${describe(value)}`,
    );
  }
  return value;
}

function readCounters(counts, where) {
  if (counts === undefined || counts === null) counts = {};
  if (typeof counts !== 'object' || Array.isArray(counts)) {
    throw new LedgerValidationError(where, `expected an object of counts, got ${describe(counts)}`);
  }
  const deltas = {};
  for (const key of Object.keys(counts)) {
    // Own keys only: `in` took toString, constructor and the like for counters (ignored).
    if (!Object.hasOwn(PROGRESS_FIELDS, key)) {
      throw new LedgerValidationError(
        key,
        `not a counter (expected one of ${COUNTER_NAMES.join(', ')})`,
      );
    }
  }
  for (const name of COUNTER_NAMES) deltas[name] = counter(name, counts[name]);
  return deltas;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** `text` with each lone surrogate replaced by U+FFFD: UTF-8 cannot carry one, so the ledger
 * refuses an event holding it (400 "surrogates not allowed"). toWellFormed needs Node 20. */
const wellFormed =
  typeof String.prototype.toWellFormed === 'function'
    ? (text) => text.toWellFormed()
    : (text) => text.replace(LONE_SURROGATE, '\uFFFD');

/** Text the ledger can store, at most `limit` characters (UTF-16 code units, never fewer than
 * the ledger's code points) with the note of the cut included: a limit may be the ledger's own
 * (an actor's 200), which a note past it would break. Made well formed after the cut: a cut
 * through a surrogate pair (an emoji) leaves half of it alone. */
function clip(text, limit, { keepEnd = false } = {}) {
  text = String(text);
  if (text.length > limit) {
    // The note's length depends on how much is cut, which depends on the note's length: cut
    // more until the kept text, the ellipsis and the note of that cut fit together.
    let kept = limit;
    let note;
    for (;;) {
      note = `[${text.length - kept} characters cut]`;
      const room = limit - 1 - note.length;
      if (room < 1) {
        // A limit too small for any note (none of the client's is): the bare cut.
        return wellFormed(keepEnd ? text.slice(text.length - limit) : text.slice(0, limit));
      }
      if (room >= kept) break;
      kept = room;
    }
    text = keepEnd ? `${note}…${text.slice(text.length - kept)}` : `${text.slice(0, kept)}…${note}`;
  }
  return wellFormed(text);
}

/** A parsed JSON value with every string, keys included, made well formed. */
function wellFormedJson(value) {
  if (typeof value === 'string') return wellFormed(value);
  if (Array.isArray(value)) return value.map(wellFormedJson);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value).map(([key, item]) => [wellFormed(key), wellFormedJson(item)]),
  );
}

function jsonDepth(value) {
  let deepest = 0;
  const stack = [[value, 0]];
  while (stack.length) {
    const [item, depth] = stack.pop();
    if (item !== null && typeof item === 'object') {
      deepest = Math.max(deepest, depth + 1);
      for (const child of Object.values(item)) stack.push([child, depth + 1]);
    }
  }
  return deepest;
}

/** An error's details (well formed), or a clipped preview when they are too large or cannot be
 * JSON. JSON.stringify keeps a lone surrogate (as an escape the ledger would read back as one). */
function bounded(details) {
  let text;
  try {
    text = JSON.stringify(details);
  } catch (error) {
    // What JSON.stringify threw is the details' own (a toJSON, a getter): anything.
    return { unserialisable: clip(describeThrown(error).message, MAX_DETAILS_CHARS) };
  }
  if (text === undefined) return { unserialisable: describe(details) };
  const parsed = JSON.parse(text);
  if (text.length > MAX_DETAILS_CHARS || jsonDepth(parsed) > MAX_DETAILS_DEPTH) {
    return { clipped: clip(text, MAX_DETAILS_CHARS) };
  }
  return wellFormedJson(parsed); // within MAX_DETAILS_DEPTH: the recursion is shallow
}

/** What `read()` gives, or `fallback` when reading throws: a thrown value is anything, and any
 * of its properties may be a getter that throws, or it may be a revoked Proxy, on which even
 * `instanceof` throws. */
function attempt(read, fallback) {
  try {
    return read();
  } catch {
    return fallback;
  }
}

/** `value` as text, or undefined when it cannot be made one (String() of an object whose
 * toString throws, of a revoked Proxy). String() of a Symbol is its description. */
function textOf(value) {
  return attempt(() => String(value), undefined);
}

/** `Name: message` (or the name alone), as a RunFinished's error_message says it. */
function errorText({ name, message }) {
  return message ? `${name}: ${message}` : name;
}

/** The message of a value that could not be described at all. */
const UNDESCRIBED_ERROR = 'an error that could not be described';

/** What a thrown value is called and says: `Name: message`, as the Python SDK records it.
 * Never throws, whatever was thrown: every property is read through attempt(), and only
 * strings (or Symbols, through String()) are taken as they are. V8 formats an error's `stack`
 * when first read, from its name and message: a Symbol there makes reading `stack` throw. */
function describeThrown(error) {
  if (attempt(() => error instanceof Error, false)) {
    const nameOf = (value) =>
      typeof value === 'string' || typeof value === 'symbol' ? textOf(value) : undefined;
    let name = attempt(() => nameOf(error.name), undefined) || 'Error';
    const ctor = attempt(() => nameOf(error.constructor?.name), undefined);
    if (name === 'Error' && ctor && ctor !== 'Error') name = ctor;
    const message = attempt(() => {
      const value = error.message;
      return value === undefined || value === null ? '' : textOf(value);
    }, undefined);
    const stack = attempt(() => error.stack, undefined);
    return {
      name,
      message: message ?? '(a message that cannot be read)',
      stack: typeof stack === 'string' ? stack : undefined,
    };
  }
  const kind = error === null ? 'null' : typeof error;
  let message;
  if (error === undefined || error === null) message = '';
  else if (typeof error === 'string') message = error;
  else {
    message =
      attempt(() => JSON.stringify(error), undefined) ??
      textOf(error) ??
      attempt(() => Object.prototype.toString.call(error), undefined) ??
      UNDESCRIBED_ERROR;
  }
  return { name: `thrown ${kind}`, message, stack: undefined };
}

/** Make room on `process` for `delta` more (or fewer) listeners of each event: eleven
 * withRun at once added eleven SIGTERM, SIGINT and beforeExit listeners, and Node warned of
 * "a possible EventEmitter memory leak" for each, where each is removed as its run ends. A
 * limit of 0 (none) is left as it is. */
function allowListeners(delta) {
  const most = process.getMaxListeners();
  if (most !== 0) process.setMaxListeners(Math.max(1, most + delta));
}

/** `connector:NAME@HOST:PID`, as the Python SDK names a run's writer, within the ledger's
 * ACTOR_NAME_MAX: a host name too long for it (a 100-character connector name on a host with
 * a long FQDN) is cut in the middle of the actor, so the connector and the process stay named
 * (`metadata.host` keeps the whole host name); if even that cannot fit, the whole is cut. */
function actorName(connectorName, host, pid) {
  const whole = `connector:${connectorName}@${host}:${pid}`;
  if (whole.length <= ACTOR_NAME_MAX) return whole;
  const room = ACTOR_NAME_MAX - (whole.length - host.length);
  if (room >= ACTOR_HOST_MIN) return `connector:${connectorName}@${clip(host, room)}:${pid}`;
  return clip(whole, ACTOR_NAME_MAX);
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A signal that aborts after `ms` or when `caller` aborts (AbortSignal.any needs Node 20.3). */
function attemptSignal(ms, caller) {
  const timeout = AbortSignal.timeout(ms);
  if (!caller) return { signal: timeout, done() {} };
  const controller = new AbortController();
  const onTimeout = () => controller.abort(timeout.reason);
  const onCaller = () => controller.abort(caller.reason);
  timeout.addEventListener('abort', onTimeout, { once: true });
  caller.addEventListener('abort', onCaller, { once: true });
  return {
    signal: controller.signal,
    done() {
      timeout.removeEventListener('abort', onTimeout);
      caller.removeEventListener('abort', onCaller);
    },
  };
}

function retryAfterMs(header) {
  if (!header) return undefined;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Math.min(Number(text) * 1000, MAX_RETRY_AFTER_MS);
  const when = Date.parse(text);
  if (Number.isNaN(when)) return undefined;
  return Math.min(Math.max(when - Date.now(), 0), MAX_RETRY_AFTER_MS);
}

async function readBody(response, limit) {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw new LedgerProtocolError(
        `the answer (HTTP ${response.status}) is over ${limit} bytes: not the ledger API?`,
        { status: response.status },
      );
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJson(text) {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false };
  }
}

function printable(text, limit = 300) {
  // eslint-disable-next-line no-control-regex
  return clip(String(text).replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`), limit);
}

function apiError(response, text, attempts) {
  const parsed = parseJson(text);
  const body = parsed.ok && parsed.value && typeof parsed.value === 'object' ? parsed.value : null;
  const str = (v) => (typeof v === 'string' && v ? v : undefined);
  const title = str(body?.title) ?? (response.statusText || `HTTP ${response.status}`);
  const detail =
    str(body?.detail) ??
    (text.trim() ? `not a problem+json answer: ${printable(text)}` : 'an empty answer');
  const errors = Array.isArray(body?.errors)
    ? body.errors.filter((e) => e && typeof e === 'object')
    : [];
  return new LedgerApiError({
    status: response.status,
    title: printable(title, 200),
    detail,
    type: str(body?.type),
    errors,
    body,
    retryAfterMs: retryAfterMs(response.headers.get('retry-after')),
    attempts,
  });
}

// ------------------------------------------------------------------------------ the client

export class LedgerClient {
  /**
   * @param {object} options
   * @param {string} options.url the API's base URL, e.g. http://127.0.0.1:8080
   * @param {string} options.token a bearer token with the `append` scope
   */
  constructor({
    url,
    token,
    timeoutMs = 10_000,
    retries = 5,
    backoffMs = 250,
    maxBackoffMs = 10_000,
    maxResponseBytes = DEFAULT_MAX_RESPONSE_BYTES,
    maxBodyBytes = DEFAULT_MAX_BODY_BYTES,
    fetch: fetchImpl = globalThis.fetch,
  } = {}) {
    if (typeof url !== 'string' && !(url instanceof URL)) {
      throw new LedgerValidationError('url', `must be the API's base URL, got ${describe(url)}`);
    }
    let base;
    try {
      base = new URL(String(url));
    } catch {
      throw new LedgerValidationError('url', `not a URL: ${describe(String(url))}`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new LedgerValidationError('url', `must be http(s), got ${base.protocol}`);
    }
    if (base.username || base.password) {
      throw new LedgerValidationError('url', 'must not hold credentials: pass token instead');
    }
    // Each request's path is appended to the URL: after a query or a fragment it went into
    // them, every request reaching the base path itself (a 404 or 405 that named no mistake).
    if (/[?#]/.test(base.href)) {
      throw new LedgerValidationError(
        'url',
        `must be the API's base URL without a query or fragment, got ${describe(base.href)}`,
      );
    }
    if (typeof token !== 'string' || !token || /[\s\u0000-\u001f]/.test(token)) {
      throw new LedgerValidationError('token', 'must be a non-empty bearer token (no whitespace)');
    }
    // fetch cannot send a character above U+00FF in a header (each request would fail as if
    // the network had, retried for seconds), and the ledger compares the UTF-8 of the token it
    // was given with a header's bytes read as Latin-1: only ASCII reaches it as configured.
    if (/[^\u0021-\u007e]/.test(token)) {
      throw new LedgerValidationError(
        'token',
        'must be printable ASCII (a character outside it cannot be sent as it was configured)',
      );
    }
    if (typeof fetchImpl !== 'function') {
      throw new LedgerValidationError('fetch', 'no global fetch: Node >= 18 is required');
    }
    this.url = base.href.replace(/\/+$/, '');
    this.timeoutMs = checkDelay('timeoutMs', timeoutMs, { min: 1 });
    this.retries = checkOption('retries', retries);
    this.backoffMs = checkDelay('backoffMs', backoffMs);
    this.maxBackoffMs = checkDelay('maxBackoffMs', maxBackoffMs);
    this.maxResponseBytes = checkOption('maxResponseBytes', maxResponseBytes, { min: 1 });
    this.maxBodyBytes = checkOption('maxBodyBytes', maxBodyBytes, { min: 1 });
    // Not enumerable: a client printed or logged does not show its token.
    Object.defineProperty(this, '_token', { value: token, enumerable: false });
    Object.defineProperty(this, '_fetch', { value: fetchImpl, enumerable: false });
    // The latest 401 and when it came ({ error, at }): see RunHandle._tokenHeld.
    Object.defineProperty(this, '_tokenRefusal', { value: undefined, writable: true, enumerable: false });
  }

  toJSON() {
    return { url: this.url, token: '***' };
  }

  [Symbol.for('nodejs.util.inspect.custom')]() {
    return `LedgerClient { url: '${this.url}', token: '***' }`;
  }

  /**
   * Append events (the JSON of POST /v1/events), all or nothing; the summary of the append.
   * Retried with the same body: an event given without an `event_id` gets one here, before
   * the first attempt, so a retry after a lost answer is a duplicate, not a second event.
   * `signal` (an AbortSignal) stops it, attempts and pauses alike, rejecting with its reason:
   * an append in flight may still have been stored (send the same events again to know).
   */
  async append(events, { expectedVersion, signal } = {}) {
    if (!Array.isArray(events)) {
      throw new LedgerValidationError('events', 'must be an array of events');
    }
    events = events.map((event) =>
      event && typeof event === 'object' && !Array.isArray(event) && event.event_id == null
        ? { ...event, event_id: randomUUID() }
        : event,
    );
    let path = '/v1/events';
    if (expectedVersion !== undefined) {
      counter('expectedVersion', expectedVersion);
      path += `?expected_version=${expectedVersion}`;
    }
    const { body, bytes } = bodyOf(events);
    if (bytes > this.maxBodyBytes) throw this._tooLarge(events, bytes);
    let summary;
    try {
      summary = await this._request('POST', path, body, signal);
    } catch (error) {
      // The API's own limit is lower than maxBodyBytes: one event over it is that event's
      // fault, named as when maxBodyBytes refuses it (a batch of several is the caller's).
      if (error instanceof LedgerApiError && error.status === 413 && events.length === 1) {
        const said = /limit of (\d+) bytes/.exec(error.detail ?? '');
        throw eventTooLarge(events, 0, bytes, said ? Number(said[1]) : undefined, {
          status: 413,
          cause: error,
        });
      }
      throw withSentEvents(error, events);
    }
    if (
      !summary ||
      typeof summary !== 'object' ||
      !Number.isInteger(summary.appended) ||
      !Number.isInteger(summary.duplicates)
    ) {
      throw new LedgerProtocolError(
        `POST ${path} answered ${printable(JSON.stringify(summary))}, not an append summary`,
      );
    }
    return summary;
  }

  /** The error for a batch whose body (`bytes`) is over maxBodyBytes: the first event over it
   * alone, else the batch (append is all or nothing: it is not split here). */
  _tooLarge(events, bytes) {
    for (let index = 0; index < events.length; index += 1) {
      const alone = bodyOf([events[index]]).bytes;
      if (alone > this.maxBodyBytes) return eventTooLarge(events, index, alone, this.maxBodyBytes);
    }
    return new LedgerBodyTooLargeError(
      `${events.length} events are ${bytes} bytes together, over maxBodyBytes of ` +
        `${this.maxBodyBytes} bytes: append them in smaller batches (one append is all or nothing)`,
      { bytes, limit: this.maxBodyBytes },
    );
  }

  /** `events` in consecutive batches whose bodies fit maxBodyBytes (one batch when they all
   * fit); an event too large alone throws its LedgerBodyTooLargeError before anything is sent.
   * Every batch holds at least one event, so the split ends. */
  _batches(events) {
    const sizes = events.map((event) => bodyOf([event]).bytes);
    const batches = [];
    let batch = [];
    let size = 2; // the brackets
    sizes.forEach((alone, index) => {
      if (alone > this.maxBodyBytes) {
        throw eventTooLarge(events, index, alone, this.maxBodyBytes);
      }
      const item = alone - 2; // the event without its own brackets
      const grown = size + item + (batch.length ? 1 : 0);
      if (batch.length && grown > this.maxBodyBytes) {
        batches.push(batch);
        batch = [];
        size = 2;
      }
      size += item + (batch.length ? 1 : 0);
      batch.push(events[index]);
    });
    if (batch.length) batches.push(batch);
    return batches;
  }

  /** GET a path of the API (e.g. `/v1/runs/3`) as JSON, with the same retries; `signal`
   * stops it as for append(). */
  async get(path, { signal } = {}) {
    if (typeof path !== 'string' || !path.startsWith('/')) {
      throw new LedgerValidationError('path', 'must start with /');
    }
    return this._request('GET', path, undefined, signal);
  }

  /**
   * GET a paged list of the API (`/v1/runs`, `/v1/runs/3/events`, `/v1/stuck`) a page at a time: yields
   * each page's array, following `Link: <…>; rel="next"` until the last page. Each page has
   * get()'s retries; `signal` stops it. A next link to another origin is refused, and so is
   * one to a page already read (the ledger's cursors only move forward: a loop would be
   * endless).
   */
  async *pages(path, { signal } = {}) {
    if (typeof path !== 'string' || !path.startsWith('/')) {
      throw new LedgerValidationError('path', 'must start with /');
    }
    const read = new Set();
    for (let next = path; next !== null; ) {
      read.add(next);
      const { value, link } = await this._exchange('GET', next, undefined, signal);
      if (!Array.isArray(value)) {
        throw new LedgerProtocolError(`GET ${next} answered ${printable(JSON.stringify(value), 200)}, not a list`);
      }
      yield value;
      next = nextLink(link, next);
      if (next !== null && read.has(next)) {
        throw new LedgerProtocolError(
          `GET ${printable(next, 200)} named a page already read as the next one: not followed again`,
        );
      }
    }
  }

  /**
   * Every stuck run (GET /v1/stuck, each page followed), the longest silent first: now, or as
   * the ledger stood at a past moment, `asOf` (a Date, or ISO-8601 text; no zone is UTC) or
   * `atPosition` (a ledger position), replayed and judged then (`ledger stuck --as-of`).
   * `olderThan` / `maxRuntime` (`'2h'`) replace the config's thresholds; `pageSize` (1 to
   * 1000, default the API's 50) is how many runs a request asks for. An option that cannot be
   * right throws LedgerValidationError naming it, before anything is sent.
   */
  async stuck(options = {}) {
    const path = stuckPath(options ?? {});
    const runs = [];
    for await (const page of this.pages(path, { signal: options?.signal })) runs.push(...page);
    return runs;
  }

  /** Append RunStarted and return the open run. */
  async startRun(options) {
    const run = new RunHandle(this, options ?? {});
    await run._start();
    return run;
  }

  /**
   * Start a run, call `fn(run)`, and record its outcome whatever happens: finish (success, or
   * partial after run.error()) when fn returns, fail when it throws or rejects, fail and
   * re-raise when the process gets SIGTERM or SIGINT meanwhile. Returns what fn returns.
   */
  async withRun(options, fn) {
    if (typeof fn !== 'function') {
      throw new LedgerValidationError('fn', 'withRun(options, fn) needs a function');
    }
    const signalGraceMs = checkDelay('signalGraceMs', options?.signalGraceMs ?? 15_000);
    // The listeners go in before RunStarted is sent: a signal while it is on its way (the
    // ledger may have stored it, its answer not yet here) killed the process with the run
    // left open; it now waits for the start and, if the run started, ends it failed.
    const run = new RunHandle(this, options ?? {});
    let starting = null;
    let stoppedBy = null;
    const listeners = new Map();
    let stopping = null;
    // The terminal event in flight once fn has settled (finish, or fail with its error): a
    // signal that arrives meanwhile waits for it instead of racing it with a second one, and
    // tries once more to end the run only if that send failed (the handle then resends its
    // pending terminal event, with the same ids, rather than a second one).
    let ending = null;
    const removeListeners = () => {
      for (const [name, listener] of listeners) {
        process.removeListener(name, listener);
        allowListeners(-1);
      }
      listeners.clear();
    };
    const onSignal = (name) => {
      if (stopping) {
        // A second signal while the failure is being recorded: stop now.
        process.exit(128 + SIGNALS[name].number);
      }
      stoppedBy = name;
      stopping = (async () => {
        try {
          const recordSignal = async () => {
            if (run.runId === undefined) {
              try {
                await starting;
              } catch {
                return; // the run did not start: nothing to end
              }
            }
            if (ending) {
              try {
                await ending;
                return;
              } catch {
                // the terminal event did not get through: one more try to end the run
              }
            }
            if (run.status === undefined) {
              await run._failWith(SIGNALS[name].message, {
                exception: name,
                message: SIGNALS[name].message,
                reason: 'interrupted',
                signal: name,
              });
            }
          };
          if (run.status === undefined) {
            let timer;
            await Promise.race([
              recordSignal(),
              new Promise((resolve) => {
                timer = setTimeout(resolve, signalGraceMs);
              }),
            ]).finally(() => clearTimeout(timer));
          }
        } catch (error) {
          process.emitWarning(
            `run ${run.runId}: could not record ${name} in the ledger: ${error.message}`,
          );
        } finally {
          removeListeners();
          // Other listeners already heard the signal and own the shutdown; otherwise end the
          // process as the signal would have (exit status 128 + its number to a shell).
          if (process.listenerCount(name) === 0) {
            process.kill(process.pid, name);
            setTimeout(() => process.exit(128 + SIGNALS[name].number), 1_000);
          }
        }
      })();
    };
    for (const name of Object.keys(SIGNALS)) {
      const listener = () => onSignal(name);
      listeners.set(name, listener);
      allowListeners(1);
      process.on(name, listener);
    }
    // A function whose promise never settles while nothing else keeps Node alive (a forgotten
    // resolve, an awaited event that never comes): the event loop empties and the process
    // would exit with the run left open. Record it failed first; Node then exits as it would.
    const onBeforeExit = () => {
      if (stopping || ending) return; // fn has settled: its terminal event is on its way
      stopping = (async () => {
        try {
          if (run.status === undefined) {
            await run._failWith(NEVER_SETTLED, { reason: 'never-settled', message: NEVER_SETTLED });
          }
        } catch (error) {
          process.emitWarning(
            `run ${run.runId}: could not record that the function never settled: ${error.message}`,
          );
        } finally {
          removeListeners();
        }
      })();
    };
    listeners.set('beforeExit', onBeforeExit);
    allowListeners(1);
    process.on('beforeExit', onBeforeExit);
    // The signal listeners stay until the terminal event is in the ledger: a SIGTERM during
    // the final send must not end the process with the run still open.
    const end = async (send) => {
      try {
        if (!stopping && run.status === undefined) {
          ending = send();
          await ending;
        }
      } finally {
        if (stopping) await stopping;
        removeListeners();
      }
    };
    // fail(error), and if it broke before it built the terminal event (a bug here, or a value
    // it could not handle), a `failed` RunFinished that says only so: a failure to send is
    // the ledger's (the handle resends the same event), anything else must not leave the run
    // open. The run's status is what decides, not the error's class: any value may be thrown.
    const recordFailure = async (error) => {
      try {
        return await run.fail(error);
      } catch (failing) {
        if (run._closing || run.status !== undefined) throw failing;
        try {
          return await run._failUndescribed();
        } finally {
          attempt(() => run.onError(failing), undefined); // reported, after the run has ended
        }
      }
    };
    try {
      starting = run._start();
      await starting;
    } catch (error) {
      if (stopping) await stopping; // the signal's own ending: the process is going
      removeListeners();
      throw error;
    }
    if (stopping) {
      // A signal as the run started: it ended the run failed, and the function is not called
      // (the process ends with the signal, unless another listener owns the shutdown).
      await stopping;
      throw new LedgerStateError(
        `run ${run.runId}: ${stoppedBy} arrived as it started: recorded ` +
          `${run.status ?? 'open (the failure could not be recorded)'}, the function not called`,
      );
    }
    let value;
    try {
      value = await fn(run);
    } catch (error) {
      // The function's error is what the caller must see; a failure to record it is reported.
      await end(() => recordFailure(error)).catch((recording) => run.onError(recording));
      throw error;
    }
    await end(() => run.finish());
    return value;
  }

  async _request(method, path, body, signal) {
    return (await this._exchange(method, path, body, signal)).value;
  }

  /** The request with retries: the parsed JSON answer and its Link header (or null). */
  async _exchange(method, path, body, signal) {
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new LedgerValidationError('signal', 'must be an AbortSignal');
    }
    signal?.throwIfAborted();
    const url = this.url + path;
    const headers = { Authorization: `Bearer ${this._token}`, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let lastError;
    for (let attempt = 1; attempt <= this.retries + 1; attempt += 1) {
      let waitMs;
      const deadline = attemptSignal(this.timeoutMs, signal);
      try {
        const response = await this._fetch(url, {
          method,
          headers,
          body,
          redirect: 'manual', // a redirect is refused (4xx-like): it could carry the token away
          signal: deadline.signal,
        });
        const text = await readBody(response, this.maxResponseBytes);
        if (response.ok) {
          this._tokenRefusal = undefined; // the token is valid (see RunHandle._tokenHeld)
          const parsed = parseJson(text);
          if (!parsed.ok) {
            throw new LedgerProtocolError(
              `${method} ${path} answered HTTP ${response.status} with ` +
                `${printable(response.headers.get('content-type') ?? 'no content type', 80)}, ` +
                `not JSON (is ${this.url} the ledger API?): ${printable(text, 200)}`,
              { status: response.status, attempts: attempt },
            );
          }
          return { value: parsed.value, link: response.headers.get('link') };
        }
        const error = apiError(response, text, attempt);
        // The token refused, for the runs' background sends (RunHandle._tokenHeld).
        if (response.status === 401) this._tokenRefusal = { error, at: Date.now() };
        if (!error.retriable) throw error;
        lastError = error;
        waitMs = response.status === 503 || response.status === 429 ? error.retryAfterMs : undefined;
      } catch (error) {
        if (signal?.aborted) throw signal.reason; // the caller's, not a timeout: not retried
        if (error instanceof LedgerApiError && !error.retriable) throw error;
        if (error instanceof LedgerProtocolError) throw error;
        if (!(error instanceof LedgerApiError)) {
          lastError = new LedgerNetworkError(
            `${method} ${url}: ${networkReason(error, this.timeoutMs)}`,
            { cause: error, attempts: attempt },
          );
        }
      } finally {
        deadline.done();
      }
      if (attempt > this.retries) break;
      const ceiling = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** (attempt - 1));
      const jittered = ceiling / 2 + Math.random() * (ceiling / 2);
      await sleep(waitMs !== undefined ? Math.max(waitMs, jittered) : jittered, signal);
    }
    lastError.attempts = this.retries + 1;
    lastError.message += ` (after ${this.retries + 1} attempt(s))`;
    throw lastError;
  }
}

/** The most runs a page of GET /v1/stuck holds (the API's MAX_PAGE). */
const STUCK_PAGE_MAX = 1000;

/** GET /v1/stuck's path for stuck()'s options, each checked: the moment is one of `asOf` and
 * `atPosition`, as the API and `ledger stuck` take one of as_of and at_position. */
function stuckPath({ olderThan, maxRuntime, asOf, atPosition, pageSize }) {
  const query = new URLSearchParams();
  for (const [name, parameter, value] of [
    ['olderThan', 'older_than', olderThan],
    ['maxRuntime', 'max_runtime', maxRuntime],
  ]) {
    if (value === undefined) continue;
    if (typeof value !== 'string' || value === '') {
      throw new LedgerValidationError(name, `must be a duration such as '2h', got ${describe(value)}`);
    }
    query.set(parameter, value);
  }
  if (asOf !== undefined && atPosition !== undefined) {
    throw new LedgerValidationError('asOf', 'give asOf or atPosition, not both');
  }
  if (asOf !== undefined) {
    query.set('as_of', momentText(asOf));
  }
  if (atPosition !== undefined) {
    checkOption('atPosition', atPosition, { max: Number.MAX_SAFE_INTEGER });
    query.set('at_position', String(atPosition));
  }
  if (pageSize !== undefined) {
    query.set('limit', String(checkOption('pageSize', pageSize, { min: 1, max: STUCK_PAGE_MAX })));
  }
  const text = query.toString();
  return text ? `/v1/stuck?${text}` : '/v1/stuck';
}

/** `asOf` as the API reads it: a Date as UTC ISO-8601 (an Invalid Date refused), text as it
 * is (the ledger says what is wrong with it, naming as_of). */
function momentText(asOf) {
  if (asOf instanceof Date) {
    if (Number.isNaN(asOf.getTime())) {
      throw new LedgerValidationError('asOf', 'is an Invalid Date');
    }
    // Past 9999 (or before year 1) toISOString writes `+275760-…`, which no ISO-8601 reader
    // of the ledger takes: the API's 400 would name as_of, not this option.
    const year = asOf.getUTCFullYear();
    if (year < 1 || year > 9999) {
      throw new LedgerValidationError('asOf', `must be within the years 1 to 9999, got ${year}`);
    }
    return asOf.toISOString();
  }
  if (typeof asOf !== 'string' || asOf === '') {
    throw new LedgerValidationError('asOf', `must be a Date or ISO-8601 text, got ${describe(asOf)}`);
  }
  return asOf;
}

/** The path of a `Link: <…>; rel="next"` header (null: the last page). Only a path on the
 * same API is followed: an absolute URL could carry the token elsewhere. */
function nextLink(link, from) {
  if (!link) return null;
  const found = /<([^>]*)>\s*;\s*rel="?next"?/.exec(link);
  if (!found) return null;
  const target = found[1];
  if (!target.startsWith('/') || target.startsWith('//')) {
    throw new LedgerProtocolError(
      `GET ${from} named a next page off this API (${printable(target, 200)}): not followed`,
    );
  }
  return target;
}

/** An error no resend changes: a 4xx refusal, or an event too large for any request. */
function refused(error) {
  return (
    (error instanceof LedgerApiError && !error.retriable) ||
    error instanceof LedgerBodyTooLargeError
  );
}

/** A refusal of what the events hold (400 invalid input, 413, 422, or an event too large for
 * maxBodyBytes): a smaller, plainer event may pass. A refusal about the run or the caller (401,
 * 403, 404, 409: the run has ended already) would be the same for any event. */
function contentRefused(error) {
  return (
    error instanceof LedgerBodyTooLargeError ||
    (error instanceof LedgerApiError && [400, 413, 422].includes(error.status))
  );
}

function networkReason(error, timeoutMs) {
  if (error?.name === 'TimeoutError' || error?.name === 'AbortError') {
    return `no complete answer within ${timeoutMs} ms`;
  }
  const cause = error?.cause;
  const code = cause?.code ?? error?.code;
  const text = cause?.message ?? error?.message ?? String(error);
  return code && !String(text).includes(code) ? `${code} ${text}` : String(text);
}

// ------------------------------------------------------------------------------ a run

export class RunHandle {
  constructor(client, options) {
    const {
      sourceId,
      connectorName,
      connectorVersion = '0',
      trigger = 'manual',
      metadata,
      progressIntervalMs = 5_000,
      heartbeatIntervalMs = 60_000,
      maxErrorDetails = 100,
      onError,
    } = options;
    if (sourceId === undefined) throw new LedgerValidationError('sourceId', 'is required');
    counter('sourceId', sourceId);
    if (typeof connectorName !== 'string' || !connectorName || connectorName.trim() !== connectorName) {
      throw new LedgerValidationError(
        'connectorName',
        'must be a non-empty string without leading or trailing whitespace',
      );
    }
    if ([...connectorName].length > CONNECTOR_NAME_MAX) {
      throw new LedgerValidationError('connectorName', `at most ${CONNECTOR_NAME_MAX} characters`);
    }
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f-\u009f]/.test(connectorName)) {
      throw new LedgerValidationError('connectorName', 'must not hold control characters');
    }
    if (typeof trigger !== 'string' || typeof connectorVersion !== 'string') {
      throw new LedgerValidationError('trigger', 'trigger and connectorVersion are strings');
    }
    // A lone surrogate cannot be UTF-8: the ledger refused the RunStarted (a 400 quoting a
    // codec), as RunNotStartedError, for a name the client can say is wrong before sending.
    for (const [field, value] of Object.entries({ connectorName, trigger, connectorVersion })) {
      if (wellFormed(value) !== value) {
        throw new LedgerValidationError(field, 'holds a lone surrogate (half of a UTF-16 pair)');
      }
    }
    if (metadata !== undefined && (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata))) {
      throw new LedgerValidationError('metadata', 'must be an object');
    }
    if (metadata !== undefined) {
      try {
        JSON.stringify(metadata);
      } catch (error) {
        throw new LedgerValidationError('metadata', `cannot be sent as JSON (${jsonFailure(error)})`);
      }
    }
    checkDelay('progressIntervalMs', progressIntervalMs);
    checkDelay('heartbeatIntervalMs', heartbeatIntervalMs);
    checkOption('maxErrorDetails', maxErrorDetails);
    if (onError !== undefined && typeof onError !== 'function') {
      throw new LedgerValidationError('onError', 'must be a function');
    }
    this.client = client;
    this.sourceId = sourceId;
    this.connectorName = connectorName;
    this.progressIntervalMs = progressIntervalMs;
    this.heartbeatIntervalMs = heartbeatIntervalMs;
    this.maxErrorDetails = maxErrorDetails;
    this.onError =
      onError ?? ((error) => process.emitWarning(`run-ledger: ${describeThrown(error).message}`));
    const host = hostname();
    this.actor = actorName(connectorName, host, process.pid);
    this.metadata = {
      host,
      pid: process.pid,
      connector_version: connectorVersion,
      trigger,
      client: `@run-ledger/client ${VERSION} (node ${process.version})`,
      ...(metadata ?? {}),
    };
    this.runId = undefined;
    this.status = undefined;
    this.totals = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0]));
    this.errorCount = 0;
    this._errors = [];
    this._pending = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0]));
    this._ready = []; // built events (ids fixed) not yet in the ledger, in order
    this._queue = Promise.resolve();
    this._waitingFlush = undefined; // the send queued behind the one in flight, not started
    this._sending = false; // a progress or heartbeat send is in flight
    this._lastEmit = 0;
    this._flushTimer = undefined;
    this._heartbeatTimer = undefined;
    this._closing = undefined; // the terminal batch once built (resent as it is on a retry)
    // The refusal (4xx) of the run's own terminal event, once a short `failed` one replaced it.
    this.refusedOutcome = undefined;
  }

  /** True from start until the terminal event is in the ledger (or being sent). */
  get isOpen() {
    return this.runId !== undefined && this.status === undefined && !this._closing;
  }

  _event(type, fields) {
    return {
      type,
      event_id: randomUUID(),
      run_id: this.runId,
      occurred_at: new Date().toISOString(),
      actor: this.actor,
      ...fields,
    };
  }

  async _start() {
    if (this.runId !== undefined) throw new LedgerStateError('the run has already started');
    const started = {
      type: 'RunStarted',
      event_id: randomUUID(),
      run_ref: RUN_REF,
      occurred_at: new Date().toISOString(),
      actor: this.actor,
      source_id: this.sourceId,
      connector_name: this.connectorName,
      metadata: this.metadata,
    };
    let summary;
    try {
      summary = await this.client.append([started]);
    } catch (error) {
      throw new RunNotStartedError(
        `run of ${this.connectorName} (source ${this.sourceId}) not started: ${error.message}`,
        { cause: error },
      );
    }
    const runId = summary.run_refs?.[RUN_REF];
    if (!Number.isSafeInteger(runId) || runId < 1) {
      throw new RunNotStartedError(
        `run of ${this.connectorName}: the answer names no run id ` +
          `(${printable(JSON.stringify(summary))})`,
      );
    }
    this.runId = runId;
    this.startedEventId = started.event_id;
    this._lastEmit = Date.now();
    if (this.heartbeatIntervalMs > 0) {
      this._heartbeatTimer = setInterval(() => {
        this.heartbeat().catch((error) => refused(error) || this.onError(error));
      }, this.heartbeatIntervalMs);
      this._heartbeatTimer.unref();
    }
    return runId;
  }

  _requireOpen(what) {
    if (this.runId === undefined) throw new LedgerStateError(`${what}: the run has not started`);
    if (this.status !== undefined || this._closing) {
      const state = this.status ? `finished (${this.status})` : 'finishing';
      throw new LedgerStateError(`${what}: run ${this.runId} is ${state}`);
    }
  }

  /**
   * Add counter deltas. Sent (summed) at most once per progressIntervalMs; the promise settles
   * when what this call triggered is in the ledger (or right away when it only accumulated).
   * Bad counts throw LedgerValidationError synchronously, naming the field.
   */
  progress(counts) {
    this._requireOpen('progress');
    this._addDeltas(readCounters(counts, 'progress'));
    // The token was refused a moment ago: the counts wait (see _tokenHeld).
    if (this._tokenHeld()) return Promise.resolve();
    // Events a failed send left go with the next call, not after the interval. While a send is
    // in flight its events are in _ready too: that is no reason to send again at once (each
    // call then queued the next send, and a connector calling progress() per record wrote a
    // RunProgressed per round trip, hundreds a second, whatever progressIntervalMs).
    const left = this._ready.length > 0 && !this._sending;
    if (left || Date.now() - this._lastEmit >= this.progressIntervalMs) {
      return this._flush(false);
    }
    if (!this._flushTimer) {
      const wait = Math.max(0, this.progressIntervalMs - (Date.now() - this._lastEmit));
      this._flushTimer = setTimeout(() => {
        this._flushTimer = undefined;
        // A refusal is reported by _flush itself (it was reported twice).
        if (this.isOpen) this._flush(false).catch((error) => refused(error) || this.onError(error));
      }, wait);
      this._flushTimer.unref();
    }
    return Promise.resolve();
  }

  /** Say the run is alive: the pending deltas, or an all-zero RunProgressed. */
  heartbeat() {
    this._requireOpen('heartbeat');
    if (this._tokenHeld()) {
      // Not sent with a token the ledger refused a moment ago (see _tokenHeld); handled
      // here, so a heartbeat not awaited does not crash the process.
      const refusal = Promise.reject(this.tokenRefused);
      refusal.catch(() => {});
      return refusal;
    }
    return this._flush(true);
  }

  /** Record a non-fatal error: counted exactly, the first maxErrorDetails kept; the run
   * finishes `partial`. */
  error(message, details) {
    this._requireOpen('error');
    this.errorCount += 1;
    if (this._errors.length < this.maxErrorDetails) {
      // Often an error caught in a catch block: one String() cannot convert (a Symbol name, a
      // revoked Proxy) is described as fail() describes it, not thrown back at the caller.
      const text = textOf(message) ?? errorText(describeThrown(message));
      const entry = { message: clip(text, MAX_MESSAGE_CHARS) };
      if (details !== undefined && details !== null) entry.details = bounded(details);
      this._errors.push(entry);
    }
  }

  /**
   * Append the terminal event after any pending counts (one request). status defaults to
   * `partial` when run.error() was called, else `success`.
   */
  async finish({ status, errorMessage, errorDetails, ...counts } = {}) {
    if (this._closing && !this.status) return this._sendClosing();
    this._requireOpen('finish');
    if (status !== undefined && status !== 'success' && status !== 'partial') {
      throw new LedgerValidationError(
        'status',
        `finish() takes 'success' or 'partial' (use fail(error) for a failure), got ${describe(status)}`,
      );
    }
    if (errorMessage !== undefined && typeof errorMessage !== 'string') {
      throw new LedgerValidationError('errorMessage', 'must be a string');
    }
    const deltas = readCounters(counts, 'finish');
    const outcome = status ?? (this.errorCount ? 'partial' : 'success');
    const summary = this._errorSummary();
    let message = errorMessage;
    if (message === undefined && outcome === 'partial' && this.errorCount) {
      message = this._errors.length
        ? `${this.errorCount} error(s); first: ${this._errors[0].message}`
        : `${this.errorCount} error(s)`;
    }
    const details =
      errorDetails !== undefined ? { ...summary, ...bounded(errorDetails) } : summary;
    this._addDeltas(deltas);
    return this._close({
      status: outcome,
      error_message: message === undefined ? null : clip(message, MAX_MESSAGE_CHARS),
      error_details: Object.keys(details).length ? details : null,
    });
  }

  /** Append RunFinished `failed` with the error's name, message and stack: any thrown value,
   * even one none of whose properties can be read. */
  async fail(error) {
    if (this._closing && !this.status) return this._sendClosing();
    this._requireOpen('fail');
    // The run is ending: no heartbeat may keep it alive past this point, even if building its
    // terminal event went wrong (the sweeper then times it out instead of never).
    this._stopTimers();
    const described = describeThrown(error);
    const { message, stack } = described;
    const name = clip(described.name, MAX_MESSAGE_CHARS); // an error's name is any string
    // `cause` may be a getter that throws, or hold anything: described like the error itself.
    const cause = attempt(() => error?.cause, undefined);
    const details = {
      exception: name,
      message: clip(message, MAX_MESSAGE_CHARS),
      ...(stack ? { traceback: clip(stack, MAX_TRACEBACK_CHARS, { keepEnd: true }) } : {}),
      ...(cause !== undefined
        ? { cause: clip(describeThrown(cause).message, MAX_MESSAGE_CHARS) }
        : {}),
      ...this._errorSummary(),
    };
    return this._close({
      status: 'failed',
      error_message: clip(errorText({ name, message }), MAX_MESSAGE_CHARS),
      error_details: details,
    });
  }

  /** Append RunFinished `failed` saying only that the error could not be described: withRun's
   * last resort when fail() itself broke before it built its terminal event. */
  _failUndescribed() {
    return this._failWith(UNDESCRIBED_ERROR, {
      reason: 'undescribed-error',
      message: UNDESCRIBED_ERROR,
    });
  }

  async _failWith(message, details) {
    if (this._closing && !this.status) return this._sendClosing();
    return this._close({
      status: 'failed',
      error_message: message,
      error_details: { ...details, ...this._errorSummary() },
    });
  }

  _addDeltas(deltas) {
    // A sum over the ledger's INT limit goes out as two events rather than overflow.
    if (COUNTER_NAMES.some((n) => this._pending[n] + deltas[n] > COUNTER_MAX)) {
      this._ready.push(this._pendingEvent());
      this._clearPending();
    }
    for (const name of COUNTER_NAMES) {
      this._pending[name] += deltas[name];
      this.totals[name] += deltas[name];
    }
  }

  _errorSummary() {
    if (!this.errorCount) return {};
    return {
      error_count: this.errorCount,
      errors: [...this._errors],
      errors_truncated: this.errorCount > this._errors.length,
    };
  }

  _pendingEvent() {
    const fields = {};
    for (const name of COUNTER_NAMES) fields[PROGRESS_FIELDS[name]] = this._pending[name];
    return this._event('RunProgressed', fields);
  }

  _clearPending() {
    for (const name of COUNTER_NAMES) this._pending[name] = 0;
  }

  _hasPending() {
    return COUNTER_NAMES.some((n) => this._pending[n] > 0);
  }

  /** Queue a send of the ready events and the pending deltas (or a heartbeat). At most one
   * send waits behind the one in flight: a call while one waits joins it (it takes the counts
   * pending when it starts, this call's included). During an outage a send lasts its retries,
   * and progress() not awaited, called for each record, queued one more per call: memory grew
   * for as long as the outage (600 MB in 15 s), and once the ledger was back each of them sent
   * its own request, whatever progressIntervalMs. */
  _flush(heartbeatIfEmpty) {
    if (this._waitingFlush) {
      this._waitingFlush.heartbeat ||= heartbeatIfEmpty;
      return this._waitingFlush.done;
    }
    const waiting = { heartbeat: heartbeatIfEmpty, done: undefined };
    this._waitingFlush = waiting;
    const sendNow = async () => {
      this._waitingFlush = undefined; // started: a later call queues the next send
      const heartbeatIfEmpty = waiting.heartbeat;
      if (this._closing || this.status || this._tokenHeld()) return;
      // Events a failed send left (their ids fixed: the ledger may hold them) go again first,
      // alone; the counts since stay pending until they are through. However long an outage,
      // the backlog stays one event (and the counts), never thousands that no request could
      // carry (max_events, max_body_bytes) and that a refusal would drop with their counts.
      const retrying = this._ready.length > 0;
      if (retrying) await this._deliver(this._ready.slice());
      if (this._hasPending()) {
        this._ready.push(this._pendingEvent());
        this._clearPending();
      } else if (heartbeatIfEmpty && !retrying) {
        this._ready.push(this._event('RunProgressed', {}));
      }
      if (!this._ready.length) return;
      await this._deliver(this._ready.slice());
    };
    const send = async () => {
      this._sending = true;
      try {
        await sendNow();
      } finally {
        this._sending = false;
      }
    };
    const done = this._queue.then(send);
    waiting.done = done;
    this._queue = done.catch(() => {});
    // progress() and heartbeat() are often not awaited: their failure must not crash the
    // process as an unhandled rejection. An awaited promise still rejects. A retriable failure
    // loses nothing (the events go with the next send); a refusal is reported.
    done.catch((error) => {
      if (refused(error)) this.onError(error);
    });
    return done;
  }

  /** Send `batch` (a prefix of _ready); on success drop it from _ready. A retriable failure
   * keeps it (same ids) for the next send; a refusal (4xx) drops it and throws. */
  async _deliver(batch) {
    this._lastEmit = Date.now();
    let delivered = 0;
    try {
      for (const part of this.client._batches(batch)) {
        await this.client.append(part);
        this._ready.splice(0, part.length);
        delivered += part.length;
      }
    } catch (error) {
      // A 401 refused the token (rotated away, revoked), not the events: they stay, for the
      // next send (see _tokenHeld), or finish() and fail().
      if (error instanceof LedgerApiError && error.status === 401) throw error;
      // A refusal (an event too large for any request included) is dropped: sent again it
      // would be refused again, before every later report, for ever.
      if (refused(error)) this._ready.splice(0, batch.length - delivered);
      throw error;
    }
  }

  _close(terminalFields) {
    this._requireOpen('finish');
    this._stopTimers();
    // Built now, synchronously: a progress send still in flight has its events in _ready too,
    // so they may go twice, with the same ids: the ledger keeps one (a duplicate).
    if (this._hasPending()) {
      this._ready.push(this._pendingEvent());
      this._clearPending();
    }
    this._closing = [...this._ready, this._event('RunFinished', terminalFields)];
    this._ready = [];
    return this._sendClosing();
  }

  /** Send the terminal batch. Refused for what it holds (a 4xx no resend changes), the counts
   * go alone, then the terminal event alone; refused on its own, it is replaced by a short
   * `failed` one so that the run does not stay open, and the refusal is thrown once that is
   * stored (`refusedOutcome` keeps it). */
  async _sendClosing() {
    const send = async () => {
      if (this.status) return;
      this._lastEmit = Date.now();
      if (!this.refusedOutcome) {
        const outcome = this._closing[this._closing.length - 1];
        try {
          await this._sendOutcome();
          this.status = outcome.status;
          return;
        } catch (error) {
          // Only a refusal of the terminal event on its own is its fault: one of a request that
          // also held counts may be theirs, or their size together (a proxy's body limit).
          if (!contentRefused(error) || this._closing.length > 1) throw error;
          this._replaceRefusedOutcome(error);
        }
      }
      await this.client.append(this._closing);
      this.status = 'failed';
    };
    const done = this._queue.then(send);
    this._queue = done.catch(() => {});
    await done;
    if (this.refusedOutcome) throw this.refusedOutcome;
    return this.result();
  }

  /** The pending counts and the terminal event in one request when they fit maxBodyBytes, else
   * in order, several. Refused for what they hold, the counts go alone, then the terminal event
   * alone, with the same ids: a resend after a failure sends what is left as it was. */
  async _sendOutcome() {
    try {
      await this._appendClosing();
    } catch (error) {
      if (!contentRefused(error) || this._closing.length === 1) throw error;
      await this._sendCountsAlone();
      await this.client.append(this._closing);
    }
  }

  /** Send _closing in order; each part stored leaves it, but the terminal event, which stays
   * (last) until the run has its status: a resend does not send the counts again. */
  async _appendClosing() {
    for (const part of this.client._batches(this._closing)) {
      await this.client.append(part);
      if (part.length < this._closing.length) this._closing = this._closing.slice(part.length);
    }
  }

  /** The counts of _closing on their own (the refusal may have been theirs: a refusal of them
   * is reported, and the run still ends); then only the terminal event is left. */
  async _sendCountsAlone() {
    const counts = this._closing.slice(0, -1);
    try {
      for (const part of this.client._batches(counts)) await this.client.append(part);
    } catch (error) {
      if (!refused(error)) throw error;
      this.onError(error);
    }
    this._closing = this._closing.slice(-1);
  }

  /** Put a short `failed` RunFinished in place of the terminal event refused on its own: it
   * holds no text of the connector's (nothing in it to refuse again), only why. */
  _replaceRefusedOutcome(error) {
    const [refused] = this._closing;
    this.refusedOutcome = error;
    this._closing = [
      this._event('RunFinished', {
        status: 'failed',
        error_message:
          `the ledger refused this run's ${refused.status} outcome: ` +
          printable(error.message, REFUSAL_CHARS),
        error_details: {
          reason: 'outcome-refused',
          refused_status: refused.status,
          ...(this.errorCount ? { error_count: this.errorCount } : {}),
        },
      }),
    ];
  }

  /** The 401 that refused the client's token in its latest answer (cleared by an answer that
   * succeeds). */
  get tokenRefused() {
    return this.client._tokenRefusal?.error;
  }

  /** True while the client's token was refused (401) less than TOKEN_RETRY_MS ago: no
   * progress or heartbeat is sent meanwhile. Each refused token counts against the host's
   * address, and past the API's [api] max_auth_failures (10 a minute) every request from it
   * is answered 429, the other connectors' valid tokens too: a send per progress interval and
   * the heartbeats kept the host locked out for as long as the run went on. One try a minute
   * (for all the client's runs) stays under the limit, and a token valid again is found. */
  _tokenHeld() {
    const refusal = this.client._tokenRefusal;
    return refusal !== undefined && Date.now() - refusal.at < TOKEN_RETRY_MS;
  }

  _stopTimers() {
    clearTimeout(this._flushTimer);
    clearInterval(this._heartbeatTimer);
    this._flushTimer = undefined;
    this._heartbeatTimer = undefined;
  }

  /** What the run reported: its id, status (once finished), totals and error count. */
  result() {
    return {
      runId: this.runId,
      status: this.status,
      totals: { ...this.totals },
      errorCount: this.errorCount,
    };
  }
}
