"""`lipsync` end to end against the one-machine stack: submit, watch, fetch, status, list, queue, logs,
segments, dry-run estimates, retry and cost."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lipsync.jobs.model import ObjectRef, job_id_for
from local.media import make_sample_audio
from tests.cli.conftest import Cli, MediaFiles
from tests.waiting import eventually

pytestmark = pytest.mark.integration

INVALID_MANIFEST = {
    "input": [
        {"type": "video", "url": "https://example.com/v.mp4"},
        {"type": "audio", "url": "https://example.com/a.wav"},
    ],
    "options": {"temperature": 3},
}


def test_a_pair_from_submit_to_fetch(cli: Cli, media_files: MediaFiles, name: str, tmp_path: Path) -> None:
    submitted = cli("--json", "submit", str(media_files.video), str(media_files.audio), "--name", name)
    assert submitted.code == 0, submitted.err
    summary = submitted.json()
    assert summary["kind"] == "pair"
    assert [upload["key"] for upload in summary["uploads"]] == [
        f"s3://{cli.bucket}/inputs/{name}.mp4",
        f"s3://{cli.bucket}/inputs/{name}.wav",
    ]
    job_id = summary["jobId"]
    assert summary["outputKey"] == f"outputs/{name}.mp4"

    watched = cli("watch", job_id, "--interval", "0.3")  # the live display, on stderr
    assert watched.code == 0, watched.err
    assert "COMPLETED" in watched.err

    fetched = cli("fetch", job_id, str(tmp_path / "out"), "--json")
    assert fetched.code == 0, fetched.err
    files = fetched.json()["files"]
    assert Path(files["video"]).read_bytes() == cli.read(f"outputs/{name}.mp4")
    document = json.loads(Path(files["document"]).read_text())
    assert document["jobId"] == job_id
    assert document["status"] == "COMPLETED"

    status = cli("status", job_id, "--json").json()
    assert (status["jobId"], status["status"], status["outputKey"]) == (
        job_id,
        "COMPLETED",
        f"outputs/{name}.mp4",
    )
    assert "requestTemplate" not in status  # the public view
    text = cli("status", job_id)
    assert text.code == 0
    assert job_id in text.out
    assert "COMPLETED" in text.out

    listed = cli("list", "--status", "completed", "--limit", "100", "--json").json()
    assert job_id in [job["jobId"] for job in listed["jobs"]]
    assert "nextCursor" in listed

    queue = cli("queue", "--json").json()
    assert {"queued", "inFlight", "slots", "etaToDrainSeconds", "paused"} <= set(queue)
    assert "in flight" in cli("queue").out
    assert "spent this month" in cli("queue").out  # GET /queue's monthSpendUsd

    logs = cli("logs", job_id, "--json").json()
    statuses = [entry["status"] for entry in logs["history"]]
    assert statuses[0] == "QUEUED"
    assert statuses[-1] == "COMPLETED"
    assert all(entry["at"] and entry["source"] for entry in logs["history"])
    assert "QUEUED" in cli("logs", job_id).out


def test_options_and_local_media_make_a_manifest(
    cli: Cli, media_files: MediaFiles, name: str, tmp_path: Path
) -> None:
    submitted = cli(
        "submit",
        str(media_files.video),
        str(media_files.audio),
        "--name",
        name,
        "--model",
        "lipsync-2-pro",
        "--option",
        "sync_mode=loop",
        "--option",
        "temperature=0.4",
        "--json",
    )
    assert submitted.code == 0, submitted.err
    first = submitted.json()
    manifest = json.loads(cli.read(f"jobs/{name}.json"))
    assert manifest["model"] == "lipsync-2-pro"
    assert manifest["options"] == {"sync_mode": "loop", "temperature": 0.4}
    assert [item["url"] for item in manifest["input"]] == [
        f"media/{name}/video.mp4",
        f"media/{name}/audio.wav",
    ]

    # A manifest file naming local media: they are uploaded and the manifest rewritten.
    (tmp_path / "job.json").write_text(
        json.dumps(
            {
                "name": f"{name}-m",
                "input": [
                    {"type": "video", "url": str(media_files.video)},
                    {"type": "audio", "url": "voice.wav"},
                ],
            }
        )
    )
    (tmp_path / "voice.wav").write_bytes(media_files.audio.read_bytes())
    second = cli("submit-manifest", str(tmp_path / "job.json"), "--json")
    assert second.code == 0, second.err
    assert sorted(cli.keys(f"media/{name}-m/")) == [
        f"media/{name}-m/0-clip.mp4",
        f"media/{name}-m/1-voice.wav",
    ]

    watched = cli("watch", "--all", "--interval", "0.3", "--json")
    assert watched.code == 0, watched.err
    finished = {job["jobId"]: job for job in watched.json()["jobs"]}
    for job_id in (first["jobId"], second.json()["jobId"]):
        # Either still waiting when the watch began, or already finished: final and completed now.
        job = finished.get(job_id) or cli("status", job_id, "--json").json()
        assert job["status"] == "COMPLETED"
    assert cli("status", first["jobId"], "--json").json()["model"] == "lipsync-2-pro"


def test_an_invalid_manifest_gets_the_submit_functions_message_and_uploads_nothing(
    cli: Cli, name: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(INVALID_MANIFEST))
    refused = cli("submit-manifest", str(path))
    assert refused.code == 2
    assert cli.keys(f"jobs/{name}") == []

    # The same file dropped into the bucket: the submit function records it INVALID, with the same words.
    body = path.read_bytes()
    answer = cli.stack.client("s3").put_object(Bucket=cli.bucket, Key=f"jobs/{name}-direct.json", Body=body)
    job_id = job_id_for(
        cli.bucket,
        [
            ObjectRef(
                key=f"jobs/{name}-direct.json",
                version_id=answer.get("VersionId"),
                etag=answer["ETag"].strip('"'),
            )
        ],
    )
    eventually(
        lambda: cli("status", job_id).code == 0, timeout=30, interval=0.3, what="the INVALID job's record"
    )
    watched = cli("watch", job_id, "--interval", "0.3", "--json")
    assert watched.code == 1  # final, but not COMPLETED
    error = watched.json()["error"]
    assert error["field"] == "options.temperature"
    assert refused.err.strip() == f"lipsync: invalid manifest: {error['field']}: {error['message']}"

    retried = cli("retry", job_id)  # the same input would be refused the same way
    assert retried.code == 6
    assert f"is INVALID: options.temperature: {error['message']}. A retry would be refused" in retried.err
    assert [key for key in cli.keys("jobs/") if key.startswith(f"jobs/{name}-direct.retry-")] == []


def test_a_dry_run_validates_and_uploads_nothing(cli: Cli, media_files: MediaFiles, name: str) -> None:
    dry = cli("submit", str(media_files.video), str(media_files.audio), "--name", name, "--dry-run", "--json")
    assert dry.code == 0, dry.err
    summary = dry.json()
    assert summary["dryRun"] is True
    assert summary["jobId"] is None
    assert [upload["key"] for upload in summary["uploads"]] == [
        f"s3://{cli.bucket}/inputs/{name}.mp4",
        f"s3://{cli.bucket}/inputs/{name}.wav",
    ]
    text = cli(
        "submit", str(media_files.video), "--text", "Hello", "--voice", "v1", "--name", name, "--dry-run"
    )
    assert text.code == 0, text.err
    assert "would upload" in text.out
    assert f"jobs/{name}.json" in text.out
    invalid = cli(
        "submit",
        str(media_files.video),
        str(media_files.audio),
        "--option",
        "sync_mode=sideways",
        "--dry-run",
    )
    assert invalid.code == 2
    assert "options.sync_mode" in invalid.err
    assert cli.keys(f"inputs/{name}") == cli.keys(f"jobs/{name}") == cli.keys(f"media/{name}") == []


def test_a_missing_job_exits_3(cli: Cli, tmp_path: Path) -> None:
    for argv in (
        ("status", "nosuchjob"),
        ("watch", "nosuchjob"),
        ("fetch", "nosuchjob", str(tmp_path)),
        ("logs", "x"),
    ):
        result = cli(*argv)
        assert result.code == 3, argv
        assert "no job" in result.err
        assert "Traceback" not in result.err


def test_a_bad_signature_is_an_aws_error(cli: Cli, tmp_path: Path) -> None:
    state = json.loads(cli.state_file.read_text())
    state["aws_secret_access_key"] = "wrong"
    (tmp_path / "state.json").write_text(json.dumps(state))
    result = cli("--local", str(tmp_path / "state.json"), "queue")
    assert result.code == 4
    assert "refused the credentials (403)" in result.err


def test_the_installed_console_script(cli: Cli) -> None:
    script = Path(sys.executable).parent / "lipsync"
    answer = subprocess.run(
        [str(script), "--local", str(cli.state_file), "queue", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    assert "etaToDrainSeconds" in json.loads(answer.stdout)
    assert (
        "exit codes"
        in subprocess.run(
            [str(script), "--help"], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    )


def _squeezed(text: str) -> str:
    """Rich pads columns to the widest cell: compare text with runs of spaces as one."""
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def _versions(cli: Cli) -> set[tuple[str, str]]:
    """Every object version and delete marker in the bucket, except what the stack writes itself
    (outputs/: a finished job's document can land just after its final status)."""
    found: set[tuple[str, str]] = set()
    pages = cli.stack.client("s3").get_paginator("list_object_versions").paginate(Bucket=cli.bucket)
    for page in pages:
        for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            if not item["Key"].startswith("outputs/"):
                found.add((item["Key"], item["VersionId"]))
    return found


def _posts(cli: Cli) -> list[dict[str, Any]]:
    """Every POST sync.so (the emulator) received: creates and estimates, what spends or may."""
    return [request for request in cli.stack.emulator.requests() if request["method"] == "POST"]


def test_a_dry_run_shows_the_estimate_and_changes_nothing(
    cli: Cli, media_files: MediaFiles, name: str, tmp_path: Path
) -> None:
    cli.stack.client("s3").put_object(
        Bucket=cli.bucket, Key=f"voices/{name}.wav", Body=media_files.audio.read_bytes()
    )
    versions, posts = _versions(cli), len(_posts(cli))

    pair = cli("submit", str(media_files.video), str(media_files.audio), "--name", name, "--dry-run")
    assert pair.code == 0, pair.err
    assert "estimate $0.06 (1.0 s of output from the audio, list price table)" in _squeezed(pair.out)
    assert "dry run valid; nothing uploaded" in _squeezed(pair.out)

    segments = cli(
        "submit",
        str(media_files.video),
        "--segment",
        f"0:0.5:{media_files.audio}",
        "--segment",
        f"0.5:1:{media_files.audio}",
        "--name",
        name,
        "--dry-run",
        "--json",
    )
    assert segments.code == 0, segments.err
    assert segments.json()["estimate"] == {
        "usd": 0.06,
        "model": "lipsync-2",
        "seconds": 1.0,  # the video's length
        "basis": "segments",
        "source": "price-table",
        "usdPerSecond": 0.06,
    }

    # An input already in the bucket is not measured: the estimate is an upper bound.
    (tmp_path / "job.json").write_text(
        json.dumps(
            {
                "model": "lipsync-2-pro",
                "input": [
                    {"type": "video", "url": str(media_files.video)},
                    {"type": "audio", "url": f"s3://{cli.bucket}/voices/{name}.wav"},
                ],
            }
        )
    )
    bound = cli("submit-manifest", str(tmp_path / "job.json"), "--name", name, "--dry-run", "--json")
    assert bound.code == 0, bound.err
    estimate = bound.json()["estimate"]
    assert (estimate["basis"], estimate["seconds"], estimate["model"]) == (
        "upper-bound",
        300.0,
        "lipsync-2-pro",
    )
    assert estimate["usd"] == pytest.approx(300 * 0.083 * 30 / 25)

    assert _versions(cli) == versions  # nothing uploaded, overwritten or deleted
    assert len(_posts(cli)) == posts  # and sync.so was not asked anything
    assert cli.keys(f"inputs/{name}") == cli.keys(f"media/{name}") == cli.keys(f"jobs/{name}") == []


def test_a_job_with_segments_completes(cli: Cli, media_files: MediaFiles, name: str, tmp_path: Path) -> None:
    second = make_sample_audio(tmp_path / "line2.wav", seconds=0.5, frequency=660)
    submitted = cli(
        "submit",
        str(media_files.video),
        "--segment",
        f"0:0.5:{media_files.audio}",
        "--segment",
        f"0.5:1:{second}",
        "--name",
        name,
        "--json",
    )
    assert submitted.code == 0, submitted.err
    summary = submitted.json()
    assert [upload["key"] for upload in summary["uploads"]] == [
        f"s3://{cli.bucket}/media/{name}/video.mp4",
        f"s3://{cli.bucket}/media/{name}/s1.wav",
        f"s3://{cli.bucket}/media/{name}/s2.wav",
        f"s3://{cli.bucket}/jobs/{name}.json",
    ]
    manifest = json.loads(cli.read(f"jobs/{name}.json"))
    assert manifest["segments"] == [
        {"startTime": 0.0, "endTime": 0.5, "audioInput": {"refId": "s1"}},
        {"startTime": 0.5, "endTime": 1.0, "audioInput": {"refId": "s2"}},
    ]
    watched = cli("watch", summary["jobId"], "--interval", "0.3", "--json")
    assert watched.code == 0, watched.err
    job = watched.json()
    assert (job["status"], job["outputKey"]) == ("COMPLETED", f"outputs/{name}.mp4")
    # The stack measured the same output length from the bucket as the dry run did from the files.
    assert (job["estimate"]["seconds"], job["estimate"]["basis"]) == (1.0, "segments")

    (sent,) = [post["body"] for post in _posts(cli) if f"media/{name}/" in json.dumps(post.get("body"))]
    assert [(item["type"], item.get("refId")) for item in sent["input"]] == [
        ("video", None),
        ("audio", "s1"),
        ("audio", "s2"),
    ]
    assert [segment["audioInput"]["refId"] for segment in sent["segments"]] == ["s1", "s2"]


@pytest.fixture
def failing(cli: Cli) -> Iterator[Callable[[], None]]:
    """sync.so fails every generation created (after 2 s) until `recover()`, or the test's end."""
    cli.stack.emulator.set_scenario(
        {
            "outcome": "FAILED",
            "outcomeErrorCode": "generation_face_not_detected",  # permanent: never sent again
            "outcomeError": "No face.",
            "processingSeconds": 2,
        }
    )

    def recover() -> None:
        cli.stack.emulator.set_scenario(
            {"outcome": None, "outcomeErrorCode": None, "outcomeError": None, "processingSeconds": None}
        )

    try:
        yield recover
    finally:
        recover()


def test_retry_reruns_failed_jobs_as_new_jobs_linked_to_the_old_ones(
    cli: Cli, media_files: MediaFiles, name: str, failing: Callable[[], None]
) -> None:
    pair = cli("submit", str(media_files.video), str(media_files.audio), "--name", name, "--json")
    assert pair.code == 0, pair.err
    old_pair = pair.json()["jobId"]
    early = cli("retry", old_pair)  # just recorded, its generation takes 2 s: nothing to retry yet
    assert early.code == 7, early.err
    assert "has not finished" in early.err
    made = cli(
        "submit", str(media_files.video), str(media_files.audio), "--name", f"{name}-m", "--model",
        "lipsync-2-pro", "--json",
    )  # fmt: skip
    assert made.code == 0, made.err
    old_manifest = made.json()["jobId"]
    for job_id in (old_pair, old_manifest):
        ended = cli("watch", job_id, "--interval", "0.3", "--json")
        assert ended.code == 1
        assert ended.json()["status"] == "FAILED"
    failing()  # sync.so recovers

    dry = cli("retry", old_pair, "--dry-run")
    assert dry.code == 0, dry.err
    assert f"retry of {old_pair} (FAILED)" in _squeezed(dry.out)
    assert "estimate $0.06 (1.0 s of output from the audio, list price table" in _squeezed(dry.out)
    assert f'"retryOf": "{old_pair}"' in dry.out  # the manifest
    assert [key for key in cli.keys("jobs/") if key.startswith(f"jobs/{name}.")] == []

    retried = cli("retry", old_pair, "--json")
    assert retried.code == 0, retried.err
    summary = retried.json()
    new_pair = summary["jobId"]
    assert (summary["retryOf"], summary["name"], summary["outputKey"]) == (
        old_pair,
        name,
        f"outputs/{name}.mp4",
    )
    assert summary["status"] is not None  # waited for the stack to record the new job, as submit does
    (key,) = [key for key in cli.keys("jobs/") if key.startswith(f"jobs/{name}.retry-")]
    manifest = json.loads(cli.read(key))
    assert (manifest["name"], manifest["retryOf"], manifest["model"]) == (name, old_pair, "lipsync-2")
    assert [item["url"].split("?versionId=")[0] for item in manifest["input"]] == [
        f"s3://{cli.bucket}/inputs/{name}.mp4",
        f"s3://{cli.bucket}/inputs/{name}.wav",
    ]
    assert all("?versionId=" in item["url"] for item in manifest["input"])

    again = cli("retry", old_manifest, "--no-wait", "--json")
    assert again.code == 0, again.err
    new_manifest = again.json()["jobId"]
    assert "status" not in again.json()  # --no-wait: not waited for
    # The old manifest's inputs, pinned to the versions the old job used.
    original = json.loads(cli.read(f"jobs/{name}-m.json"))["input"]
    retried = again.json()["manifest"]["input"]
    assert [item["url"].split("?versionId=")[0] for item in retried] == [
        f"s3://{cli.bucket}/{item['url']}" for item in original
    ]
    assert all("?versionId=" in item["url"] for item in retried)
    eventually(
        lambda: cli("status", new_manifest).code == 0, timeout=30, interval=0.3, what="the retry's record"
    )

    for old, new in ((old_pair, new_pair), (old_manifest, new_manifest)):
        watched = cli("watch", new, "--interval", "0.3", "--json")
        assert watched.code == 0, watched.err
        assert (watched.json()["status"], watched.json()["retryOf"]) == ("COMPLETED", old)
        assert cli("status", old, "--json").json()["retriedBy"] == [new]
    assert cli("status", new_manifest, "--json").json()["model"] == "lipsync-2-pro"
    assert f"retried by {new_pair}" in _squeezed(cli("status", old_pair).out)

    done = cli("retry", new_pair)
    assert done.code == 6
    assert "COMPLETED" in done.err


def test_cost_reports_the_finished_jobs(cli: Cli, media_files: MediaFiles, name: str) -> None:
    submitted = cli(
        "submit",
        str(media_files.video),
        str(media_files.audio),
        "--name",
        name,
        "--model",
        "sync-3",
        "--json",
    )
    assert submitted.code == 0, submitted.err
    watched = cli("watch", submitted.json()["jobId"], "--interval", "0.3", "--json")
    assert watched.code == 0, watched.err
    job = watched.json()
    assert job["costUsd"] > 0
    day = job["finishedAt"][:10]

    report = cli("cost", "--since", day, "--until", day, "--json")
    assert report.code == 0, report.err
    rows = {(row["day"], row["model"]): row for row in report.json()["rows"]}
    assert rows[(day, "sync-3")] == {  # this test's job is the only sync-3 one
        "day": day,
        "model": "sync-3",
        "jobs": 1,
        "estimatedUsd": job["estimate"]["usd"],
        "actualUsd": job["costUsd"],
        "costUnknown": 0,
    }
    # Every job of the day is counted once (the earlier tests' jobs too, all final by now).
    listed: list[dict[str, Any]] = []
    cursor: list[str] = []
    while True:
        page = cli("list", "--limit", "100", *cursor, "--json").json()
        listed.extend(page["jobs"])
        if not page.get("nextCursor"):
            break
        cursor = ["--cursor", page["nextCursor"]]
    on_day = [item for item in listed if (item.get("finishedAt") or item["createdAt"])[:10] == day]
    total = report.json()["total"]
    assert total["jobs"] == len(on_day)
    assert total["costUnknown"] == 0
    assert total["actualUsd"] == pytest.approx(sum(item.get("costUsd", 0) for item in on_day), abs=1e-3)

    text = cli("cost", "--since", day, "--until", day)
    assert text.code == 0
    assert f"{day} sync-3 1 ${job['estimate']['usd']:.2f} ${job['costUsd']:.2f}" in _squeezed(text.out)
    assert f"total all {len(on_day)}" in _squeezed(text.out)
