"""List prices: what an output second costs by model, when sync.so's estimate is unavailable."""

from __future__ import annotations

import json

from pydantic import BaseModel, Field

ESTIMATE_FPS = 30  # the estimate endpoint's default frame rate
LIST_PRICE_FPS = 25  # list prices are per second at 25 fps
DEFAULT_PRICES_USD_PER_SECOND = {"lipsync-2": 0.05, "lipsync-2-pro": 0.083, "sync-3": 0.133}


class PriceTable(BaseModel):
    """USD per output second (at 25 fps) by model."""

    prices: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_PRICES_USD_PER_SECOND))

    @classmethod
    def from_json(cls, text: str | None) -> PriceTable:
        """The `PriceTableUsdPerSecond` parameter: a JSON object, or empty for the list prices."""
        if not text or not text.strip():
            return cls()
        try:
            prices = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"the price table is not JSON: {error.msg}") from error
        if not isinstance(prices, dict) or not prices:
            raise ValueError('the price table must be a JSON object like {"lipsync-2": 0.05}')
        for model, price in prices.items():
            if isinstance(price, bool) or not isinstance(price, int | float) or price < 0:
                raise ValueError(f"the price table's {model!r} must be a number of USD per second")
        return cls(prices={str(model): float(price) for model, price in prices.items()})

    def usd_per_second(self, model: str) -> tuple[float, str | None]:
        """The model's price at the estimate fps, and a note when it had to be guessed."""
        per_frame = ESTIMATE_FPS / LIST_PRICE_FPS
        if model in self.prices:
            return self.prices[model] * per_frame, None
        return max(
            self.prices.values()
        ) * per_frame, f"no list price for {model}: priced as the dearest model"
