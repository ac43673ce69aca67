from collections.abc import Callable
from typing import Any

class Recorder:
    """A @recorded sync function: the C hot path, capture.py's functions for the rest."""

    def __init__(self, *, fn: Callable[..., Any], spec: Any, current: Any, state: Any,
                 start: Callable[..., Any], finish: Callable[..., Any], finish_result: Callable[..., Any],
                 head: Callable[..., Any], span_ids: Callable[[], Any], random: Callable[[], float],
                 clip: Callable[[str, int], str], str_bytes: Callable[[str], int],
                 on_error: Callable[[BaseException], None], common_params: frozenset[str],
                 template: dict[str, Any], model_pos: int, messages_pos: int, simple_upto: int,
                 has_extract: bool, base_bytes: int, pair_bytes: int, param_bytes: int) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: object, owner: type | None = None) -> Any: ...
