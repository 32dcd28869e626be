"""Webhook authentication: per-job URL tokens and sync.so's `Sync-Signature` header.

There is no bypass: a missing token, a missing header (when a signing secret is
configured) or a stale timestamp is a rejection.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Sequence
from typing import Literal

DEFAULT_TOLERANCE_SECONDS = 300
_DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII digits only (str.isdigit() also takes "²")
SignedForm = Literal["raw", "compact"]


# ---------------------------------------------------------------------------- per-job URL tokens


def job_token(key: str, job_id: str) -> str:
    """The token in a job's webhook URL: HMAC-SHA256 of the job id under the stack's key."""
    return hmac.new(key.encode(), f"job:{job_id}".encode(), hashlib.sha256).hexdigest()


def verify_job_token(keys: str | Sequence[str], job_id: str, token: str | None) -> bool:
    """The token is the job's under any of `keys` (the current key, and the previous one while a
    rotation's overlap lasts). Compared as bytes: a caller's text may be anything."""
    if not token:
        return False
    given = token.encode("utf-8", "surrogatepass")
    usable = [keys] if isinstance(keys, str) else list(keys)
    return any(hmac.compare_digest(job_token(key, job_id).encode(), given) for key in usable if key)


# ---------------------------------------------------------------------------- Sync-Signature


class SignatureError(Exception):
    """Why a delivery's signature was refused (the message is safe to log and return)."""


class MissingSignatureError(SignatureError):
    pass


class MalformedSignatureError(SignatureError):
    pass


class StaleSignatureError(SignatureError):
    pass


class SignatureMismatchError(SignatureError):
    pass


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `Sync-Signature` header value sync.so sends for `body` at `timestamp`."""
    return f"t={timestamp},v1={_hmac_hex(secret, timestamp_text=str(timestamp), body=body)}"


def _hmac_hex(secret: str, *, timestamp_text: str, body: bytes) -> str:
    # The key is the whsec_... secret as UTF-8 bytes (not base64-decoded).
    return hmac.new(secret.encode(), timestamp_text.encode() + b"." + body, hashlib.sha256).hexdigest()


def parse_signature_header(header: str | None) -> tuple[str, list[str]]:
    """`t=<ts>,v1=<hex>[,v1=<hex>...]` -> (timestamp text, signatures)."""
    if header is None or not header.strip():
        raise MissingSignatureError("Sync-Signature header is missing")
    timestamp: str | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            timestamp = value.strip()
        elif name == "v1":
            signatures.append(value.strip().lower())
    if not timestamp or not _DIGITS.fullmatch(timestamp) or not signatures:
        raise MalformedSignatureError("Sync-Signature header must look like t=<timestamp>,v1=<hex>")
    return timestamp, signatures


def _timestamp_seconds(timestamp_text: str) -> float:
    value = int(timestamp_text)
    # sync.so does not document the unit: anything past year 5138 in seconds is milliseconds.
    return value / 1000 if value > 100_000_000_000 else float(value)


def _compact(body: bytes) -> bytes | None:
    """The body re-serialised as JS `JSON.stringify` would, which sync.so's examples sign."""
    try:
        parsed = json.loads(body)
        return json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, RecursionError):  # not JSON, nested too deeply, or not Unicode: no such form
        return None


def verify_signature(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    now: float | None = None,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> SignedForm:
    """Check `Sync-Signature` against each configured secret; return which body form matched.

    The raw bytes are tried first, then the compact re-serialisation.
    Raises a `SignatureError` subclass on any failure.
    """
    usable = [secret for secret in secrets if secret]
    if not usable:
        raise SignatureMismatchError("no signing secret is configured")
    timestamp_text, signatures = parse_signature_header(header)
    age = (time.time() if now is None else now) - _timestamp_seconds(timestamp_text)
    if abs(age) > tolerance_seconds:
        raise StaleSignatureError(
            f"Sync-Signature timestamp is {age:+.0f} s from now (window ±{tolerance_seconds} s)"
        )
    forms: list[tuple[SignedForm, bytes | None]] = [("raw", body), ("compact", _compact(body))]
    for form, candidate in forms:
        if candidate is None or (form == "compact" and candidate == body):
            continue
        for secret in usable:
            expected = _hmac_hex(secret, timestamp_text=timestamp_text, body=candidate)
            if any(
                hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass"))
                for signature in signatures
            ):
                return form
    raise SignatureMismatchError("Sync-Signature does not match the body")
