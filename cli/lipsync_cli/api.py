"""The IAM-authorised status routes (GET /jobs/{id}, GET /jobs, GET /queue), signed with botocore's
SigV4 (service execute-api), as API Gateway and the one-machine stack's front door both require."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from lipsync_cli.errors import AwsError, NotFoundError, UsageError
from lipsync_cli.targets import Target

TIMEOUT_SECONDS = 15.0


class StatusApi:
    def __init__(self, target: Target, client: httpx.Client | None = None) -> None:
        self._target = target
        self._client = client or httpx.Client(timeout=TIMEOUT_SECONDS)

    def close(self) -> None:
        self._client.close()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._get(f"/jobs/{quote(job_id, safe='')}", not_found=f"no job {job_id}")

    def jobs(
        self, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> dict[str, Any]:
        query = (
            {"limit": str(limit)}
            | ({"status": status} if status else {})
            | ({"cursor": cursor} if cursor else {})
        )
        return self._get(f"/jobs?{urlencode(query)}")

    def queue(self) -> dict[str, Any]:
        return self._get("/queue")

    def _get(self, path: str, *, not_found: str = "not found") -> dict[str, Any]:
        url = f"{self._target.api_url}{path}"
        request = AWSRequest(method="GET", url=url)
        SigV4Auth(self._target.credentials, "execute-api", self._target.region).add_auth(request)
        try:
            response = self._client.get(url, headers=dict(request.headers.items()))
        except httpx.HTTPError as error:
            raise AwsError(f"GET {url}: {error or type(error).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:200]}
        message = (body.get("message") if isinstance(body, dict) else None) or response.reason_phrase
        if response.status_code == 404:
            raise NotFoundError(not_found if "no job" in not_found else f"{path}: {message}")
        if response.status_code == 400:
            raise UsageError(f"the API refused the request: {message}")
        if response.status_code in (401, 403):
            raise AwsError(f"the API refused the credentials ({response.status_code}): {message}")
        if response.status_code >= 300 or not isinstance(body, dict):
            raise AwsError(f"GET {path}: HTTP {response.status_code}: {message}")
        return body
