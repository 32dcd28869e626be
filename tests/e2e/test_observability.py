"""Metrics, the dashboard, the alarms and `Job Finished` events on the one-machine stack."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from lipsync.jobs.events import DETAIL_TYPE, SOURCE
from tests.e2e.conftest import Pipeline
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def finished_events_queue(pipeline: Pipeline) -> str:
    """A rule on the default bus (the template's EventBusName) that copies `Job Finished` events
    into a fresh SQS queue, as a downstream consumer would subscribe."""
    events, sqs = pipeline.stack.client("events"), pipeline.stack.client("sqs")
    name = f"finished-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventPattern=json.dumps({"source": [SOURCE], "detail-type": [DETAIL_TYPE]}))
    events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": arn}])
    return url


def events_for(pipeline: Pipeline, url: str, job_id: str, seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sqs = pipeline.stack.client("sqs")
    for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        seen.append(json.loads(message["Body"]))
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return [event for event in seen if event["detail"]["jobId"] == job_id]


def emf_lines(pipeline: Pipeline, function: str, metric: str) -> list[dict[str, Any]]:
    """The EMF blobs in a function's log that carry `metric`."""
    found = []
    for line in pipeline.stack.function_logs(function).splitlines():
        start = line.find('{"_aws"')
        if start < 0:
            continue
        blob = json.loads(line[start:])
        if metric in blob:
            found.append(blob)
    return found


def test_a_finished_job_sends_one_event_and_its_outcome_metric(pipeline: Pipeline) -> None:
    url = finished_events_queue(pipeline)
    name = pipeline.drop_pair("announced")
    job = pipeline.wait_job(name)
    assert job["status"] == "COMPLETED"
    seen: list[dict[str, Any]] = []
    (event,) = eventually(lambda: events_for(pipeline, url, job["jobId"], seen), what="the job's event")
    assert (event["source"], event["detail-type"]) == (SOURCE, DETAIL_TYPE)
    detail = event["detail"]
    assert (detail["status"], detail["outputKey"], detail["generationId"]) == (
        "COMPLETED",
        job["outputKey"],
        job["generationId"],
    )
    assert detail["timings"]["generationSeconds"] >= 0
    assert detail["timings"]["uploadToOutputSeconds"] >= detail["timings"]["generationSeconds"]
    outcomes = [
        blob
        for blob in emf_lines(pipeline, "FinalizeFunction", "JobsFinished")
        if blob.get("Outcome") == "COMPLETED"
    ]
    assert outcomes, "finalize printed no JobsFinished line"
    directive = outcomes[-1]["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "LipsyncPipeline"
    assert directive["Dimensions"] == [["service", "Outcome"]]
    # FailedJobRateAlarm reads what finalize emits: FailedJobPercent, service only, 0 for this job.
    rates = emf_lines(pipeline, "FinalizeFunction", "FailedJobPercent")
    assert rates, "finalize printed no FailedJobPercent line"
    rate = rates[-1]
    values = rate["FailedJobPercent"]
    assert (values if isinstance(values, list) else [values]) == [0]
    emitted = rate["_aws"]["CloudWatchMetrics"][0]
    alarm_name = pipeline.stack.provisioned.resources["FailedJobRateAlarm"]["Ref"]
    (alarm,) = pipeline.stack.client("cloudwatch").describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (
        emitted["Namespace"],
        "FailedJobPercent",
        "Average",
    )
    assert [[d["Name"] for d in alarm["Dimensions"]]] == emitted["Dimensions"]
    assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == {"service": rate["service"]}


def test_an_invalid_upload_sends_its_event_from_intake(pipeline: Pipeline) -> None:
    url = finished_events_queue(pipeline)
    name = pipeline.drop_manifest("broken", b"{not json")
    job = pipeline.wait_job(name)
    assert job["status"] == "INVALID"
    seen: list[dict[str, Any]] = []
    (event,) = eventually(lambda: events_for(pipeline, url, job["jobId"], seen), what="the INVALID event")
    assert event["detail"]["status"] == "INVALID"
    assert "outputKey" not in event["detail"]


def test_the_dashboard_and_the_alarms_are_provisioned(pipeline: Pipeline) -> None:
    cloudwatch, resources = pipeline.stack.client("cloudwatch"), pipeline.stack.provisioned.resources
    dashboard = resources["Dashboard"]["Ref"]
    body = json.loads(cloudwatch.get_dashboard(DashboardName=dashboard)["DashboardBody"])
    titles = [widget["properties"]["title"] for widget in body["widgets"]]
    assert "Jobs finished, by outcome" in titles
    assert "${" not in json.dumps(body)  # every reference resolved
    names = [
        resources[alarm]["Ref"]
        for alarm in ("FailedJobRateAlarm", "RejectedWebhooksAlarm", "OldestQueuedJobAlarm")
    ]
    alarms = cloudwatch.describe_alarms(AlarmNames=names)["MetricAlarms"]
    assert sorted(alarm["AlarmName"] for alarm in alarms) == sorted(names)
