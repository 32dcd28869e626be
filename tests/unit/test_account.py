"""sync.so's account answer: the plan's concurrency, in every form the sources give."""

from __future__ import annotations

from typing import Any

import pytest

from lipsync.syncso.models import Account


@pytest.mark.parametrize(
    ("organization", "limit"),
    [
        ({"limits": {"concurrentGenerations": 6}}, 6),
        ({"limits": {"concurrency": 15}}, 15),
        ({"generationLimits": {"maxConcurrentGenerations": 40}}, 40),
        ({"plan": {"name": "Creator"}}, 3),  # no number: the documented table
        ({"plan": "scale"}, 15),
        ({"plan": {"name": "Enterprise"}}, None),  # custom: unknown, the caller keeps what it had
        ({"limits": {"concurrency": 0}, "plan": {"name": "Hobbyist"}}, 1),  # not a limit: the name
        ({"limits": {"concurrency": True}}, None),
        ({}, None),
    ],
)
def test_the_plans_concurrency(organization: dict[str, Any], limit: int | None) -> None:
    answer = {"account": None, "credentialType": "api_key", "organization": organization}
    assert Account.model_validate(answer).concurrency_limit() == limit


def test_fields_it_does_not_read_are_kept() -> None:
    account = Account.model_validate({"organization": {}, "billing": {"model": "credits"}})
    assert account.model_dump(by_alias=True)["billing"] == {"model": "credits"}
