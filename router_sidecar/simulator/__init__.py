"""`laneway simulate-provider`: OpenAI- and Anthropic-compatible fake providers."""
