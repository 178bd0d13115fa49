"""Chat: a conversation that remembers; the turns live in the worker.

No language model can be had here (no model hub is reachable and no package ships one small
enough to be an example), so what answers is a small **deterministic retrieval responder**, said
plainly: it keeps every turn, learns facts stated as "my name is X" / "I like X", answers
questions about them, and otherwise quotes the earlier user turn that shares the most words with
the new one. Replace :meth:`ChatApp.respond` with a model's generate call (and keep its prompt
cache beside ``self.turns``) and the session machinery stays the same.

``init``: ``{"system": "..."}`` starts over with a system prompt. ``message`` (and ``run``):
``{"text": "..."}`` -> ``{"reply": "...", "turn": n}``. ``history``: the turns so far.

Suspendable: ``suspend`` writes the turns and the facts learned as ``chat.json``; ``resume``
reads them back, so a session woken on another worker (a pool worker included) goes on with the
conversation it had.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from kubesessions_worker import function

FACTS = {
    "name": re.compile(r"\bmy name is (\w+)", re.IGNORECASE),
    "like": re.compile(r"\bi (?:like|love) ([\w ]+?)(?:[.,!?]|$)", re.IGNORECASE),
}
QUESTIONS = {
    "name": re.compile(r"\bwhat(?:'s| is) my name\b", re.IGNORECASE),
    "like": re.compile(r"\bwhat do i (?:like|love)\b", re.IGNORECASE),
}
STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "do",
        "i",
        "is",
        "it",
        "me",
        "my",
        "of",
        "the",
        "to",
        "what",
        "you",
        "your",
        "was",
    ]
)


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z']+", text.lower()) if w not in STOP}


class ChatApp:
    setup_runs = 0

    def setup(self, config: dict[str, Any]) -> None:
        ChatApp.setup_runs += 1
        self.setup_at = time.time()
        self._start(str(config.get("system", "You are a helpful assistant.")))

    def _start(self, system: str) -> None:
        self.turns: list[dict[str, str]] = [{"role": "system", "content": system}]
        self.facts: dict[str, tuple[str, int]] = {}  # what -> (value, user turn it came from)

    @function
    def init(self, input: dict[str, Any]) -> dict[str, Any]:
        self._start(str(input.get("system", self.turns[0]["content"])))
        return {"system": self.turns[0]["content"], "turn": 0}

    @function
    def message(self, input: dict[str, Any]) -> dict[str, Any]:
        text = str(input.get("text", ""))
        user_turn = sum(t["role"] == "user" for t in self.turns) + 1
        reply = self.respond(text, user_turn)
        self.turns += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
        return {"reply": reply, "turn": user_turn, "setupRuns": ChatApp.setup_runs, "setupAt": self.setup_at}

    def run(self, input: dict[str, Any]) -> dict[str, Any]:
        return self.message(input)

    @function
    def history(self, input: dict[str, Any]) -> dict[str, Any]:
        return {"turns": self.turns}

    def suspend(self, dir: Path) -> None:
        state = {"turns": self.turns, "facts": {k: list(v) for k, v in self.facts.items()}}
        (dir / "chat.json").write_text(json.dumps(state), encoding="utf-8")

    def resume(self, dir: Path) -> None:
        state = json.loads((dir / "chat.json").read_text(encoding="utf-8"))
        self.turns = state["turns"]
        self.facts = {k: (str(v[0]), int(v[1])) for k, v in state["facts"].items()}

    def respond(self, text: str, user_turn: int) -> str:
        for what, question in QUESTIONS.items():
            if question.search(text):
                if what in self.facts:
                    value, turn = self.facts[what]
                    subject = "Your name is" if what == "name" else "You like"
                    return f"{subject} {value} (you told me in turn {turn})."
                return "You have not told me yet."
        learned = []
        for what, pattern in FACTS.items():
            found = pattern.search(text)
            if found:
                self.facts[what] = (found.group(1).strip(), user_turn)
                learned.append(found.group(1).strip())
        if learned:
            return f"Noted: {', '.join(learned)}."
        earlier = [
            (len(words(t["content"]) & words(text)), i)
            for i, t in enumerate(self.turns)
            if t["role"] == "user"
        ]
        best = max(earlier, default=(0, -1))
        if best[0] == 0:
            return f"I hear you (nothing like this in the {len(earlier)} earlier user turns)."
        return f'That reminds me of what you said before: "{self.turns[best[1]]["content"]}"'
