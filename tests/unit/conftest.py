"""Unit tests run with the network disabled: anything that opens a socket fails. AWS is moto in
process (botocore is intercepted, no sockets), so DynamoDB conditions and transactions are real."""

from collections.abc import Iterator

import pytest
from moto import mock_aws
from pytest_socket import disable_socket, enable_socket

from tests.unit.test_dispatch import world  # noqa: F401 - the moto-backed dispatch world, for every unit test


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    disable_socket(allow_unix_socket=True)
    with mock_aws():
        yield
    enable_socket()
