// The README's reading of the stuck runs (one page with get(), every page with pages() or
// stuck(), now or as of a past moment),
// compiled by `npm run typecheck` (strict) against the package's index.d.ts.
import { LedgerClient, type StuckRun } from '@run-ledger/client';

const client = new LedgerClient({ url: 'http://127.0.0.1:8080', token: 'token-0123456789abcdef' });

export async function stuckRuns(): Promise<string[]> {
  const first = await client.get<StuckRun[]>('/v1/stuck?limit=100');
  const lines = first.map((run) => `${run.run_id} ${run.connector_name} ${run.rule}`);
  for await (const page of client.pages<StuckRun>('/v1/stuck?older_than=2h')) {
    for (const run of page) {
      if (run.rule === 'max_runtime') lines.push(`${run.run_id} since ${run.started_at}`);
    }
  }
  const then = await client.stuck({ asOf: new Date(Date.now() - 3_600_000), olderThan: '2h' });
  const atHead = await client.stuck({ atPosition: 1_000, pageSize: 1000 });
  for (const run of [...then, ...atHead]) lines.push(`${run.run_id} stuck then (${run.rule})`);
  return lines;
}
