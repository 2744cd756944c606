"""The plugin's settings, all under ``modelreg.webhooks.*``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PREFIX = "modelreg.webhooks."
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _bool(settings: dict[str, Any], name: str, default: bool) -> bool:
    value = str(settings.get(PREFIX + name, default)).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{PREFIX}{name} must be true or false, not {value!r}")


def _number(settings: dict[str, Any], name: str, default: float, minimum: float) -> float:
    raw = settings.get(PREFIX + name, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{PREFIX}{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{PREFIX}{name} must be at least {minimum}, not {value}")
    return value


@dataclass(frozen=True)
class WebhookSettings:
    """Parsed ``modelreg.webhooks.*`` settings.

    :ivar allow_private: allow targets on loopback, private, link-local and reserved ranges.
    :ivar timeout: seconds to connect and to wait for the response.
    :ivar max_attempts: attempts of a delivery before it fails for good.
    :ivar backoff_base: seconds before the second attempt; doubles after each failure.
    :ivar max_backoff: the longest wait between attempts (``Retry-After`` included).
    :ivar lease: seconds a delivery being sent stays with its worker before another may
        send it again (a worker that died while sending).
    :ivar batch: the most deliveries one ``modelreg_on_event`` call sends.
    """

    allow_private: bool = False
    timeout: float = 10.0
    max_attempts: int = 8
    backoff_base: float = 1.0
    max_backoff: float = 3600.0
    lease: float = 60.0
    batch: int = 100

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> WebhookSettings:
        """Read the settings; a wrong value raises :class:`ValueError` naming the setting."""
        timeout = _number(settings, "timeout", 10.0, 0.001)
        return cls(
            allow_private=_bool(settings, "allow_private", False),
            timeout=timeout,
            max_attempts=int(_number(settings, "max_attempts", 8, 1)),
            backoff_base=_number(settings, "backoff_base", 1.0, 0.0),
            max_backoff=_number(settings, "max_backoff", 3600.0, 0.0),
            lease=_number(settings, "lease", max(60.0, 3 * timeout), 0.001),
            batch=int(_number(settings, "batch", 100, 1)),
        )
