"""Frequency agents on loopback (uvicorn), for the dispatcher's tests.

``async with serving(app) as url:`` serves any ASGI app on a free 127.0.0.1 port for the block;
``sample_agents(*names)`` does it for several sample agents at once, each with its URL and the
updates it applied (in the order it applied them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from eventcenter.pressure.sample_agent import FrequencyUpdate, create_agent_app, serving

START_S = 10.0  # only turns a server that never starts into a failure


@dataclass
class Agent:
    """A sample agent being served: where it takes updates, and what it applied."""

    name: str
    url: str = ""
    applied: list[FrequencyUpdate] = field(default_factory=list)

    async def held(self) -> dict[str, Any]:
        """What ``GET /frequency`` answers, read over HTTP."""
        async with httpx.AsyncClient(timeout=START_S) as client:
            answer = await client.get(self.url)
        answer.raise_for_status()
        return answer.json()  # type: ignore[no-any-return]


@asynccontextmanager
async def sample_agents(*names: str) -> AsyncIterator[list[Agent]]:
    agents = [Agent(name) for name in names]
    async with AsyncExitStack() as stack:
        for agent in agents:
            app = create_agent_app(agent.name, on_update=agent.applied.append)
            base = await stack.enter_async_context(serving(app))
            agent.url = f"{base}/frequency"
        yield agents
