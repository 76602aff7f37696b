"""Bearer tokens that name one org (tenant) and one user.

Tokens are JWTs signed with HS256 and the server's secret (PyJWT: a
well-kept implementation of expiry, leeway and signature checks that we would
otherwise write and maintain ourselves). The org and user ids are restricted
to a safe alphabet so they can be embedded in room names and keys as-is.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import jwt

from leadstream.errors import LeadstreamError

IDENTIFIER = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class AuthError(LeadstreamError):
    """A token that cannot be accepted (`unauthorized`); `message` says why
    (safe to show)."""

    def __init__(self, message: str) -> None:
        super().__init__("unauthorized", message)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the org comes from the token only, never from a payload.

    :param expires_at: when the token stops being valid (epoch seconds); a live
        connection is cut then, so a socket never outlives its token.
    """

    org: str
    user: str
    expires_at: float = math.inf


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    org: str
    user: str
    expires_at: float


def check_identifier(kind: str, value: object) -> str:
    """Validate an org or user id (any value a client sent); raises ValueError
    with a readable message."""
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise ValueError(f"{kind} must be 1-64 characters of letters, digits, '_', '.', '@', '-'")
    return value


class TokenSigner:
    """Signs and verifies bearer tokens.

    :param secret: the HMAC secret (from `LEADSTREAM_SECRET` or the data folder).
    :param default_ttl_s: lifetime of tokens issued without an explicit ttl.
    :param leeway_s: clock skew tolerated on expiry (PROTOCOL.md: at most 1 s).
    """

    def __init__(self, secret: str, *, default_ttl_s: int, leeway_s: int = 1) -> None:
        if not secret:
            raise ValueError("a token secret is required")
        self._secret = secret
        self._default_ttl_s = default_ttl_s
        self._leeway_s = min(leeway_s, 1)

    def issue(self, org: str, user: str, ttl_s: int | None = None) -> IssuedToken:
        check_identifier("org", org)
        check_identifier("user", user)
        now = time.time()
        expires_at = now + (ttl_s if ttl_s is not None else self._default_ttl_s)
        claims = {"org": org, "sub": user, "iat": int(now), "exp": expires_at}
        token = jwt.encode(claims, self._secret, algorithm="HS256")
        return IssuedToken(token=token, org=org, user=user, expires_at=expires_at)

    def verify(self, token: object) -> Principal:
        """Return the token's principal, or raise AuthError."""
        if not isinstance(token, str) or not token:
            raise AuthError("a bearer token is required")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                leeway=self._leeway_s,
                options={"require": ["exp", "sub", "org"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.InvalidTokenError:
            raise AuthError("the token is invalid") from None
        org, user = claims.get("org"), claims.get("sub")
        try:
            return Principal(
                org=check_identifier("org", org),
                user=check_identifier("user", user),
                expires_at=float(claims["exp"]),  # PyJWT checked that it is a number
            )
        except ValueError:
            raise AuthError("the token is invalid") from None
