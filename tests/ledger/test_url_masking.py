"""Secret query parameters masked in URLs and free text (``ledger.urls.mask_secrets``): every
name that says its value is a credential, whatever its case or its "-" and "." (api-key,
x-api-key, X-Amz-Signature, access_key, sig, auth were printed and stored as they were); names
that do not; masking twice changes nothing, and a masked value is never left in the text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.urls import mask_secrets

MASKED = [
    "password",
    "passwd",
    "pwd",
    "pass",
    "ssl_key_password",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "access-token",
    "X-Amz-Security-Token",
    "api_key",
    "apikey",
    "api-key",
    "x-api-key",
    "X-API-KEY",
    "api.key",
    "access_key",
    "private_key",
    "key",
    "sig",
    "signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "credentials",
    "auth",
    "oauth",
    "authorization",
    "jwt",
    "session",
    "session_id",
    "jsessionid",
    "PHPSESSID",
    "monkey",  # ends like a secret: masking a harmless value is the safe mistake
]
KEPT = ["page", "id", "cursor", "keys", "author", "limit", "ssl_key", "sslkey", "ssl-key"]


@pytest.mark.parametrize("name", MASKED)
def test_a_credential_parameter_is_masked(name: str) -> None:
    text = f"GET https://api.example.com/x?page=2&{name}=s3cr3t-VALUE&limit=5 failed"
    assert mask_secrets(text) == f"GET https://api.example.com/x?page=2&{name}=***&limit=5 failed"


@pytest.mark.parametrize("name", KEPT)
def test_a_parameter_that_names_no_credential_is_kept(name: str) -> None:
    text = f"https://api.example.com/x?{name}=visible-7&a=1"
    assert mask_secrets(text) == text


def test_a_bare_key_outside_a_query_is_a_records_key_not_a_secret() -> None:
    assert mask_secrets("record key=station_7; next") == "record key=station_7; next"
    assert mask_secrets("GET /x?key=abc;def") == "GET /x?key=***;def"


def test_the_punctuation_after_a_masked_value_is_the_texts() -> None:
    """A message quoting a masked URL, masked again, lost the ":" after it."""
    once = mask_secrets("https://h/x?api_key=abc: refused (see https://h/y?token=d).")
    assert once == "https://h/x?api_key=***: refused (see https://h/y?token=***)."
    assert mask_secrets(once) == once


# What a query value can hold: any character but the separators that end it, and a last one
# that is not punctuation (masking leaves a final ":" or ")" to the text around the URL).
_VALUE = st.builds(
    str.__add__,
    st.text(
        alphabet=st.characters(
            codec="utf-8", exclude_categories=("Z", "Cc", "Cs"), exclude_characters="&'\";"
        ),
        max_size=30,
    ),
    st.characters(categories=("L", "N")),
)
_NAME = st.sampled_from(MASKED)


@settings(max_examples=300, deadline=None)
@given(name=_NAME, value=_VALUE, before=st.text(max_size=20), after=st.text(max_size=20))
def test_a_masked_value_is_never_left_in_the_text(
    name: str, value: str, before: str, after: str
) -> None:
    masked = mask_secrets(f"{before} https://h.example/p?a=1&{name}={value}&b=2 {after}")
    assert f" https://h.example/p?a=1&{name}=***&b=2 " in masked


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=12),
            _NAME.map(lambda name: f"?{name}="),
            st.sampled_from(["://", "u:", "@", "&", " ", "=", "***", ":", "mysql://a:"]),
        ),
        max_size=12,
    ).map("".join)
)
def test_masking_twice_is_masking_once(text: str) -> None:
    once = mask_secrets(text)
    assert mask_secrets(once) == once
