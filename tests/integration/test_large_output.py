"""A large output (a few hundred MB, generated on the fly behind a 302 hop) copied by Finalize's copy
code into a real moto server: the object's size and SHA-256 are right, its tag carries the
checksum, one version is kept, no multipart upload is left, no file is written and the copy's memory
stays at a few part buffers, far below the object's size. `make bench` does the same with >= 2 GB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lipsync.generation.output_copy import PART_SIZE
from tests.large_output import (
    BUCKET,
    KEY,
    MiB,
    SyntheticOutputServer,
    copy_in_child,
    make_bucket,
    s3_client,
    start_moto,
    stored_sha256,
    synthetic_sha256,
)

pytestmark = pytest.mark.integration
SIZE = 192 * MiB + 12_345  # 13 parts of 16 MiB, the last one short


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server, endpoint = start_moto()
    make_bucket(endpoint)
    yield endpoint
    server.stop()


def test_a_large_output_streams_into_s3_with_bounded_memory_and_no_disk(moto_endpoint: str) -> None:
    with SyntheticOutputServer(SIZE) as source:
        report = copy_in_child(moto_endpoint, source.url)
    assert source.requests == ["/redirect", "/output"]
    expected = synthetic_sha256(SIZE)
    assert (report.size, report.sha256, report.parts) == (SIZE, expected, 13)
    size, digest, metadata, tags = stored_sha256(moto_endpoint)
    assert (size, digest) == (SIZE, expected)
    assert metadata == {
        "job-id": "large",
        "generation-id": "gen-large",
        "model": "lipsync-2",
    }
    assert tags == {"sha256": expected}
    s3 = s3_client(moto_endpoint)
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=KEY)["Versions"]
    assert [version["VersionId"] for version in versions] == [report.version_id]
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert report.files_written == ()
    # About two part buffers: one in flight, one filling (measured: 40 MB with 16 MiB parts).
    assert report.tracemalloc_peak < 3 * PART_SIZE, report
    assert report.rss_growth < SIZE // 2, report  # RSS keeps what the allocator holds (measured: 67 MB)
