"""Integrations with LLM frameworks, one module each (litellm, dspy).

Each imports its framework lazily, installs idempotently, and raises one clear
error naming the extra to install when the framework is missing.
"""
