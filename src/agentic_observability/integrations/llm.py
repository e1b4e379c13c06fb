"""Chat completion through huggingface-hub's AsyncInferenceClient: Hugging Face Inference by default;
with ``base_url``, any OpenAI-compatible server (TGI, vLLM, Ollama, a local fake in tests).

Around every call: a rate limit (aiolimiter), retries with jitter for 429/5xx/timeouts (tenacity),
and a circuit breaker (aiobreaker) — the ``Guard``. The caller adds the overall deadline.
"""

from __future__ import annotations

import time
from typing import Any

from aiolimiter import AsyncLimiter
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

from agentic_observability.errors import UpstreamError, UpstreamUnavailableError
from agentic_observability.integrations.resilience import Guard
from agentic_observability.models import ModelReply


class ChatClient:
    def __init__(
        self,
        model: str,
        client: AsyncInferenceClient,
        guard: Guard,
        requests_per_minute: float = 60.0,
    ) -> None:
        self.model = model
        self.guard = guard
        self._client = client
        self._limiter = AsyncLimiter(requests_per_minute, 60.0)

    @classmethod
    def create(
        cls,
        model: str,
        base_url: str | None,
        token: str | None,
        timeout: float,
        guard: Guard,
        requests_per_minute: float = 60.0,
    ) -> ChatClient:
        # With base_url the model goes in the request body, so one URL can serve several models.
        client = AsyncInferenceClient(
            model=None if base_url else model, base_url=base_url, token=token, timeout=timeout
        )
        return cls(model, client, guard, requests_per_minute)

    async def chat(self, messages: list[dict[str, str]], max_tokens: int) -> ModelReply:
        async with self._limiter:
            return await self.guard.call(lambda: self._chat_once(messages, max_tokens))

    async def _chat_once(self, messages: list[dict[str, str]], max_tokens: int) -> ModelReply:
        started = time.perf_counter()
        try:
            output: Any = await self._client.chat_completion(
                messages, model=self.model, max_tokens=max_tokens, temperature=0.0
            )
        except InferenceTimeoutError as exc:
            raise UpstreamUnavailableError(f"model {self.model}: timed out") from exc
        except HfHubHTTPError as exc:
            raise _http_error(self.model, exc) from exc
        except (OSError, ValueError) as exc:
            raise UpstreamUnavailableError(f"model {self.model}: {exc}") from exc
        usage = getattr(output, "usage", None)
        text = output.choices[0].message.content or "" if output.choices else ""
        return ModelReply(
            text=text,
            model=self.model,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            seconds=time.perf_counter() - started,
        )

    async def close(self) -> None:
        await self._client.close()


def _http_error(model: str, exc: HfHubHTTPError) -> UpstreamError:
    status = exc.response.status_code if exc.response is not None else 0
    message = f"model {model}: HTTP {status}: {str(exc).splitlines()[0][:300]}"
    if status == 429 or status >= 500 or status == 0:
        return UpstreamUnavailableError(message)  # retried, counts towards the breaker
    return UpstreamError(message)  # a request the server will never accept: not retried
