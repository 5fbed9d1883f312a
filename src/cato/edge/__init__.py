"""The OpenAI edge: what every side of the project shares to speak to OpenAI-compatible servers."""
