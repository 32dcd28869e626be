"""`lipsync` without a stack: arguments, targets, validation errors and rendering."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from rich.console import Console

from lipsync.jobs.model import Job, ObjectRef
from lipsync.plan.prices import PriceTable
from lipsync.syncso.models import GenerateRequest
from lipsync_cli import commands, render
from lipsync_cli.api import StatusApi
from lipsync_cli.app import COMMANDS, _bare_local, build_parser, main
from lipsync_cli.costs import day_range, estimate_submission, spend_report
from lipsync_cli.errors import AwsError, CliError, Exit, NotFoundError, UsageError
from lipsync_cli.retries import (
    check_retryable,
    manifest_manifest,
    pair_manifest,
    read_manifest,
    retry_key,
)
from lipsync_cli.submission import (
    manifest_submission,
    pair_submission,
    parse_options,
    parse_segment,
    validate,
)
from lipsync_cli.targets import Target, from_stack, resolve
from local.media import make_sample_video
from tests.media_bytes import wav_bytes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CREDENTIALS = Credentials("AKIDEXAMPLE", "secret")


class FakeCloudFormation:
    def __init__(self, stacks: dict[str, dict[str, Any]]) -> None:
        self.stacks = stacks

    def describe_stacks(self, *, StackName: str) -> Any:
        if StackName not in self.stacks:
            raise ClientError(
                {
                    "Error": {
                        "Code": "ValidationError",
                        "Message": f"Stack with id {StackName} does not exist",
                    }
                },
                "DescribeStacks",
            )
        return {"Stacks": [self.stacks[StackName]]}


DEPLOYED = {
    "StackName": "lipsync",
    "StackStatus": "CREATE_COMPLETE",
    "Outputs": [
        {"OutputKey": "MediaBucketName", "OutputValue": "lipsync-media-123"},
        {"OutputKey": "ApiUrl", "OutputValue": "https://abc.execute-api.eu-west-1.amazonaws.com/v1/"},
        {"OutputKey": "JobsTableName", "OutputValue": "lipsync-jobs"},
    ],
    "Parameters": [
        {"ParameterKey": "DefaultModel", "ParameterValue": "lipsync-2-pro"},
        {"ParameterKey": "Tuning", "ParameterValue": '{"DefaultOptions": {"sync_mode": "loop"}}'},
    ],
}


def test_a_deployed_stack_is_found_through_its_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    target = from_stack("lipsync", FakeCloudFormation({"lipsync": DEPLOYED}), CREDENTIALS, "eu-west-1")
    assert (target.bucket, target.api_url, target.jobs_table) == (
        "lipsync-media-123",
        "https://abc.execute-api.eu-west-1.amazonaws.com/v1",
        "lipsync-jobs",
    )
    assert (target.default_model, target.default_options) == ("lipsync-2-pro", '{"sync_mode": "loop"}')
    assert target.endpoint_url is None
    assert target.region == "eu-west-1"


def test_behind_an_aws_emulator_the_api_is_its_execute_api_route(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    target = from_stack("lipsync", FakeCloudFormation({"lipsync": DEPLOYED}), CREDENTIALS, "eu-west-1")
    assert target.api_url == "http://127.0.0.1:4566/_aws/execute-api/abc/v1"


def test_a_stack_with_a_bad_tuning_is_a_usage_error() -> None:
    bad = DEPLOYED | {"Parameters": [{"ParameterKey": "Tuning", "ParameterValue": '{"Typo": 1}'}]}
    with pytest.raises(UsageError, match="unknown key"):
        from_stack("lipsync", FakeCloudFormation({"lipsync": bad}), CREDENTIALS, "eu-west-1")


def test_the_region_comes_from_aws_region_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 alone reads AWS_DEFAULT_REGION; the message tells users to set AWS_REGION."""
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv(
        "AWS_ENDPOINT_URL", "http://127.0.0.1:9"
    )  # nothing listens: fails fast, after the region
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(AwsError, match="CloudFormation describe_stacks"):
        resolve(stack="lipsync", local=None)


def test_a_missing_stack_or_a_stack_without_outputs_is_a_specific_error() -> None:
    with pytest.raises(NotFoundError, match="no CloudFormation stack 'other'") as missing:
        from_stack("other", FakeCloudFormation({}), CREDENTIALS, "eu-west-1")
    assert missing.value.code == Exit.NOT_FOUND
    half = DEPLOYED | {"Outputs": [], "StackStatus": "CREATE_IN_PROGRESS"}
    with pytest.raises(UsageError, match="no MediaBucketName, ApiUrl output"):
        from_stack("lipsync", FakeCloudFormation({"lipsync": half}), CREDENTIALS, "eu-west-1")


def test_targets_come_from_flags_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIPSYNC_STACK", raising=False)
    monkeypatch.setenv("LIPSYNC_LOCAL", str(tmp_path / "elsewhere.json"))
    with pytest.raises(NotFoundError, match=r"elsewhere\.json"):
        resolve(stack=None, local=None)
    with pytest.raises(UsageError, match="either --stack or --local"):
        resolve(stack="a", local="b")
    state = {
        "stack_name": "x",
        "bucket": "b",
        "api_url": "http://127.0.0.1:1/v1",
        "aws_endpoint_url": "http://127.0.0.1:2",
        "region": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "parameters": {"DefaultModel": "sync-3"},
    }
    (tmp_path / "s.json").write_text(json.dumps(state))
    target = resolve(stack=None, local=str(tmp_path / "s.json"))
    assert (target.bucket, target.endpoint_url, target.default_model) == ("b", "http://127.0.0.1:2", "sync-3")


def test_a_missing_state_file_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--local", str(tmp_path / "none.json"), "queue"]) == Exit.NOT_FOUND
    assert "no one-machine stack state file" in capsys.readouterr().err


def test_options_parse_as_json_and_nest() -> None:
    assert parse_options(
        ["sync_mode=loop", "temperature=0.5", "active_speaker_detection.auto_detect=true"]
    ) == {
        "sync_mode": "loop",
        "temperature": 0.5,
        "active_speaker_detection": {"auto_detect": True},
    }
    with pytest.raises(UsageError, match="expected key=value"):
        parse_options(["temperature"])


def test_a_bare_local_before_a_command_means_the_default_file() -> None:
    assert _bare_local(["--local", "queue"]) == ["--local", ".local-stack.json", "queue"]
    assert _bare_local(["--local", "s.json", "queue"]) == ["--local", "s.json", "queue"]
    args = build_parser().parse_args(["status", "abc", "--local", "--json"])
    assert (args.local, args.json, args.job) == (".local-stack.json", True, "abc")


def test_help_has_examples_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], *([command, "--help"] for command in sorted(COMMANDS))):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "example" in text, argv
        assert "exit codes" in text
        assert "3  not found" in text
        assert "6  retry: the job cannot be re-run" in text
        assert "7  retry: the job has not finished yet" in text
    for argv, wanted in (
        (["submit", "--help"], "lipsync submit clip.mp4 --segment 0:2.5:line1.wav --segment 4:7:line2.wav"),
        (["submit-manifest", "--help"], "lipsync submit-manifest job.json --dry-run --json"),
        (["retry", "--help"], "lipsync retry 3f2a9c... --dry-run"),
        (["cost", "--help"], "lipsync cost --since 2026-01-01 --until 2026-01-31"),
        (["--help"], "lipsync retry 3f2a... --dry-run"),
    ):
        with pytest.raises(SystemExit):
            main(argv)
        assert wanted in capsys.readouterr().out, argv
    assert {"retry", "cost"} <= COMMANDS


def test_usage_errors_exit_2_before_touching_any_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video, audio = tmp_path / "v.mp4", tmp_path / "a.wav"
    video.write_bytes(b"v")
    audio.write_bytes(b"a")
    nowhere = ["--local", str(tmp_path / "none.json")]
    cases = {
        "no such file": [*nowhere, "submit", str(tmp_path / "x.mp4"), str(audio)],
        "not both": [*nowhere, "submit", str(video), str(audio), "--text", "hi", "--voice", "v"],
        "--text needs --voice": [*nowhere, "submit", str(video), "--text", "hi"],
        "use one of": [*nowhere, "submit", str(audio), str(audio)],
        "must be a relative name": [*nowhere, "submit", str(video), str(audio), "--name", "../up"],
        "give a JOB or --all": [*nowhere, "watch"],
    }
    for message, argv in cases.items():
        assert main(argv) == Exit.USAGE, message
        err = capsys.readouterr().err
        assert message in err
        assert "Traceback" not in err
    with pytest.raises(SystemExit) as done:
        main(["status"])  # argparse: JOB is required
    assert done.value.code == Exit.USAGE


def test_a_manifest_names_its_local_media(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"v")
    (tmp_path / "job.json").write_text(
        json.dumps(
            {
                "name": "campaign/one",
                "input": [
                    {"type": "video", "url": "clip.mp4"},
                    {"type": "audio", "url": "voice/in-bucket.wav"},
                ],
            }
        )
    )
    built = manifest_submission(str(tmp_path / "job.json"), name=None)
    assert [upload.key for upload in built.uploads] == [
        "media/campaign/one/0-clip.mp4",
        "jobs/campaign/one.json",
    ]
    assert built.manifest is not None
    assert [item["url"] for item in built.manifest["input"]] == [
        "media/campaign/one/0-clip.mp4",
        "voice/in-bucket.wav",
    ]
    pair = pair_submission(
        str(tmp_path / "clip.mp4"), None, name=None, model=None, options={}, text="Hi", voice="v1"
    )
    assert pair.kind == "manifest"
    assert pair.manifest is not None
    assert pair.manifest["input"][1] == {
        "type": "text",
        "provider": {"name": "elevenlabs", "voiceId": "v1", "script": "Hi"},
    }


def _text(renderable: Any) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def _squeezed(text: str) -> str:
    """Rich pads columns to the widest cell: compare text with runs of spaces as one."""
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def test_rendering() -> None:
    job = {
        "jobId": "j1",
        "name": "clip",
        "status": "FAILED",
        "apiStatus": "FAILED",
        "error": {"code": "E1", "message": "no face", "field": None},
        "placeInLine": None,
        "history": [{"status": "QUEUED", "source": "intake", "at": "2026-01-01T00:00:00Z"}],
    }
    text = _text(render.job_text(job))
    assert "FAILED" in text
    assert "no face [E1]" in text
    assert "(sync.so" not in text  # the same word twice is said once
    assert "intake" in _text(render.history_table(job))
    queue = {"queued": 3, "inFlight": 2, "slots": 3, "etaToDrainSeconds": 120, "paused": None}
    assert "2 of 3 slots" in _text(render.queue_text(queue))
    budget = _squeezed(_text(render.queue_text(queue | {"heldForBudget": 2, "monthSpendUsd": 12.3456})))
    assert "held for budget 2 (lipsync list --status BUDGET_HOLD)" in budget
    assert "spent this month $12.35 (spent or committed; lipsync cost)" in budget
    assert "held for budget" not in _text(render.queue_text(queue | {"heldForBudget": 0}))
    assert "j1" in _text(render.jobs_table([job]))


# ---------------------------------------------------------------------------- a stack in memory

BUCKET = "lipsync-media-test"
OLD = "0123456789abcdef0123456789abcdef"  # a job id (32 hex characters)


class FakeS3:
    """The S3 calls the CLI reads with (head, get, list) over versioned objects. It has no write
    methods: a dry run that tried to upload would fail with AttributeError."""

    def __init__(self) -> None:
        self.versions: dict[str, list[tuple[str, bytes]]] = {}
        self.reads: list[tuple[str, str, str | None]] = []

    def put(self, key: str, body: bytes) -> str:
        version = f"v{sum(len(kept) for kept in self.versions.values()) + 1}"
        self.versions.setdefault(key, []).append((version, body))
        return version

    def _find(self, operation: str, key: str, version_id: str | None) -> tuple[str, bytes]:
        self.reads.append((operation, key, version_id))
        for version, body in reversed(self.versions.get(key, [])):
            if version_id in (None, version):
                return version, body
        code = "NoSuchVersion" if version_id and key in self.versions else "NoSuchKey"
        raise ClientError({"Error": {"Code": code, "Message": "not found"}}, operation)

    def head_object(self, *, Bucket: str, Key: str, VersionId: str | None = None) -> dict[str, Any]:
        version, body = self._find("HeadObject", Key, VersionId)
        return {"VersionId": version, "ETag": f'"etag-{version}"', "ContentLength": len(body)}

    def get_object(self, *, Bucket: str, Key: str, VersionId: str | None = None) -> dict[str, Any]:
        version, body = self._find("GetObject", Key, VersionId)
        return {"Body": io.BytesIO(body), "ContentLength": len(body), "VersionId": version}

    def get_paginator(self, name: str) -> Any:
        assert name == "list_objects_v2"
        objects = self.versions

        class Pages:
            def paginate(self, *, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
                contents = [
                    {"Key": key, "ETag": f'"etag-{kept[-1][0]}"', "Size": len(kept[-1][1])}
                    for key, kept in objects.items()
                    if key.startswith(Prefix)
                ]
                return [{"Contents": contents}]

        return Pages()


def job_record(job_id: str = OLD, **fields: Any) -> dict[str, Any]:
    """A job as the status routes return it (Job.public_view())."""
    now = "2026-03-02T10:00:00.000Z"
    return {
        "jobId": job_id,
        "name": "campaign/clip",
        "kind": "pair",
        "status": "FAILED",
        "bucket": BUCKET,
        "documentKey": "outputs/campaign/clip.json",
        "createdAt": now,
        "updatedAt": now,
        **fields,
    }


def estimate(usd: float, model: str = "lipsync-2", seconds: float = 1.5) -> dict[str, Any]:
    return {
        "usd": usd,
        "model": model,
        "seconds": seconds,
        "basis": "audio",
        "source": "api",
        "usdPerSecond": 0.06,
    }


@dataclass
class MemoryStack:
    """A state file, an in-memory bucket and status routes answering from `jobs`."""

    state_file: Path
    capsys: pytest.CaptureFixture[str]
    s3: FakeS3 = field(default_factory=FakeS3)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    queries: list[dict[str, list[str]]] = field(default_factory=list)
    page_size: int = 2

    def answer(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256")  # signed
        path = request.url.path.removeprefix("/v1")
        if path.startswith("/jobs/"):
            job_id = unquote(path.removeprefix("/jobs/"))
            found = [job for job in self.jobs if job["jobId"] == job_id]
            if not found:
                return httpx.Response(404, json={"message": f"no job {job_id}"})
            return httpx.Response(200, json=found[0])
        assert path == "/jobs"
        query = parse_qs(request.url.query.decode())
        self.queries.append(query)
        start = int(query.get("cursor", ["0"])[0])
        end = start + self.page_size
        cursor = str(end) if end < len(self.jobs) else None
        return httpx.Response(200, json={"jobs": self.jobs[start:end], "nextCursor": cursor})

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--local", str(self.state_file), *argv])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
def memory_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> MemoryStack:
    state = {
        "stack_name": "memory",
        "bucket": BUCKET,
        "api_url": "http://127.0.0.1:9/v1",
        "aws_endpoint_url": "http://127.0.0.1:9",
        "region": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "parameters": {"DefaultModel": "lipsync-2", "PriceTableUsdPerSecond": ""},
    }
    (tmp_path / "state.json").write_text(json.dumps(state))
    stack = MemoryStack(tmp_path / "state.json", capsys)
    monkeypatch.setattr(Target, "s3", lambda self: cast("S3Client", stack.s3))
    transport = httpx.MockTransport(stack.answer)
    monkeypatch.setattr(
        commands, "StatusApi", lambda target: StatusApi(target, client=httpx.Client(transport=transport))
    )
    return stack


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-second MP4 (ffmpeg), whose duration mutagen reads from its headers."""
    return make_sample_video(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=2.0)


def wav(path: Path, seconds: float) -> Path:
    path.write_bytes(wav_bytes(seconds))
    return path


def memory_target(price_table: str = "") -> Target:
    return Target(
        description="memory",
        bucket=BUCKET,
        api_url="http://127.0.0.1:9/v1",
        region="us-east-1",
        credentials=CREDENTIALS,
        price_table=price_table,
    )


# ---------------------------------------------------------------------------- segments


def test_a_segment_is_start_end_and_an_audio_file(tmp_path: Path) -> None:
    colon = wav(tmp_path / "take:2.wav", 1.0)  # a file name may hold colons
    spec = parse_segment(f"0:2.5:{colon}")
    assert (spec.start, spec.end, spec.audio) == (0.0, 2.5, colon)
    assert parse_segment(f"1e0:3:{colon}").start == 1.0
    (tmp_path / "notes.txt").write_text("x")
    cases = {
        "1:voice.wav": "expected START:END:AUDIO",
        ":2:voice.wav": "expected START:END:AUDIO",
        "0:2:": "expected START:END:AUDIO",
        f"a:2:{colon}": "START 'a' is not a number of seconds",
        f"0:nan:{colon}": "END 'nan' is not a number of seconds",
        f"0:inf:{colon}": "END 'inf' is not a number of seconds",
        f"0:2:{tmp_path / 'none.wav'}": "no such file",
        f"0:2:{tmp_path / 'notes.txt'}": "use one of aac, flac, m4a, mp3, ogg, wav",
    }
    for text, message in cases.items():
        with pytest.raises(UsageError, match=message) as refused:
            parse_segment(text)
        assert refused.value.message.startswith(f"--segment {text!r}: ")


def test_segments_become_audio_inputs_with_ref_ids_in_the_api_shape(clip: Path, tmp_path: Path) -> None:
    first, second = wav(tmp_path / "line1.wav", 1.0), wav(tmp_path / "line2.mp3", 1.0)
    segments = [
        parse_segment(f"0:1:{first}"),
        parse_segment(f"1:1.5:{second}"),
        parse_segment(f"3:4:{first}"),
    ]
    built = pair_submission(
        str(clip), None, name="promo", model=None, options={}, text=None, voice=None, segments=segments
    )
    assert [upload.key for upload in built.uploads] == [
        "media/promo/video.mp4",
        "media/promo/s1.wav",  # the same file twice is one input
        "media/promo/s2.mp3",
        "jobs/promo.json",
    ]
    assert built.manifest == {
        "name": "promo",
        "input": [
            {"type": "video", "url": "media/promo/video.mp4"},
            {"type": "audio", "url": "media/promo/s1.wav", "refId": "s1"},
            {"type": "audio", "url": "media/promo/s2.mp3", "refId": "s2"},
        ],
        "segments": [
            {"startTime": 0.0, "endTime": 1.0, "audioInput": {"refId": "s1"}},
            {"startTime": 1.0, "endTime": 1.5, "audioInput": {"refId": "s2"}},
            {"startTime": 3.0, "endTime": 4.0, "audioInput": {"refId": "s1"}},
        ],
    }
    request = GenerateRequest.model_validate({"model": "lipsync-2", **built.manifest})  # the layer's model
    assert request.segments is not None
    assert [segment.audio_input.ref_id for segment in request.segments] == ["s1", "s2", "s1"]
    with pytest.raises(UsageError, match="with --segment, every segment names its own audio"):
        pair_submission(
            str(clip), str(first), name=None, model=None, options={}, text=None, voice=None, segments=segments
        )


def test_a_wrong_segment_is_refused_with_the_submit_functions_message_before_upload(
    memory_stack: MemoryStack, clip: Path, tmp_path: Path
) -> None:
    voice = wav(tmp_path / "voice.wav", 1.0)
    code, _, err = memory_stack("submit", str(clip), "--segment", f"2:1:{voice}", "--name", "x")
    assert code == Exit.USAGE
    assert (
        err.strip()
        == "lipsync: invalid manifest: segments.0: segment endTime 1.0 must be after startTime 2.0"
    )
    code, _, err = memory_stack("submit", str(clip), "--segment=-1:1:" + str(voice))
    assert code == Exit.USAGE
    assert "segments.0.startTime: Input should be greater than or equal to 0" in err
    assert memory_stack.s3.versions == {}


# ---------------------------------------------------------------------------- dry-run estimates


def test_a_dry_run_estimates_from_the_local_files_and_uploads_nothing(
    memory_stack: MemoryStack, clip: Path, tmp_path: Path
) -> None:
    voice = wav(tmp_path / "voice.wav", 4.0)
    code, out, err = memory_stack("submit", str(clip), str(voice), "--name", "promo", "--dry-run")
    assert code == Exit.OK, err
    assert "estimate $0.24 (4.0 s of output from the audio, list price table)" in _squeezed(out)
    assert "valid; nothing uploaded" in out

    code, out, err = memory_stack("submit", str(clip), str(voice), "--dry-run", "--json")
    assert code == Exit.OK, err
    summary = json.loads(out)
    assert summary["estimate"] == {
        "usd": 0.24,  # 4 s at $0.05 per 25-fps second, priced at the endpoint's 30 fps
        "model": "lipsync-2",
        "seconds": 4.0,
        "basis": "audio",
        "source": "price-table",
        "usdPerSecond": 0.06,
    }
    assert summary["priceTable"] == "list"

    # Segments: the output plays as long as the video (2 s, read from the MP4's headers).
    code, out, err = memory_stack("submit", str(clip), "--segment", f"0:1:{voice}", "--dry-run", "--json")
    assert code == Exit.OK, err
    assert {key: json.loads(out)["estimate"][key] for key in ("seconds", "basis")} == {
        "seconds": 2.0,
        "basis": "segments",
    }
    assert memory_stack.s3.versions == {}  # nothing uploaded (FakeS3 cannot even write)
    assert all(operation != "GetObject" for operation, _, _ in memory_stack.s3.reads)


def test_an_input_already_in_the_bucket_makes_the_estimate_an_upper_bound(
    memory_stack: MemoryStack, clip: Path, tmp_path: Path
) -> None:
    memory_stack.s3.put("voices/line.wav", wav_bytes(4.0))
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    (tmp_path / "job.json").write_text(
        json.dumps(
            {
                "model": "lipsync-2-pro",
                "input": [{"type": "video", "url": "clip.mp4"}, {"type": "audio", "url": "voices/line.wav"}],
            }
        )
    )
    code, out, err = memory_stack("submit-manifest", str(tmp_path / "job.json"), "--dry-run", "--json")
    assert code == Exit.OK, err
    got = json.loads(out)["estimate"]
    assert (got["seconds"], got["basis"], got["usd"]) == (300.0, "upper-bound", round(300 * 0.083 * 1.2, 4))
    code, out, _ = memory_stack("submit-manifest", str(tmp_path / "job.json"), "--dry-run")
    assert "300.0 s of output at most: an input's length is not known here" in out


def test_the_stacks_own_price_table_prices_the_estimate(clip: Path, tmp_path: Path) -> None:
    voice = wav(tmp_path / "voice.wav", 1.5)
    built = pair_submission(str(clip), str(voice), name="p", model=None, options={}, text=None, voice=None)
    fake = FakeS3()
    target = memory_target('{"lipsync-2": 0.1}')
    validate(built, target, cast("S3Client", fake))
    got = estimate_submission(built, PriceTable.from_json(target.price_table))
    assert got is not None
    assert (got.seconds, got.basis, got.usd, got.source) == (1.5, "audio", 0.18, "price-table")
    assert render.estimate_text(got.stored(), "stack") == (
        "$0.18 (1.5 s of output from the audio, the stack's price table)"
    )
    known = estimate_submission(built, PriceTable(), known=(10.0, "video"))
    assert known is not None
    assert (known.seconds, known.basis, known.usd) == (10.0, "video", 0.6)
    assert known.note == "the output's length as the original job's estimate measured it"


def test_a_price_table_the_stack_would_refuse_is_refused(
    memory_stack: MemoryStack, clip: Path, tmp_path: Path
) -> None:
    state = json.loads(memory_stack.state_file.read_text())
    state["parameters"]["Tuning"] = json.dumps({"PriceTableUsdPerSecond": {"lipsync-2": "cheap"}})
    memory_stack.state_file.write_text(json.dumps(state))
    code, _, err = memory_stack("submit", str(clip), str(wav(tmp_path / "v.wav", 1.0)), "--dry-run")
    assert code == Exit.USAGE
    assert "PriceTableUsdPerSecond (Tuning) is not valid" in err
    assert "'lipsync-2' must be a number of USD per second" in err


# ---------------------------------------------------------------------------- retry


def test_only_finished_jobs_that_did_not_succeed_can_be_retried() -> None:
    for status in ("FAILED", "REJECTED", "TIMED_OUT", "STOPPED", "UNKNOWN", "CANCELED"):
        check_retryable(Job.model_validate(job_record(status=status)))
    refusals = {
        "COMPLETED": (Exit.NOT_RETRYABLE, "COMPLETED (output outputs/campaign/clip.mp4): there is nothing"),
        "INVALID": (Exit.NOT_RETRYABLE, "is INVALID: options.temperature: too hot. A retry would be refused"),
        "QUEUED": (Exit.NOT_FINISHED, "is still QUEUED: it has not finished"),  # a stale holdReason
        "BUDGET_HOLD": (Exit.NOT_FINISHED, "is still BUDGET_HOLD (over budget): it has not finished"),
        "SUBMITTING": (Exit.NOT_FINISHED, "is still SUBMITTING"),
        "PROCESSING": (Exit.NOT_FINISHED, "is still PROCESSING"),
    }
    for status, (code, message) in refusals.items():
        record = job_record(
            status=status,
            outputKey="outputs/campaign/clip.mp4",
            error={"field": "options.temperature", "message": "too hot"},
            holdReason="over budget",
        )
        with pytest.raises(CliError) as refused:
            check_retryable(Job.model_validate(record))
        assert refused.value.code == code, status
        assert message in refused.value.message, status


def test_a_pair_job_is_retried_with_its_inputs_pinned_to_their_versions() -> None:
    job = Job.model_validate(
        job_record(
            model="lipsync-2-pro",
            inputs=[
                {"key": "inputs/campaign/my clip#1.mov", "versionId": "v+1/x", "etag": "e1"},
                {"key": "inputs/campaign/my clip#1.wav", "versionId": "v2", "etag": "e2"},
            ],
        )
    )
    manifest = pair_manifest(job)
    assert manifest["name"] == "campaign/clip"
    assert manifest["retryOf"] == OLD
    assert manifest["model"] == "lipsync-2-pro"
    assert [item["type"] for item in manifest["input"]] == ["video", "audio"]
    video = urlsplit(manifest["input"][0]["url"])  # as planning reads it back
    assert (video.scheme, video.netloc, unquote(video.path)) == (
        "s3",
        BUCKET,
        "/inputs/campaign/my clip#1.mov",
    )
    assert parse_qs(video.query) == {"versionId": ["v+1/x"]}
    assert manifest["input"][1]["url"] == f"s3://{BUCKET}/inputs/campaign/my%20clip%231.wav?versionId=v2"
    GenerateRequest.model_validate(manifest)  # the API's shape (name and retryOf pass through)
    half = Job.model_validate(job_record(inputs=[{"key": "inputs/a.wav", "versionId": "v"}]))
    with pytest.raises(CliError, match="without both a video and an audio input"):
        pair_manifest(half)
    assert retry_key("campaign/clip", datetime(2026, 3, 2, 9, 8, 7, tzinfo=UTC)) == (
        "jobs/campaign/clip.retry-20260302T090807Z.json"
    )


def test_a_manifest_job_is_retried_from_the_exact_version_it_was_made_from() -> None:
    fake = FakeS3()
    old_version = fake.put(
        "jobs/intro.json",
        json.dumps(
            {"name": "old-name", "retryOf": "f" * 32, "input": [{"type": "video", "url": "v.mp4"}]}
        ).encode(),
    )
    fake.put("jobs/intro.json", b'{"input": "a newer manifest"}')
    job = Job.model_validate(
        job_record(
            kind="manifest", name="intro", inputs=[{"key": "jobs/intro.json", "versionId": old_version}]
        )
    )
    old = read_manifest(job, cast("S3Client", fake))
    assert fake.reads == [("GetObject", "jobs/intro.json", old_version)]
    assert manifest_manifest(job, old) == {
        "name": "intro",  # the old job's, not the manifest's own
        "retryOf": OLD,  # this job, not the manifest's earlier retryOf
        "input": [{"type": "video", "url": "v.mp4"}],
    }
    pinned = job.model_copy(
        update={"pinned_inputs": {0: ObjectRef(key="media/intro/v.mp4", version_id="v7")}}
    )
    assert manifest_manifest(pinned, old)["input"] == [  # the video the job used, not the key's newest
        {"type": "video", "url": f"s3://{job.bucket}/media/intro/v.mp4?versionId=v7"}
    ]
    gone = Job.model_validate(
        job_record(kind="manifest", inputs=[{"key": "jobs/intro.json", "versionId": "v404"}])
    )
    with pytest.raises(NotFoundError, match=r"jobs/intro\.json \(version v404\), the manifest .* is gone"):
        read_manifest(gone, cast("S3Client", fake))


def test_retry_dry_run_validates_and_estimates_the_retry_manifest(memory_stack: MemoryStack) -> None:
    video = memory_stack.s3.put("inputs/campaign/clip.mp4", b"old video")
    audio = memory_stack.s3.put("inputs/campaign/clip.wav", b"old audio")
    memory_stack.s3.put("inputs/campaign/clip.wav", b"newer audio")
    memory_stack.jobs.append(
        job_record(
            model="lipsync-2",
            inputs=[
                {"key": "inputs/campaign/clip.mp4", "versionId": video},
                {"key": "inputs/campaign/clip.wav", "versionId": audio},
            ],
            estimate=estimate(0.09, seconds=1.5),
            retriedBy=["e" * 32],
        )
    )
    before = {key: list(kept) for key, kept in memory_stack.s3.versions.items()}
    code, out, err = memory_stack("retry", OLD, "--dry-run", "--json")
    assert code == Exit.OK, err
    summary = json.loads(out)
    assert summary["dryRun"] is True
    assert summary["jobId"] is None
    assert summary["retryOf"] == OLD
    assert summary["retryOfStatus"] == "FAILED"
    assert summary["outputKey"] == "outputs/campaign/clip.mp4"  # where the old job's would have gone
    (upload,) = summary["uploads"]
    assert upload["key"].startswith(f"s3://{BUCKET}/jobs/campaign/clip.retry-")
    assert summary["manifest"]["input"][1]["url"] == (
        f"s3://{BUCKET}/inputs/campaign/clip.wav?versionId={audio}"
    )
    assert (summary["estimate"]["seconds"], summary["estimate"]["usd"]) == (1.5, 0.09)
    assert f"job {OLD} was already retried by {'e' * 32}" in summary["warnings"]
    # Validation read the pinned versions, not the newer one.
    assert ("HeadObject", "inputs/campaign/clip.wav", audio) in memory_stack.s3.reads
    assert memory_stack.s3.versions == before

    code, out, _ = memory_stack("retry", OLD, "--dry-run")
    assert code == Exit.OK
    assert f"retry of {OLD} (FAILED)" in _squeezed(out)
    assert '"retryOf": "0123456789abcdef0123456789abcdef"' in out  # the manifest, printed
    assert (
        "estimate $0.09 (1.5 s of output from the audio, list price table; the output's length"
        in _squeezed(out)
    )


def test_retry_refusals_say_why_with_their_own_exit_codes(memory_stack: MemoryStack) -> None:
    memory_stack.jobs += [
        job_record("a" * 32, status="COMPLETED", outputKey="outputs/a.mp4"),
        job_record("b" * 32, status="INVALID", error={"message": "not JSON"}),
        job_record("c" * 32, status="PENDING"),
        job_record("d" * 32, status="FAILED", kind="manifest", inputs=[{"key": "jobs/gone.json"}]),
    ]
    for job_id, code, message in (
        ("a" * 32, Exit.NOT_RETRYABLE, "COMPLETED (output outputs/a.mp4): there is nothing to retry"),
        ("b" * 32, Exit.NOT_RETRYABLE, "is INVALID: not JSON. A retry would be refused the same way"),
        (
            "c" * 32,
            Exit.NOT_FINISHED,
            "is still PENDING: it has not finished, so there is nothing to retry yet",
        ),
        ("d" * 32, Exit.NOT_FOUND, "s3://lipsync-media-test/jobs/gone.json, the manifest"),
        ("nosuchjob", Exit.NOT_FOUND, "no job nosuchjob"),
    ):
        result, _, err = memory_stack("retry", job_id, "--dry-run")
        assert result == code, job_id
        assert message in err, job_id
        assert "Traceback" not in err
    assert memory_stack.s3.versions == {}


# ---------------------------------------------------------------------------- cost


def cost_record(job_id: str, status: str, created: str, **fields: Any) -> Job:
    return Job.model_validate(job_record(job_id, status=status, createdAt=created, **fields))


def test_spend_is_summed_by_finished_day_and_model() -> None:
    jobs = [
        # counted on the day it finished, not the day it was created
        cost_record("1", "COMPLETED", "2026-03-01T23:59:00Z", finishedAt="2026-03-02T00:00:01Z",
                    model="lipsync-2", estimate=estimate(0.09), costUsd=0.06),
        cost_record("2", "FAILED", "2026-03-02T08:00:00Z", finishedAt="2026-03-02T08:01:00Z",
                    model="lipsync-2", estimate=estimate(0.09), costUsd=0.0),
        # not finished: counted on the day it was created, its cost not known yet
        cost_record("3", "PROCESSING", "2026-03-02T09:00:00Z", model="lipsync-2-pro",
                    estimate=estimate(0.15, "lipsync-2-pro")),
        # INVALID: no model, no estimate, nothing spent
        cost_record("4", "INVALID", "2026-03-03T10:00:00Z", finishedAt="2026-03-03T10:00:00Z"),
        # COMPLETED, but sync.so never said how long the output was
        cost_record("5", "COMPLETED", "2026-03-03T10:00:00Z", finishedAt="2026-03-03T10:05:00Z",
                    model="lipsync-2", estimate=estimate(0.12)),
        # an offset timestamp: 00:30 at +01:00 is still March 3rd in UTC
        cost_record("6", "COMPLETED", "2026-03-03T20:00:00Z", finishedAt="2026-03-04T00:30:00+01:00",
                    model="lipsync-2", estimate=estimate(0.06), costUsd=0.05),
        # outside the range
        cost_record("7", "COMPLETED", "2026-02-28T10:00:00Z", finishedAt="2026-02-28T10:01:00Z",
                    model="lipsync-2", estimate=estimate(1.0), costUsd=1.0),
        cost_record("8", "COMPLETED", "2026-03-04T23:00:00Z", finishedAt="2026-03-05T00:00:00Z",
                    model="lipsync-2", estimate=estimate(1.0), costUsd=1.0),
    ]  # fmt: skip
    report = spend_report(jobs, date(2026, 3, 1), date(2026, 3, 4)).stored()
    assert report["since"] == "2026-03-01"
    assert report["until"] == "2026-03-04"
    rows = [
        (row["day"], row["model"], row["jobs"], row["estimatedUsd"], row["actualUsd"], row["costUnknown"])
        for row in report["rows"]
    ]
    assert rows == [
        ("2026-03-02", "lipsync-2", 2, 0.18, 0.06, 0),
        ("2026-03-02", "lipsync-2-pro", 1, 0.15, 0.0, 1),
        ("2026-03-03", "-", 1, 0.0, 0.0, 0),
        ("2026-03-03", "lipsync-2", 2, 0.18, 0.05, 1),
    ]
    by_model = [
        (row["model"], row["jobs"], row["estimatedUsd"], row["costUnknown"]) for row in report["byModel"]
    ]
    assert by_model == [("-", 1, 0.0, 0), ("lipsync-2", 4, 0.36, 1), ("lipsync-2-pro", 1, 0.15, 1)]
    assert report["total"] == {
        "day": None,
        "model": None,
        "jobs": 6,
        "estimatedUsd": 0.51,
        "actualUsd": 0.11,
        "costUnknown": 2,
    }
    text = _text(render.spend_text(spend_report(jobs, date(2026, 3, 1), date(2026, 3, 4))))
    assert "spend from 2026-03-01 to 2026-03-04" in text
    assert "2026-03-02 lipsync-2-pro 1 $0.15 $0.00 1" in _squeezed(text)
    assert "total all 6 $0.51 $0.11 2" in _squeezed(text)
    assert "no jobs" in _text(render.spend_text(spend_report(jobs, date(2026, 1, 1), date(2026, 1, 31))))


def test_the_cost_range_defaults_to_this_month_and_is_checked() -> None:
    today = date(2026, 3, 17)
    assert day_range(None, None, today=today) == (date(2026, 3, 1), today)
    assert day_range("2026-01-05", "2026-02-01", today=today) == (date(2026, 1, 5), date(2026, 2, 1))
    for since, until, message in (
        ("2026-1-5", None, "--since '2026-1-5': expected a day as YYYY-MM-DD"),
        ("20260105", None, "--since '20260105': expected a day as YYYY-MM-DD"),
        (None, "2026-02-30", "--until '2026-02-30': expected a day as YYYY-MM-DD"),
        ("2026-03-18", None, "--since 2026-03-18 is after --until 2026-03-17"),
    ):
        with pytest.raises(UsageError, match=message):
            day_range(since, until, today=today)


def test_cost_reads_every_page_of_jobs(memory_stack: MemoryStack) -> None:
    for n in range(5):
        memory_stack.jobs.append(
            job_record(
                f"{n:032x}",
                status="COMPLETED",
                model="lipsync-2",
                finishedAt=f"2026-03-0{n + 1}T12:00:00Z",
                estimate=estimate(0.1),
                costUsd=0.05,
            )
        )
    code, out, err = memory_stack("cost", "--since", "2026-03-02", "--until", "2026-03-04", "--json")
    assert code == Exit.OK, err
    report = json.loads(out)
    assert [row["day"] for row in report["rows"]] == ["2026-03-02", "2026-03-03", "2026-03-04"]
    assert (report["total"]["jobs"], report["total"]["estimatedUsd"], report["total"]["actualUsd"]) == (
        3,
        0.3,
        0.15,
    )
    assert [query.get("cursor") for query in memory_stack.queries] == [None, ["2"], ["4"]]
    assert all(query["limit"] == ["100"] and "status" not in query for query in memory_stack.queries)
    code, out, _ = memory_stack("cost", "--since", "2026-03-01", "--until", "2026-03-31")
    assert code == Exit.OK
    assert "total all 5 $0.50 $0.25" in _squeezed(out)
    code, _, err = memory_stack("cost", "--since", "March")
    assert code == Exit.USAGE
    assert "expected a day as YYYY-MM-DD" in err


def test_a_job_shows_its_estimate_cost_and_retry_links() -> None:
    job = job_record(
        status="BUDGET_HOLD",
        holdReason="its estimate of $0.09 does not fit the monthly budget",
        estimate=estimate(0.09),
        costUsd=0.0612,
        retryOf="f" * 32,
        retriedBy=["a" * 32, "b" * 32],
    )
    text = _squeezed(_text(render.job_text(job)))
    assert "held its estimate of $0.09 does not fit the monthly budget" in text
    assert "estimate $0.09 (1.5 s of output from the audio, sync.so's estimate)" in text
    assert "cost $0.06" in text
    assert f"retry of {'f' * 32}" in text
    assert f"retried by {'a' * 32}, {'b' * 32}" in text
    assert render.status_style("BUDGET_HOLD") == "yellow"
    assert "BUDGET_HOLD" in commands.WAITING_STATUSES  # watch --all follows held jobs too
