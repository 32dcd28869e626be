"""The one-machine stack's asynchronous invocations end in the function's dead-letter queue, as
Lambda's do (the DispatchFunction's DeadLetterQueue takes sweeps and execution-ended events it
failed for good)."""

from __future__ import annotations

from typing import Any

from local.stack.events import AsyncInvoker, Delivery


def test_an_event_that_fails_every_attempt_goes_to_the_dead_letter_callback() -> None:
    calls: list[str] = []
    dead: list[Delivery] = []

    def failing(function: str, event: Any) -> tuple[Any, bool]:
        calls.append(function)
        return {"errorType": "AccessDeniedException", "errorMessage": "injected"}, True

    invoker = AsyncInvoker(failing, retries=2, retry_delay=0.0, dead_letter=dead.append)
    delivery = invoker.submit("DispatchFunction", "rule:ExecutionEnded", {"detail": {"status": "ABORTED"}})
    assert delivery.done.wait(5)
    invoker.stop()
    assert (len(calls), delivery.attempts, delivery.dropped) == (3, 3, True)
    assert dead == [delivery]


def test_an_event_that_succeeds_on_a_retry_is_not_dead_lettered() -> None:
    answers = iter([({"errorType": "X"}, True), ({"ok": True}, False)])
    dead: list[Delivery] = []
    invoker = AsyncInvoker(
        lambda function, event: next(answers), retries=2, retry_delay=0.0, dead_letter=dead.append
    )
    delivery = invoker.submit("DispatchFunction", "schedule:Sweep", {"sweep": True})
    assert delivery.done.wait(5)
    invoker.stop()
    assert (delivery.attempts, delivery.dropped, dead) == (2, False, [])
