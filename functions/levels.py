"""Percentages and levels shown on the meters, from the configured thresholds."""

from __future__ import annotations

from ctxmeter.settings import Settings
from schemas.models import ContextLevel

PERCENT_DECIMALS = 2


def percentage(count: int, limit: int) -> float:
    """0-100 rounded to 2 decimals; a count over its limit shows as 100 (the count itself is kept)."""
    return min(100.0, round(count * 100 / limit, PERCENT_DECIMALS))


def context_level(percent: float, settings: Settings) -> ContextLevel:
    if percent >= settings.critical_percent:
        return ContextLevel.CRITICAL
    if percent >= settings.warning_percent:
        return ContextLevel.WARNING
    return ContextLevel.NORMAL


def draft_level(percent: float, settings: Settings) -> ContextLevel:
    if percent >= settings.draft_critical_percent:
        return ContextLevel.CRITICAL
    if percent >= settings.warning_percent:
        return ContextLevel.WARNING
    return ContextLevel.NORMAL
