"""S3 notifications (as SQS message bodies) -> the created objects, keys decoded."""

import json
from typing import Any

import pytest

from lipsync.s3_events import ObjectCreated, created_objects


def record(
    key: str,
    *,
    event_name: str = "ObjectCreated:Put",
    bucket: str = "media-bucket",
    etag: str | None = '"0123abcd"',
    version_id: str | None = "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY",
) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key, "size": 10}
    if etag is not None:
        obj["eTag"] = etag
    if version_id is not None:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": event_name,
        "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"}, "object": obj},
    }


def body(*records: dict[str, Any]) -> str:
    return json.dumps({"Records": list(records)})


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("inputs/clip.mp4", "inputs/clip.mp4"),
        ("inputs/my+clip+1.mp4", "inputs/my clip 1.mp4"),  # S3 sends spaces as '+'
        ("inputs%2Fcampaign%2Fclip.mp4", "inputs/campaign/clip.mp4"),  # moto also encodes '/'
        ("inputs/caf%C3%A9.mp4", "inputs/café.mp4"),
        ("inputs/a/b/c/deep+name.wav", "inputs/a/b/c/deep name.wav"),
        ("inputs/1%2B1%3D2.wav", "inputs/1+1=2.wav"),  # a literal '+' arrives as %2B
    ],
)
def test_keys_are_decoded_with_unquote_plus(encoded: str, decoded: str) -> None:
    (created,) = created_objects(body(record(encoded)))
    assert created.key == decoded


def test_a_record_becomes_an_object_created_with_etag_unquoted_and_version_kept() -> None:
    assert created_objects(body(record("inputs/a.mp4"))) == [
        ObjectCreated(
            bucket="media-bucket",
            key="inputs/a.mp4",
            version_id="3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY",
            etag="0123abcd",
        )
    ]


def test_etag_and_version_may_be_missing() -> None:
    (created,) = created_objects(body(record("inputs/a.mp4", etag=None, version_id=None)))
    assert (created.etag, created.version_id) == (None, None)


def test_unquoted_etag_is_kept_as_is() -> None:
    (created,) = created_objects(body(record("inputs/a.mp4", etag="abc")))
    assert created.etag == "abc"


def test_the_s3_test_event_yields_nothing() -> None:
    test_event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-11-25T00:00:00.000Z",
        "Bucket": "media-bucket",
        "RequestId": "r",
        "HostId": "h",
    }
    assert created_objects(json.dumps(test_event)) == []


@pytest.mark.parametrize(
    "event_name",
    [
        "ObjectRemoved:Delete",
        "ObjectRemoved:DeleteMarkerCreated",
        "ObjectRestore:Completed",
        "LifecycleExpiration:Delete",
    ],
)
def test_events_other_than_object_created_yield_nothing(event_name: str) -> None:
    assert created_objects(body(record("inputs/a.mp4", event_name=event_name))) == []


@pytest.mark.parametrize(
    "event_name",
    [
        "ObjectCreated:Put",
        "ObjectCreated:Post",
        "ObjectCreated:Copy",
        "ObjectCreated:CompleteMultipartUpload",
    ],
)
def test_every_kind_of_object_created_counts(event_name: str) -> None:
    assert len(created_objects(body(record("inputs/a.mp4", event_name=event_name)))) == 1


def test_several_records_keep_their_order_and_skip_other_events() -> None:
    message = body(
        record("inputs/a.mp4"),
        record("inputs/old.mp4", event_name="ObjectRemoved:Delete"),
        record("jobs/b.json", bucket="other"),
    )
    assert [(c.bucket, c.key) for c in created_objects(message)] == [
        ("media-bucket", "inputs/a.mp4"),
        ("other", "jobs/b.json"),
    ]
