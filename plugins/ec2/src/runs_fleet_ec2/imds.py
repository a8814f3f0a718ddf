"""What an EC2 instance learns about itself from instance metadata (IMDSv2).

The runner's agent needs its instance id (its config may be stored under it, and it
stops or terminates itself by it), its region (boto3 does not take it from the
metadata service by itself) and two of its tags (its runner name and its warm pool).
All of that is in the instance metadata service, which answers only on the instance and
only with a session token (IMDSv2: ``PUT /latest/api/token`` first; the token then goes
with every ``GET``). Tags are there only when the launch template allows metadata tags
(``InstanceMetadataTags=enabled``); :meth:`Imds.tag_keys` tells that case apart.

Requests bypass any HTTP proxy of the environment (the metadata address is link-local),
use short timeouts, and retry briefly only what may pass (no connection, HTTP 5xx).
``RUNS_FLEET_IMDS_URL`` points the client elsewhere (a stand-in server in tests).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping

URL_VAR = "RUNS_FLEET_IMDS_URL"
DEFAULT_URL = "http://169.254.169.254"
TOKEN_TTL_S = 21600
"""The longest token life IMDS grants (6 h); the agent asks only at start anyway."""

TOKEN_PATH = "/latest/api/token"  # noqa: S105 (a path, not a secret)
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 (a header name)


class ImdsError(Exception):
    """The metadata service could not answer; the message says what to check."""


class Imds:
    """An IMDSv2 client at ``base_url`` (the default: the link-local metadata address).

    ``timeout_s``: per request; ``attempts``: tries for a request that found no
    service or got HTTP 5xx, ``backoff_s`` apart (doubled each time).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout_s: float = 2.0,
        attempts: int = 3,
        backoff_s: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url.lower().startswith(("http://", "https://")):
            raise ValueError(f"{URL_VAR} must start with http:// or https://, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._attempts = max(1, attempts)
        self._backoff_s = backoff_s
        self._sleep = sleep
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._token: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Imds:
        """The client at ``$RUNS_FLEET_IMDS_URL``, or at the metadata address."""
        return cls(env.get(URL_VAR) or DEFAULT_URL)

    def instance_id(self) -> str:
        """This instance's id (``i-…``)."""
        return self._require("/latest/meta-data/instance-id")

    def region(self) -> str:
        """This instance's region, from its identity document (or its placement when
        the document has none)."""
        document = self.get("/latest/dynamic/instance-identity/document")
        if document is not None:
            try:
                region = json.loads(document).get("region")
            except (ValueError, AttributeError):
                region = None
            if isinstance(region, str) and region:
                return region
        return self._require("/latest/meta-data/placement/region")

    def tag_keys(self) -> list[str] | None:
        """The keys of this instance's tags; ``None`` when tags are not in the
        metadata (the launch template does not set ``InstanceMetadataTags=enabled``)."""
        listing = self.get("/latest/meta-data/tags/instance")
        if listing is None:
            return None
        return [key for key in listing.splitlines() if key]

    def tag(self, key: str) -> str | None:
        """The value of this instance's tag ``key``; ``None`` when it has no such tag."""
        return self.get(f"/latest/meta-data/tags/instance/{urllib.parse.quote(key, safe=':@+=,')}")

    def get(self, path: str) -> str | None:
        """The text at ``path`` (``/latest/…``); ``None`` for HTTP 404. A token that
        expired (HTTP 401) is renewed once."""
        for renewed in (False, True):
            if self._token is None:
                self._token = self._fetch_token()
            status, body = self._request("GET", path, {TOKEN_HEADER: self._token})
            if status == 401 and not renewed:
                self._token = None
                continue
            if status == 404:
                return None
            if status != 200:
                raise ImdsError(f"instance metadata {path} answered HTTP {status}")
            return body
        raise ImdsError(f"instance metadata refused a fresh token for {path} (HTTP 401)")

    def _require(self, path: str) -> str:
        value = self.get(path)
        if not value:
            raise ImdsError(f"instance metadata has nothing at {path} (HTTP 404)")
        return value.strip()

    def _fetch_token(self) -> str:
        status, body = self._request("PUT", TOKEN_PATH, {TTL_HEADER: str(TOKEN_TTL_S)})
        if status == 200 and body:
            return body
        raise ImdsError(
            f"instance metadata at {self.base_url} answered HTTP {status} to the IMDSv2 token "
            "request: check that the instance metadata service is enabled for this instance"
        )

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        """``(status, body)`` of one request; retries what may pass, then ``ImdsError``."""
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__)
            self.base_url + path, method=method, headers=headers
        )
        problem = ""
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(self._backoff_s * 2 ** (attempt - 1))
            try:
                with self._opener.open(request, timeout=self._timeout_s) as response:
                    return int(response.status), response.read().decode()
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code < 500:
                    return exc.code, ""
                problem = f"HTTP {exc.code}"
            except urllib.error.URLError as exc:
                problem = _reason(exc.reason)
            except OSError as exc:
                problem = _reason(exc)
        raise ImdsError(
            f"cannot reach instance metadata at {self.base_url} ({problem}): not on EC2, or "
            "in a container whose metadata hop limit is 1 (IMDSv2 needs 2 there)"
        )


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return reason if isinstance(reason, str) else type(reason).__name__
