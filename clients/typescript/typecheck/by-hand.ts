// The README's "Without `withRun`" calls (startRun, progress, heartbeat, finish, fail and the
// error classes), compiled by `npm run typecheck` (strict) against the package's index.d.ts.
import {
  LedgerApiError,
  LedgerClient,
  LedgerNetworkError,
  LedgerValidationError,
} from '@run-ledger/client';

const client = new LedgerClient({ url: 'http://127.0.0.1:8080', token: 'token-0123456789abcdef' });

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

// append()'s own resend after it gave up: the events as sent, their ids included.
export async function appendOnce(): Promise<number> {
  const events = [{ type: 'RunStarted' as const, source_id: 1, connector_name: 'by-hand' }];
  try {
    return (await client.append(events)).appended;
  } catch (error) {
    if (error instanceof LedgerNetworkError && error.events) {
      return (await client.append(error.events)).appended; // duplicates if the first got in
    }
    throw error;
  }
}
