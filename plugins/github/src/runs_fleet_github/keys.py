"""Reading the GitHub App's private key from configuration, without ever showing it.

Operators paste the key as PEM, as base64 of the PEM (handy in environment variables
and Kubernetes Secrets), or as PEM with its newlines written as ``\\n``. Anything else
is a :class:`~runs_fleet_core.errors.ConfigError` that names the setting and says
what is expected; the key's content is never part of the message or its cause.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from runs_fleet_core.errors import ConfigError

PRIVATE_KEY_SETTING = "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY"
PEM_MARKER = b"-----BEGIN"


def _problem(what: str, setting: str) -> ConfigError:
    return ConfigError(
        [
            f"{setting}: {what}; give the GitHub App's private key as the PEM file GitHub "
            f"downloaded (-----BEGIN RSA PRIVATE KEY-----...) or as base64 of it, or put "
            f"it in a file named by {setting}_FILE"
        ]
    )


def _pem_bytes(text: str | bytes, setting: str) -> bytes:
    data = (text.encode() if isinstance(text, str) else bytes(text)).strip()
    if not data:
        raise _problem("is empty", setting)
    if data.startswith(PEM_MARKER):
        return data.replace(b"\\n", b"\n") if b"\n" not in data else data
    try:
        decoded = base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not decoded.strip().startswith(PEM_MARKER):
        raise _problem("is neither a PEM private key nor base64 of one", setting)
    return decoded.strip()


def load_app_key(text: str | bytes, *, setting: str = PRIVATE_KEY_SETTING) -> RSAPrivateKey:
    """The App's RSA private key from PEM or base64 of PEM; ``ConfigError`` naming
    ``setting`` if it is not an unencrypted RSA private key."""
    pem = _pem_bytes(text, setting)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise _problem("is not a valid unencrypted PEM private key", setting) from None
    if not isinstance(key, RSAPrivateKey):
        raise _problem("is not an RSA key (GitHub App keys are RSA)", setting)
    return key
