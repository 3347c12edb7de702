// The README's "From TypeScript" example, compiled by `npm run typecheck` (strict) against the
// package's own index.d.ts, as a connector written in TypeScript would import it: the types
// must describe what index.mjs does (the node tests prove the behaviour).
import {
  LedgerApiError,
  LedgerClient,
  LedgerNetworkError,
  LedgerValidationError,
} from '@run-ledger/client';

interface Page extends Array<unknown> {
  problems: { message: string; code: string }[];
}
declare function fetchPages(): AsyncIterable<Page>;
declare function store(page: Page): number;

const client = new LedgerClient({
  url: process.env.LEDGER_API_URL ?? 'http://127.0.0.1:8080',
  token: process.env.LEDGER_API_TOKEN ?? '',
  timeoutMs: 10_000,
  retries: 5,
});

export async function scheduled(): Promise<void> {
  await client.withRun({ sourceId: 42, connectorName: 'stations', trigger: 'scheduled' }, async (run) => {
    for await (const page of fetchPages()) {
      run.progress({ recordsFetched: page.length, recordsCreated: store(page) });
      for (const problem of page.problems) run.error(problem.message, { code: problem.code });
    }
  });
}

export async function byHand(): Promise<number | undefined> {
  const run = await client.startRun({ sourceId: 1, connectorName: 'by-hand', metadata: { page_size: 100 } });
  run.progress({ recordsFetched: 10, recordsCreated: 7 });
  await run.heartbeat();
  try {
    await run.finish({ status: 'partial' });
  } catch (error) {
    if (error instanceof LedgerApiError) console.error(error.status, error.title, error.detail);
    else if (error instanceof LedgerValidationError || error instanceof LedgerNetworkError) {
      console.error(error.message);
    }
    await run.fail(error);
  }
  return run.runId;
}
