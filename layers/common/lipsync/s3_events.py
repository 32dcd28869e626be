"""S3 event notifications as they arrive through SQS.

Our own lenient models rather than Powertools' parser models: those require fields
(userIdentity, requestParameters, ...) that test events and some producers omit.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _S3Object(_Lenient):
    key: str
    size: int | None = None
    etag: str | None = Field(default=None, alias="eTag")
    version_id: str | None = Field(default=None, alias="versionId")


class _S3Bucket(_Lenient):
    name: str


class _S3Entity(_Lenient):
    bucket: _S3Bucket
    object: _S3Object


class _S3Record(_Lenient):
    event_name: str = Field(alias="eventName")
    event_time: str | None = Field(default=None, alias="eventTime")
    s3: _S3Entity


class _S3Notification(_Lenient):
    records: list[_S3Record] = Field(default_factory=list, alias="Records")
    event: str | None = Field(default=None, alias="Event")  # "s3:TestEvent" when notifications are configured


class ObjectCreated(BaseModel):
    """One created object, with its key decoded."""

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    event_time: str | None = None  # when S3 says the object was created (ISO 8601): arrival order


def created_objects(message_body: str) -> list[ObjectCreated]:
    """The ObjectCreated records in one SQS message body; test events and other events yield nothing."""
    notification = _S3Notification.model_validate_json(message_body)
    return [
        ObjectCreated(
            bucket=record.s3.bucket.name,
            # S3 URL-encodes keys with '+' for spaces (moto also encodes '/'); unquote_plus undoes both.
            key=unquote_plus(record.s3.object.key),
            version_id=record.s3.object.version_id,
            etag=(record.s3.object.etag or "").strip('"') or None,
            event_time=record.event_time,
        )
        for record in notification.records
        if record.event_name.startswith("ObjectCreated:")
    ]
