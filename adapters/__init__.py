"""Framework adapters, installed as `toolformer_router.adapters`; each builds only on the public router API.

- `toolformer_router.adapters.langchain.ChatToolFormer`: LangChain `BaseChatModel` (extra `langchain`)
- `toolformer_router.adapters.llamaindex.ToolFormerLLM`: LlamaIndex `FunctionCallingLLM` (extra `llamaindex`)
- `toolformer_router.adapters.server`: OpenAI-compatible HTTP server, `toolformer-router serve` (extra `server`)

All of them share one router per checkpoint in a process (`_common.shared_router`), so a tool is encoded once.
"""
