"""Waking the dispatcher: a message on the dispatch queue, now or later (SQS delays up to 15 min).

A kick carries nothing: the dispatcher reads the queue and the plan each time, so duplicate,
lost or late kicks cost at most one extra run (the scheduled sweep covers lost ones).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

MAX_DELAY_SECONDS = 900


class Kicker(Protocol):
    def kick(self, delay_seconds: float = 0, reason: str = "") -> None: ...


class SqsKicker:
    def __init__(self, queue_url: str, client: SQSClient | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("sqs")
        self._sqs = client
        self._url = queue_url

    def kick(self, delay_seconds: float = 0, reason: str = "") -> None:
        delay = min(MAX_DELAY_SECONDS, max(0, math.ceil(delay_seconds)))
        extra: dict[str, Any] = {"DelaySeconds": delay} if delay else {}
        self._sqs.send_message(QueueUrl=self._url, MessageBody=json.dumps({"kick": reason}), **extra)
