"""Files in, statuses back: S3 -> SQS -> intake -> the job queue -> dispatch, and the webhook
receiver, on the one-machine stack."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from lipsync.syncso.webhook_auth import job_token, sign
from tests.e2e.conftest import WEBHOOK_SECRET, Pipeline

pytestmark = pytest.mark.integration


def test_a_pair_makes_exactly_one_post_with_the_pipeline_webhook(pipeline: Pipeline) -> None:
    name = pipeline.drop_pair("clip")
    job = pipeline.wait_job(name)
    assert job["status"] == "COMPLETED"
    (post,) = pipeline.generation_posts()
    assert post["headers"]["idempotency-key"] == f"{job['jobId']}.1"
    assert post["body"]["model"] == "lipsync-2"
    assert post["body"]["options"] == {"sync_mode": "bounce"}
    assert (
        post["body"]["webhookUrl"]
        == f"{pipeline.stack.state['api_url']}/webhooks/sync/{job['jobId']}?token=***"
    )
    assert [item["type"] for item in post["body"]["input"]] == ["video", "audio"]
    assert all("X-Amz-Signature=***" in item["url"] for item in post["body"]["input"])


def test_a_manifest_makes_exactly_one_post_with_its_fields(pipeline: Pipeline) -> None:
    pipeline.put(f"media/{pipeline.prefix}/face.mp4", pipeline.media.video)
    pipeline.put(f"media/{pipeline.prefix}/voice.wav", pipeline.media.audio)
    manifest = {
        "model": "lipsync-2-pro",
        "input": [
            {"type": "video", "url": f"media/{pipeline.prefix}/face.mp4"},
            {"type": "audio", "url": f"s3://{pipeline.bucket}/media/{pipeline.prefix}/voice.wav"},
        ],
        "options": {"temperature": 0.3, "pads": [0, 5, 0, 0]},
        "outputFileName": f"{pipeline.prefix}_final",
    }
    name = pipeline.drop_manifest("campaign", manifest)
    job = pipeline.wait_job(name)
    assert job["status"] == "COMPLETED"
    (post,) = pipeline.generation_posts()
    body = post["body"]
    assert body["model"] == "lipsync-2-pro"
    assert body["options"] == {"sync_mode": "bounce", "temperature": 0.3, "pads": [0, 5, 0, 0]}
    assert body["outputFileName"] == f"{pipeline.prefix}_final"
    assert job["outputKey"] == f"outputs/{pipeline.prefix}_final.mp4"
    assert job["warnings"] == ["legacy options passed through unchanged: pads"]


def test_five_duplicate_deliveries_of_one_event_make_one_post(pipeline: Pipeline) -> None:
    name = pipeline.drop_pair("dupes")
    job = pipeline.wait_job(name)
    video_key = f"inputs/{name}.mp4"
    version = pipeline.s3.head_object(Bucket=pipeline.bucket, Key=video_key)
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": pipeline.bucket},
            "object": {"key": video_key.replace(" ", "+"), "eTag": version["ETag"].strip('"')},
        },
    }
    sqs = pipeline.stack.client("sqs")
    for _ in range(5):
        sqs.send_message(
            QueueUrl=pipeline.stack.state["submit_queue_url"], MessageBody=json.dumps({"Records": [record]})
        )
    pipeline.stack.wait_idle(timeout=30)
    assert len(pipeline.generation_posts()) == 1
    assert [j["jobId"] for j in pipeline.jobs(name)] == [job["jobId"]]
    history = pipeline.wait_job(name)["history"]
    assert [entry["status"] for entry in history].count("PENDING") == 1


def test_429s_and_uncertain_answers_recover_with_one_generation_and_the_right_keys(
    pipeline: Pipeline,
) -> None:
    pipeline.stack.emulator.set_scenario(
        {
            "createFailures": [
                {"status": 429, "errorCode": "rate_limit_exceeded", "count": 2, "retryAfterSeconds": 1},
                {"status": 429, "errorCode": "concurrency_limit_reached", "count": 1, "retryAfterSeconds": 1},
                {"status": 500, "errorCode": "internal_error", "count": 1},
                {"status": 503, "afterCreate": True, "count": 1},  # created, but the answer is lost
            ],
        }
    )
    name = pipeline.drop_pair("storm")
    waiting = pipeline.wait_job(
        name, until=lambda job: any(e.get("detail") == "rate_limit" for e in job["history"]), timeout=30
    )
    assert waiting["status"] in ("QUEUED", "SUBMITTING", "PENDING")  # waiting its turn again, not failed
    job = pipeline.wait_job(name, timeout=60)
    assert job["status"] == "COMPLETED"
    posts = pipeline.generation_posts()
    assert [post["status"] for post in posts] == [429, 429, 429, 500, 503]
    # A definite "no" (429) gets a fresh body and key next time; an uncertain answer (500) is retried
    # with the same key and bytes, and the 503 that names the generation is adopted: no 201 needed.
    keys = [post["headers"]["idempotency-key"] for post in posts]
    assert keys == [f"{job['jobId']}.{n}" for n in (1, 2, 3, 4, 4)]
    assert posts[3]["body"] == posts[4]["body"]
    generations = httpx.get(
        f"{pipeline.stack.emulator.url}/v2/generations", headers={"x-api-key": "sk-emulator"}
    ).json()
    assert [generation["id"] for generation in generations] == [job["generationId"]]
    assert [g["generationId"] for g in job["generations"]] == [job["generationId"]]


def test_a_409_naming_the_generation_is_adopted(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario(
        {
            "createFailures": [
                {"status": 409, "errorCode": "IDEMPOTENCY_REQUEST_IN_PROGRESS", "afterCreate": True}
            ]
        }
    )
    name = pipeline.drop_pair("conflict")
    job = pipeline.wait_job(name)
    assert job["status"] == "COMPLETED"
    assert [post["status"] for post in pipeline.generation_posts()] == [409]
    assert pipeline.document(name)["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("case", "field", "reason"),
    [
        ("not-json", None, "is not valid JSON: Expecting"),
        ("not-an-object", None, "must hold a JSON object"),
        ("webhook-url", "webhookUrl", "the pipeline sets the webhook itself"),
        ("missing-object", "input.0.url", "does not exist"),
        ("other-bucket", "input.0.url", "names bucket 'someone-elses-bucket'"),
        ("http-url", "input.1.url", "use an https:// URL"),
        ("bad-temperature", "options.temperature", "less than or equal to 1"),
        ("three-inputs", None, "input needs exactly one audio or text item, got 2"),
        ("bad-name", "name", "must be a relative name"),
    ],
)
def test_bad_manifests_get_an_error_document_and_no_api_call(
    pipeline: Pipeline, case: str, field: str | None, reason: str
) -> None:
    video_key = f"media/{pipeline.prefix}/v.mp4"
    pipeline.put(video_key, pipeline.media.video)
    good: dict[str, Any] = {
        "input": [
            {"type": "video", "url": video_key},
            {"type": "audio", "url": "https://media.example/a.wav"},
        ]
    }
    bodies: dict[str, Any] = {
        "not-json": b'{"model": "lipsync-2",, }',
        "not-an-object": b"[1, 2]",
        "webhook-url": good | {"webhookUrl": "https://attacker.example/hook"},
        "missing-object": {"input": [{"type": "video", "url": "media/nope.mp4"}, good["input"][1]]},
        "other-bucket": {
            "input": [{"type": "video", "url": "s3://someone-elses-bucket/v.mp4"}, good["input"][1]]
        },
        "http-url": {"input": [good["input"][0], {"type": "audio", "url": "http://media.example/a.wav"}]},
        "bad-temperature": good | {"options": {"temperature": 5}},
        "three-inputs": {"input": [*good["input"], good["input"][1]]},
        "bad-name": good | {"name": "../escape"},
    }
    body = bodies[case]
    name = pipeline.drop_manifest(case, body if isinstance(body, bytes) else json.dumps(body).encode())
    job = pipeline.wait_job(name)
    assert job["status"] == "INVALID"
    document = pipeline.document(name)
    assert document["status"] == "INVALID"
    assert document["error"].get("field") == field
    assert reason in document["error"]["message"]
    assert pipeline.generation_posts() == []
    assert pipeline.s3.head_object(Bucket=pipeline.bucket, Key=f"jobs/{name}.json")  # never touched


def test_clashing_pair_files_and_unsupported_files_get_error_documents(pipeline: Pipeline) -> None:
    name = f"{pipeline.prefix}/clash"
    pipeline.put(f"inputs/{name}.mp4", pipeline.media.video)
    pipeline.put(f"inputs/{name}.mov", pipeline.media.video)
    pipeline.put(f"inputs/{name}.wav", pipeline.media.audio)
    job = pipeline.wait_job(name)
    assert job["status"] == "INVALID"
    message = pipeline.document(name)["error"]["message"]
    assert f"inputs/{name}.mov and inputs/{name}.mp4 are both videos" in message

    pipeline.put(f"inputs/{pipeline.prefix}/notes.txt", b"hello")
    note = pipeline.wait_job(f"{pipeline.prefix}/notes.txt")  # named after the file: no clash with a job
    assert "inputs/" in pipeline.document(note)["error"]["message"]
    assert "is neither a video" in pipeline.document(note)["error"]["message"]
    assert pipeline.generation_posts() == []
    for suffix in ("mp4", "mov", "wav"):
        assert pipeline.s3.head_object(Bucket=pipeline.bucket, Key=f"inputs/{name}.{suffix}")


def test_a_permanent_api_refusal_is_rejected_with_the_api_error(pipeline: Pipeline) -> None:
    manifest = {
        "input": [
            {"type": "video", "url": "https://127.0.0.1:9/unreachable.mp4"},
            {"type": "audio", "url": "https://127.0.0.1:9/unreachable.wav"},
        ]
    }
    name = pipeline.drop_manifest("unreachable", manifest)
    job = pipeline.wait_job(name)
    assert job["status"] == "REJECTED"
    document = pipeline.document(name)
    assert document["error"]["code"] == "generation_input_video_inaccessible"
    assert "inaccessible" in document["error"]["message"]
    assert [post["status"] for post in pipeline.generation_posts()] == [422]


def test_keys_with_spaces_and_unicode(pipeline: Pipeline) -> None:
    name = pipeline.drop_pair("dir one/Café señor ñ+plus")
    job = pipeline.wait_job(name)
    assert job["status"] == "COMPLETED"
    assert job["outputKey"] == f"outputs/{name}.mp4"
    assert pipeline.s3.head_object(Bucket=pipeline.bucket, Key=f"outputs/{name}.mp4")["ContentLength"] > 0
    assert pipeline.document(name)["name"] == name


def test_webhook_deliveries_land_in_dynamodb_and_forged_ones_change_nothing(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario({"webhook": "drop", "outcome": "NEVER"})
    name = pipeline.drop_pair("forged")
    job = pipeline.wait_job(name, until=lambda j: "generationId" in j and "taskToken" in j.get("attempt", {}))
    url = f"{pipeline.stack.state['api_url']}/webhooks/sync/{job['jobId']}"
    token = job_token(pipeline.token_key(), job["jobId"])
    body = json.dumps(
        {"id": job["generationId"], "status": "COMPLETED", "outputUrl": "https://evil.example/x.mp4"}
    )

    def deliver(query: str, payload: str = body, signature: str | None = None, **headers: str) -> int:
        signed = (
            signature if signature is not None else sign(WEBHOOK_SECRET, payload.encode(), int(time.time()))
        )
        response = httpx.post(
            f"{url}{query}", content=payload, headers={"Sync-Signature": signed, **headers}, timeout=10
        )
        return response.status_code

    forged = {
        "no token": deliver(""),
        "wrong token": deliver("?token=" + "0" * 64),
        "another job's token": deliver("?token=" + job_token(pipeline.token_key(), "another-job")),
        "no signature": deliver(f"?token={token}", signature=""),
        "bad signature": deliver(
            f"?token={token}", signature=sign("whsec_wrong", body.encode(), int(time.time()))
        ),
        "stale timestamp": deliver(
            f"?token={token}", signature=sign(WEBHOOK_SECRET, body.encode(), int(time.time()) - 3600)
        ),
        "not json": deliver(f"?token={token}", payload="not json"),
        "oversized": deliver(
            f"?token={token}", payload=json.dumps({"id": "x", "status": "COMPLETED", "pad": "x" * 300_000})
        ),
        "other generation": deliver(
            f"?token={token}", payload=json.dumps({"id": "someone-else", "status": "COMPLETED"})
        ),
    }
    assert forged == {
        "no token": 401,
        "wrong token": 403,
        "another job's token": 403,
        "no signature": 401,
        "bad signature": 401,
        "stale timestamp": 401,
        "not json": 400,
        "oversized": 413,
        "other generation": 409,
    }
    unknown_token = job_token(pipeline.token_key(), "no-such-job")
    unknown = httpx.post(
        f"{pipeline.stack.state['api_url']}/webhooks/sync/no-such-job?token={unknown_token}",
        content=body,
        headers={"Sync-Signature": sign(WEBHOOK_SECRET, body.encode(), int(time.time()))},
    )
    assert unknown.status_code == 404
    unchanged = pipeline.jobs(name)[0]
    assert unchanged["status"] == job["status"]
    assert unchanged["history"] == job["history"]

    # A genuine delivery (valid token and signature) is recorded as a signal, never as a status.
    processing = json.dumps({"id": job["generationId"], "status": "PROCESSING"})
    assert deliver(f"?token={token}", payload=processing) == 200
    updated = pipeline.wait_job(name, until=lambda j: j.get("webhookStatus") == "PROCESSING")
    assert updated["status"] == job["status"]
    assert updated["history"] == job["history"]
    assert updated["webhookSignature"] == "raw"
    assert deliver(f"?token={token}", payload=processing) == 200  # a duplicate: accepted, changes nothing
    assert pipeline.jobs(name)[0]["history"] == updated["history"]


def test_status_routes_need_iam_and_hide_secrets(pipeline: Pipeline) -> None:
    name = pipeline.drop_pair("status")
    job = pipeline.wait_job(name)
    anonymous = httpx.get(f"{pipeline.stack.state['api_url']}/jobs/{job['jobId']}")
    assert anonymous.status_code == 403
    answer = pipeline.signed_get(f"/jobs/{job['jobId']}")
    assert answer.status_code == 200
    view = answer.json()
    assert view["jobId"] == job["jobId"]
    assert view["status"] == "COMPLETED"
    for private in (
        "request",
        "attempt",
        "requestBody",
        "idempotencyKey",
        "leaseId",
        "taskToken",
        "outputUrl",
    ):
        assert private not in view
    assert "X-Amz-Signature" not in answer.text
    assert "token=" not in answer.text
    assert pipeline.signed_get("/jobs/no-such-job").status_code == 404

    first = pipeline.signed_get("/jobs?status=COMPLETED&limit=1").json()
    assert len(first["jobs"]) == 1
    assert first["nextCursor"]
    second = pipeline.signed_get(f"/jobs?status=COMPLETED&limit=1&cursor={first['nextCursor']}").json()
    assert second["jobs"][0]["jobId"] != first["jobs"][0]["jobId"]
    assert pipeline.signed_get("/jobs?limit=1000").status_code == 400
    assert pipeline.signed_get("/jobs?cursor=garbage").status_code == 400
    queue = pipeline.signed_get("/queue").json()
    assert set(queue) >= {"queued", "inFlight", "slots", "createRatePerMinute", "etaToDrainSeconds"}
    assert queue["slots"] == 3
