"""`lipsync` without a stack: arguments, targets, validation errors and rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from rich.console import Console

from lipsync_cli import render
from lipsync_cli.app import _bare_local, build_parser, main
from lipsync_cli.errors import Exit, NotFoundError, UsageError
from lipsync_cli.submission import manifest_submission, pair_submission, parse_options
from lipsync_cli.targets import from_stack, resolve

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
        {"ParameterKey": "DefaultOptions", "ParameterValue": '{"sync_mode": "loop"}'},
    ],
}


def test_a_deployed_stack_is_found_through_its_outputs() -> None:
    target = from_stack("lipsync", FakeCloudFormation({"lipsync": DEPLOYED}), CREDENTIALS, "eu-west-1")
    assert (target.bucket, target.api_url, target.jobs_table) == (
        "lipsync-media-123",
        "https://abc.execute-api.eu-west-1.amazonaws.com/v1",
        "lipsync-jobs",
    )
    assert (target.default_model, target.default_options) == ("lipsync-2-pro", '{"sync_mode": "loop"}')
    assert target.endpoint_url is None
    assert target.region == "eu-west-1"


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
    for argv in (["--help"], ["submit", "--help"], ["watch", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "example" in text
        assert "exit codes" in text
        assert "3  not found" in text


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
    assert "j1" in _text(render.jobs_table([job]))
