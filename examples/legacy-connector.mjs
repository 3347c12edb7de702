// A connector reporting its run the way the old server/services/connectorSDK.ts did (INSERT a
// `running` row into ingestion_runs, add to its counters page by page, UPDATE it to
// success/partial/failed at the end), now through run-ledger's HTTP API with the client.
//
//   LEDGER_API_URL=http://127.0.0.1:8080 LEDGER_API_TOKEN=… node examples/legacy-connector.mjs
//
// In your own project: `npm install /path/to/run-ledger/clients/typescript` and import from
// '@run-ledger/client'; this example imports the file so it runs from a clone as it is.

import {
  LedgerApiError,
  LedgerClient,
  LedgerNetworkError,
  LedgerValidationError,
  RunNotStartedError,
} from '../clients/typescript/index.mjs';

const url = process.env.LEDGER_API_URL;
const token = process.env.LEDGER_API_TOKEN;
if (!url || !token) {
  console.error('Error: set LEDGER_API_URL and LEDGER_API_TOKEN (a token with the append scope)');
  process.exit(2);
}

// The source: three pages of weather stations, as the old connectors fetched them.
const PAGES = [
  [
    { id: 'ST-001', name: 'Harbour', known: false },
    { id: 'ST-002', name: 'Airport', known: true, changed: true },
    { id: 'ST-003', name: 'Hill', known: true, changed: false },
  ],
  [
    { id: 'ST-004', name: 'Dam', known: false },
    { id: 'ST-005', name: '', known: false }, // no name: skipped
    { id: 'ST-006', name: 'Pier', known: false },
  ],
  [{ id: 'ST-007', name: 'Lighthouse', known: true, changed: true }],
];

async function* fetchPages() {
  for (const page of PAGES) yield page;
}

// One `Error:` line and the `ledger` command's exit codes, never a stack trace: 2 the caller's
// mistake (a URL that is not one, a token the API refuses), 3 the environment (no API
// answering at the URL, or one failing), 1 anything else.
function fail(error) {
  const cause = error instanceof RunNotStartedError && error.cause ? error.cause : error;
  let code = 1;
  let hint = '';
  if (cause instanceof LedgerValidationError) {
    code = 2;
    hint = ' (check LEDGER_API_URL and LEDGER_API_TOKEN)';
  } else if (cause instanceof LedgerNetworkError) {
    code = 3;
    hint = ` (is \`ledger api\` running at LEDGER_API_URL=${url}?)`;
  } else if (cause instanceof LedgerApiError) {
    code = cause.status >= 500 || cause.status === 429 || cause.status === 408 ? 3 : 2;
    if (cause.status === 401) hint = ' (LEDGER_API_TOKEN is not a token of that API)';
    if (cause.status === 403) hint = ' (LEDGER_API_TOKEN needs the append scope)';
  }
  const message = String(error?.message ?? error).replace(/[\r\n]+/g, ' ');
  console.error(`Error: ${message}${hint}`);
  process.exit(code);
}

let client;
try {
  client = new LedgerClient({ url, token });
} catch (error) {
  fail(error);
}

// connectorSDK.ts: startRun(sourceId, connectorName) → ingestion_runs row `running`.
const result = await client.withRun(
  {
    sourceId: 42,
    connectorName: 'legacy-weather-stations',
    connectorVersion: '2.3.1',
    trigger: 'scheduled',
    metadata: { migrated_from: 'server/services/connectorSDK.ts' },
    progressIntervalMs: 1_000,
  },
  async (run) => {
    for await (const page of fetchPages()) {
      const counts = { recordsFetched: page.length, recordsCreated: 0, recordsUpdated: 0, recordsSkipped: 0 };
      for (const station of page) {
        if (!station.name) counts.recordsSkipped += 1;
        else if (!station.known) counts.recordsCreated += 1;
        else if (station.changed) counts.recordsUpdated += 1;
        else counts.recordsSkipped += 1;
      }
      // connectorSDK.ts: updateProgress(runId, counts) → counters += page counts (coalesced).
      run.progress({ ...counts, claimsCreated: counts.recordsCreated, coverageCellsUpdated: 1 });
    }
    // connectorSDK.ts: completeRun(runId, 'success'): the pending counts go out first.
    return run.finish();
  },
).catch(fail);

console.log(JSON.stringify(result));
