"""API keys (``Authorization: Key <key>``) as a FastAPI dependency, and signed file links.

Each key is its own owner: jobs and files of one key are invisible to another. Keys are compared
with ``hmac.compare_digest`` against every configured key, so the time taken does not depend on
which key (or how much of one) matched. Owners are stored as SHA-256 digests of their keys.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

from fastapi import HTTPException, Request

from acestep_app.serving.jobs import Job
from acestep_app.serving.storage import FILES_PREFIX

ANONYMOUS = "anonymous"
UNAUTHORIZED = "Missing or invalid API key: send 'Authorization: Key <key>'."


class Keys:
    """The configured keys; ``schemes`` are the accepted ``Authorization`` schemes (fal's is ``Key``)."""

    def __init__(self, api_keys: str | Sequence[str] | None, schemes: Sequence[str] = ("key",)):
        self.schemes = tuple(scheme.lower() for scheme in schemes)
        keys = [api_keys] if isinstance(api_keys, str) else list(api_keys or [])
        if any(not key for key in keys):
            raise ValueError("an API key must not be empty")
        self._keys = [key.encode() for key in keys]
        self._by_owner = {self.owner_of(key): key for key in self._keys}

    @property
    def required(self) -> bool:
        return bool(self._keys)

    @staticmethod
    def owner_of(key: bytes) -> str:
        return hashlib.sha256(key).hexdigest()

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

    def sign(self, owner: str, file_name: str) -> str | None:
        key = self._by_owner.get(owner)
        if key is None:
            return None
        return hmac.new(key, file_name.encode(), hashlib.sha256).hexdigest()[:32]

    def verify(self, owner: str, file_name: str, signature: str) -> bool:
        expected = self.sign(owner, file_name)
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
    """Makes a stored ``files/<name>`` URL absolute under ``base_url``, signed for the job's owner when keys are in use."""

    def absolute(job: Job, url: str) -> str:
        if not url.startswith(FILES_PREFIX):
            return url
        signature = keys.sign(job.owner, url[len(FILES_PREFIX):])
        return base_url.rstrip("/") + "/" + url + (f"?sig={signature}" if signature else "")

    return absolute
