// Types of @run-ledger/client (index.mjs). Hand-written: the client needs no build step.

export declare const VERSION: string;
/** The largest counter delta one event carries (the ledger's counters are INT(11)). */
export declare const COUNTER_MAX: 2147483647;
/** The longest delay Node's timers keep (2^31 - 1 ms, about 24.8 days; a longer one fires
 * after 1 ms): every time option (`timeoutMs`, `backoffMs`, `maxBackoffMs`,
 * `progressIntervalMs`, `heartbeatIntervalMs`, `signalGraceMs`) over it throws
 * LedgerValidationError naming the option and this limit. */
export declare const MAX_DELAY_MS: 2147483647;
/** The longest a recorded message or error name is, the note of a cut (`…[N characters cut]`)
 * included; MAX_DETAILS_CHARS bounds details as JSON, MAX_TRACEBACK_CHARS a stack, alike. */
export declare const MAX_MESSAGE_CHARS: number;
export declare const MAX_DETAILS_CHARS: number;
export declare const MAX_TRACEBACK_CHARS: number;

/** progress() option -> RunProgressed field */
export declare const PROGRESS_FIELDS: Readonly<{
  recordsFetched: 'records_fetched';
  recordsCreated: 'records_created';
  recordsUpdated: 'records_updated';
  recordsSkipped: 'records_skipped';
  claimsCreated: 'claims_created';
  coverageCellsUpdated: 'coverage_cells_updated';
}>;

/** Counter deltas: integers from 0 to COUNTER_MAX; an absent counter is 0. */
export interface Counts {
  recordsFetched?: number;
  recordsCreated?: number;
  recordsUpdated?: number;
  recordsSkipped?: number;
  claimsCreated?: number;
  coverageCellsUpdated?: number;
}

export type Totals = Required<Counts>;

export interface ClientOptions {
  /** The API's base URL, e.g. `http://127.0.0.1:8080` (http or https, no credentials, no query or fragment; a path prefix is kept). */
  url: string | URL;
  /** A bearer token with the `append` scope (and `read` for get()). */
  token: string;
  /** Per attempt: the whole answer, body included, must arrive within this. 1 to
   * MAX_DELAY_MS (2147483647). Default 10000. */
  timeoutMs?: number;
  /** Retries after the first attempt (network errors, timeouts, 5xx, 429, 408; no other 4xx). Default 5. */
  retries?: number;
  /** First backoff; doubled per retry, jittered, capped by maxBackoffMs. 0 to MAX_DELAY_MS.
   * Default 250. */
  backoffMs?: number;
  /** 0 to MAX_DELAY_MS. Default 10000. A 503's Retry-After (at most 60 s) is honoured over it. */
  maxBackoffMs?: number;
  /** An answer larger than this is refused (LedgerProtocolError). Default 1 MiB. */
  maxResponseBytes?: number;
  /** A request body larger than this is not sent: an event over it alone throws
   * LedgerBodyTooLargeError naming it, a run's own reports go in several requests when only
   * together they are over it. Set it to the API's `[api] max_body_bytes` when that is lower.
   * Default 10 MiB (the API's default). */
  maxBodyBytes?: number;
  /** A fetch implementation (default: the global fetch of Node >= 18). */
  fetch?: typeof fetch;
}

export interface RunOptions {
  sourceId: number;
  /** 1 to 100 characters, no control characters, no whitespace at either end. */
  connectorName: string;
  connectorVersion?: string;
  /** Recorded in RunStarted's metadata. Default 'manual'. */
  trigger?: string;
  /** Merged into RunStarted's metadata after host, pid, connector_version, trigger, client. */
  metadata?: Record<string, unknown>;
  /** At most one RunProgressed per interval; the rest waits (flushed before the end). 0 to
   * MAX_DELAY_MS. Default 5000. */
  progressIntervalMs?: number;
  /** A heartbeat while the run is open; 0 turns it off; at most MAX_DELAY_MS. Default 60000. */
  heartbeatIntervalMs?: number;
  /** How many run.error() entries are kept in the details (all are counted). Default 100. */
  maxErrorDetails?: number;
  /** Failures of background sends (timer flushes, heartbeats). Default: a process warning. */
  onError?: (error: Error) => void;
}

export interface WithRunOptions extends RunOptions {
  /** How long a SIGTERM/SIGINT waits for the failure to be recorded. 0 to MAX_DELAY_MS.
   * Default 15000. */
  signalGraceMs?: number;
}

export interface FinishOptions extends Counts {
  /** Default: 'partial' when run.error() was called, else 'success'. Use fail() for failures. */
  status?: 'success' | 'partial';
  errorMessage?: string;
  errorDetails?: Record<string, unknown>;
}

export interface RunResult {
  runId: number;
  status: 'success' | 'partial' | 'failed' | undefined;
  totals: Totals;
  errorCount: number;
}

/** The answer of POST /v1/events (the summary of `ledger append`). */
export interface AppendSummary {
  appended: number;
  duplicates: number;
  first_position: number | null;
  last_position: number | null;
  allocated_run_ids: number[];
  run_refs: Record<string, number>;
}

/** A run of GET /v1/stuck (`ledger stuck --format json`), in its order: the longest silent
 * first. Times are UTC ISO-8601. */
export interface StuckRun {
  run_id: number;
  source_id: number;
  connector_name: string;
  started_at: string;
  last_event_at: string;
  version: number;
  /** silent too long (`stale`) or running too long (`max_runtime`) */
  rule: 'stale' | 'max_runtime';
}

/** stuck()'s options: the thresholds of GET /v1/stuck, its page size, and the moment. */
export interface StuckOptions {
  /** Stuck: silent longer than this (`'2h'`), for every run; default: the config's. */
  olderThan?: string;
  /** Also stuck: running longer than this (`'6h'`), for every run; default: the config's. */
  maxRuntime?: string;
  /** The runs stuck at this past moment (a Date, or ISO-8601 text; no zone is UTC), judged
   * then; a time ahead of the ledger's clock is now. Not with atPosition. A Date holds
   * milliseconds and the ledger's times microseconds: a `recorded_at` the API gave, passed as
   * its text, is that moment exactly; as a Date, the event recorded then may fall after it. */
  asOf?: Date | string;
  /** The runs stuck as the ledger stood at this position (0 or more; past the head is the
   * head), judged when it was recorded. Not with asOf. */
  atPosition?: number;
  /** Runs per request, 1 to 1000 (default: the API's 50). */
  pageSize?: number;
  signal?: AbortSignal;
}

interface EventBase {
  event_id?: string;
  run_id?: number;
  run_ref?: string;
  /** ISO-8601 with a zone, e.g. 2026-01-01T00:00:00.000Z */
  occurred_at?: string;
  actor?: string;
  schema_version?: number;
}

interface CounterFields {
  records_fetched?: number;
  records_created?: number;
  records_updated?: number;
  records_skipped?: number;
  claims_created?: number;
  coverage_cells_updated?: number;
}

/** The JSON POST /v1/events accepts (ledger/events.py). */
export type LedgerEvent =
  | (EventBase & {
      type: 'RunStarted';
      source_id: number;
      connector_name: string;
      metadata?: Record<string, unknown> | null;
    })
  | (EventBase & CounterFields & { type: 'RunProgressed' })
  | (EventBase &
      CounterFields & {
        type: 'RunFinished';
        status: 'success' | 'partial' | 'failed';
        error_message?: string | null;
        error_details?: Record<string, unknown> | null;
      })
  | (EventBase & {
      type: 'RunTimedOut';
      reason: string;
      threshold_seconds?: number | null;
      last_event_at?: string | null;
      detected_by: string;
    });

export declare class LedgerClient {
  constructor(options: ClientOptions);
  readonly url: string;
  readonly timeoutMs: number;
  readonly retries: number;
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
  readonly maxResponseBytes: number;
  readonly maxBodyBytes: number;
  /** Append events all or nothing, retried with the same body (an event without an event_id
   * gets one before the first attempt, so a retry is a duplicate; a LedgerError it rejects with
   * carries them as sent, `error.events`, for a resend of your own). `signal` stops it
   * (attempts and pauses), rejecting with the signal's reason; an append in flight may still
   * be stored: sending the same events again, with the same ids, tells (duplicates): give
   * each an event_id yourself to resend them after an abort. */
  append(
    events: LedgerEvent[],
    options?: { expectedVersion?: number; signal?: AbortSignal },
  ): Promise<AppendSummary>;
  /** GET a path of the API (e.g. `/v1/runs/3`) as JSON; `signal` stops it as for append(). */
  get<T = unknown>(path: string, options?: { signal?: AbortSignal }): Promise<T>;
  /** GET a paged list (`/v1/runs`, `/v1/runs/{id}/events`, `/v1/stuck`) a page at a time,
   * following `Link: <…>; rel="next"` (a link off this API is refused); each page as for
   * get(), whose answer is the first page alone. */
  pages<T = unknown>(path: string, options?: { signal?: AbortSignal }): AsyncGenerator<T[], void, undefined>;
  /** Every stuck run (GET /v1/stuck, each page followed), the longest silent first: now, or
   * at a past moment (`asOf` or `atPosition`). An option that cannot be right rejects with
   * LedgerValidationError naming it (asOf and atPosition together: `asOf`), nothing sent. */
  stuck(options?: StuckOptions): Promise<StuckRun[]>;
  /** Append RunStarted; throws RunNotStartedError when the ledger does not record it. */
  startRun(options: RunOptions): Promise<RunHandle>;
  /**
   * Start a run, call fn, record the outcome whatever happens: finish() when fn returns,
   * fail(error) when it throws or rejects (and rethrow), fail with "stopped by SIGTERM" /
   * "interrupted by Ctrl-C (SIGINT)" on those signals (then re-raise the signal; one while
   * RunStarted is on its way waits for it and ends the run that started, fn not called: when
   * another listener owns the shutdown, withRun rejects with a LedgerStateError), and fail
   * when fn never settles and Node's event loop empties (before the process exits). A terminal
   * event the ledger refuses on its own for what it holds is replaced by a short `failed` one
   * (see RunHandle.refusedOutcome); when fn returned, withRun then rejects with the refusal.
   * Whatever fn throws is recorded (a Symbol name, getters that throw, a revoked Proxy); should
   * fail() break before it builds its terminal event, a `failed` one saying "an error that
   * could not be described" (`reason: 'undescribed-error'`) ends the run, the break going to
   * onError.
   */
  withRun<T>(options: WithRunOptions, fn: (run: RunHandle) => T | Promise<T>): Promise<T>;
  toJSON(): { url: string; token: '***' };
}

export declare class RunHandle {
  private constructor();
  readonly client: LedgerClient;
  readonly runId: number;
  readonly sourceId: number;
  readonly connectorName: string;
  /** The `event_id` of the run's RunStarted (a UUID, fixed before its first attempt), as
   * `ledger events --run RUN_ID` shows it. */
  readonly startedEventId: string;
  /** `connector:NAME@HOST:PID`, at most the ledger's 200 characters: a host name too long for
   * them is cut (`…[N characters cut]`) inside it; `metadata.host` keeps it whole. */
  readonly actor: string;
  readonly metadata: Record<string, unknown>;
  /** Set once the terminal event is in the ledger. */
  readonly status: 'success' | 'partial' | 'failed' | undefined;
  /** Why the ledger refused the run's own terminal event, sent on its own, for what it held
   * (a 400, 413 or 422, or an event over maxBodyBytes): a short RunFinished `failed` ("the
   * ledger refused this run's … outcome: …", `reason: 'outcome-refused'`, `refused_status`)
   * ended the run in its place. A refusal of the counts and the terminal event together is
   * not the terminal event's: the counts go alone, then it, as it was. Undefined otherwise. */
  readonly refusedOutcome: LedgerApiError | LedgerBodyTooLargeError | undefined;
  /** The 401 that refused the client's token in its latest answer (a token rotated away,
   * revoked); undefined once an answer succeeds. For a minute after it nothing is sent in the
   * background, for any run of the client (each refused token counts against the host's
   * address, and past the API's `[api] max_auth_failures`, 10 a minute, every request from
   * it is answered 429, other connectors' valid tokens too): progress() keeps counting,
   * heartbeat() rejects with it; then the next one tries the token again. The refused
   * events are kept (same ids); finish() and fail() send at once. */
  readonly tokenRefused: LedgerApiError | undefined;
  readonly totals: Totals;
  readonly errorCount: number;
  progressIntervalMs: number;
  heartbeatIntervalMs: number;
  /** RunOptions.maxErrorDetails: how many run.error() entries the details keep. */
  readonly maxErrorDetails: number;
  /** RunOptions.onError, else a process warning: where failures of background sends go. */
  readonly onError: (error: Error) => void;
  /** True from start until finish()/fail() begins. */
  readonly isOpen: boolean;
  /**
   * Add counter deltas (coalesced: at most one send per progressIntervalMs, one waiting
   * behind a send in flight, which calls meanwhile join). Throws LedgerValidationError
   * synchronously (naming the field) for a count that is not an integer from 0 to
   * COUNTER_MAX, LedgerStateError once the run is finishing or finished. Resolves when what
   * it sent (if anything) is recorded.
   */
  progress(counts: Counts): Promise<void>;
  /** The pending deltas, or an all-zero RunProgressed. Rejects with tokenRefused, sending
   * nothing, once the ledger refused the token. */
  heartbeat(): Promise<void>;
  /** A non-fatal error: the run finishes `partial` unless finish() says otherwise. The message
   * is cut to MAX_MESSAGE_CHARS, the details (as JSON) to MAX_DETAILS_CHARS; every string of
   * them, keys included, is made well formed (a lone surrogate becomes U+FFFD). A message that
   * is not text (a caught error) is converted, or described as fail() would; never thrown. */
  error(message: string, details?: unknown): void;
  /** The pending deltas and RunFinished in one request. Called again after a failed
   * attempt, it resends the same events. Refused together for what they hold, they go apart
   * (the counts, then RunFinished as it was); RunFinished refused on its own is replaced (see
   * refusedOutcome) and rejects with the refusal once the run has ended `failed`. */
  finish(options?: FinishOptions): Promise<RunResult>;
  /** RunFinished `failed`: `Name: message`, with the stack as the traceback (name and message
   * cut to MAX_MESSAGE_CHARS, the stack's end kept to MAX_TRACEBACK_CHARS, each well formed
   * after its cut). Any value: a property that cannot be read is left out (a Symbol name is
   * `Symbol(…)`; a value none of whose text can be read says "an error that could not be
   * described"). The heartbeat stops first. Refused, it is replaced as finish() is. */
  fail(error: unknown): Promise<RunResult>;
  result(): RunResult;
}

export declare class LedgerError extends Error {
  /** On an error of append() after its request was sent (no answer after the retries, a
   * refusal, an answer not the API's): the events as they were sent, each with its event_id,
   * those the client gave included. `append(error.events)` again is a duplicate of whatever
   * the ledger stored, never the same facts under new ids (the objects given to append() are
   * left as they were, without the ids). Not enumerable. */
  readonly events?: LedgerEvent[];
}

/** Refused before anything was sent. */
export declare class LedgerValidationError extends LedgerError {
  /** The option that is wrong (`sourceId`, `metadata`, a counter's name), or `events[N]` for
   * an event of append() that JSON cannot carry (a BigInt, a circular reference). */
  readonly field: string;
}

/** A run handle used when it cannot be (finished, finishing, or not started). */
export declare class LedgerStateError extends LedgerError {}

/** The ledger answered with an error: the fields of its application/problem+json body. */
export declare class LedgerApiError extends LedgerError {
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  readonly type: string | undefined;
  /** Each problem of invalid input: message, field, line (JSON Lines) or item (array), and
   * index (the event's 0-based place in the batch, when the problem is about one event). */
  readonly errors: Array<{
    message?: string;
    field?: string;
    line?: number;
    item?: number;
    index?: number;
  }>;
  /** The first problem's field, line and item. */
  readonly field: string | undefined;
  readonly line: number | undefined;
  readonly item: number | undefined;
  readonly runId?: number;
  readonly rule?: string;
  readonly expectedVersion?: number;
  readonly actualVersion?: number;
  readonly retryAfterMs: number | undefined;
  readonly attempts: number;
  /** True for a 5xx (but a 500 stored-event-unreadable), 429, 408 or a 409 write-conflict
   * (the request may succeed later). */
  readonly retriable: boolean;
}

/** No usable answer on any attempt (connection refused or reset, DNS, timeouts). */
export declare class LedgerNetworkError extends LedgerError {
  readonly attempts: number;
}

/** An answer that is not the ledger API's (not JSON, the wrong shape, too large). */
export declare class LedgerProtocolError extends LedgerError {
  readonly status: number | undefined;
  readonly attempts: number | undefined;
}

/** A body over maxBodyBytes (nothing sent, `status` undefined) or over the API's
 * `[api] max_body_bytes` (a 413 for one event, `status` 413): `index` (0-based, in the batch)
 * and `eventId` name the event too large for any request, undefined when only the events
 * together are; `bytes` its size as a request of its own (or the batch's); `limit` the limit
 * (undefined when a 413 did not say it). Never retried. */
export declare class LedgerBodyTooLargeError extends LedgerError {
  readonly index: number | undefined;
  readonly eventId: string | undefined;
  readonly bytes: number;
  readonly limit: number | undefined;
  readonly status: 413 | undefined;
  readonly retriable: false;
}

/** The API's default `[api] max_body_bytes`, maxBodyBytes' default. */
export declare const DEFAULT_MAX_BODY_BYTES: number;

/** RunStarted was not recorded: the run did not start. `cause` says why. */
export declare class RunNotStartedError extends LedgerError {}
