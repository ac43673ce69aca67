"""OpenTelemetry helpers: the `otel` backend with your own providers, and `setup()`
for applications that have no tracing configured yet.

    import historymw as hm
    from historymw import otel as hm_otel

    # The application already has providers (the usual case): just name the backend.
    hm.configure(backends=["ring", "otel"])

    # Or pass providers explicitly.
    hm.configure(backends=["ring", hm_otel.backend(tracer_provider=tp, meter_provider=mp)])

    # No OpenTelemetry set up at all: install OTLP/HTTP exporters (console when no endpoint).
    hm_otel.setup(service_name="my-service")
    hm.configure(backends=["ring", "otel"])

historymw never replaces providers an application installed; `setup()` is the
one place that installs any, and only where there are none.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

from .backends.otel import OTelBackend, content_on_spans
from .errors import require

__all__ = ["OTelBackend", "Installed", "backend", "content_on_spans", "metrics_wanted", "setup"]

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def backend(*, tracer_provider: Any = None, meter_provider: Any = None, capture_content: bool | None = None,
            max_field_chars: int | None = None, metrics: bool = True,
            compat: str | None = None) -> OTelBackend:
    """An `otel` backend object for `hm.configure(backends=[...])`, on the given providers
    (the global ones when omitted). `capture_content` None follows the
    `otel_capture_content` setting, then OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT.
    `compat="openinference"` adds OpenInference's attributes (None follows the `otel_compat`
    setting); `metrics=False` sends spans only (Phoenix and MLflow accept no metrics)."""
    from . import api

    settings = api.settings()
    if capture_content is None:
        capture_content = settings.otel_capture_content
    return OTelBackend(tracer_provider=tracer_provider, meter_provider=meter_provider,
                       capture_content=capture_content,
                       max_field_chars=settings.max_field_chars if max_field_chars is None else max_field_chars,
                       metrics=metrics, compat=settings.otel_compat if compat is None else compat)


@dataclass(frozen=True)
class Installed:
    """What `setup()` installed; None where the application already had a provider."""

    tracer_provider: Any
    meter_provider: Any
    exporter: str  # "otlp" (with its traces endpoint) or "console"
    endpoint: str | None = None

    def shutdown(self) -> None:
        """Flush historymw into the providers, then flush and stop what `setup()` installed
        (this also runs at exit). historymw keeps recording; its last counts go out with the metrics."""
        from . import api

        api.flush(api.settings().shutdown_timeout)
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                provider.shutdown()


def _is_default(provider: Any) -> bool:
    # Before an application sets one, the API hands out proxies (or no-op providers).
    name = type(provider).__name__
    return name in ("ProxyTracerProvider", "_ProxyMeterProvider", "NoOpTracerProvider", "NoOpMeterProvider")


def _signal_endpoint(endpoint: str, signal: str) -> str:
    base = endpoint.rstrip("/")
    for suffix in ("/v1/traces", "/v1/metrics"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return f"{base}/v1/{signal}"


def metrics_wanted(environ: Any = None) -> bool:
    """False when OTEL_METRICS_EXPORTER is `none` (OpenTelemetry's switch; Phoenix and MLflow
    accept traces only, and answer metrics with 404/405)."""
    value = (os.environ if environ is None else environ).get("OTEL_METRICS_EXPORTER", "")
    return value.strip().lower() != "none"


def setup(endpoint: str | None = None, *, service_name: str | None = None, metrics: bool | None = None,
          headers: dict[str, str] | None = None) -> Installed:
    """Install a TracerProvider and a MeterProvider exporting over OTLP/HTTP, only where
    the application has none; returns what was installed.

    `endpoint` is the collector's base URL (e.g. http://localhost:4318); without it
    the OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT variables apply, and without those the
    spans and metrics are printed to the console. `service_name` defaults to
    OTEL_SERVICE_NAME, then "historymw-app". `metrics` None installs a MeterProvider unless
    OTEL_METRICS_EXPORTER=none. Both providers are shut down at exit after historymw has
    flushed its queued records into them.
    """
    if metrics is None:
        metrics = metrics_wanted()
    require("opentelemetry.sdk", what="historymw.otel.setup()", extra="otel")
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create(
        {"service.name": service_name or os.environ.get("OTEL_SERVICE_NAME") or "historymw-app"})
    otlp = endpoint is not None or any(os.environ.get(v) for v in _ENDPOINT_VARS)
    span_exporter: Any
    metric_exporter: Any
    if otlp:
        require("opentelemetry.exporter.otlp.proto.http", what="historymw.otel.setup() with an endpoint",
                extra="otel")
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        traces_url = _signal_endpoint(endpoint, "traces") if endpoint else None
        metrics_url = _signal_endpoint(endpoint, "metrics") if endpoint else None
        span_exporter = OTLPSpanExporter(endpoint=traces_url, headers=headers)
        metric_exporter = OTLPMetricExporter(endpoint=metrics_url, headers=headers)
        shown = traces_url or os.environ.get(_ENDPOINT_VARS[1]) or os.environ.get(_ENDPOINT_VARS[0])
    else:
        span_exporter, metric_exporter, shown = ConsoleSpanExporter(), ConsoleMetricExporter(), None

    tracer_provider = None
    if _is_default(trace.get_tracer_provider()):
        # shutdown_on_exit=False: the SDK's own exit hook would run before historymw's
        # (exit hooks run last-registered first) and lose the records still queued.
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        trace.set_tracer_provider(tracer_provider)
    meter_provider = None
    if metrics and _is_default(otel_metrics.get_meter_provider()):
        meter_provider = MeterProvider(resource=resource, shutdown_on_exit=False,
                                       metric_readers=[PeriodicExportingMetricReader(metric_exporter)])
        otel_metrics.set_meter_provider(meter_provider)
    installed = Installed(tracer_provider, meter_provider, "otlp" if otlp else "console", shown)
    if tracer_provider is not None or meter_provider is not None:
        # After the runtime's exit flush is registered (`import historymw` no longer imports the
        # runtime), so that this hook runs before it: exit hooks run last-registered first.
        from . import runtime  # noqa: F401

        atexit.register(_shutdown_at_exit, installed)
    return installed


def _shutdown_at_exit(installed: Installed) -> None:
    try:
        installed.shutdown()
    except Exception as exc:  # noqa: BLE001 - exit must go on
        from . import counters

        counters.COUNTERS.error("otel_setup_exit", exc)
