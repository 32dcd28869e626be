"""The media bucket: what the pipeline reads (inputs, manifests) and writes (outputs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol
from urllib.parse import urlencode

from pydantic import BaseModel

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, TagTypeDef

MAX_MANIFEST_BYTES = 256 * 1024


class ObjectInfo(BaseModel):
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int = 0
    last_modified: str | None = None  # ISO 8601, UTC


class Storage(Protocol):
    bucket: str

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None: ...

    def list_objects(self, prefix: str) -> list[ObjectInfo]: ...

    def read(
        self, key: str, version_id: str | None = None, *, max_bytes: int = MAX_MANIFEST_BYTES
    ) -> bytes: ...

    def read_range(self, key: str, version_id: str | None, start: int, end: int) -> bytes:
        """Bytes `start` to `end` (inclusive) of one object version."""
        ...

    def presign_get(self, key: str, version_id: str | None, expires_seconds: int) -> str: ...

    def put_json(self, key: str, document: dict[str, Any]) -> None: ...

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None: ...

    def upload(
        self,
        key: str,
        body: BinaryIO,
        *,
        content_type: str,
        metadata: dict[str, str],
        tags: dict[str, str] | None = None,
    ) -> ObjectInfo: ...

    def start_multipart(
        self, key: str, *, content_type: str, metadata: dict[str, str]
    ) -> MultipartUpload: ...


class MultipartUpload(Protocol):
    """One multipart upload in progress: parts in order, then `complete` or `abort`."""

    def upload_part(self, number: int, data: bytes) -> None: ...

    def complete(self, tags: dict[str, str]) -> ObjectInfo:
        """Assemble the parts and tag the object with `tags`: values, such as the whole object's
        checksum, that were not known when the upload started."""
        ...

    def abort(self) -> None: ...


class TooLargeError(ValueError):
    pass


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class S3Storage:
    def __init__(self, bucket: str, client: S3Client | None = None) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            # SigV4 everywhere, so presigned URLs work in every region.
            client = boto3.client("s3", config=Config(signature_version="s3v4"))
        self._s3 = client
        self.bucket = bucket

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        extra: dict[str, Any] = {"VersionId": version_id} if version_id else {}
        try:
            answer = self._s3.head_object(Bucket=self.bucket, Key=key, **extra)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code in {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}:
                return None
            if version_id and code in {"400", "InvalidArgument"}:
                return None  # S3's answer to a version id that is not one: no such version
            raise
        return ObjectInfo(
            key=key,
            version_id=answer.get("VersionId"),
            etag=answer.get("ETag", "").strip('"') or None,
            size=answer.get("ContentLength", 0),
            last_modified=_iso(answer.get("LastModified")),
        )

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend(
                ObjectInfo(
                    key=item["Key"], etag=item.get("ETag", "").strip('"') or None, size=item.get("Size", 0)
                )
                for item in page.get("Contents", [])
            )
        return found

    def read(self, key: str, version_id: str | None = None, *, max_bytes: int = MAX_MANIFEST_BYTES) -> bytes:
        extra: dict[str, Any] = {"VersionId": version_id} if version_id else {}
        answer = self._s3.get_object(Bucket=self.bucket, Key=key, **extra)
        if answer.get("ContentLength", 0) > max_bytes:
            raise TooLargeError(f"{key} is {answer['ContentLength']} bytes; the limit is {max_bytes}")
        return answer["Body"].read()

    def read_range(self, key: str, version_id: str | None, start: int, end: int) -> bytes:
        extra: dict[str, Any] = {"VersionId": version_id} if version_id else {}
        answer = self._s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}", **extra)
        return answer["Body"].read()

    def presign_get(self, key: str, version_id: str | None, expires_seconds: int) -> str:
        params = {"Bucket": self.bucket, "Key": key} | ({"VersionId": version_id} if version_id else {})
        return self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_seconds)

    def put_json(self, key: str, document: dict[str, Any]) -> None:
        self._s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(document, indent=2, ensure_ascii=False).encode(),
            ContentType="application/json",
        )

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def upload(
        self,
        key: str,
        body: BinaryIO,
        *,
        content_type: str,
        metadata: dict[str, str],
        tags: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """One PutObject (S3 checks the body against its SHA-256). For bodies that fit in memory:
        large ones go through `start_multipart`."""
        tagging: dict[str, Any] = {"Tagging": urlencode(tags)} if tags else {}
        answer = self._s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body.read(),
            ContentType=content_type,
            Metadata=metadata,
            ChecksumAlgorithm="SHA256",
            **tagging,
        )
        info = self.head(key, answer.get("VersionId"))
        if info is None:
            raise RuntimeError(f"s3://{self.bucket}/{key} is missing right after its upload")
        return info

    def start_multipart(self, key: str, *, content_type: str, metadata: dict[str, str]) -> S3MultipartUpload:
        return S3MultipartUpload(self, key, content_type, metadata)


class S3MultipartUpload:
    """A multipart upload to the media bucket. S3 takes an object's metadata when the upload starts;
    what is only known at the end (the whole object's SHA-256) becomes object tags on completion,
    which changes no bytes and writes no second version."""

    def __init__(self, storage: S3Storage, key: str, content_type: str, metadata: dict[str, str]) -> None:
        self._storage, self._s3, self.key = storage, storage._s3, key
        self.upload_id = self._s3.create_multipart_upload(
            Bucket=storage.bucket, Key=key, ContentType=content_type, Metadata=metadata
        )["UploadId"]
        self._parts: list[CompletedPartTypeDef] = []

    def upload_part(self, number: int, data: bytes) -> None:
        answer = self._s3.upload_part(
            Bucket=self._storage.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def complete(self, tags: dict[str, str]) -> ObjectInfo:
        bucket = self._storage.bucket
        done = self._s3.complete_multipart_upload(
            Bucket=bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": sorted(self._parts, key=lambda part: part["PartNumber"])},
        )
        version_id = done.get("VersionId")
        if tags:
            tag_set: list[TagTypeDef] = [{"Key": name, "Value": value} for name, value in tags.items()]
            where: dict[str, Any] = {"VersionId": version_id} if version_id else {}
            self._s3.put_object_tagging(Bucket=bucket, Key=self.key, Tagging={"TagSet": tag_set}, **where)
        info = self._storage.head(self.key, version_id)
        if info is None:
            raise RuntimeError(f"s3://{bucket}/{self.key} is missing right after its upload")
        return info

    def abort(self) -> None:
        self._s3.abort_multipart_upload(Bucket=self._storage.bucket, Key=self.key, UploadId=self.upload_id)
