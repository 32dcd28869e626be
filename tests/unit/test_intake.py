"""Intake over the real job store (moto): which uploads make a job, which job, and under which names.

Issue 14's items 4 (stale redeliveries), 9 (output names), 11 (bad manifests) and 15 (identical
re-uploads) are each a test here.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from lipsync.generation.lifecycle import Slots
from lipsync.jobs import transitions as t
from lipsync.jobs.model import Job, JobStatus
from lipsync.jobs.transitions import F, Lane, Move
from lipsync.s3_events import ObjectCreated
from lipsync.sweep import sweep
from tests.fakes import FakeStorage
from tests.unit.test_dispatch import World, at


def handle(world: World, event: ObjectCreated) -> tuple[str, Job | None]:
    outcome, job = world.intake().handle(event)
    return outcome, job


def upload_pair(
    world: World, name: str, video: bytes = b"video", audio: bytes = b"audio"
) -> list[ObjectCreated]:
    """Both files of a pair, as S3 announces them (one event per file, for its version)."""
    world.storage.put(f"inputs/{name}.mp4", video)
    first = world.storage.event(f"inputs/{name}.mp4")
    world.storage.put(f"inputs/{name}.wav", audio)
    return [first, world.storage.event(f"inputs/{name}.wav")]


def finish(world: World, job: Job, status: str) -> Job:
    """The job as a dispatcher and a lifecycle would leave it: ended with `status`, announced."""
    stored = world.store.get(job.job_id)
    assert stored is not None
    stored = world.store.put(stored.model_copy(update={"status": "PROCESSING", "generation_id": "gen-x"}))
    move = Move.STOP if status == JobStatus.STOPPED else Move.FINISH
    ended = world.store.apply(t.change(stored, move, status, "poll", fields={F.FINALIZED_AT: at(9)}))
    assert ended is not None
    world.store.apply(t.note(ended.job_id, {}, clear=[F.LANE]))
    return ended


def jobs_named(world: World, name: str) -> list[Job]:
    return [job for job in world.jobs() if job.name == name]


# ---------------------------------------------------------------------------- stale events (item 4)


def test_redeliveries_after_a_reupload_make_only_the_new_pair(world: World) -> None:
    """Issue 14, item 4: a pair's first delivery failed and came back after the user had uploaded
    the pair again; each stale event paired with its partner's latest version: two more paid jobs."""
    old = upload_pair(world, "clip", b"video v1", b"audio v1")
    new = upload_pair(world, "clip", b"video v2", b"audio v2")
    outcomes = [handle(world, event)[0] for event in (*old, *new, *old)]
    assert outcomes[:2] == ["stale", "stale"]  # v1's events, redelivered after v2 landed
    assert outcomes[-2:] == ["stale", "stale"]
    (job,) = jobs_named(world, "clip")
    assert [ref.version_id for ref in job.inputs] == [
        world.storage.objects["inputs/clip.mp4"].version_id,
        world.storage.objects["inputs/clip.wav"].version_id,
    ]


def test_an_event_for_a_deleted_object_is_ignored(world: World) -> None:
    (event, _) = upload_pair(world, "gone")
    del world.storage.objects["inputs/gone.mp4"]
    assert handle(world, event) == ("ignored", None)


# ---------------------------------------------------------------------------- the same bytes (item 15)


def test_the_same_pair_uploaded_twice_is_one_job(world: World) -> None:
    """Issue 14, item 15: identity came from the object version, so sending the same folder twice
    made new paid jobs and overwrote the outputs."""
    first = upload_pair(world, "clip")
    _, job = handle(world, first[1])
    again = upload_pair(world, "clip")  # the same bytes, new versions
    outcome, same = handle(world, again[1])
    assert outcome == "duplicate"
    assert same is not None
    assert job is not None
    assert same.job_id == job.job_id
    assert len(world.jobs()) == 1


def test_the_same_bytes_after_a_completed_job_are_not_run_again_and_its_document_says_so(
    world: World,
) -> None:
    _, job = handle(world, upload_pair(world, "clip")[1])
    assert job is not None
    finish(world, job, JobStatus.COMPLETED)
    again = upload_pair(world, "clip")
    outcome, noted = handle(world, again[1])
    assert outcome == "done"
    assert noted is not None
    assert noted.job_id == job.job_id
    assert noted.reupload is not None
    assert noted.reupload["count"] == 1
    document = world.storage.documents["outputs/clip.json"]
    assert "not run (or paid for) again" in document["reupload"]["note"]
    assert handle(world, again[1])[0] == "done"  # the same event again: counted once
    assert world.job("clip").reupload == noted.reupload
    assert len(world.jobs()) == 1


@pytest.mark.parametrize("ended", [JobStatus.FAILED, JobStatus.REJECTED, JobStatus.STOPPED])
def test_the_same_bytes_after_a_failed_job_run_it_again_under_its_names(world: World, ended: str) -> None:
    _, job = handle(world, upload_pair(world, "clip")[1])
    assert job is not None
    finish(world, job, ended)
    again = upload_pair(world, "clip")
    outcome, rerun = handle(world, again[1])
    assert outcome == "queued"
    assert rerun is not None
    assert rerun.job_id != job.job_id
    assert (rerun.retry_of, rerun.lineage) == (job.job_id, job.job_id)
    assert (rerun.document_key, rerun.output_key) == ("outputs/clip.json", "outputs/clip.mp4")
    assert rerun.renamed_from is None
    assert world.job_by_id(job.job_id).retried_by == [rerun.job_id]
    # Its events again (both files), and the first upload's events: nothing more.
    assert [handle(world, event)[0] for event in again] == ["duplicate", "duplicate"]
    assert len(world.jobs()) == 2


def test_a_rerun_that_completed_is_not_run_again_by_the_same_bytes(world: World) -> None:
    _, job = handle(world, upload_pair(world, "clip")[1])
    assert job is not None
    finish(world, job, JobStatus.FAILED)
    _, rerun = handle(world, upload_pair(world, "clip")[1])
    assert rerun is not None
    finish(world, rerun, JobStatus.COMPLETED)
    outcome, latest = handle(world, upload_pair(world, "clip")[1])
    assert (outcome, latest.job_id if latest else None) == ("done", rerun.job_id)


def test_changed_bytes_or_a_changed_default_are_a_new_job(world: World) -> None:
    _, job = handle(world, upload_pair(world, "clip")[1])
    _, other = handle(world, upload_pair(world, "clip", audio=b"another take")[1])
    assert job is not None
    assert other is not None
    assert other.job_id != job.job_id


# ---------------------------------------------------------------------------- names (item 9)


def test_a_pair_and_a_manifest_of_the_same_name_never_write_the_same_outputs(world: World) -> None:
    """Issue 14, item 9: inputs/clip.* and jobs/clip.json both wrote outputs/clip.{mp4,json}."""
    _, pair = handle(world, upload_pair(world, "clip")[1])
    world.storage.put("media/v.mp4")
    world.storage.put("media/a.wav")
    manifest = {"input": [{"type": "video", "url": "media/v.mp4"}, {"type": "audio", "url": "media/a.wav"}]}
    world.storage.put("jobs/clip.json", json.dumps(manifest).encode())
    outcome, other = handle(world, world.storage.event("jobs/clip.json"))
    assert outcome == "queued"
    assert pair is not None
    assert other is not None
    assert (pair.document_key, pair.output_key) == ("outputs/clip.json", "outputs/clip.mp4")
    suffix = other.job_id[:8]
    assert (other.document_key, other.output_key) == (
        f"outputs/clip-{suffix}.json",
        f"outputs/clip-{suffix}.mp4",
    )
    assert other.renamed_from == "clip"
    # Its redelivery claims the same distinct names: the same job.
    assert handle(world, world.storage.event("jobs/clip.json")) == (
        "duplicate",
        world.job_by_id(other.job_id),
    )


def test_two_manifests_with_one_output_file_name_get_distinct_videos(world: World) -> None:
    world.storage.put("media/v.mp4")
    world.storage.put("media/a.wav")
    jobs = []
    for stem in ("one", "two"):
        body = {
            "input": [{"type": "video", "url": "media/v.mp4"}, {"type": "audio", "url": "media/a.wav"}],
            "outputFileName": "final",
            "options": {"sync_mode": "loop" if stem == "one" else "cut_off"},
        }
        world.storage.put(f"jobs/{stem}.json", json.dumps(body).encode())
        jobs.append(handle(world, world.storage.event(f"jobs/{stem}.json"))[1])
    first, second = jobs
    assert first is not None
    assert second is not None
    assert first.output_key == "outputs/final.mp4"
    assert second.output_key == f"outputs/final-{second.job_id[:8]}.mp4"
    assert second.document_key == f"outputs/two-{second.job_id[:8]}.json"


def test_a_stray_file_after_a_completed_job_never_replaces_its_document(world: World) -> None:
    _, job = handle(world, upload_pair(world, "clip")[1])
    assert job is not None
    finish(world, job, JobStatus.COMPLETED)
    world.storage.put_json("outputs/clip.json", {"status": "COMPLETED", "jobId": job.job_id})
    world.storage.put("inputs/clip.mp3", b"stray")
    outcome, invalid = handle(world, world.storage.event("inputs/clip.mp3"))
    assert outcome == "invalid"
    assert invalid is not None
    assert invalid.document_key == f"outputs/clip-{invalid.job_id[:8]}.json"
    assert world.storage.documents["outputs/clip.json"] == {"status": "COMPLETED", "jobId": job.job_id}
    assert world.storage.documents[invalid.document_key]["status"] == "INVALID"


# ---------------------------------------------------------------------------- bad manifests (item 11)


def manifest_outcome(world: World, body: bytes, key: str = "jobs/bad.json") -> Job:
    world.storage.put(key, body)
    outcome, job = handle(world, world.storage.event(key))
    assert outcome == "invalid"
    assert job is not None
    assert job.status == JobStatus.INVALID
    assert world.storage.documents[job.document_key]["status"] == "INVALID"
    return job


@pytest.mark.parametrize("depth", [40, 5000, 100_000])
def test_a_deeply_nested_manifest_is_invalid_not_a_crash(world: World, depth: int) -> None:
    """Issue 14, item 11: deep JSON raised RecursionError: the message went to the DLQ with a
    document that said to redrive it once AWS is healthy."""
    body = (
        b'{"input": [{"type": "video", "url": "https://x.example/v.mp4", "x": '
        + b"[" * depth
        + b"]" * depth
        + b"}]}"
    )
    job = manifest_outcome(world, body)
    assert job.error is not None
    assert "levels deep" in job.error.message


@pytest.mark.parametrize("version", ["", "not a version!", "%00", "a" * 2000, "v1&versionId=v2"])
def test_a_malformed_version_id_is_invalid_with_the_field_named(world: World, version: str) -> None:
    world.storage.put("media/v.mp4")
    url = f"s3://{world.storage.bucket}/media/v.mp4?versionId={version}"
    body = {"input": [{"type": "video", "url": url}, {"type": "audio", "url": "https://x.example/a.wav"}]}
    job = manifest_outcome(world, json.dumps(body).encode())
    assert job.error is not None
    assert job.error.field == "input.0.url"


def test_a_version_id_s3_does_not_know_is_invalid(world: World) -> None:
    world.storage.put("media/v.mp4")
    url = f"s3://{world.storage.bucket}/media/v.mp4?versionId=3HL4kqtJlcpXroDTDmjVBH40Nrjfkd"
    body = {"input": [{"type": "video", "url": url}, {"type": "audio", "url": "https://x.example/a.wav"}]}
    job = manifest_outcome(world, json.dumps(body).encode())
    assert job.error is not None
    assert "does not exist" in job.error.message


def test_a_manifest_whose_record_would_outgrow_dynamodb_is_invalid_with_the_reason(world: World) -> None:
    count = 4500  # a 225 KB manifest: within the manifest limit, but every input is pinned in the record
    for index in range(count):
        world.storage.put(f"v/{index:04d}.wav")
    inputs: list[dict[str, Any]] = [{"type": "video", "url": "https://x.example/v.mp4"}]
    inputs += [{"type": "audio", "url": f"v/{index:04d}.wav", "refId": f"r{index}"} for index in range(count)]
    segments = [{"startTime": 0, "endTime": 1, "audioInput": {"refId": "r0"}}]
    job = manifest_outcome(world, json.dumps({"input": inputs, "segments": segments}).encode())
    assert job.error is not None
    assert "400 KB" in job.error.message
    assert len(json.dumps(world.store.items[job.job_id])) < 400 * 1024


# ---------------------------------------------------------------------------- endings written once (item 8)


class FlakyDocuments(FakeStorage):
    """S3 refuses the next `failures` document writes."""

    def __init__(self, bucket: str, failures: int) -> None:
        super().__init__(bucket)
        self.failures = failures

    def put_json(self, key: str, document: dict[str, Any]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("S3 is unreachable")
        super().put_json(key, document)


def test_an_ending_whose_document_failed_is_written_by_the_sweep(world: World) -> None:
    """Issue 14, item 8: the dispatcher committed REJECTED and freed the slot, then an S3 error left
    the job without outputs/<name>.json or its Job Finished event, for good."""
    flaky = FlakyDocuments(world.storage.bucket, failures=1)
    flaky.objects, flaky.versions = world.storage.objects, world.storage.versions
    world.storage = flaky
    job = world.drop_pair("refused", at(1))
    from tests.unit.test_dispatch import api_error

    world.script.replies.append(api_error(422, "generation_input_video_invalid", "bad video"))
    with pytest.raises(ConnectionError):
        world.dispatcher().run()
    ended = world.job_by_id(job.job_id)
    assert (ended.status, ended.finalized_at) == ("REJECTED", None)
    assert world.store.queue_head(5, lane=Lane.ENDED) == [job.job_id]
    world.now[0] = time.time() + 120  # the sweep looks a minute back from now
    report = sweep(world.dispatcher(), world.api.client(), Slots(world.admission, world.kicker))
    assert report.announced == 1
    assert flaky.documents["outputs/refused.json"]["status"] == "REJECTED"
    assert world.job_by_id(job.job_id).finalized_at is not None
    assert world.store.queue_head(5, lane=Lane.ENDED) == []


@pytest.mark.parametrize("decoded", [b"[1, 2]", b"42", b'"text"', b"null", b"{}", b'{"jobId": 5}', b"{{{"])
def test_a_listing_cursor_that_is_not_one_the_api_handed_out_is_a_value_error(
    world: World, decoded: bytes
) -> None:
    """Issue 14, item 11: a /jobs cursor that decoded to non-object JSON gave a 500 (the status route
    answers ValueError with a 400)."""
    import base64

    cursor = base64.urlsafe_b64encode(decoded).decode()
    with pytest.raises(ValueError, match="cursor"):
        world.store.list_jobs(status=None, limit=5, cursor=cursor)


def test_a_cursor_handed_out_pages_on(world: World) -> None:
    for index in range(3):
        world.drop_pair(f"p{index}", at(index))
    first, cursor = world.store.list_jobs(status=None, limit=2, cursor=None)
    assert cursor is not None
    rest, _ = world.store.list_jobs(status=None, limit=2, cursor=cursor)
    assert {job.name for job in first + rest} == {"p0", "p1", "p2"}


def test_new_files_under_the_name_of_a_job_that_failed_run_it_again_under_its_names(world: World) -> None:
    _, job = handle(world, upload_pair(world, "clip")[1])
    assert job is not None
    finish(world, job, JobStatus.FAILED)
    outcome, fixed = handle(world, upload_pair(world, "clip", audio=b"a better take")[1])
    assert outcome == "queued"
    assert fixed is not None
    assert (fixed.retry_of, fixed.lineage, fixed.renamed_from) == (job.job_id, job.job_id, None)
    assert (fixed.document_key, fixed.output_key) == ("outputs/clip.json", "outputs/clip.mp4")
    assert world.job_by_id(job.job_id).retried_by == [fixed.job_id]


def test_new_files_under_the_name_of_a_completed_job_get_names_of_their_own(world: World) -> None:
    _, job = handle(world, upload_pair(world, "clip")[1])
    assert job is not None
    finish(world, job, JobStatus.COMPLETED)
    _, other = handle(world, upload_pair(world, "clip", audio=b"another take")[1])
    assert other is not None
    assert other.retry_of is None
    assert other.document_key == f"outputs/clip-{other.job_id[:8]}.json"


def test_a_fixed_manifest_replaces_its_invalid_predecessor(world: World) -> None:
    invalid = manifest_outcome(world, b"{not json", key="jobs/campaign.json")
    assert invalid.document_key == "outputs/campaign.json"
    body = {
        "input": [
            {"type": "video", "url": "https://x.example/v.mp4"},
            {"type": "audio", "url": "https://x.example/a.wav"},
        ]
    }
    world.storage.put("jobs/campaign.json", json.dumps(body).encode())
    outcome, fixed = handle(world, world.storage.event("jobs/campaign.json"))
    assert outcome == "queued"
    assert fixed is not None
    assert (fixed.document_key, fixed.retry_of) == ("outputs/campaign.json", invalid.job_id)
