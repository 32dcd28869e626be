"""Logger, metrics and (only when enabled) the tracer, shared by every handler.

The Tracer costs about 0.25 s of cold start (it imports the X-Ray SDK), so it is created
only when POWERTOOLS_TRACE_DISABLED is not "true".
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from lipsync.config import environment

DEFAULT_NAMESPACE = "LipsyncPipeline"  # the template's MetricsNamespace default, for code run outside Lambda

# The level is Tuning's LogLevel (INFO by default), unless the environment sets one itself.
logger = Logger(level=environment()["POWERTOOLS_LOG_LEVEL"])
# The template sets the namespace; code run elsewhere (tests, the CLI) still flushes 100 metrics safely.
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE)
# Not every invocation has a metric to report (a duplicate event, an arm task); that is fine.
warnings.filterwarnings("ignore", message="No application metrics to publish")


def tracing_enabled() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").lower() != "true"


def lambda_handler[Handler: Callable[..., Any]](handler: Handler) -> Handler:
    """Wrap a Lambda entry point with structured logging, metrics and optional tracing."""
    wrapped = logger.inject_lambda_context(clear_state=True)(handler)
    wrapped = metrics.log_metrics(raise_on_empty_metrics=False)(wrapped)
    if tracing_enabled():
        from aws_lambda_powertools import Tracer

        wrapped = Tracer().capture_lambda_handler(capture_response=False)(wrapped)
    return wrapped


def count(metric: str, value: float = 1) -> None:
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=value)


def count_by(metric: str, dimension: str, value: str, amount: float = 1) -> None:
    """A count with one low-cardinality dimension (an outcome, a reason, a kind; never an id).

    Powertools puts one dimension set on every metric of a flush, so a dimensioned count goes out
    at once as its own EMF line (`single_metric`), with the `service` dimension the others carry."""
    with single_metric(
        name=metric,
        unit=MetricUnit.Count,
        value=amount,
        namespace=metrics.namespace or DEFAULT_NAMESPACE,
        default_dimensions=metrics.default_dimensions,
    ) as metric_line:
        metric_line.add_dimension(name="service", value=metrics.service or "service_undefined")
        metric_line.add_dimension(name=dimension, value=value)
    # ... and the total, with the other metrics' dimensions: what a single-metric alarm reads.
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=amount)


def percent(metric: str, value: float) -> None:
    metrics.add_metric(name=metric, unit=MetricUnit.Percent, value=value)


def seconds(metric: str, value: float) -> None:
    metrics.add_metric(name=metric, unit=MetricUnit.Seconds, value=value)


def gauge(metric: str, value: float) -> None:
    """A level (a queue's depth), not an event count: dashboards and alarms read its Maximum."""
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=value)


def usd(metric: str, value: float) -> None:
    """An amount of money, in US dollars (CloudWatch has no currency unit)."""
    metrics.add_metric(name=metric, unit=MetricUnit.NoUnit, value=round(value, 4))
