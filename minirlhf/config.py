"""Validation of the frozen dataclass configs: every stage's config calls `check_fields` in its
`__post_init__`, so a bad value fails when the config is built, with the field named."""

from __future__ import annotations

import numbers

_FIELD_RULES = (  # (keyword of check_fields, expected range as printed, test written NaN-safe)
    ("counts", "an integer >= 1", lambda v: isinstance(v, numbers.Integral) and v >= 1),
    ("positive", "> 0", lambda v: v > 0),
    ("non_negative", ">= 0", lambda v: v >= 0),
    ("unit", "in [0, 1]", lambda v: 0 <= v <= 1),
)


def check_fields(cfg, **fields_by_rule) -> None:
    """Validate a config in its `__post_init__`: e.g. `check_fields(self, counts=("steps",),
    positive=("lr",))` raises ValueError("SFTConfig.lr: expected > 0, got -0.1") for the first
    field outside its range.  Rules: counts (integer >= 1), positive (> 0), non_negative (>= 0),
    unit (in [0, 1]).  NaN and values of the wrong type fail every rule."""
    unknown = set(fields_by_rule) - {rule for rule, _, _ in _FIELD_RULES}
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
