"""`POST /v2/generations/estimate` (alias `POST /v2/generate/estimate-cost`): the cost of a generation.

Billing is output frames times the model's per-frame price. sync.so's models page lists prices per
output second at 25 fps; the emulator uses the top of each documented range (the list price):
`lipsync-2` $0.05, `lipsync-2-pro` $0.083, `sync-3` $0.133. A model without a documented price
answers 422 `cost_estimate_unavailable`, as the real endpoint may, so clients keep a fallback.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import bad_request, coded
from .validation import KNOWN_MODELS

PRICE_PER_SECOND_AT_25_FPS = {"lipsync-2": 0.05, "lipsync-2-pro": 0.083, "sync-3": 0.133}
DEFAULT_FPS = 30


def estimate(body: Any) -> dict[str, Any]:
    """The estimate for `{model, duration, fps?, reasoningEnabled?}`; 400 on a malformed body."""
    if not isinstance(body, dict):
        raise bad_request(["body must be a JSON object"])
    problems = []
    model, duration, fps = body.get("model"), body.get("duration"), body.get("fps", DEFAULT_FPS)
    if not isinstance(model, str) or not model:
        problems.append("model must be a string")
    if not _positive_number(duration):
        problems.append("duration must be a positive number")
    if not _positive_number(fps):
        problems.append("fps must be a positive number")
    if "reasoningEnabled" in body and not isinstance(body["reasoningEnabled"], bool):
        problems.append("reasoningEnabled must be a boolean value")
    if problems:
        raise bad_request(problems)
    if model not in KNOWN_MODELS:
        raise coded(422, "generation_unsupported_model", f"The model '{model}' is not supported.")
    price = PRICE_PER_SECOND_AT_25_FPS.get(model)
    if price is None:
        raise coded(422, "cost_estimate_unavailable", f"No cost estimate is available for '{model}'.")
    frames = math.ceil(duration * fps)
    return {
        "estimatedFrameCount": frames,
        "estimatedGenerationCost": round(frames * price / 25, 4),
        "estimatedCredits": None,
    }


def _positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0
