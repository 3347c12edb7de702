"""Who may call: the bearer token checked against ``[api] tokens`` and its scopes, and the
query string's own rules (no token in it, no parameter given twice)."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledger import ConfigurationError, ValidationError
from ledger.durations import parse_duration
from ledger.text import visible
from projections.as_of import QUERY_NAMES, parse_as_of
from service.api.auth import TOKEN_PARAMETERS, Caller, bearer_token
from service.api.limits import note_auth_failure
from service.api.params import repeated_parameters
from service.api.problems import ApiProblem
from service.api.state import ApiState
from service.config import ApiScope

bearer = HTTPBearer(auto_error=False, description="A token from the [api] tokens of the config")


def require(state: ApiState, scope: ApiScope) -> Callable[..., Caller]:
    def authorized(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Caller:
        if TOKEN_PARAMETERS & {key.lower() for key in request.query_params}:
            raise ApiProblem(
                400,
                "token-in-url",
                "Token in the URL",
                "a token is accepted only in the Authorization header (URLs are logged)",
            )
        repeated = repeated_parameters(request.query_params)
        if repeated:
            raise ApiProblem(
                400,
                "repeated-parameter",
                "Repeated query parameter",
                f"each query parameter may be given once: {visible(', '.join(repeated))}",
            )
        if len(request.headers.getlist("authorization")) > 1:
            # Which one the caller meant cannot be known: the first would decide, whoever
            # (a proxy, a client library) put it in front of the caller's own.
            raise ApiProblem(
                400,
                "repeated-header",
                "Repeated header",
                "the Authorization header may be given once",
            )
        token = bearer_token(request.headers.get("authorization"))
        caller = None if token is None else state.tokens.caller(token)
        if token is not None:  # compared in constant time; the answer depends on the limit
            attempt = state.auth_failures.attempt_of(request.scope, right=caller is not None)
            if attempt.wait is not None:  # whatever the token: a guess tells nothing meanwhile
                raise ApiProblem(
                    429,
                    "too-many-failures",
                    "Too many failed tokens",
                    f"too many refused tokens from this address ([api] max_auth_failures "
                    f"in auth_failure_window): retry in {attempt.wait} s",
                    headers={"Retry-After": str(attempt.wait)},
                )
            if caller is None:
                note_auth_failure(state.auth_failures, attempt, "API tokens", state.config)
        if caller is None:
            raise ApiProblem(
                401,
                "unauthorized",
                "Unauthorized",
                "a valid bearer token is required (Authorization: Bearer TOKEN)"
                if token is None
                else "the bearer token is not valid",
                headers={"WWW-Authenticate": 'Bearer realm="run-ledger"'},
            )
        request.scope.setdefault("ledger_caller", caller.name)
        if scope not in caller.scopes:
            raise ApiProblem(
                403,
                "forbidden",
                "Forbidden",
                f"token {caller.name!r} lacks the {scope!r} scope",
            )
        # After the token: what an endpoint takes is told to its callers only.
        unknown = [key for key in request.query_params if key not in _taken_by(request)]
        if unknown:
            raise _unknown_parameter(unknown[0], _taken_by(request))
        return caller

    return authorized


def _taken_by(request: Request) -> frozenset[str]:
    """The query parameters the request's endpoint takes (none when it is not an API route)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return frozenset()
    known = _QUERY_PARAMETERS.get(id(route))
    if known is None:
        known = _QUERY_PARAMETERS[id(route)] = frozenset(_query_names(route.dependant))
    return known


def _query_names(dependant: Dependant) -> Iterator[str]:
    """The query parameters of an endpoint and of every dependency it has."""
    yield from (field.alias for field in dependant.query_params)
    for dependency in dependant.dependencies:
        yield from _query_names(dependency)


# Each route's query parameters, worked out at its first request (routes live as long as the
# process).
_QUERY_PARAMETERS: dict[int, frozenset[str]] = {}


def _unknown_parameter(name: str, known: frozenset[str]) -> ApiProblem:
    """The 400 of a query parameter the endpoint does not take: ignored, a misspelt filter
    or ``expected_version`` would answer 200 having done something else than asked."""
    takes = ", ".join(sorted(known)) if known else "none"
    text = f"not a parameter of this endpoint (it takes: {takes})"
    return ApiProblem(
        400,
        "unknown-parameter",
        "Unknown query parameter",
        f"{visible(name)}: {text}",
        errors=[{"field": visible(name), "message": text}],
    )


@dataclass(frozen=True)
class Scopes:
    """The dependency that admits a caller with each scope (401 without a valid token)."""

    append: Any
    read: Any
    operate: Any

    @classmethod
    def of(cls, state: ApiState) -> "Scopes":
        return cls(
            Depends(require(state, "append")),
            Depends(require(state, "read")),
            Depends(require(state, "operate")),
        )


@contextmanager
def _query_parameter(name: str) -> Iterator[None]:
    """A query parameter the endpoint parses itself (a duration, a time), refused as FastAPI
    refuses one it parses (``limit=0``): ``invalid-request`` naming the field, not the
    ``invalid-input`` of a body's events."""
    try:
        yield
    except (ValidationError, ConfigurationError) as exc:
        raise invalid_parameter(name, exc) from None


def invalid_parameter(name: str, exc: Exception) -> ApiProblem:
    """The 400 of a query parameter the endpoint refused itself, as FastAPI words its own."""
    text = visible(str(exc)).removeprefix(f"{name}: ")
    return ApiProblem(
        400,
        "invalid-request",
        "Invalid request",
        f"{name}: {text}",
        errors=[{"field": name, "message": text}],
    )


def query_duration(text: str | None, name: str) -> timedelta | None:
    """A duration query parameter (``older_than``), or None when not given."""
    if text is None:
        return None
    with _query_parameter(name):
        return parse_duration(text, name)


def query_moment(as_of: str | None, at_position: int | None) -> datetime | None:
    """The moment ``as_of``/``at_position`` name (None: live, or a position to resolve)."""
    with _query_parameter(QUERY_NAMES[0]):
        return parse_as_of(as_of, at_position, QUERY_NAMES)
