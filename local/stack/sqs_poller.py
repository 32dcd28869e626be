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
    """One thread per SQS event source (MaximumConcurrency is not emulated beyond that)."""

    def __init__(self, source: SqsSource, sqs: Any, invoke: Invoker) -> None:
        self.source = source
        self._sqs = sqs
        self._invoke = invoke
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sqs-poller-{source.function}", daemon=True)
        self.idle_since: float | None = None  # start time of the last receive that found nothing
        self.batches = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=_WAIT_SECONDS + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                found = self.poll_once()
            except Exception:  # keep polling like the real mapping; the error is in the log
                logger.exception("SQS poller for %s failed", self.source.function)
                self._stop.wait(1)
                continue
            self.idle_since = None if found else started

    def poll_once(self) -> bool:
        """Receive one batch and process it; False when the queue had nothing visible."""
        response = self._sqs.receive_message(
            QueueUrl=self.source.queue_url,
            MaxNumberOfMessages=min(self.source.batch_size, 10),
            WaitTimeSeconds=_WAIT_SECONDS,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return False
        self.batches += 1
        records = [_record(m, self.source) for m in messages]
        result, errored = self._invoke(self.source.function, {"Records": records})
        for message in self._succeeded(messages, result, errored):
            self._sqs.delete_message(QueueUrl=self.source.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return True

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
