"""The lifecycle functions' adapters (Reconcile and Finalize share them), built once per container."""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

from lipsync.config import FinalizeSettings, PlanLimits, secret_reader
from lipsync.generation.lifecycle import Slots
from lipsync.jobs.events import EventBridgeJobEvents
from lipsync.jobs.store import DynamoJobStore
from lipsync.plan.admission import DynamoAdmission
from lipsync.plan.kicks import SqsKicker
from lipsync.storage import S3Storage
from lipsync.syncso.client import SyncClient


class LifecycleWiring(NamedTuple):
    store: DynamoJobStore
    storage: S3Storage
    sync: SyncClient
    slots: Slots
    events: EventBridgeJobEvents


@cache
def lifecycle_wiring() -> LifecycleWiring:
    settings = FinalizeSettings.from_env()
    store = DynamoJobStore(settings.jobs_table)
    limits = PlanLimits.from_env()
    return LifecycleWiring(
        store,
        S3Storage(settings.media_bucket),
        SyncClient(settings.sync_api_base_url, secret_reader(settings.sync_api_key_secret)),
        Slots(
            DynamoAdmission(settings.admission_table, store),
            SqsKicker(settings.dispatch_queue_url),
            limits.transient_retries,
        ),
        EventBridgeJobEvents.from_env(),
    )
