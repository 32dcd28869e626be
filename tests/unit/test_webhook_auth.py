"""Per-job URL tokens and Sync-Signature verification."""

import json

import pytest

from lipsync.syncso.webhook_auth import (
    MalformedSignatureError,
    MissingSignatureError,
    SignatureMismatchError,
    StaleSignatureError,
    job_token,
    sign,
    verify_job_token,
    verify_signature,
)

SECRET = "whsec_test_secret"
NOW = 1_795_000_000
BODY = json.dumps({"id": "gen-1", "status": "COMPLETED", "error_code": None, "name": "café"}).encode()


def test_known_vector_computed_independently() -> None:
    # Computed with openssl, not with this package:
    #   printf '1795000000.{"id":"g","status":"COMPLETED"}' | openssl dgst -sha256 -hmac whsec_test_secret
    body = b'{"id":"g","status":"COMPLETED"}'
    expected = "t=1795000000,v1=cd873c846e5cc09490c54b1c82d6a7d90483393085c19c14b71efcf75a56328c"
    assert sign(SECRET, body, NOW) == expected
    assert verify_signature(body, expected, [SECRET], now=NOW) == "raw"


def test_raw_body_is_tried_first() -> None:
    assert verify_signature(BODY, sign(SECRET, BODY, NOW), [SECRET], now=NOW) == "raw"


def test_compact_reserialisation_is_accepted_when_the_raw_body_differs() -> None:
    # The sender signed JSON.stringify(body) (compact, UTF-8) but delivered pretty-printed bytes.
    compact = json.dumps(json.loads(BODY), separators=(",", ":"), ensure_ascii=False).encode()
    pretty = json.dumps(json.loads(BODY), indent=2).encode()
    assert verify_signature(pretty, sign(SECRET, compact, NOW), [SECRET], now=NOW) == "compact"


def test_milliseconds_timestamps_are_understood() -> None:
    header = sign(SECRET, BODY, NOW * 1000)
    assert verify_signature(BODY, header, [SECRET], now=NOW + 10) == "raw"


@pytest.mark.parametrize("skew", [-301, 301])
def test_timestamps_outside_the_window_on_either_side_are_stale(skew: int) -> None:
    with pytest.raises(StaleSignatureError):
        verify_signature(BODY, sign(SECRET, BODY, NOW + skew), [SECRET], now=NOW)


@pytest.mark.parametrize("skew", [-299, 299])
def test_timestamps_inside_the_window_pass(skew: int) -> None:
    assert verify_signature(BODY, sign(SECRET, BODY, NOW + skew), [SECRET], now=NOW) == "raw"


def test_previous_secret_is_accepted_during_rotation() -> None:
    header = sign("whsec_old", BODY, NOW)
    assert verify_signature(BODY, header, ["whsec_new", "whsec_old"], now=NOW) == "raw"
    with pytest.raises(SignatureMismatchError):
        verify_signature(BODY, header, ["whsec_new", ""], now=NOW)


def test_any_of_several_v1_values_may_match() -> None:
    good = sign(SECRET, BODY, NOW).split("v1=")[1]
    header = f"t={NOW}, v1={'0' * 64}, v1={good.upper()}"
    assert verify_signature(BODY, header, [SECRET], now=NOW) == "raw"


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_header_is_a_rejection(header: str | None) -> None:
    with pytest.raises(MissingSignatureError):
        verify_signature(BODY, header, [SECRET], now=NOW)


@pytest.mark.parametrize("header", ["v1=abc", "t=abc,v1=abc", f"t={NOW}", "garbage", f"t={NOW},v0=abc"])
def test_garbled_header_is_a_rejection(header: str) -> None:
    with pytest.raises(MalformedSignatureError):
        verify_signature(BODY, header, [SECRET], now=NOW)


def test_tampered_body_or_wrong_secret_is_a_mismatch() -> None:
    header = sign(SECRET, BODY, NOW)
    with pytest.raises(SignatureMismatchError):
        verify_signature(BODY.replace(b"COMPLETED", b"FAILED"), header, [SECRET], now=NOW)
    with pytest.raises(SignatureMismatchError):
        verify_signature(BODY, header, ["whsec_other"], now=NOW)


def test_no_configured_secret_never_verifies() -> None:
    with pytest.raises(SignatureMismatchError):
        verify_signature(BODY, sign("", BODY, NOW), ["", ""], now=NOW)


def test_job_tokens_are_per_job_and_constant_time_checked() -> None:
    token = job_token("key", "job-1")
    assert len(token) == 64
    assert verify_job_token("key", "job-1", token)
    assert not verify_job_token("key", "job-2", token)
    assert not verify_job_token("other-key", "job-1", token)
    assert not verify_job_token("key", "job-1", None)
    assert not verify_job_token("key", "job-1", "")
    assert not verify_job_token("", "job-1", job_token("", "job-1"))


# ---------------------------------------------------------------------------- the token key's rotation


def test_the_token_key_ring_holds_the_previous_key_for_the_overlap_only() -> None:
    """Issue 14, item 13: rotating WebhookTokenKey broke every in-flight webhook URL (only the
    current key was accepted, cached for the container's life)."""
    import boto3

    from lipsync.config import TokenKeys

    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name="token-key", SecretString="first")["ARN"]
    assert TokenKeys(arn, secrets).keys() == ["first"]
    secrets.put_secret_value(SecretId=arn, SecretString="second")
    ring = TokenKeys(arn, secrets)
    assert (ring.keys(), ring.current()) == (["second", "first"], "second")
    assert TokenKeys(arn, secrets, overlap_seconds=0).keys() == ["second"]  # the overlap is over
    job = "0123456789abcdef0123456789abcdef"
    assert verify_job_token(ring.keys(), job, job_token("first", job))
    assert not verify_job_token(["second"], job, job_token("first", job))
