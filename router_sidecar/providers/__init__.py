"""Provider adapters: one per wire protocol, behind one interface (`base.ProviderAdapter`).

`adapter_for(provider_type)` is how `engine.py` gets the adapter for a lane's `provider.type`.
"""

from __future__ import annotations

from router_sidecar.providers.anthropic import AnthropicAdapter
from router_sidecar.providers.base import ProviderAdapter
from router_sidecar.providers.openai import OpenAIAdapter

_ADAPTERS: dict[str, ProviderAdapter] = {
    adapter.type: adapter for adapter in (OpenAIAdapter(), AnthropicAdapter())
}


def adapter_for(provider_type: str) -> ProviderAdapter:
    """The adapter for a `provider.type`; the config schema only admits types listed here."""
    return _ADAPTERS[provider_type]
