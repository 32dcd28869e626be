"""`lipsync` end to end against the one-machine stack: submit, watch, fetch, status, list, queue, logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lipsync.jobs import ObjectRef, job_id_for
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
