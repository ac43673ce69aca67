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
USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
# (The GenAI repository's unreleased `cache_write` rename is not followed until it is released.)
USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"

INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
TOOL_DEFINITIONS = "gen_ai.tool.definitions"

SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
ERROR_TYPE_OTHER = "_OTHER"
# The finish reason a failed call reports (no choice finished).
FINISH_REASON_ERROR = "error"

# The span event `Span.record_exception` adds (OpenTelemetry's exception conventions).
EXCEPTION_EVENT = "exception"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"
EXCEPTION_STACKTRACE = "exception.stacktrace"

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
    ("top_k", REQUEST_TOP_K, int),
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
METRIC_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
METRIC_TIME_PER_OUTPUT_CHUNK = "gen_ai.client.operation.time_per_output_chunk"
TOKEN_TYPE = "gen_ai.token.type"
TOKEN_TYPE_INPUT = "input"
TOKEN_TYPE_OUTPUT = "output"

# The advisory bucket boundaries the conventions give for each histogram.
DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)
CHUNK_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS: tuple[int, ...] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)

# -- OpenInference (opt-in: HISTORYMW_OTEL_COMPAT=openinference) ---------------------
# Phoenix and other OpenInference readers fill their columns from these names.

COMPAT_OPENINFERENCE = "openinference"
COMPAT_VALUES = frozenset({COMPAT_OPENINFERENCE})
OI_SPAN_KIND = "openinference.span.kind"
OI_KIND_LLM = "LLM"
OI_INPUT_VALUE = "input.value"
OI_INPUT_MIME = "input.mime_type"
OI_OUTPUT_VALUE = "output.value"
OI_OUTPUT_MIME = "output.mime_type"
OI_MIME_JSON = "application/json"
OI_MIME_TEXT = "text/plain"
OI_MODEL_NAME = "llm.model_name"
OI_PROVIDER = "llm.provider"
OI_SYSTEM = "llm.system"
OI_INVOCATION_PARAMETERS = "llm.invocation_parameters"
OI_TOKENS_PROMPT = "llm.token_count.prompt"
OI_TOKENS_COMPLETION = "llm.token_count.completion"
OI_TOKENS_TOTAL = "llm.token_count.total"
OI_TOKENS_CACHE_READ = "llm.token_count.prompt_details.cache_read"
OI_TOKENS_CACHE_WRITE = "llm.token_count.prompt_details.cache_write"
OI_TOKENS_REASONING = "llm.token_count.completion_details.reasoning"
OI_SESSION_ID = "session.id"
OI_METADATA = "metadata"

# -- another instrumentation's LLM span ---------------------------------------------
# An active span carrying one of these is already the span of the LM call (OpenInference
# instrumentors, OpenTelemetry's own GenAI instrumentations): historymw adds no second one.
FOREIGN_LLM_KINDS = frozenset({"LLM"})  # openinference.span.kind values
FOREIGN_LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})

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
