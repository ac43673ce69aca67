"""Every OpenTelemetry name historymw emits, in one place.

The GenAI semantic conventions are still marked Development and names have
moved before (`gen_ai.system` became `gen_ai.provider.name`; the usage keys
were `prompt_tokens`/`completion_tokens`). When they move again, this module is
the only one to change. The strings are written out rather than imported from
`opentelemetry.semconv._incubating`, whose GenAI constants are deprecated and
lag behind the conventions.

Pure data, no imports of OpenTelemetry: the log backend and tests read it too.
"""

from __future__ import annotations

# -- spans ---------------------------------------------------------------------

OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
CONVERSATION_ID = "gen_ai.conversation.id"
OUTPUT_TYPE = "gen_ai.output.type"

REQUEST_MODEL = "gen_ai.request.model"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_TOP_K = "gen_ai.request.top_k"
REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
REQUEST_SEED = "gen_ai.request.seed"
REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
REQUEST_STREAM = "gen_ai.request.stream"

RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"

USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"

INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"

SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
ERROR_TYPE_OTHER = "_OTHER"

# historymw's own span attributes (no convention covers them).
HM_RECORD_ID = "historymw.record.id"
HM_SOURCE = "historymw.source"
HM_SESSION = "historymw.session"
HM_COST = "historymw.cost"
HM_CACHE_HIT = "historymw.cache_hit"
HM_TAG_PREFIX = "historymw.tag."

# Request parameter (as callers spell it) -> (attribute, type it must have on the span).
# Several spellings map to one attribute: the first one present wins.
REQUEST_PARAMS: tuple[tuple[str, str, type], ...] = (
    ("temperature", REQUEST_TEMPERATURE, float),
    ("max_tokens", REQUEST_MAX_TOKENS, int),
    ("max_completion_tokens", REQUEST_MAX_TOKENS, int),
    ("max_output_tokens", REQUEST_MAX_TOKENS, int),
    ("top_p", REQUEST_TOP_P, float),
    ("top_k", REQUEST_TOP_K, float),
    ("frequency_penalty", REQUEST_FREQUENCY_PENALTY, float),
    ("presence_penalty", REQUEST_PRESENCE_PENALTY, float),
    ("seed", REQUEST_SEED, int),
)
STOP_PARAMS = ("stop", "stop_sequences")
CHOICE_COUNT_PARAMS = ("n", "candidate_count")

# Provider names as integrations report them (LiteLLM's custom_llm_provider, SDK
# names) -> the well-known gen_ai.provider.name value. Unlisted names pass through.
PROVIDER_ALIASES: dict[str, str] = {
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "gemini": "gcp.gemini",
    "google": "gcp.gen_ai",
    "vertex_ai": "gcp.vertex_ai",
    "vertex_ai_beta": "gcp.vertex_ai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
    "cohere_chat": "cohere",
}

# Output finish reasons whose spelling differs from the conventions' well-known values.
FINISH_REASON_ALIASES: dict[str, str] = {"tool_calls": "tool_call", "function_call": "tool_call"}

# -- content opt-in --------------------------------------------------------------

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# Values that put content on spans. EVENT_ONLY asks for events, which historymw does not emit.
CAPTURE_ON_SPANS = frozenset({"span_only", "span_and_event", "true"})
CAPTURE_KNOWN = CAPTURE_ON_SPANS | {"no_content", "event_only", "false", ""}

# -- metrics ---------------------------------------------------------------------

METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
TOKEN_TYPE = "gen_ai.token.type"
TOKEN_TYPE_INPUT = "input"
TOKEN_TYPE_OUTPUT = "output"

# The advisory bucket boundaries the conventions give for each histogram.
DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)
TOKEN_BUCKETS: tuple[int, ...] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)

# historymw's own counters (from `hm.stats()`), exported as OpenTelemetry metrics.
METRIC_RECORDED = "historymw.records.recorded"
METRIC_SAMPLED_OUT = "historymw.records.sampled_out"
METRIC_FILTERED_OUT = "historymw.records.filtered_out"
METRIC_DROPPED = "historymw.records.dropped"
METRIC_EVICTED = "historymw.records.evicted"
METRIC_EXPORTED = "historymw.records.exported"
METRIC_ERRORS = "historymw.errors"
METRIC_RING_BYTES = "historymw.ring.bytes"
METRIC_RING_RECORDS = "historymw.ring.records"
METRIC_QUEUED = "historymw.export.queued"
ATTR_DROP_REASON = "reason"
ATTR_ERROR_KIND = "kind"

INSTRUMENTATION_SCOPE = "historymw"
