"""A DSPy program with historymw in place of DSPy's global history. Runs offline (mock_response=).

    python examples/dspy_program.py [calls]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: LiteLLM's bundled price map

import dspy
from dspy.clients import base_lm

import historymw as hm
from historymw.integrations import dspy as hm_dspy

hm_dspy.install()  # the two lines: import and install

REPLY = "[[ ## reasoning ## ]]\nTwo plus two is four.\n\n[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]"


def main(calls: int = 2000) -> None:
    lm = dspy.LM("openai/gpt-4o-mini", mock_response=REPLY, cache=False, num_retries=0)
    dspy.configure(lm=lm)
    qa = dspy.ChainOfThought("question -> answer")

    for i in range(calls):
        qa(question=f"What is 2 + 2? (attempt {i})")
    with hm.history(disable=True):
        qa(question="A private question: not recorded")

    dspy.inspect_history(n=1)  # the usual debugging habit: now historymw's records, in DSPy's format

    stats = hm.stats()
    print(f"calls made:             {calls + 1}")
    print(f"historymw records kept: {stats.records_held} (maxlen {hm.settings().maxlen}), "
          f"{stats.bytes_held / 2**20:.1f} MiB of {stats.max_bytes / 2**20:.0f} MiB, evicted {stats.evicted}")
    print(f"DSPy's GLOBAL_HISTORY:  {len(base_lm.GLOBAL_HISTORY)} entries")
    print(f"lm.history:             {len(lm.history)} entries")
    print(f"qa.history:             {len(qa.history)} entries")
    last = hm.recent(1)[0]
    print(f"last record: {last.provider}/{last.model} module={last.metadata.get('dspy_module')} "
          f"tokens={last.total_tokens} cost={last.cost} cache_hit={last.cache_hit}")
    # DSPy's lists are views of historymw's ring: bounded by it, no second copy of anything.
    assert len(base_lm.GLOBAL_HISTORY) == len(lm.history) == stats.records_held, "DSPy's lists are not the ring's view"


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
