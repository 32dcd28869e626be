"""A local emulator of the sync.so lipsync API v2 (a real HTTP server).

It follows /work/shared/docs/sync-api.md: `x-api-key` auth, `POST /v2/generate` with
the API's 400/422 validation, input URLs fetched at create (unreachable -> 422) and
again when processing starts (unreachable -> FAILED `generation_input_*_inaccessible`),
Idempotency-Key (a concurrent duplicate -> 409 IDEMPOTENCY_REQUEST_IN_PROGRESS), plan
concurrency 429s with a fixed hint, a rate limit that counts every create request,
jobs that go PENDING -> PROCESSING -> COMPLETED/FAILED/REJECTED on a background clock, signed
webhooks (`Sync-Signature: t=..,v1=..`), signed expiring output URLs, long-poll GET,
list with cursor paging, `/download`, and minimal assets. The output MP4 is the
input video (or looped image) with the input audio muxed in -- NOT lip-synced.

Usage::

    from local.sync_emulator import EmulatorConfig, SyncEmulator
    emu = SyncEmulator(EmulatorConfig(processing_seconds=1.0), host="127.0.0.1", port=0)
    emu.start()            # background thread; emu.url == "http://127.0.0.1:PORT"
    emu.set_scenario({"webhook": "duplicate"})
    emu.requests(); emu.webhooks(); emu.stats(); emu.reset()
    emu.rotate_api_key("sk-new")   # the old key gets 401 from now on (reset restores it)
    emu.stop()

or ``python -m local.sync_emulator --port 8089`` (see --help and docs/emulator.md).

Admin endpoints (no auth, not in the request log): GET /_emulator/requests,
GET /_emulator/webhooks, GET|POST /_emulator/scenario, GET /_emulator/stats,
POST /_emulator/api-key {"apiKey": ...}, POST /_emulator/reset, GET /_emulator/health.

Scenario schema (POST /_emulator/scenario merges keys; null restores a default).
The scenario in force when a generation is created fixes that generation's fate::

    {
      "webhook": "deliver" | "drop" | "duplicate" | "reorder",
                                  # reorder: the terminal webhook first, then a stale PROCESSING one
      "webhookDelaySeconds": 0,
      "webhookStatuses": ["COMPLETED", "FAILED"],   # any of PENDING/PROCESSING/COMPLETED/FAILED/REJECTED
      "createFailures": [{"status": 429, "errorCode": "rate_limit_exceeded", "count": 2,
                          "retryAfterSeconds": 1, "afterCreate": false}],
                                  # the next `count` creates answer with this status and a realistic body;
                                  # afterCreate=true: the generation IS created but the answer is lost
                                  # (503 IDEMPOTENCY_OUTCOME_UNKNOWN, or the given status/errorCode,
                                  # with "generationId")
      "getFailures": [{"status": 503, "errorCode": "internal_error", "count": 1}],
      "outcome": "COMPLETED" | "FAILED" | "REJECTED" | "NEVER",   # NEVER: PROCESSING forever
      "outcomeErrorCode": "generation_pipeline_failed", "outcomeError": "text",
      "processingSeconds": null,   # overrides --processing-seconds
      "outputUrlTtlSeconds": null, # 0: outputUrl already expired when returned (/download still works)
      "latencySeconds": 0,         # added to every /v2 answer
      "outputDownloadFailures": 0,  # the next N output downloads break off halfway (a failure mid-copy)
      "concurrentDuplicate": "conflict" | "wait",  # same Idempotency-Key while the first is unanswered:
                                  # 409 IDEMPOTENCY_REQUEST_IN_PROGRESS, or wait and get its replay
      "outage": {"seconds": 12, "mode": "unavailable" | "drop"},  # every /v2 call 503s, or its
                                  # connection drops, for that long; nothing is created meanwhile
    }
    # A createFailures entry's "delaySeconds" answers that much later (an answer the client times out on).
"""

from .server import SyncEmulator
from .state import EmulatorConfig

__all__ = ["EmulatorConfig", "SyncEmulator"]
