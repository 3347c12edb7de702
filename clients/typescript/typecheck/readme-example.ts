// The README's "From TypeScript" example, compiled by `npm run typecheck` (strict) against the
// package's own index.d.ts, as a connector written in TypeScript would import it: the types
// must describe what index.mjs does (the node tests prove the behaviour). What the example
// leaves to the reader is declared here; below the marker is the README's block as printed
// (tests/clients/test_typescript_readme_example.py checks that they are the same).

interface Page extends Array<unknown> {
  problems: { message: string; code: string }[];
}
declare function fetchPages(): AsyncIterable<Page>;
declare function store(page: Page): number;

// ---- README.md, "From TypeScript", as printed ----
import { LedgerClient, LedgerApiError } from '@run-ledger/client';

const client = new LedgerClient({
  url: process.env.LEDGER_API_URL ?? 'http://127.0.0.1:8080',
  token: process.env.LEDGER_API_TOKEN ?? '',  // a token with the append scope ('' is refused)
  timeoutMs: 10_000,                          // per attempt, the whole answer included
  retries: 5,
});

await client.withRun({ sourceId: 42, connectorName: 'stations', trigger: 'scheduled' }, async (run) => {
  for await (const page of fetchPages()) {        // your source
    run.progress({ recordsFetched: page.length, recordsCreated: store(page) });
    for (const problem of page.problems) run.error(problem.message, { code: problem.code });
  }
});                                               // success, or partial after run.error()
