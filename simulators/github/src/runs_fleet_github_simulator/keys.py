"""RSA key pairs for simulated GitHub Apps.

GitHub generates an App's private key and keeps the public half; the simulator does
the same so that a test or demo can hand the private key to runs-fleet.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True, repr=False)
class AppKeyPair:
    """An App's key pair as PEM: ``private_pem`` (PKCS#1, as GitHub hands it out)
    and ``public_pem``. Its ``repr`` hides the private key."""

    private_pem: bytes
    public_pem: bytes

    def __repr__(self) -> str:
        return "AppKeyPair(private_pem=***)"


def generate_app_key(bits: int = 2048) -> AppKeyPair:
    """A fresh RSA key pair for a simulated App."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return AppKeyPair(private_pem=private, public_pem=public)
