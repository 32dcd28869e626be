"""WebhookReceiver: authenticate, record the signal, wake the execution; never set a status."""

import copy
import json
import time
from typing import Any

import pytest

from lipsync.generation.webhooks import (
    MAX_BODY_BYTES,
    WebhookReceiver,
    WebhookRejectedError,
    parse_signing_secrets,
)
from lipsync.jobs.model import Job
from lipsync.syncso.webhook_auth import job_token, sign
from tests.fakes import FakeWorkflow
from tests.tables import SeededStore, make_tables

TOKEN_KEY = "stack-token-key"
JOB_ID = "0123456789abcdef0123456789abcdef"
OTHER_JOB_ID = "fedcba9876543210fedcba9876543210"
CURRENT = "whsec_current"
PREVIOUS = "whsec_previous"
AT = "2026-11-25T00:00:00.000Z"


def seed(store: SeededStore, *, job_id: str = JOB_ID, status: str = "PENDING", **extra: Any) -> Job:
    return store.put(
        Job.model_validate(
            {
                "jobId": job_id,
                "name": "a",
                "kind": "pair",
                "status": status,
                "bucket": "media-bucket",
                "documentKey": "outputs/a.json",
                "generationId": "gen-1",
                "createdAt": AT,
                "updatedAt": AT,
                "history": [{"status": status, "source": "dispatch", "at": AT}],
            }
            | extra
        )
    )


def receiver(store: SeededStore, workflow: FakeWorkflow, secrets: list[str] | None = None) -> WebhookReceiver:
    return WebhookReceiver(store, workflow, lambda: [TOKEN_KEY], lambda: list(secrets or []))


def payload(status: str, gen_id: str = "gen-1", **extra: Any) -> bytes:
    return json.dumps({"id": gen_id, "status": status, "createdAt": AT, **extra}).encode()


def token(job_id: str = JOB_ID) -> str:
    return job_token(TOKEN_KEY, job_id)


def rejected(call: Any) -> WebhookRejectedError:
    with pytest.raises(WebhookRejectedError) as caught:
        call()
    return caught.value


def test_a_delivery_is_recorded_as_a_signal_and_changes_no_status() -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    result = receiver(store, workflow).receive(JOB_ID, token(), None, payload("PROCESSING"))
    assert (result.applied, result.status, result.woke_workflow, result.signed_form) == (
        True,
        "PROCESSING",
        False,
        None,
    )
    job = store.get(JOB_ID)
    assert job is not None
    assert job.status == "PENDING"  # only sync.so's answers to our own calls move it
    assert [(entry.status, entry.source) for entry in job.history] == [("PENDING", "dispatch")]
    assert (job.webhook_status, job.webhook_generation_id) == ("PROCESSING", "gen-1")
    assert job.last_webhook_at is not None


def test_a_lying_failed_webhook_sets_neither_status_nor_error() -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store, attempt={"key": "k", "taskToken": workflow.wait("task-token-1")})
    body = payload("FAILED", error="No face was detected.", error_code="generation_face_not_detected")
    result = receiver(store, workflow).receive(JOB_ID, token(), None, body)
    assert result.woke_workflow  # the execution wakes and asks sync.so, whose GET decides
    job = store.get(JOB_ID)
    assert job is not None
    assert (job.status, job.error) == ("PENDING", None)
    assert workflow.wakes == [("task-token-1", {"webhookStatus": "FAILED"})]


@pytest.mark.parametrize(
    ("given", "code"),
    [
        (None, 401),
        ("", 401),
        ("0" * 64, 403),
        (job_token("another-key", JOB_ID), 403),
        (token(OTHER_JOB_ID), 403),
    ],
)
def test_token_checks(given: str | None, code: int) -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    before = copy.deepcopy(store.items)
    error = rejected(lambda: receiver(store, workflow).receive(JOB_ID, given, None, payload("COMPLETED")))
    assert error.status_code == code
    assert store.items == before


def signed(body: bytes, secret: str = CURRENT, at: float | None = None) -> str:
    return sign(secret, body, int(time.time() if at is None else at))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "t=123",
        signed(payload("COMPLETED"), "whsec_wrong"),
        signed(payload("FAILED")),  # signs another body
        signed(payload("COMPLETED"), at=time.time() - 3600),
    ],
    ids=["missing", "empty", "malformed", "wrong-secret", "other-body", "stale"],
)
def test_with_signing_secrets_a_bad_signature_is_401(header: str | None) -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    before = copy.deepcopy(store.items)
    hooks = receiver(store, workflow, [CURRENT, PREVIOUS])
    error = rejected(lambda: hooks.receive(JOB_ID, token(), header, payload("COMPLETED")))
    assert error.status_code == 401
    assert store.items == before


@pytest.mark.parametrize("secret", [CURRENT, PREVIOUS])
def test_the_current_and_the_previous_secret_are_accepted(secret: str) -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    body = payload("PROCESSING")
    result = receiver(store, workflow, [CURRENT, PREVIOUS]).receive(
        JOB_ID, token(), signed(body, secret), body
    )
    assert (result.applied, result.signed_form) == (True, "raw")
    job = store.get(JOB_ID)
    assert job is not None
    assert job.webhook_signature == "raw"  # which signed form matched, for whoever debugs signing


def test_a_valid_signature_does_not_replace_the_token() -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    body = payload("COMPLETED")
    hooks = receiver(store, workflow, [CURRENT])
    assert rejected(lambda: hooks.receive(JOB_ID, None, signed(body), body)).status_code == 401
    assert rejected(lambda: hooks.receive(JOB_ID, token(OTHER_JOB_ID), signed(body), body)).status_code == 403


@pytest.mark.parametrize("secrets", [[], ["", ""], [""]])
def test_without_signing_secrets_the_token_alone_suffices(secrets: list[str]) -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    result = receiver(store, workflow, secrets).receive(JOB_ID, token(), None, payload("PROCESSING"))
    assert result.applied


def test_an_oversized_body_is_413_before_anything_else() -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    body = b" " * (MAX_BODY_BYTES + 1)
    assert rejected(lambda: receiver(store, workflow).receive(JOB_ID, None, None, body)).status_code == 413
    just_fits = payload("PROCESSING").ljust(MAX_BODY_BYTES)
    assert receiver(store, workflow).receive(JOB_ID, token(), None, just_fits).applied


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"", "not JSON"),
        (b'{"id": "gen-1"', "not JSON"),
        (b'{"status": "COMPLETED"}', "needs id and status"),
        (b'{"id": "gen-1"}', "needs id and status"),
        (b'{"id": "", "status": "COMPLETED"}', "needs id and status"),
        (b"[1, 2]", "needs id and status"),
    ],
)
def test_bodies_that_are_not_a_generation_are_400(body: bytes, reason: str) -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    error = rejected(lambda: receiver(store, workflow).receive(JOB_ID, token(), None, body))
    assert error.status_code == 400
    assert reason in str(error)


def test_an_unknown_job_is_404() -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    error = rejected(
        lambda: receiver(store, workflow).receive(
            OTHER_JOB_ID, token(OTHER_JOB_ID), None, payload("COMPLETED")
        )
    )
    assert error.status_code == 404
    assert OTHER_JOB_ID not in store.items


def test_another_generation_is_409() -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    before = copy.deepcopy(store.items)
    error = rejected(
        lambda: receiver(store, workflow).receive(JOB_ID, token(), None, payload("COMPLETED", "gen-2"))
    )
    assert error.status_code == 409
    assert store.items == before


def test_a_webhook_for_a_queued_job_changes_nothing_but_the_signal() -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store, status="QUEUED", generationId=None)
    result = receiver(store, workflow).receive(JOB_ID, token(), None, payload("COMPLETED", "gen-5"))
    assert (result.applied, result.woke_workflow) == (False, False)
    job = store.get(JOB_ID)
    assert job is not None
    assert (job.status, job.generation_id, job.error) == ("QUEUED", None, None)
    assert (job.webhook_status, job.webhook_generation_id) == ("COMPLETED", "gen-5")


@pytest.mark.parametrize("status", ["COMPLETED", "FAILED", "REJECTED", "CANCELED"])
def test_a_terminal_webhook_wakes_the_waiting_workflow(status: str) -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store, attempt={"key": "k", "taskToken": workflow.wait("task-token-1")})
    result = receiver(store, workflow).receive(JOB_ID, token(), None, payload(status))
    assert (result.applied, result.woke_workflow) == (True, True)
    assert workflow.wakes == [("task-token-1", {"webhookStatus": status})]
    job = store.get(JOB_ID)
    assert job is not None
    assert (job.status, job.webhook_status) == ("PENDING", status)
    # A duplicate does not wake again: the wait is over.
    assert not receiver(store, workflow).receive(JOB_ID, token(), None, payload(status)).woke_workflow
    assert workflow.waiting == set()


def test_without_a_task_token_there_is_no_wake_but_the_signal_is_recorded() -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    result = receiver(store, workflow).receive(JOB_ID, token(), None, payload("COMPLETED"))
    assert (result.applied, result.woke_workflow) == (True, False)
    assert workflow.wakes == []
    assert store.items[JOB_ID]["webhookStatus"] == "COMPLETED"


def test_a_wait_that_is_already_over_reports_no_wake() -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store, attempt={"key": "k", "taskToken": "timed-out-token"})  # not waiting any more
    result = receiver(store, workflow).receive(JOB_ID, token(), None, payload("COMPLETED"))
    assert (result.applied, result.woke_workflow) == (True, False)
    assert [woken for woken, _ in workflow.wakes] == ["timed-out-token"]


def test_a_non_terminal_webhook_does_not_wake() -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store, attempt={"key": "k", "taskToken": workflow.wait("task-token-1")})
    result = receiver(store, workflow).receive(JOB_ID, token(), None, payload("PROCESSING"))
    assert (result.applied, result.woke_workflow) == (True, False)
    assert workflow.wakes == []


@pytest.mark.parametrize("field", ["outputUrl", "outputMediaUrl"])
def test_a_webhooks_output_url_is_never_stored(field: str) -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    body = payload("COMPLETED", **{field: "https://evil.example/out.mp4"})
    assert receiver(store, workflow).receive(JOB_ID, token(), None, body).applied
    job = store.get(JOB_ID)
    assert job is not None
    assert job.attempt is None
    assert "evil.example" not in json.dumps(store.items)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"current": "whsec_a", "previous": "whsec_b"}', ["whsec_a", "whsec_b"]),
        ('{"current": " whsec_a ", "previous": ""}', ["whsec_a", ""]),
        ('{"current": "", "previous": ""}', ["", ""]),
        ('{"current": null}', ["", ""]),
        ("{}", ["", ""]),
        ("whsec_bare", ["whsec_bare"]),
        ("  whsec_bare\n", ["whsec_bare"]),
        ('"whsec_quoted"', ["whsec_quoted"]),
        ("", [""]),
    ],
)
def test_parse_signing_secrets(value: str, expected: list[str]) -> None:
    assert parse_signing_secrets(value) == expected


def test_empty_signing_secret_values_mean_no_signing() -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    hooks = WebhookReceiver(
        store, workflow, lambda: [TOKEN_KEY], lambda: parse_signing_secrets('{"current": "", "previous": ""}')
    )
    assert hooks.receive(JOB_ID, token(), None, payload("PROCESSING")).applied


# ------------------------------------------------------------------ issue 14: bad input, key rotation


@pytest.mark.parametrize("given", ["é" * 64, "\u0000", "😀", token()[:-1] + "é", "\udcff"])
def test_a_token_that_is_not_ascii_is_refused_not_a_crash(given: str) -> None:
    """Issue 14, item 11: hmac.compare_digest raised TypeError on non-ASCII text: a 502."""
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    error = rejected(lambda: receiver(store, workflow).receive(JOB_ID, given, None, payload("COMPLETED")))
    assert (error.status_code, error.reason) == (403, "bad_token")


@pytest.mark.parametrize(
    "header",
    ["t=\u00b2,v1=abc", "t=1\u0661,v1=abc", f"t={int(time.time())},v1=\u00e9\u00e9", "t=,v1=", "t=-5,v1=ab"],
    ids=["superscript-two", "arabic-digit", "non-ascii-signature", "empty", "negative"],
)
def test_a_garbled_signature_header_is_a_401_not_a_crash(header: str) -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    hooks = receiver(store, workflow, [CURRENT])
    error = rejected(lambda: hooks.receive(JOB_ID, token(), header, payload("COMPLETED")))
    assert (error.status_code, error.reason) == (401, "bad_signature")


def test_after_a_token_key_rotation_the_previous_key_still_opens_urls_minted_before() -> None:
    store, workflow = make_tables()[0], FakeWorkflow()
    seed(store)
    keys = ["new-key", TOKEN_KEY]  # current, then previous (within the overlap)
    hooks = WebhookReceiver(store, workflow, lambda: keys, lambda: [])
    assert hooks.receive(JOB_ID, token(), None, payload("PROCESSING")).applied
    keys.pop()  # the overlap is over
    assert rejected(lambda: hooks.receive(JOB_ID, token(), None, payload("PROCESSING"))).status_code == 403
