-- A small legacy ingestion_runs table, as the mutable-row system left it, for
-- `ledger import-legacy` (README). Portable SQL: loads into SQLite and MySQL/MariaDB.
-- Run 1004 was "fixed" by a hand-run UPDATE (failed, no duration); run 1006 is still
-- `running`, abandoned by a killed process: the import leaves it open for the sweeper.
CREATE TABLE ingestion_runs (
  id                   INTEGER      NOT NULL PRIMARY KEY,
  sourceId             INTEGER      NOT NULL,
  connectorName        VARCHAR(100) NOT NULL,
  startedAt            DATETIME     NOT NULL,
  completedAt          DATETIME     NULL,
  duration             INTEGER      NULL,
  status               VARCHAR(7)   NOT NULL,
  recordsFetched       INTEGER      NOT NULL DEFAULT 0,
  recordsCreated       INTEGER      NOT NULL DEFAULT 0,
  recordsUpdated       INTEGER      NOT NULL DEFAULT 0,
  recordsSkipped       INTEGER      NOT NULL DEFAULT 0,
  claimsCreated        INTEGER      NOT NULL DEFAULT 0,
  errorMessage         TEXT         NULL,
  errorDetails         TEXT         NULL,
  coverageCellsUpdated INTEGER      NOT NULL DEFAULT 0,
  createdAt            DATETIME     NOT NULL
);

INSERT INTO ingestion_runs VALUES
  (1001, 1, 'SOURCE_1', '2025-11-03 01:00:00', '2025-11-03 01:04:10', 250, 'success', 120, 100, 15, 5, 40, NULL, NULL, 12, '2025-11-03 01:00:00'),
  (1002, 2, 'SOURCE_2', '2025-11-03 02:00:00', '2025-11-03 02:01:30', 90, 'partial', 50, 45, 0, 0, 0, '5 error(s); first: row 7: missing id', '{"error_count": 5}', 0, '2025-11-03 02:00:00'),
  (1003, 1, 'SOURCE_1', '2025-11-04 01:00:00', '2025-11-04 01:00:03', 3, 'failed', 0, 0, 0, 0, 0, 'ConnectionRefusedError: api.example.invalid:443', '{"exception": "ConnectionRefusedError"}', 0, '2025-11-04 01:00:00'),
  (1004, 2, 'SOURCE_2', '2025-11-04 02:00:00', '2025-11-09 10:15:00', NULL, 'failed', 30, 30, 0, 0, 0, 'Marked failed during audit cleanup', NULL, 0, '2025-11-04 02:00:00'),
  (1005, 1, 'SOURCE_1', '2025-11-05 01:00:00', '2025-11-05 01:03:55', 235, 'success', 118, 2, 110, 6, 38, NULL, NULL, 11, '2025-11-05 01:00:00'),
  (1006, 3, 'SOURCE_3', '2025-11-05 03:00:00', NULL, NULL, 'running', 10, 10, 0, 0, 0, NULL, NULL, 0, '2025-11-05 03:00:00');
