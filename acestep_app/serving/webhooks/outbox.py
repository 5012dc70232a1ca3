"""Queue webhooks as fal sends them: a signed JSON POST per finished request, persisted and retried.

* :class:`SigningKey`: the Ed25519 key that signs deliveries; its public half is published as a JWKS
  (``/.well-known/jwks.json``). Taken from ``$ACESTEP_WEBHOOK_SIGNING_KEY`` (a PKCS#8 PEM, or the
  base64url of the 32-byte seed) when set, else from ``webhook-signing-key.pem`` in the data dir,
  created there (mode 0600) on first use.
* :func:`webhook_body`: fal's payload (``request_id``, ``gateway_request_id``, ``status`` ``OK`` or
  ``ERROR``, ``payload``; ``error`` on failures; ``payload: null`` + ``payload_error`` when the
  result is not JSON).
* :class:`Outbox`: the deliveries, in their own SQLite file (``webhooks.sqlite3``) in the data dir.
  A request's webhook is registered when it is submitted (``WAITING``, with the base URL its file
  links use) and becomes a delivery when it finishes (``PENDING``); both survive restarts (a kill -9
  included), so a server can find requests that finished while it was down.
* :class:`DeliveryWorker`: threads that POST due deliveries through :func:`acestep_app.audio.netguard.post`
  (targets that are not http(s), or resolve to loopback/private/link-local/metadata addresses unless
  allowed, are failed with the reason and never contacted), retry failures with exponential backoff
  (``[webhooks]`` in ``infra.toml``: by default 10 attempts, the last at 2 hours) and mark a delivery
  delivered on the first 2xx, so each request gets at most one successful delivery.
* :class:`Webhooks`: the three together for one data dir, as a server uses them.

Retried deliveries send the same body; the timestamp and signature are made fresh for each attempt.
Receivers verify with :func:`acestep_app.serving.webhooks.verify.verify`.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from acestep_app.serving.stores.sqlite_db import SQLiteBacked
from acestep_app.serving.webhooks.verify import (
    REQUEST_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    USER_ID_HEADER,
    signed_message,
)
from acestep_app.settings import WebhooksSection

logger = logging.getLogger(__name__)

SIGNING_KEY_ENV = "ACESTEP_WEBHOOK_SIGNING_KEY"
SIGNING_KEY_FILE = "webhook-signing-key.pem"
DATABASE_NAME = "webhooks.sqlite3"
PAYLOAD_ERROR = ("The response payload is not JSON serializable; "
                 "fetch the result through the queue endpoint with the request_id.")
LAST_ATTEMPT_GRACE_SECONDS = 5.0  # beyond the timeout, before an interrupted last attempt counts as lost


# -- signing -----------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class SigningKey:
    """An Ed25519 private key with its JWK (``kid`` = the RFC 7638 thumbprint of the public key)."""

    def __init__(self, private_key: Ed25519PrivateKey):
        self.private_key = private_key
        public = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.x = _b64url(public)
        thumbprint_input = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": self.x}, separators=(",", ":"))
        self.kid = _b64url(hashlib.sha256(thumbprint_input.encode()).digest())

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_text(cls, text: str) -> SigningKey:
        """A PKCS#8 PEM private key, or the base64url (or base64) of the raw 32-byte seed."""
        text = text.strip()
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("the webhook signing key must be an Ed25519 private key")
            return cls(key)
        seed = base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4))
        if len(seed) != 32:
            raise ValueError(f"an Ed25519 seed is 32 bytes; the signing key decodes to {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load(cls, data_dir: str | Path, environ: dict[str, str] | None = None) -> SigningKey:
        """``$ACESTEP_WEBHOOK_SIGNING_KEY`` if set, else the data dir's key file, created on first use."""
        environ = os.environ if environ is None else environ
        if environ.get(SIGNING_KEY_ENV):
            try:
                return cls.from_text(environ[SIGNING_KEY_ENV])
            except ValueError as error:
                raise ValueError(f"${SIGNING_KEY_ENV} is not a usable Ed25519 key: {error}") from None
        path = Path(data_dir) / SIGNING_KEY_FILE
        if not path.exists():
            cls._create_file(path)
        if path.stat().st_mode & 0o077:
            logger.warning("%s is readable by other users; it should be mode 0600", path)
        return cls.from_text(path.read_text(encoding="ascii"))

    @staticmethod
    def _create_file(path: Path) -> None:
        """Write a new key with mode 0600; a key another process wrote first is kept, never replaced."""
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(pem)
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temporary, path)  # atomic, and fails rather than overwrite
                logger.info("created the webhook signing key %s", path)
            except FileExistsError:
                pass
        finally:
            temporary.unlink(missing_ok=True)

    def jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": self.x, "kid": self.kid, "use": "sig", "alg": "EdDSA"}

    def user_id(self, owner: str) -> str:
        """The ``X-Fal-Webhook-User-Id`` of a key's owner: keyed with the signing key, so a receiver learns
        nothing it could test API-key guesses against (the owner itself is a plain hash of the key)."""
        secret = self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return hmac.new(secret, b"webhook-user:" + owner.encode(), hashlib.sha256).hexdigest()[:32]

    def signature_headers(self, request_id: str, user_id: str, body: bytes, timestamp: int | None = None
                          ) -> dict[str, str]:
        """fal's four ``X-Fal-Webhook-*`` headers for one delivery of ``body``."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.private_key.sign(signed_message(request_id, user_id, stamp, body))
        return {REQUEST_ID_HEADER: request_id, USER_ID_HEADER: user_id, TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: signature.hex()}


def jwks(*keys: SigningKey) -> dict[str, list[dict[str, str]]]:
    """The JSON Web Key Set served at ``/.well-known/jwks.json``."""
    return {"keys": [key.jwk() for key in keys]}


# -- payload -----------------------------------------------------------------------------------------


def webhook_body(request_id: str, payload: Any, *, error_status: int | None = None,
                 gateway_request_id: str | None = None) -> bytes:
    """fal's webhook JSON for a finished request.

    Args:
        request_id: the queue request id.
        payload: the result JSON on success; on failure the error body the result URL returns
            (``{"detail": ..., "error_type": ...}``).
        error_status: the failure's HTTP status (None on success); it becomes ``status: "ERROR"``
            and ``error: "Invalid status code: <n>"``, as fal words it.
        gateway_request_id: the id of the last attempt (fal's retries); defaults to ``request_id``.
    """
    body: dict[str, Any] = {
        "request_id": request_id,
        "gateway_request_id": gateway_request_id or request_id,
        "status": "OK" if error_status is None else "ERROR",
    }
    if error_status is not None:
        body["error"] = f"Invalid status code: {error_status}"
    try:
        json.dumps(payload, allow_nan=False)
        body["payload"] = payload
    except (TypeError, ValueError):
        body.update(payload=None, payload_error=PAYLOAD_ERROR)
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")


def retry_delays(max_attempts: int, window_seconds: float) -> list[float]:
    """Seconds between consecutive attempts: each twice the one before, summing to ``window_seconds``.

    With fal's 10 attempts in 2 hours: about 14 s, 28 s, 56 s, ... 1 h (the last attempt at 2 h).
    """
    retries = max_attempts - 1
    if retries <= 0:
        return []
    unit = window_seconds / (2**retries - 1)
    return [unit * 2**index for index in range(retries)]


# -- the outbox --------------------------------------------------------------------------------------


class DeliveryState(str, enum.Enum):
    WAITING = "WAITING"  # registered at submit; the request has not finished
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Delivery:
    request_id: str
    url: str
    user_id: str
    body: bytes | None
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    created_at: float
    last_status: int | None = None
    last_error: str | None = None
    finished_at: float | None = None
    base_url: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Delivery:
        return cls(request_id=row["request_id"], url=row["url"], user_id=row["user_id"],
                   body=None if row["body"] is None else bytes(row["body"]),
                   state=DeliveryState(row["state"]), attempts=row["attempts"],
                   next_attempt_at=row["next_attempt_at"], created_at=row["created_at"],
                   last_status=row["last_status"], last_error=row["last_error"], finished_at=row["finished_at"],
                   base_url=row["base_url"])


SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    request_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    user_id TEXT NOT NULL,
    body BLOB,
    base_url TEXT,
    state TEXT NOT NULL CHECK (state IN ('WAITING','PENDING','DELIVERED','FAILED')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    created_at REAL NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
"""


class Outbox(SQLiteBacked):
    """The persistent deliveries of one data dir (SQLite, WAL). Thread-safe.

    ``claim`` counts an attempt and schedules the next one in the same transaction, before anything
    is sent: a process killed mid-delivery retries it on the schedule after a restart.
    """

    def __init__(self, data_dir: str | Path, settings: WebhooksSection = WebhooksSection()):
        self.settings = settings
        self.delays = retry_delays(settings.max_attempts, settings.retry_window_seconds)
        self._open(Path(data_dir) / DATABASE_NAME, SCHEMA, "webhook outbox")

    def register(self, request_id: str, url: str, user_id: str, base_url: str | None = None,
                 now: float | None = None) -> bool:
        """Note a submitted request's webhook (``WAITING``). False when the request already has a row."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO deliveries (request_id, url, user_id, base_url, state, next_attempt_at,"
                " created_at) VALUES (?, ?, ?, ?, 'WAITING', ?, ?)", (request_id, url, user_id, base_url, now, now))
        return cursor.rowcount == 1

    def enqueue(self, request_id: str, url: str, user_id: str, body: bytes, now: float | None = None) -> bool:
        """Make the request's delivery due now, with ``body``.

        A ``WAITING`` registration keeps its URL and user id; an unregistered request gets a new row.
        False (and nothing changes) when the request already has a delivery.
        """
        now = time.time() if now is None else now
        with self._transaction() as db:
            cursor = db.execute("UPDATE deliveries SET body = ?, state = 'PENDING', next_attempt_at = ?"
                                " WHERE request_id = ? AND state = 'WAITING'", (body, now, request_id))
            if cursor.rowcount == 0:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO deliveries (request_id, url, user_id, body, state, next_attempt_at,"
                    " created_at) VALUES (?, ?, ?, ?, 'PENDING', ?, ?)", (request_id, url, user_id, body, now, now))
        return cursor.rowcount == 1

    def waiting(self) -> list[Delivery]:
        """Registered webhooks whose request has not been seen to finish."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM deliveries WHERE state = 'WAITING' ORDER BY created_at").fetchall()
        return [Delivery.from_row(row) for row in rows]

    def get(self, request_id: str) -> Delivery | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM deliveries WHERE request_id = ?", (request_id,)).fetchone()
        return Delivery.from_row(row) if row else None

    def all(self) -> list[Delivery]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM deliveries ORDER BY created_at").fetchall()
        return [Delivery.from_row(row) for row in rows]

    def next_due_at(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'PENDING'").fetchone()
        return row[0]

    def claim(self, now: float, limit: int, skip: set[str] = frozenset()) -> list[Delivery]:
        """Up to ``limit`` due deliveries, each with its attempt counted and its next one scheduled."""
        claimed = []
        with self._transaction() as db:
            rows = db.execute("SELECT * FROM deliveries WHERE state = 'PENDING' AND next_attempt_at <= ?"
                              " ORDER BY next_attempt_at", (now,)).fetchall()
            for row in rows:
                if len(claimed) == limit:
                    break
                delivery = Delivery.from_row(row)
                if delivery.request_id in skip:
                    continue
                if delivery.attempts >= self.settings.max_attempts:  # the last attempt was cut off by a crash
                    db.execute("UPDATE deliveries SET state = 'FAILED', finished_at = ?, last_error = ?"
                               " WHERE request_id = ?", (now, "the last attempt was interrupted", delivery.request_id))
                    continue
                attempt = delivery.attempts + 1
                if attempt < self.settings.max_attempts:
                    next_at = now + self.delays[attempt - 1]
                else:
                    next_at = now + self.settings.timeout_seconds + LAST_ATTEMPT_GRACE_SECONDS
                db.execute("UPDATE deliveries SET attempts = ?, next_attempt_at = ? WHERE request_id = ?",
                           (attempt, next_at, delivery.request_id))
                claimed.append(replace(delivery, attempts=attempt, next_attempt_at=next_at))
        return claimed

    def mark_delivered(self, request_id: str, status: int, now: float) -> None:
        with self._transaction() as db:
            db.execute("UPDATE deliveries SET state = 'DELIVERED', last_status = ?, last_error = NULL,"
                       " finished_at = ? WHERE request_id = ? AND state = 'PENDING'", (status, now, request_id))

    def mark_attempt_failed(self, request_id: str, reason: str, status: int | None, now: float, *,
                            final: bool) -> None:
        """Record why an attempt failed; ``final`` (or no attempts left) fails the delivery for good."""
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET last_error = ?, last_status = ?,"
                " state = CASE WHEN ? OR attempts >= ? THEN 'FAILED' ELSE state END,"
                " finished_at = CASE WHEN ? OR attempts >= ? THEN ? ELSE finished_at END"
                " WHERE request_id = ? AND state = 'PENDING'",
                (reason, status, final, self.settings.max_attempts, final, self.settings.max_attempts, now,
                 request_id))

    def prune(self, finished_before: float) -> int:
        """Delete deliveries that ended (delivered, or failed for good) before ``finished_before``; how many."""
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM deliveries WHERE state IN ('DELIVERED', 'FAILED') AND finished_at < ?",
                                (finished_before,))
        if cursor.rowcount:
            self.compact()
        return cursor.rowcount

    def count(self, state: DeliveryState) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM deliveries WHERE state = ?", (state.value,)).fetchone()[0]


# -- delivering ----------------------------------------------------------------------------------------

AttemptHook = Callable[[int, str, bool], None]


def _netguard_post(url: str, *, content: bytes, headers: dict[str, str], allow_private: bool, timeout: float):
    from acestep_app.audio import netguard

    return netguard.post(url, content=content, headers=headers, allow_private=allow_private, timeout=timeout)


def _is_refused(error: Exception) -> bool:
    from acestep_app.audio.netguard import UnsafeURLError

    return isinstance(error, UnsafeURLError)


class DeliveryWorker:
    """Posts due deliveries on ``settings.concurrency`` threads until stopped.

    Args:
        outbox: where deliveries are stored.
        key: signs each attempt.
        settings: ``[webhooks]`` (attempts, window, timeout, concurrency).
        allow_private: let deliveries reach loopback/private addresses (``[security].allow_private_urls``).
        post: ``netguard.post``'s signature; tests may wrap it.
        clock: Unix time (persisted schedules need wall-clock time).
        on_attempt: ``(attempt number, "delivered" | "failed" | "refused", settled for good)`` after each POST.
    """

    def __init__(self, outbox: Outbox, key: SigningKey, settings: WebhooksSection = WebhooksSection(), *,
                 allow_private: bool = False, post: Callable[..., Any] = _netguard_post,
                 clock: Callable[[], float] = time.time, on_attempt: AttemptHook | None = None):
        self.on_attempt = on_attempt
        self.outbox = outbox
        self.key = key
        self.settings = settings
        self.allow_private = allow_private
        self.post = post
        self.clock = clock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._in_flight: set[str] = set()
        self._in_flight_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="webhook-delivery")
        self._thread = threading.Thread(target=self._run, name="webhook-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking deliveries and wait for the ones being sent (each ends within the timeout)."""
        if self._thread is None:
            return
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        self._pool.shutdown(wait=True)
        self._thread, self._pool = None, None

    def notify(self) -> None:
        """A delivery was enqueued: look for due work now."""
        self._wake.set()

    def deliver_due(self) -> int:
        """Send every due delivery in this thread (no pool); the number sent. For tools and tests."""
        with self._in_flight_lock:
            skip = set(self._in_flight)
        claimed = self.outbox.claim(self.clock(), limit=10**6, skip=skip)
        for delivery in claimed:
            self.attempt(delivery)
        return len(claimed)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                saturated = self._dispatch()
                wait = 60.0 if saturated else self._seconds_until_due()
            except Exception:  # a broken database must not end deliveries for good
                logger.exception("webhook dispatch failed; retrying")
                wait = 1.0
            self._wake.wait(wait)  # a finished delivery, an enqueue or stop() wakes it early
            self._wake.clear()

    def _dispatch(self) -> bool:
        """Hand due deliveries to free threads; True when every thread is busy."""
        with self._in_flight_lock:
            free = self.settings.concurrency - len(self._in_flight)
            skip = set(self._in_flight)
        if free <= 0:
            return True
        claimed = self.outbox.claim(self.clock(), limit=free, skip=skip)
        for delivery in claimed:
            with self._in_flight_lock:
                self._in_flight.add(delivery.request_id)
            self._pool.submit(self._attempt_in_pool, delivery)
        return len(claimed) == free

    def _attempt_in_pool(self, delivery: Delivery) -> None:
        try:
            self.attempt(delivery)
        except Exception:
            logger.exception("webhook delivery %s crashed", delivery.request_id)
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(delivery.request_id)
            self._wake.set()

    def _seconds_until_due(self) -> float:
        due = self.outbox.next_due_at()
        if due is None:
            return 60.0
        return min(60.0, max(0.0, due - self.clock()))

    def attempt(self, delivery: Delivery) -> bool:
        """One signed POST of a claimed delivery; records the outcome. True on a 2xx."""
        headers = {"content-type": "application/json", "user-agent": "acestep-app-webhooks",
                   **self.key.signature_headers(delivery.request_id, delivery.user_id, delivery.body,
                                                math.floor(self.clock()))}
        status = None
        try:
            response = self.post(delivery.url, content=delivery.body, headers=headers,
                                 allow_private=self.allow_private, timeout=self.settings.timeout_seconds)
        except Exception as error:
            if _is_refused(error):
                logger.error("webhook %s refused, not sent: %s", delivery.request_id, error)
                self.outbox.mark_attempt_failed(delivery.request_id, f"refused target: {error}", None, self.clock(),
                                                final=True)
                self._observe(delivery, "refused", True)
                return False
            reason = f"{type(error).__name__}: {error}"
        else:
            status = response.status_code
            if 200 <= status < 300:
                self.outbox.mark_delivered(delivery.request_id, status, self.clock())
                logger.info("webhook %s delivered (attempt %d, HTTP %d)", delivery.request_id, delivery.attempts,
                            status)
                self._observe(delivery, "delivered", True)
                return True
            reason = f"HTTP {status}"
        final = delivery.attempts >= self.settings.max_attempts
        self.outbox.mark_attempt_failed(delivery.request_id, reason, status, self.clock(), final=final)
        logger.warning("webhook %s attempt %d/%d failed (%s)%s", delivery.request_id, delivery.attempts,
                       self.settings.max_attempts, reason, "; giving up" if final else "")
        self._observe(delivery, "failed", final)
        return False

    def _observe(self, delivery: Delivery, result: str, final: bool) -> None:
        if self.on_attempt is not None:
            self.on_attempt(delivery.attempts, result, final)


# -- the service ---------------------------------------------------------------------------------------


class Webhooks:
    """A data dir's signing key, outbox and delivery worker, as the server uses them.

    ``register`` when a request with a webhook is submitted, ``enqueue`` on its terminal transition;
    ``start``/``stop`` with the app's lifespan (start resumes deliveries a previous process left
    pending; ``waiting()`` lists requests to check for having finished meanwhile); ``jwks()`` for the
    public keys.
    """

    def __init__(self, data_dir: str | Path, settings: WebhooksSection = WebhooksSection(), *,
                 allow_private: bool = False, key: SigningKey | None = None, post: Callable[..., Any] = _netguard_post,
                 on_attempt: AttemptHook | None = None):
        self.allow_private = allow_private
        self.key = key or SigningKey.load(data_dir)
        self.outbox = Outbox(data_dir, settings)
        self.worker = DeliveryWorker(self.outbox, self.key, settings, allow_private=allow_private, post=post,
                                     on_attempt=on_attempt)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return jwks(self.key)

    def check_target(self, url: str) -> None:
        """Raise ``netguard.UnsafeURLError`` now for a target every delivery would refuse."""
        from acestep_app.audio import netguard

        netguard.check_url(url, allow_private=self.allow_private)

    def register(self, request_id: str, url: str, user_id: str, base_url: str | None = None) -> None:
        self.outbox.register(request_id, url, user_id, base_url)

    def registration(self, request_id: str) -> Delivery | None:
        return self.outbox.get(request_id)

    def waiting(self) -> list[Delivery]:
        return self.outbox.waiting()

    def enqueue(self, request_id: str, url: str, user_id: str, payload: Any, *,
                error_status: int | None = None) -> bool:
        """Store the delivery of a finished request (once per request) and wake the worker."""
        body = webhook_body(request_id, payload, error_status=error_status)
        added = self.outbox.enqueue(request_id, url, user_id, body)
        if added:
            self.worker.notify()
        return added

    def start(self) -> None:
        self.worker.start()

    def stop(self, timeout: float | None = None) -> None:
        self.worker.stop(timeout)
