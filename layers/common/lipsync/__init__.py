"""The lipsync pipeline's shared package, shipped in the common layer (imported as /opt/python/lipsync).

One module per concept:
    models         the sync.so generate API (requests, generations, error bodies)
    sync_client    the httpx client; every failure is SyncRetryableError or SyncPermanentError
    webhook_auth   per-job URL tokens and Sync-Signature verification
    config         each function's environment as a model; secrets through Powertools Parameters
    jobs           the job record, its identity and its forward-only statuses
    job_store      the jobs table (DynamoDB)           storage    the media bucket (S3)
    workflow       the JobLifecycle state machine       s3_events  S3 notifications from SQS
    submission     objects in the bucket -> one sync.so generation each
    webhooks       the webhook receiver and the arm task (both sides of the race)
    lifecycle      polling and finalizing (copy the output, write the job document)
    documents      outputs/<name>.json                  observability  logger, metrics, tracer
"""
