"""``continue`` tokens of paged lists: where the next page starts (the key after the last
item served) and the resource version of the first page, opaque to the client as in
Kubernetes."""

from __future__ import annotations

import base64
import binascii
import json

from tests.kube_api import errors


def encode_continue(rv: int, start: list[str]) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_continue(token: str) -> tuple[int, list[str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), [str(part) for part in data["start"]]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise errors.bad_request(f"continue key is not valid: {token!r}") from None
