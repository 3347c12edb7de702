"""Who may call: the bearer token checked against ``[api] tokens`` and its scopes, and the
query string's own rules (no token in it, no parameter given twice)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledger.text import visible
from service.api.auth import TOKEN_PARAMETERS, Caller, bearer_token
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
        repeated = sorted(
            {key for key, _ in request.query_params.multi_items()}
            - {key for key in request.query_params if _once(request, key)}
        )
        if repeated:
            raise ApiProblem(
                400,
                "repeated-parameter",
                "Repeated query parameter",
                f"each query parameter may be given once: {visible(', '.join(repeated))}",
            )
        token = bearer_token(request.headers.get("authorization"))
        caller = None if token is None else state.tokens.caller(token)
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
        return caller

    return authorized


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


def _once(request: Request, key: str) -> bool:
    return len(request.query_params.getlist(key)) == 1
