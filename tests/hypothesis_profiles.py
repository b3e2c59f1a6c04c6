"""Hypothesis profiles for the whole suite (registered and loaded from conftest).

* ``ci`` (the default): a fixed, small budget, derandomized (the same cases on
  every run, so CI is reproducible), no deadline (the first call imports the
  Beam SDK), no example database;
* ``soak``: thousands of fresh random cases per property, for bug hunting:
  ``pytest tests/test_hardening.py --hypothesis-profile=soak``.

Tests size their budget with :func:`budget`, a fraction of the active
profile's ``max_examples``, so ``soak`` scales every property test.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

CI_EXAMPLES = 30
SOAK_EXAMPLES = 2000

_QUIET_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def register() -> None:
    settings.register_profile(
        "ci",
        max_examples=CI_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=_QUIET_CHECKS,
    )
    settings.register_profile(
        "soak",
        max_examples=SOAK_EXAMPLES,
        derandomize=False,
        deadline=None,
        print_blob=True,
        suppress_health_check=_QUIET_CHECKS,
    )
    settings.load_profile("ci")


def budget(fraction: float = 1.0, at_least: int = 3) -> int:
    """``max_examples`` for a test: ``fraction`` of the active profile's."""
    return max(at_least, int(settings.default.max_examples * fraction))
