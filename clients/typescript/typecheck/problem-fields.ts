// What a problem's `errors` carry at run time (service/api/problems.py `_located`): message,
// field, line or item, and index. A field the API sends must be one the declarations name.
import { LedgerApiError } from '@run-ledger/client';

export function where(error: LedgerApiError): string {
  const first = error.errors[0];
  if (first === undefined) return error.detail;
  const place = first.line ?? first.item ?? (first.index === undefined ? 0 : first.index + 1);
  return `${first.field ?? '-'} at ${place}: ${first.message ?? error.detail}`;
}
