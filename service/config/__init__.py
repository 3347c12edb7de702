"""The ``ledger serve`` configuration: a TOML file validated with pydantic, errors naming the key.

database_url = "sqlite:///ledger.db"  # the default: beside this file; $LEDGER_DATABASE_URL wins

[thresholds]            # when an open run is stuck (defaults: stale_after 60m, no max)
stale_after = "60m"
max_runtime = "6h"

[sweeper]
interval = "15m"

[serve]
metrics_port = 9464
metrics_host = "127.0.0.1"   # 0.0.0.0 (or ::) lets Prometheus on another host scrape

[api]                   # optional: the HTTP API (off unless listen is given)
listen = "127.0.0.1:8080"
max_body_bytes = 10485760
[[api.tokens]]
name = "connectors"     # recorded as operator:NAME when it fails a run
scopes = ["append", "read"]   # append | read | operate
sha256 = "…64 hex digits…"  # or env = "LEDGER_API_TOKEN" (the variable holding the token)

[web]                   # optional: the web view, at /web/ on the API's listener
enabled = true
public_read = false     # true: pages readable without a login (an internal network only)
allowed_hosts = ["ledger.internal"]  # names read without a login under (IPs, localhost: always)
secret_env = "LEDGER_WEB_SECRET"  # signs session cookies; else a random key per process

[anchor]                # optional: the ledger head, appended to a file kept off the database
path = "anchors.txt"
interval = "1h"

[[connectors]]
name = "stations"       # ingestion_runs.connectorName
type = "csv"            # csv | http-json
source_id = 1
schedule = { interval = "15m" }          # or { cron = "*/5 * * * *" }
options = { path = "stations.csv", key = "id" }
thresholds = { stale_after = "30m" }
"""

from service.config.connectors import (
    ConnectorConfig,
    ConnectorThresholds,
    ScheduleConfig,
    ThresholdsConfig,
)
from service.config.crontab import crontab_trigger, parse_crontab
from service.config.fields import Duration, DurationOrZero, Strict, split_listen
from service.config.http import DEFAULT_MAX_BODY_BYTES, ApiConfig, ApiScope, ApiToken, WebConfig
from service.config.loading import (
    anchor_problem,
    anchor_stream_problem,
    checked_config,
    load_config,
    missing_inputs,
    refuse_unwritable_anchor,
)
from service.config.model import LedgerConfig, metrics_port_problem
from service.config.serving import (
    AnchorConfig,
    ProjectorConfig,
    ServeConfig,
    SpoolConfig,
    SweeperConfig,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "AnchorConfig",
    "ApiConfig",
    "ApiScope",
    "ApiToken",
    "ConnectorConfig",
    "ConnectorThresholds",
    "Duration",
    "DurationOrZero",
    "LedgerConfig",
    "ProjectorConfig",
    "ScheduleConfig",
    "ServeConfig",
    "SpoolConfig",
    "Strict",
    "SweeperConfig",
    "ThresholdsConfig",
    "WebConfig",
    "anchor_problem",
    "anchor_stream_problem",
    "checked_config",
    "crontab_trigger",
    "load_config",
    "metrics_port_problem",
    "missing_inputs",
    "parse_crontab",
    "refuse_unwritable_anchor",
    "split_listen",
]
