"""Secrets never shown: a database password (in the URL, in its query string, with an unencoded
@) is masked in every error of the ``ledger`` command, secret query parameters in free text,
and a rejected config value is not kept in the chained error; a record key is not taken for a
secret."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from ledger import ConfigurationError
from ledger.urls import mask_secrets, mask_url
from service import load_config
from tests.service.support import SAMPLE, run


def test_database_failures_never_show_the_password(tmp_path: Path) -> None:
    url = "mysql+pymysql://app:hunter2-secret@127.0.0.1:1/ledger"
    for args in (["migrate"], ["events"], ["verify"], ["append", str(SAMPLE)]):
        result = run(*args, "--db", url)
        assert result.exit_code == 3, result.output  # the environment: unreachable
        assert "hunter2-secret" not in result.output
        assert "app:***@127.0.0.1" in result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql//root:pw-in-a-typo@127.0.0.1/db",
        "mysql+pymysql://root:pw-in-a-port@127.0.0.1:abc/db",
        "mysql+pymysql://root:pw-in-a-query@127.0.0.1:1/db?bogus=1",
    ],
)
def test_malformed_urls_are_usage_errors_without_the_password(url: str) -> None:
    result = run("events", "--db", url)
    assert result.exit_code == 2, result.output
    assert "pw-in-a" not in result.output
    assert "Traceback" not in result.output


def test_a_password_with_an_unencoded_at_sign_is_masked_whole() -> None:
    result = run("events", "--db", "mysql+pymysql://app:p@ss-w0rd@127.0.0.1:1/db")
    assert result.exit_code == 2
    assert "percent-encoded" in result.stderr
    assert "ss-w0rd" not in result.output


def test_a_password_in_the_query_string_is_masked() -> None:
    result = run("events", "--db", "mysql+pymysql://root@127.0.0.1:1/x?password=qs-secret-1")
    assert result.exit_code == 3  # unreachable
    assert "qs-secret-1" not in result.output
    assert "password=***" in result.output


@pytest.mark.parametrize("name", ["key", "access_token", "client_secret", "API_KEY"])
def test_secret_query_parameters_are_masked_in_free_text(name: str) -> None:
    text = f"GET https://api.example.com/x?page=2&{name}=s3cr3t-value&ssl_key=/etc/k.pem failed"
    masked = mask_secrets(text)
    assert "s3cr3t-value" not in masked
    assert f"{name}=***" in masked
    assert "ssl_key=/etc/k.pem" in masked  # a file path, not a secret


def test_a_rejected_config_value_is_not_kept_in_the_chained_error(tmp_path: Path) -> None:
    """A logged traceback of a config error must not carry the URL or API key it rejected."""
    config = tmp_path / "ledger.toml"
    config.write_text(
        'database_url = "postgresql://app:hunter2-pw@db/x"\n'
        "[[connectors]]\n"
        'name = "api"\ntype = "http-json"\nsource_id = 1\n'
        'schedule = { interval = "1m" }\n'
        'options = { url = "https://api.example.com/?api_key=TOPSECRETKEY", bogus = 1 }\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as caught:
        load_config(config)
    chain = "".join(traceback.format_exception(caught.value))
    assert "database_url" in chain
    assert "hunter2-pw" not in chain
    assert "TOPSECRETKEY" not in chain


def test_a_record_key_in_free_text_is_not_taken_for_a_secret() -> None:
    assert mask_secrets("record key=station_7; next") == "record key=station_7; next"
    assert mask_secrets("GET /x?key=abc;def") == "GET /x?key=***;def"


def test_a_secret_parameter_is_masked_whatever_its_prefix() -> None:
    """``ssl_key_password`` (a PyMySQL option) was printed: the names are matched by ending."""
    url = "mysql+pymysql://u:pw@h/db?ssl_key_password=k3y-secret&charset=utf8mb4"
    shown = mask_url(url)
    assert "k3y-secret" not in shown
    assert "ssl_key_password=***" in shown
    assert "charset=utf8mb4" in shown
    assert "client_secret=***" in mask_secrets("https://a/b?client_secret=s3&page=2")
