"""API keys (``Authorization: Key <key>``) as a FastAPI dependency, and signed file links.

Each key is its own owner: jobs and files of one key are invisible to another. Keys are compared
with ``hmac.compare_digest`` against every configured key, so the time taken does not depend on
which key (or how much of one) matched. Owners are stored as keyed hashes (HMAC-SHA256 with the
server's own secret, ``owner-secret`` in the data dir), so a copy of the database does not let
anyone test guesses of a weak key offline.

A file link of a keyed server is signed for its owner and expires: ``?exp=<unix time>&sig=<32 hex>``,
``[storage].url_ttl_s`` after its job finished (so a job's link is the same in its result and its
webhook, however often it is fetched). Anything else in ``sig`` or ``exp`` is simply not a valid
signature.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Sequence

from fastapi import HTTPException, Request

from acestep_app.serving.jobs import Job
from acestep_app.serving.storage import FILES_PREFIX

ANONYMOUS = "anonymous"
UNAUTHORIZED = "Missing or invalid API key: send 'Authorization: Key <key>'."
SIGNATURE = re.compile(r"[0-9a-f]{32}")
EXPIRY = re.compile(r"[0-9]{1,12}")
DEFAULT_URL_TTL_S = 7 * 24 * 3600


class Keys:
    """The configured keys.

    Args:
        api_keys: the keys (none: no authentication, every caller is ``anonymous``).
        schemes: the accepted ``Authorization`` schemes (fal's is ``Key``).
        secret: the server's secret that owner ids are keyed with (persist it, or owners change on
            restart); None draws one for this process.
        url_ttl_s: how long a signed file link stays valid.
    """

    def __init__(self, api_keys: str | Sequence[str] | None, schemes: Sequence[str] = ("key",), *,
                 secret: bytes | None = None, url_ttl_s: int = DEFAULT_URL_TTL_S):
        self.schemes = tuple(scheme.lower() for scheme in schemes)
        keys = [api_keys] if isinstance(api_keys, str) else list(api_keys or [])
        if any(not key for key in keys):
            raise ValueError("an API key must not be empty")
        self.secret = secret or secrets.token_bytes(32)
        self.url_ttl_s = url_ttl_s
        self._keys = [key.encode() for key in keys]
        self._by_owner = {self.owner_of(key): key for key in self._keys}

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def owner_of(self, key: bytes) -> str:
        return hmac.new(self.secret, b"owner:" + key, hashlib.sha256).hexdigest()

    def authenticate(self, authorization: str | None) -> str | None:
        """The owner for an ``Authorization: Key <key>`` header, or None when it is not valid."""
        if not self.required:
            return ANONYMOUS
        scheme, _, presented = (authorization or "").partition(" ")
        presented_bytes = presented.strip().encode()
        matched = None
        for key in self._keys:
            if hmac.compare_digest(presented_bytes, key):
                matched = key
        if scheme.lower() not in self.schemes or matched is None:
            return None
        return self.owner_of(matched)

    def sign(self, owner: str, file_name: str, expires: int) -> str | None:
        """The signature of a link to ``file_name`` valid until ``expires`` (Unix time), or None for no key."""
        key = self._by_owner.get(owner)
        if key is None:
            return None
        return hmac.new(key, f"{file_name}\n{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def signed_query(self, owner: str, file_name: str, issued_at: float | None = None) -> str | None:
        """``exp=<time>&sig=<hex>`` for a link valid ``url_ttl_s`` from ``issued_at`` (default now), or None for no key."""
        expires = int(time.time() if issued_at is None else issued_at) + self.url_ttl_s
        signature = self.sign(owner, file_name, expires)
        return None if signature is None else f"exp={expires}&sig={signature}"

    def verify(self, owner: str, file_name: str, signature: str, expires: str | None,
               now: float | None = None) -> bool:
        """True for a signature this server made for ``owner``'s file that has not expired; never raises."""
        if not (isinstance(signature, str) and SIGNATURE.fullmatch(signature)
                and isinstance(expires, str) and EXPIRY.fullmatch(expires)):
            return False
        if int(expires) < (time.time() if now is None else now):
            return False
        expected = self.sign(owner, file_name, int(expires))
        return expected is not None and hmac.compare_digest(expected, signature)


class NotAuthenticated(HTTPException):
    def __init__(self):
        super().__init__(401, UNAUTHORIZED, headers={"www-authenticate": "Key"})


def keys_of(request: Request) -> Keys:
    return request.app.state.keys


def optional_owner(request: Request) -> str | None:
    """The caller's owner id, or None without a valid key (for routes that also take a signed link)."""
    return keys_of(request).authenticate(request.headers.get("authorization"))


def owner(request: Request) -> str:
    """Dependency: the caller's owner id; 401 without a valid key."""
    found = optional_owner(request)
    if found is None:
        raise NotAuthenticated()
    return found


def file_url(base_url: str, keys: Keys) -> Callable[[Job, str], str]:
    """Makes a stored ``files/<name>`` URL absolute under ``base_url``, signed for the job's owner when keys are in
    use (valid ``url_ttl_s`` from the job's end)."""

    def absolute(job: Job, url: str) -> str:
        if not url.startswith(FILES_PREFIX):
            return url
        query = keys.signed_query(job.owner, url[len(FILES_PREFIX):], job.finished_at)
        return base_url.rstrip("/") + "/" + url + (f"?{query}" if query else "")

    return absolute
