"""How the simulated GitHub authenticates REST callers, as GitHub does.

App endpoints take ``Authorization: Bearer <JWT>``: RS256, signed with the App's
private key, ``iss`` the App id (or client id), ``iat`` in the past, ``exp`` in the
future and at most 10 minutes ahead. Everything else takes an installation token
(``Bearer`` or ``token``). A refusal answers 401 with GitHub's wording.
"""

from __future__ import annotations

from collections.abc import Mapping

import jwt

from runs_fleet_github_simulator.directory import Directory
from runs_fleet_github_simulator.records import App, Installation
from runs_fleet_github_simulator.simulator import ApiError

MAX_JWT_LIFETIME_S = 600
CLOCK_LEEWAY_S = 30
BAD_CREDENTIALS = "Bad credentials"
UNDECODABLE_JWT = "A JSON web token could not be decoded"


def credentials(headers: Mapping[str, str]) -> str | None:
    """The credential of an ``Authorization: Bearer|token <value>`` header."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() not in ("bearer", "token") or not value.strip():
        return None
    return value.strip()


def _app_of(directory: Directory, issuer: object) -> App | None:
    for app in directory.apps.values():
        if str(issuer) in (str(app.app_id), app.client_id):
            return app
    return None


def _check_times(claims: Mapping[str, object], now: float) -> None:
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int | float) or iat > now + CLOCK_LEEWAY_S:
        raise ApiError(
            401, "'Issued at' claim ('iat') must be an Integer representing a time in the past."
        )
    if not isinstance(exp, int | float) or exp <= now:
        raise ApiError(
            401,
            "'Expiration time' claim ('exp') must be a numeric value representing the "
            "future time at which the assertion expires.",
        )
    if exp - iat > MAX_JWT_LIFETIME_S or exp > now + MAX_JWT_LIFETIME_S + CLOCK_LEEWAY_S:
        raise ApiError(401, "'Expiration time' claim ('exp') is too far in the future.")


def authenticate_app(directory: Directory, headers: Mapping[str, str]) -> App:
    """The App whose valid JWT the request carries; ``ApiError(401)`` otherwise."""
    token = credentials(headers)
    if token is None:
        raise ApiError(401, "Requires authentication")
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise ApiError(401, UNDECODABLE_JWT) from None
    app = _app_of(directory, unverified.get("iss"))
    if app is None:
        raise ApiError(401, "'Issuer' claim ('iss') must be an Integer or the client ID")
    try:
        claims = jwt.decode(
            token,
            app.public_key,
            algorithms=["RS256"],
            options={
                "require": ["iat", "exp", "iss"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError:
        raise ApiError(401, UNDECODABLE_JWT) from None
    _check_times(claims, directory.clock())
    return app


def authenticate_installation(directory: Directory, headers: Mapping[str, str]) -> Installation:
    """The installation whose live token the request carries; ``ApiError(401)``
    otherwise (unknown, expired, or a JWT where a token belongs)."""
    token = credentials(headers)
    if token is None:
        raise ApiError(401, "Requires authentication")
    installation = directory.installation_of_token(token)
    if installation is None:
        raise ApiError(401, BAD_CREDENTIALS)
    return installation
