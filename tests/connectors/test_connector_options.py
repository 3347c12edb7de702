"""Every option of every shipped connector type is checked when the connector is built, which
is when `ledger config check` and serve's start build it: a value of the wrong type is refused
naming the connector, the option, what was given and what it expects. (`first_page = "x"` was
"valid", then every scheduled run failed on `can only concatenate str (not "int") to str`;
`key = 5` ended every run partial with every record "missing key"; `single_page = "false"`
was refused as `unsupported operand type(s) for +: 'int' and 'str'`, naming no option.)"""

from __future__ import annotations

from typing import Any

import pytest

from connectors.registry import CONNECTOR_TYPES, build_connector, option_names
from ledger import ConfigurationError

URL = "http://127.0.0.1:19411/x"
REQUIRED: dict[str, dict[str, Any]] = {"http-json": {"url": URL}, "csv": {"path": "s.csv"}}

# (type, option, a value it refuses, what the message says it expects)
WRONG: list[tuple[str, str, Any, str]] = [
    ("http-json", "url", 123, "non-empty text"),
    ("http-json", "key", 5, "non-empty text"),
    ("http-json", "key", "", "non-empty text"),
    ("http-json", "records_path", 3, "text"),
    ("http-json", "page_param", 7, "non-empty text"),
    ("http-json", "page_param", "", "non-empty text"),
    ("http-json", "next_path", ["a"], "non-empty text"),
    ("http-json", "first_page", "x", "a whole number >= 0"),
    ("http-json", "first_page", 1.5, "a whole number >= 0"),
    ("http-json", "first_page", True, "a whole number >= 0"),
    ("http-json", "first_page", -1, "a whole number >= 0"),
    ("http-json", "timeout", "10", "a finite number of seconds"),
    ("http-json", "retries", "3", "a whole number >= 0"),
    ("http-json", "backoff", [0.5], "a finite number of seconds"),
    ("http-json", "max_pages", "100", "a whole number >= 1"),
    ("http-json", "single_page", "false", "true or false"),
    ("http-json", "single_page", 1, "true or false"),
    ("http-json", "max_page_bytes", 1.5, "a whole number >= 1"),
    ("http-json", "page_deadline", "300", "a finite number of seconds"),
    ("csv", "path", 5, "a file path (text)"),
    ("csv", "path", "", "a file path (text)"),
    ("csv", "key", ["id"], "non-empty text"),
    ("csv", "key", 1, "non-empty text"),
    ("csv", "batch_size", "500", "a whole number >= 1"),
]


def test_every_option_of_every_type_has_a_wrong_value_tried() -> None:
    """A new option must come with its check (and a line above)."""
    tried = {(kind, option) for kind, option, _value, _expected in WRONG}
    every = {
        (kind, option) for kind, cls in CONNECTOR_TYPES.items() for option in option_names(cls)
    }
    assert every - tried == set()


@pytest.mark.parametrize(("kind", "option", "value", "expected"), WRONG)
def test_a_wrongly_typed_option_is_refused_naming_it(
    kind: str, option: str, value: Any, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        build_connector(kind, 1, "feed", {**REQUIRED[kind], option: value})
    said = str(refused.value)
    assert said.startswith(f"connector 'feed' ({kind}): {option}: expected {expected}")
    assert said.endswith(f", got {value!r}")


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("http-json", {"url": URL, "page_param": "page", "first_page": 0}),
        ("http-json", {"url": URL, "next_path": "links.next", "records_path": ""}),
        ("http-json", {"url": URL, "single_page": True, "timeout": 1, "backoff": 0}),
        ("http-json", {"url": URL, "single_page": False, "key": "uuid", "max_pages": 3}),
        ("csv", {"path": "s.csv", "key": "code", "batch_size": 10}),
    ],
)
def test_options_of_the_right_type_build(kind: str, options: dict[str, Any]) -> None:
    assert build_connector(kind, 1, "feed", options).name == "feed"
