"""Validation of the frozen dataclass configs: every stage's config calls `check_fields` in its
`__post_init__`, so a bad value fails when the config is built, with the field named."""

from __future__ import annotations

import math
import numbers


def _real(v) -> bool:
    """A finite real number (bool excluded: True is not a learning rate; inf and NaN excluded:
    every number a config holds is meant to be finite)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


_FIELD_RULES = (  # (keyword of check_fields, expected range as printed, test written NaN-safe)
    ("counts", "an integer >= 1",
     lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1),
    ("naturals", "an integer >= 0",
     lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0),
    ("positive", "> 0 (a finite number)", lambda v: _real(v) and v > 0),
    ("non_negative", ">= 0 (a finite number)", lambda v: _real(v) and v >= 0),
    ("finite", "a finite number", _real),
    ("unit", "in [0, 1]", lambda v: _real(v) and 0 <= v <= 1),
    ("open_unit", "in (0, 1)", lambda v: _real(v) and 0 < v < 1),
)
RULES = tuple(rule for rule, _, _ in _FIELD_RULES)


def check_fields(cfg, **fields_by_rule) -> None:
    """Validate a config in its `__post_init__`: e.g. `check_fields(self, counts=("steps",),
    positive=("lr",))` raises ValueError("SFTConfig.lr: expected > 0 (a finite number), got -0.1")
    for the first field outside its range.  Rules: counts (integer >= 1), naturals (integer
    >= 0), positive (> 0), non_negative (>= 0), finite, unit (in [0, 1]), open_unit (in (0, 1),
    e.g. a clip epsilon).  Every numeric rule needs a finite number: NaN, +-inf, bools and
    values of the wrong type fail every rule."""
    unknown = set(fields_by_rule) - set(RULES)
    if unknown:
        raise TypeError(f"check_fields: unknown rules {sorted(unknown)}")
    for rule, expected, ok in _FIELD_RULES:
        for name in fields_by_rule.get(rule, ()):
            value = getattr(cfg, name)
            try:
                valid = bool(ok(value))
            except TypeError:   # e.g. a string where a number belongs
                valid = False
            if not valid:
                raise ValueError(f"{type(cfg).__name__}.{name}: expected {expected}, got {value!r}")
