// What a problem's `errors` carry at run time (service/api/problems.py `_located`): message,
// field, line or item, and index. A field the API sends must be one the declarations name.
import { LedgerApiError, LedgerBodyTooLargeError, type RunHandle } from '@run-ledger/client';

export function where(error: LedgerApiError): string {
  const first = error.errors[0];
  if (first === undefined) return error.detail;
  const place = first.line ?? first.item ?? (first.index === undefined ? 0 : first.index + 1);
  return `${first.field ?? '-'} at ${place}: ${first.message ?? error.detail}`;
}

// A run whose own terminal event was refused (RunHandle.refusedOutcome): either kind of refusal.
export function whyRefused(run: RunHandle): string | undefined {
  const refusal = run.refusedOutcome;
  if (refusal === undefined) return undefined;
  return refusal instanceof LedgerBodyTooLargeError ? `${refusal.bytes} bytes` : where(refusal);
}
