"""The streaming output copy: part boundaries, one PutObject for small outputs, the checksum, abort on
any failure, redirects, a fresh URL on 4xx; and S3Storage's multipart upload on moto (in process)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import boto3
import httpx
import pytest

from lipsync.generation import output_copy
from lipsync.generation.output_copy import (
    MAX_REDIRECTS,
    MiB,
    OutputUnavailableError,
    PartWriter,
    copy_output,
    part_size_for,
)
from lipsync.storage import S3Storage, Storage
from tests.fake_multipart import FakeMultipartUpload
from tests.fakes import FakeStorage

KEY = "outputs/campaign/a.mp4"
URL = "https://cdn.sync.example/out.mp4?sig=first"
FRESH = "https://cdn.sync.example/out.mp4?sig=fresh"
META = {"job-id": "job-1", "generation-id": "gen-1", "model": "lipsync-2"}
PART = 5 * MiB  # S3's smallest part, so the tests stay small


def body_of(size: int) -> bytes:
    block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


class MultipartStorage(FakeStorage):
    """FakeStorage that records the multipart uploads it starts; `fail_part` makes that part fail."""

    def __init__(self, fail_part: int | None = None) -> None:
        super().__init__()
        self.uploads: list[FakeMultipartUpload] = []
        self.fail_part = fail_part

    def start_multipart(
        self, key: str, *, content_type: str, metadata: dict[str, str]
    ) -> FakeMultipartUpload:
        upload = FakeMultipartUpload(self, key, content_type, metadata)
        if self.fail_part is not None:
            real, failing = upload.upload_part, self.fail_part

            def upload_part(number: int, data: bytes) -> None:
                if number == failing:
                    raise ConnectionError("S3 reset the connection")
                real(number, data)

            upload.upload_part = upload_part  # type: ignore[method-assign]
        self.uploads.append(upload)
        return upload


class Chunks(httpx.SyncByteStream):
    """A body sent in uneven chunks, optionally breaking off after `break_after` bytes."""

    def __init__(self, data: bytes, chunk: int = 777_777, break_after: int | None = None) -> None:
        self.data, self.chunk, self.break_after = data, chunk, break_after

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), self.chunk):
            if self.break_after is not None and start >= self.break_after:
                raise httpx.ReadError("connection reset")
            yield self.data[start : start + self.chunk]


Route = httpx.Response | Callable[[httpx.Request], httpx.Response]


class Cdn:
    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes, self.requested = routes, []  # type: dict[str, Route], list[str]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requested.append(str(request.url))
        route = self.routes.get(str(request.url), httpx.Response(404))
        return route(request) if callable(route) else route

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self), max_redirects=MAX_REDIRECTS)


def ok(data: bytes, chunk: int = 777_777, break_after: int | None = None) -> Route:
    return lambda _request: httpx.Response(200, stream=Chunks(data, chunk, break_after))


def copy(
    cdn: Cdn, storage: Storage, url: str | None = URL, fresh: list[str] | None = None
) -> output_copy.CopiedOutput:
    asked = fresh if fresh is not None else []

    def fresh_url() -> str:
        asked.append(FRESH)
        return FRESH

    return copy_output(
        cdn.client(), url, fresh_url, storage, KEY, content_type="video/mp4", metadata=META, part_size=PART
    )


# ---------------------------------------------------------------------------- parts


@pytest.mark.parametrize(
    ("size", "parts"),
    [(2 * PART + 3, [PART, PART, 3]), (2 * PART, [PART, PART]), (PART + 1, [PART, 1])],
    ids=["remainder", "exact-multiple", "one-byte-over"],
)
def test_the_output_is_cut_into_parts_of_the_part_size(size: int, parts: list[int]) -> None:
    data, storage = body_of(size), MultipartStorage()
    copied = copy(Cdn({URL: ok(data)}), storage)
    (upload,) = storage.uploads
    assert upload.parts == [(number, length) for number, length in enumerate(parts, start=1)]
    assert upload.state == "completed"
    assert upload.metadata == META  # what S3 gets at CreateMultipartUpload
    stored = storage.objects[KEY]
    assert stored.body == data
    assert stored.content_type == "video/mp4"
    assert (stored.metadata, stored.tags) == (META, {"sha256": hashlib.sha256(data).hexdigest()})
    assert (copied.sha256, copied.parts, copied.info.size) == (
        hashlib.sha256(data).hexdigest(),
        len(parts),
        size,
    )


@pytest.mark.parametrize("size", [0, 1, PART], ids=["empty", "one-byte", "exactly-one-part"])
def test_an_output_that_fits_in_one_part_is_one_put(size: int) -> None:
    data, storage = body_of(size), MultipartStorage()
    copied = copy(Cdn({URL: ok(data, chunk=4096)}), storage)
    assert storage.uploads == []
    assert storage.objects[KEY].body == data
    assert storage.objects[KEY].metadata == META
    assert storage.objects[KEY].tags == {"sha256": hashlib.sha256(data).hexdigest()}
    assert (copied.parts, copied.info.version_id) == (0, storage.objects[KEY].version_id)


def test_at_most_one_part_is_in_flight_while_the_next_fills() -> None:
    data, storage = body_of(4 * PART), MultipartStorage()
    in_flight, most = [0], [0]
    start = storage.start_multipart

    def start_counting(key: str, *, content_type: str, metadata: dict[str, str]) -> FakeMultipartUpload:
        upload = start(key, content_type=content_type, metadata=metadata)
        real = upload.upload_part

        def upload_part(number: int, data: bytes) -> None:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            real(number, data)
            in_flight[0] -= 1

        upload.upload_part = upload_part  # type: ignore[method-assign]
        return upload

    storage.start_multipart = start_counting  # type: ignore[method-assign]
    copy(Cdn({URL: ok(data)}), storage)
    assert (most[0], len(storage.uploads[0].parts)) == (1, 4)


@pytest.mark.parametrize(
    ("length", "size"),
    [
        (None, 16 * MiB),
        (2 * 1024**3, 16 * MiB),
        (50 * 1024**3, 16 * MiB),  # 3,200 parts
        (200 * 1024**3, 21 * MiB),  # 16 MiB would need 12,800 parts
    ],
)
def test_the_part_size_keeps_within_ten_thousand_parts(length: int | None, size: int) -> None:
    assert part_size_for(length) == size
    if length:
        assert -(-length // size) <= 10_000


def test_an_output_beyond_s3s_largest_object_is_refused() -> None:
    with pytest.raises(OutputUnavailableError):
        part_size_for(10_000 * 5 * 1024**3 + 1)


def test_an_unannounced_output_that_outgrows_ten_thousand_parts_is_aborted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(output_copy, "MAX_PARTS", 2)
    storage = MultipartStorage()
    with pytest.raises(OutputUnavailableError, match="more than 2 parts"):
        copy(Cdn({URL: ok(body_of(2 * PART + 1))}), storage)
    assert storage.uploads[0].state == "aborted"
    assert storage.objects == {}


def test_part_sizes_outside_s3s_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        PartWriter(MultipartStorage(), KEY, content_type="video/mp4", metadata={}, part_size=MiB)


# ---------------------------------------------------------------------------- failures abort


def test_a_download_that_breaks_off_aborts_the_upload() -> None:
    storage = MultipartStorage()
    with pytest.raises(httpx.ReadError):
        copy(Cdn({URL: ok(body_of(3 * PART), break_after=2 * PART + 1)}), storage)
    (upload,) = storage.uploads
    assert upload.state == "aborted"
    assert [number for number, _ in upload.parts] in ([1], [1, 2])  # part 2 may be cancelled unsent
    assert storage.objects == {}


def test_a_failed_part_aborts_the_upload_and_raises_its_error() -> None:
    storage = MultipartStorage(fail_part=2)
    with pytest.raises(ConnectionError, match="reset"):
        copy(Cdn({URL: ok(body_of(4 * PART))}), storage)
    assert storage.uploads[0].state == "aborted"
    assert storage.objects == {}


def test_a_failed_last_part_aborts_too() -> None:
    storage = MultipartStorage(fail_part=3)
    with pytest.raises(ConnectionError):
        copy(Cdn({URL: ok(body_of(2 * PART + 10))}), storage)
    assert storage.uploads[0].state == "aborted"


def test_a_5xx_raises_without_asking_for_a_fresh_url() -> None:
    storage, asked = MultipartStorage(), []  # type: MultipartStorage, list[str]
    with pytest.raises(OutputUnavailableError, match="503"):
        copy(Cdn({URL: httpx.Response(503)}), storage, fresh=asked)
    assert (asked, storage.objects) == ([], {})


# ---------------------------------------------------------------------------- URLs


def test_a_redirect_is_followed_to_the_bytes() -> None:
    data, storage = body_of(PART + 99), MultipartStorage()
    target = "https://bucket.storage.example/out.mp4?X-Amz-Signature=x"
    cdn = Cdn({URL: httpx.Response(302, headers={"Location": target}), target: ok(data)})
    copied = copy(cdn, storage)
    assert cdn.requested == [URL, target]
    assert storage.objects[KEY].body == data
    assert copied.sha256 == hashlib.sha256(data).hexdigest()


def test_a_redirect_loop_gives_up_after_a_few_hops() -> None:
    storage = MultipartStorage()
    hops: dict[str, Route] = {
        f"https://cdn.sync.example/{n}": httpx.Response(302, headers={"Location": f"/{n + 1}"})
        for n in range(20)
    }
    cdn = Cdn(hops | {URL: httpx.Response(302, headers={"Location": "/0"})})
    with pytest.raises(httpx.TooManyRedirects):
        copy(cdn, storage)
    assert len(cdn.requested) == MAX_REDIRECTS + 1
    assert storage.objects == {}


@pytest.mark.parametrize("refusal", [403, 404, 410])
def test_a_refused_url_is_replaced_once_by_a_fresh_one(refusal: int) -> None:
    data, storage, asked = body_of(PART + 1), MultipartStorage(), []  # type: bytes, MultipartStorage, list[str]
    cdn = Cdn({URL: httpx.Response(refusal), FRESH: ok(data)})
    copy(cdn, storage, fresh=asked)
    assert (asked, cdn.requested) == ([FRESH], [URL, FRESH])
    assert storage.objects[KEY].body == data


def test_a_redirect_to_an_expired_url_asks_for_a_fresh_one() -> None:
    storage, asked = MultipartStorage(), []  # type: MultipartStorage, list[str]
    expired = "https://bucket.storage.example/out.mp4?X-Amz-Expires=1"
    cdn = Cdn(
        {
            URL: httpx.Response(302, headers={"Location": expired}),
            expired: httpx.Response(403),
            FRESH: ok(b"video"),
        }
    )
    copy(cdn, storage, fresh=asked)
    assert cdn.requested == [URL, expired, FRESH]
    assert storage.objects[KEY].body == b"video"


def test_a_missing_url_asks_for_a_fresh_one_and_two_refusals_raise() -> None:
    storage, asked = MultipartStorage(), []  # type: MultipartStorage, list[str]
    cdn = Cdn({FRESH: httpx.Response(403)})
    with pytest.raises(OutputUnavailableError):
        copy(cdn, storage, url=None, fresh=asked)
    assert (asked, cdn.requested, storage.objects) == ([FRESH], [FRESH], {})


# ---------------------------------------------------------------------------- S3Storage on moto


@pytest.fixture
def s3_storage() -> S3Storage:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="media-bucket")
    s3.put_bucket_versioning(Bucket="media-bucket", VersioningConfiguration={"Status": "Enabled"})
    return S3Storage("media-bucket", s3)


def only_version(storage: S3Storage) -> dict[str, object]:
    s3 = boto3.client("s3", region_name="us-east-1")
    versions = s3.list_object_versions(Bucket=storage.bucket, Prefix=KEY).get("Versions", [])
    assert len(versions) == 1, versions  # tagging writes no second version
    assert s3.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", []) == []
    return dict(s3.head_object(Bucket=storage.bucket, Key=KEY))


@pytest.mark.parametrize("size", [2 * PART + 3, 100], ids=["multipart", "one-put"])
def test_s3_storage_stores_the_stream_with_its_checksum(s3_storage: S3Storage, size: int) -> None:
    data = body_of(size)
    copied = copy(Cdn({URL: ok(data)}), s3_storage)
    head = only_version(s3_storage)
    assert head["Metadata"] == META
    tags = boto3.client("s3", region_name="us-east-1").get_object_tagging(Bucket="media-bucket", Key=KEY)
    assert tags["TagSet"] == [{"Key": "sha256", "Value": hashlib.sha256(data).hexdigest()}]
    assert (head["ContentType"], head["ContentLength"], head["VersionId"]) == (
        "video/mp4",
        size,
        copied.info.version_id,
    )
    got = (
        boto3.client("s3", region_name="us-east-1").get_object(Bucket="media-bucket", Key=KEY)["Body"].read()
    )
    assert got == data


def test_s3_storage_aborts_a_failed_upload(s3_storage: S3Storage) -> None:
    with pytest.raises(httpx.ReadError):
        copy(Cdn({URL: ok(body_of(3 * PART), break_after=2 * PART + 1)}), s3_storage)
    s3 = boto3.client("s3", region_name="us-east-1")
    assert s3.list_multipart_uploads(Bucket="media-bucket").get("Uploads", []) == []
    assert s3.list_object_versions(Bucket="media-bucket").get("Versions", []) == []
