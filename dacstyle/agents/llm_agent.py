"""A baseline LLM agent for competition task environments.

The loop: the model drafts code, the env runs it, the model reads the output
(errors included) and improves it; when it answers ``SUBMIT`` the agent first
sends ``validate`` and, if the file is valid, ``submit``; if not, the validation
errors go back to the model. It works with any client that has
``chat(messages) -> str`` (e.g. :class:`~dacstyle.llm.OpenAIClient`) and follows
the DACBench agent protocol (``act``/``train``/``end_episode``).

Replies are read like this: the first fenced block tagged ``sh``/``bash``/
``shell`` becomes a shell action, any other fenced block Python code; a reply
without a block that contains the word ``SUBMIT`` asks to submit.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..competitions.taskenv import SHELL_PREFIX, SUBMIT, VALIDATE

__all__ = ["LLMAgent", "SYSTEM_PROMPT", "parse_reply"]

SYSTEM_PROMPT = """You are a machine-learning engineer solving a Kaggle-style competition.
You act by replying with exactly one fenced code block: ```python ...``` is run with Python,
```sh ...``` with /bin/sh, in your workspace. You then see its output.
Write predictions for every test row to the submission file described in the task.
When the submission file is complete, reply with the single word SUBMIT (no code block)."""

_BLOCK = re.compile(r"```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_SUBMIT = re.compile(r"\bSUBMIT\b", re.IGNORECASE)
_SHELLS = {"sh", "bash", "shell", "console"}


def parse_reply(reply: str) -> str | None:
    """The env action a model reply asks for, or None when it asks for nothing usable."""
    match = _BLOCK.search(reply)
    if match:
        lang, code = match.group(1).lower(), match.group(2)
        return SHELL_PREFIX + code if lang in _SHELLS else code
    if _SUBMIT.search(reply):
        return VALIDATE
    return None


class LLMAgent:
    """Draft, run, read the error, improve, validate, submit."""

    def __init__(
        self,
        client: Any,
        env: Any = None,
        *,
        max_actions: int = 20,
        max_observation_chars: int = 8000,
        max_format_retries: int = 2,
        system_prompt: str = SYSTEM_PROMPT,
        chat_params: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.max_actions = int(max_actions)
        self.max_observation_chars = int(max_observation_chars)
        self.max_format_retries = int(max_format_retries)
        self.system_prompt = system_prompt
        self.chat_params = dict(chat_params or {})
        self.messages: list[dict[str, str]] = []
        self.actions: list[str] = []

    # -- DACBench protocol -----------------------------------------------------

    def act(self, state: Any, reward: float) -> str:
        """The next action, given the env's latest observation."""
        text = str(state)
        if not self.messages:
            self.messages = [{"role": "system", "content": self.system_prompt}]
        last = self.actions[-1] if self.actions else None
        if len(self.actions) >= self.max_actions - 1:
            action = SUBMIT  # out of budget: submit what is there
        elif last == VALIDATE:
            action = self._after_validation(text)
        else:
            action = self._ask(self._clip(text))
        self.actions.append(action)
        return action

    def train(self, next_state: Any, reward: float) -> None:
        """Nothing to learn between steps."""

    def end_episode(self, state: Any, reward: float) -> None:
        """Forget the conversation; the next episode starts fresh."""
        self.messages = []
        self.actions = []

    # -- helpers -----------------------------------------------------------------

    def _after_validation(self, observation: str) -> str:
        result = _validation_result(observation)
        if result is not None and result.get("valid"):
            return SUBMIT
        errors = json.dumps(result.get("errors", []) if result else observation, indent=1)
        return self._ask(f"The submission is not valid yet:\n{errors}\nFix it.")

    def _ask(self, content: str) -> str:
        self.messages.append({"role": "user", "content": content})
        for _ in range(self.max_format_retries + 1):
            reply = self.client.chat(self.messages, **self.chat_params)
            self.messages.append({"role": "assistant", "content": reply})
            action = parse_reply(reply)
            if action is not None:
                return action
            self.messages.append({"role": "user", "content": "Reply with one fenced code block, or with SUBMIT."})
        return VALIDATE

    def _clip(self, text: str) -> str:
        if len(text) <= self.max_observation_chars:
            return text
        half = self.max_observation_chars // 2
        return text[:half] + "\n[... clipped ...]\n" + text[-half:]


def _validation_result(observation: str) -> dict[str, Any] | None:
    """The JSON that TaskEnv prints after ``validation: ``, or None."""
    prefix = "validation: "
    if not observation.startswith(prefix):
        return None
    decoder = json.JSONDecoder()
    try:
        value, _ = decoder.raw_decode(observation[len(prefix) :])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
