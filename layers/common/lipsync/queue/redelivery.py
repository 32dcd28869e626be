"""When an S3 event could not be turned into a job (AWS itself failed), SQS delivers it again.

Lambda leaves a failed message invisible for the queue's whole visibility timeout (six function
timeouts: six minutes here) before the next try. A transient DynamoDB or S3 error deserves a
sooner one: the failed message's visibility is cut to a backoff that grows with each receive
(10 s, 20 s, 40 s, ... at most 5 minutes). The queue's redrive policy still moves it to the
dead-letter queue after `SubmitMaxReceiveCount` receives.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

FIRST_RETRY_SECONDS = 10
LAST_RETRY_SECONDS = 300


def retry_in(receive_count: int) -> int:
    return int(min(LAST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(0, receive_count - 1)))


def retry_sooner(sqs: SQSClient, queue_url: str, receipt_handle: str, receive_count: int) -> None:
    """Best effort: if this fails too, the message comes back after the full visibility timeout."""
    with contextlib.suppress(Exception):  # the redelivery happens either way
        sqs.change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=retry_in(receive_count)
        )
