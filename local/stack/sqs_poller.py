"""The SQS event source mapping: long-poll a queue, hand batches to the function, delete what succeeded.

Lambda's poller never changes message visibility itself: a message that was not deleted
becomes visible again after the queue's visibility timeout (or whatever the handler set),
and SQS moves it to the dead-letter queue after `maxReceiveCount` receives (moto does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .provision import SqsSource
from .template import REGION

logger = logging.getLogger(__name__)

# (function logical id, event) -> (handler result, errored)
Invoker = Callable[[str, dict[str, Any]], tuple[Any, bool]]

_WAIT_SECONDS = 1  # short long-polls keep shutdown and wait_idle() quick


def _record(message: dict[str, Any], source: SqsSource) -> dict[str, Any]:
    """One entry of the SQS event's Records, as Lambda builds it."""
    attributes = message.get("Attributes", {})
    message_attributes = {
        name: {
            "stringValue": value.get("StringValue"),
            "binaryValue": value.get("BinaryValue"),
            "stringListValues": value.get("StringListValues", []),
            "binaryListValues": value.get("BinaryListValues", []),
            "dataType": value["DataType"],
        }
        for name, value in message.get("MessageAttributes", {}).items()
    }
    keep = (
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
        "SequenceNumber",
        "MessageGroupId",
        "MessageDeduplicationId",
        "AWSTraceHeader",
    )
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {k: attributes[k] for k in keep if k in attributes},
        "messageAttributes": message_attributes,
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": source.queue_arn,
        "awsRegion": REGION,
    }


class SqsPoller:
    """One SQS event source mapping: `concurrency` receiver threads, each with at most one batch in flight.

    `concurrency` is the source's `ScalingConfig.MaximumConcurrency`, else the function's own
    limit, as in Lambda; the function's worker pool caps the handlers actually running.
    """

    def __init__(self, source: SqsSource, sqs: Any, invoke: Invoker, concurrency: int = 1) -> None:
        self.source = source
        self.concurrency = max(1, concurrency)
        self._sqs = sqs
        self._invoke = invoke
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # Per receiver: start time of its last receive that found nothing; None while it has work.
        self._idle: list[float | None] = [None] * self.concurrency
        self._threads = [
            threading.Thread(
                target=self._run, args=(i,), name=f"sqs-poller-{source.function}-{i}", daemon=True
            )
            for i in range(self.concurrency)
        ]
        self.batches = 0
        self.in_flight = 0  # batches being handled right now
        self.peak_in_flight = 0

    @property
    def idle_since(self) -> float | None:
        """Since when every receiver has found the queue empty with no batch in flight, else None."""
        with self._lock:
            if any(since is None for since in self._idle):
                return None
            return min(since for since in self._idle if since is not None)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + _WAIT_SECONDS + 5
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _run(self, receiver: int) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                messages = self._receive_batch(receiver)
                if messages:
                    self._process(messages)
            except Exception:  # keep polling like the real mapping; the error is in the log
                logger.exception("SQS poller for %s failed", self.source.function)
                with self._lock:
                    self._idle[receiver] = None
                self._stop.wait(1)
                continue
            if not messages:
                with self._lock:
                    self._idle[receiver] = started

    def poll_once(self) -> bool:
        """Receive one batch and process it; False when the queue had nothing visible."""
        messages = self._receive_batch(None)
        if messages:
            self._process(messages)
        return bool(messages)

    def _receive(self, wait_seconds: int, limit: int) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=self.source.queue_url,
            MaxNumberOfMessages=min(limit, 10),
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def _receive_batch(self, receiver: int | None) -> list[dict[str, Any]]:
        """One batch: the first receive's messages, plus more until BatchSize or the batching window ends."""
        source = self.source
        messages = self._receive(_WAIT_SECONDS, source.batch_size)
        if not messages:
            return []
        with self._lock:  # busy from the first message on, so wait_idle() cannot see this as idle
            if receiver is not None:
                self._idle[receiver] = None
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        batch = {m["MessageId"]: m for m in messages}
        deadline = time.monotonic() + source.maximum_batching_window
        while len(batch) < source.batch_size and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            more = self._receive(0, source.batch_size - len(batch))
            if more:
                # A message seen twice (its visibility timeout ran out meanwhile) is kept once,
                # with the newest receipt handle.
                batch.update({m["MessageId"]: m for m in more})
            else:
                self._stop.wait(min(0.1, remaining))
        return list(batch.values())

    def _process(self, messages: list[dict[str, Any]]) -> None:
        try:
            with self._lock:
                self.batches += 1
            records = [_record(m, self.source) for m in messages]
            result, errored = self._invoke(self.source.function, {"Records": records})
            for message in self._succeeded(messages, result, errored):
                self._sqs.delete_message(
                    QueueUrl=self.source.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
        finally:
            with self._lock:
                self.in_flight -= 1

    def _succeeded(self, messages: list[dict[str, Any]], result: Any, errored: bool) -> list[dict[str, Any]]:
        if errored:
            return []  # the whole batch is retried
        if not self.source.report_batch_item_failures:
            return messages
        failures = (result or {}).get("batchItemFailures") if isinstance(result, dict) else None
        if not failures:
            return messages
        ids = {m["MessageId"] for m in messages}
        failed = {f.get("itemIdentifier") for f in failures if isinstance(f, dict)}
        if not failed <= ids:
            # Lambda treats an empty or unknown itemIdentifier as a failure of the whole batch.
            logger.warning("%s returned unknown itemIdentifiers %s", self.source.function, failed - ids)
            return []
        return [m for m in messages if m["MessageId"] not in failed]
