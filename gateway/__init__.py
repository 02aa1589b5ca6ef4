"""The protocol doors: Parley's model-call path spoken as OpenAI's Chat Completions, Anthropic's
Messages, the Vercel AI SDK's UI message stream and AG-UI (one module each), over one core
(gateway/calls.py)."""
