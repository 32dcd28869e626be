"""EventBridge, locally: scheduled rules, Step Functions status-change events, async delivery.

moto stores the rules (put_rule/put_targets) but never fires them, so the stack does:

- `ScheduleTimer`: one timer thread per enabled `Type: Schedule` event, firing every period;
- `ExecutionWatcher`: polls the stack's state machines' executions and turns each status
  change into the "Step Functions Execution Status Change" event, delivered to every
  enabled `Type: EventBridgeRule` whose pattern matches it (moto's own pattern matcher);
- `AsyncInvoker`: EventBridge invokes Lambda asynchronously; an error is retried twice
  (Lambda's async retries, with a short delay instead of minutes), then logged and dropped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from moto.events.models import EventPattern
from moto.events.utils import EventMessageType

from .provision import RuleSource, ScheduleSource
from .template import ACCOUNT_ID, REGION

logger = logging.getLogger(__name__)

# (function logical id, event) -> (handler result, errored)
Invoker = Callable[[str, Any], tuple[Any, bool]]

STATUS_CHANGE = "Step Functions Execution Status Change"
_DELIVERY_HISTORY = 1000  # deliveries kept for inspection


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether an EventBridge event pattern matches the event (moto's implementation)."""
    return bool(EventPattern.load(json.dumps(pattern)).matches_event(cast(EventMessageType, event)))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch_ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def scheduled_event(rule_arn: str, now: datetime | None = None) -> dict[str, Any]:
    """What EventBridge sends a scheduled rule's target when the rule has no Input."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": _iso(now or datetime.now(UTC)),
        "region": REGION,
        "resources": [rule_arn],
        "detail": {},
    }


def execution_status_event(description: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    """The EventBridge event Step Functions emits for a status change, from describe_execution.

    `status="RUNNING"` builds the start event of an execution first seen already finished.
    """
    status = status or description["status"]
    finished = status != "RUNNING"
    output = description.get("output") if status == "SUCCEEDED" else None
    stop_date = description.get("stopDate") if finished else None
    if finished and stop_date is None:
        stop_date = datetime.now(UTC)  # moto leaves stopDate out for TIMED_OUT
    moment: datetime = stop_date if stop_date is not None else description["startDate"]
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": STATUS_CHANGE,
        "source": "aws.states",
        "account": ACCOUNT_ID,
        "time": _iso(moment),
        "region": REGION,
        "resources": [description["executionArn"]],
        "detail": {
            "executionArn": description["executionArn"],
            "stateMachineArn": description["stateMachineArn"],
            # moto leaves the name out when StartExecution had none; it is the ARN's last part.
            "name": description.get("name") or description["executionArn"].rsplit(":", 1)[-1],
            "status": status,
            "startDate": _epoch_ms(description["startDate"]),
            "stopDate": _epoch_ms(stop_date),
            "input": description.get("input"),
            "inputDetails": {"included": True},
            "output": output,
            "outputDetails": {"included": True} if output is not None else None,
            "error": description.get("error") if finished else None,
            "cause": description.get("cause") if finished else None,
        },
    }


# ---------------------------------------------------------------------- async delivery
@dataclass
class Delivery:
    """One asynchronous invocation and what became of it."""

    function: str
    source: str  # "schedule:<rule>" or "rule:<rule>"
    event: Any
    attempts: int = 0
    result: Any = None
    errored: bool | None = None  # None while in flight
    dropped: bool = False  # failed on every attempt
    done: threading.Event = field(default_factory=threading.Event, repr=False)


DeadLetter = Callable[["Delivery"], None]


class AsyncInvoker:
    """Lambda's asynchronous invocation: queued, run in the background, retried on error; an event
    that failed every attempt goes to the function's dead-letter queue when it has one."""

    def __init__(
        self,
        invoke: Invoker,
        retries: int = 2,
        retry_delay: float = 1.0,
        workers: int = 32,
        dead_letter: DeadLetter | None = None,
    ) -> None:
        self._invoke = invoke
        self._dead_letter = dead_letter
        self.retries = retries
        self.retry_delay = retry_delay
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="async-invoke")
        self._lock = threading.Lock()
        self.deliveries: deque[Delivery] = deque(maxlen=_DELIVERY_HISTORY)

    def submit(self, function: str, source: str, event: Any) -> Delivery:
        delivery = Delivery(function, source, event)
        with self._lock:
            self.deliveries.append(delivery)
        if self._stop.is_set():
            delivery.done.set()
            return delivery
        self._executor.submit(self._run, delivery)
        return delivery

    def _run(self, delivery: Delivery) -> None:
        try:
            for attempt in range(1 + self.retries):
                if attempt and self._stop.wait(self.retry_delay):
                    return  # shutting down: the event is lost, as when a stack is deleted
                delivery.attempts += 1
                try:
                    result, errored = self._invoke(delivery.function, delivery.event)
                except Exception as error:  # an invoke that did not reach the handler is an error too
                    result, errored = {"errorType": type(error).__name__, "errorMessage": str(error)}, True
                delivery.result, delivery.errored = result, errored
                if not errored:
                    return
            delivery.dropped = True
            if self._dead_letter is not None:
                try:
                    self._dead_letter(delivery)
                except Exception:
                    logger.exception("could not dead-letter the async invocation of %s", delivery.function)
            logger.warning(
                "async invocation of %s from %s failed %d times, dropped: %s",
                delivery.function,
                delivery.source,
                delivery.attempts,
                delivery.result,
            )
        finally:
            delivery.done.set()

    def stop(self) -> None:
        """Stop retrying and drop what is queued; invocations already running finish on their own."""
        self._stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------- sources
class ScheduleTimer:
    """Fires one `Type: Schedule` event every period; a slow handler does not delay the next tick."""

    def __init__(self, source: ScheduleSource, period: float, deliver: AsyncInvoker) -> None:
        self.source = source
        self.period = period
        self.ticks = 0
        self._deliver = deliver
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"schedule-{source.rule_name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        next_tick = time.monotonic() + self.period  # like EventBridge: first fire one period after creation
        while not self._stop.wait(max(0.0, next_tick - time.monotonic())):
            self.ticks += 1
            source = self.source
            event = source.input if source.input is not None else scheduled_event(source.rule_arn)
            self._deliver.submit(source.function, f"schedule:{source.rule_name}", event)
            next_tick = max(next_tick + self.period, time.monotonic())  # a missed tick is skipped


class ExecutionWatcher:
    """Polls executions of the stack's state machines; each status change is one EventBridge event."""

    def __init__(
        self,
        sfn: Any,
        state_machine_arns: Iterable[str],
        rules: Iterable[RuleSource],
        deliver: AsyncInvoker,
        interval: float = 0.2,
    ) -> None:
        self._sfn = sfn
        self.state_machine_arns = list(state_machine_arns)
        self.rules = [r for r in rules if r.enabled]
        self._deliver = deliver
        self.interval = interval
        self._statuses: dict[str, str] = {}  # execution ARN -> last status seen
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="execution-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def status_seen(self, execution_arn: str) -> str | None:
        """The last status the watcher saw (and dispatched events for)."""
        with self._lock:
            return self._statuses.get(execution_arn)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll_once()
            except Exception:  # keep watching; the error is in the log
                logger.exception("execution watcher failed")

    def poll_once(self) -> None:
        paginator = self._sfn.get_paginator("list_executions")
        for machine in self.state_machine_arns:
            for page in paginator.paginate(stateMachineArn=machine):
                for item in page["executions"]:
                    if self._stop.is_set():
                        return
                    if self._statuses.get(item["executionArn"]) != item["status"]:
                        self._changed(item["executionArn"])

    def _changed(self, execution_arn: str) -> None:
        description = self._sfn.describe_execution(executionArn=execution_arn)
        previous, status = self._statuses.get(execution_arn), description["status"]
        if previous == status:
            return
        events = []
        if previous is None and status != "RUNNING":  # it started and finished between two polls
            events.append(execution_status_event(description, "RUNNING"))
        events.append(execution_status_event(description))
        for event in events:
            for rule in self.rules:
                if matches(rule.pattern, event):
                    target_event = rule.input if rule.input is not None else event
                    self._deliver.submit(rule.function, f"rule:{rule.rule_name}", target_event)
        with self._lock:
            self._statuses[execution_arn] = status


class EventSources:
    """The schedules and rules of a stack, started and stopped together."""

    def __init__(
        self,
        schedules: Iterable[ScheduleSource],
        rules: Iterable[RuleSource],
        state_machine_arns: Iterable[str],
        sfn: Any,
        invoke: Invoker,
        schedule_period_seconds: float | None = None,
        dead_letter: DeadLetter | None = None,
    ) -> None:
        self.invoker = AsyncInvoker(invoke, dead_letter=dead_letter)
        self.timers = [
            ScheduleTimer(s, schedule_period_seconds or s.period_seconds, self.invoker)
            for s in schedules
            if s.enabled
        ]
        enabled_rules = [r for r in rules if r.enabled]
        arns = list(state_machine_arns)
        self.watcher = (
            ExecutionWatcher(sfn, arns, enabled_rules, self.invoker) if enabled_rules and arns else None
        )

    def start(self) -> None:
        for timer in self.timers:
            timer.start()
        if self.watcher:
            self.watcher.start()

    def stop(self) -> None:
        for timer in self.timers:
            timer.stop()
        if self.watcher:
            self.watcher.stop()
        self.invoker.stop()
