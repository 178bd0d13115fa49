"""Building blocks of the models: Kubernetes grammars as patterns, CEL rules, the strict base
model and quantities."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic.config import JsonDict

# The Kubernetes resource.Quantity grammar (apimachinery's), without a minus sign: no resource
# or divisor here may be negative.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # at most 63 characters: a namespace's name
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"  # at most 63 characters: a Service's name
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
ENTRYPOINT = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
MIG_PROFILE = r"^[0-9]+g\.[0-9]+gb$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"


def cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> JsonDict:
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


class StrictModel(BaseModel):
    # Unknown fields are errors, as `kubectl apply` (field validation Strict) makes them.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, populate_by_name=True)


# Like Kubernetes, a quantity may be written as a whole number (`cpu: 2`) or a string.
Quantity = Annotated[
    Annotated[StrictInt, Field(ge=0)] | Annotated[StrictStr, Field(pattern=QUANTITY_PATTERN, max_length=64)],
    Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("type(self) == string || self >= 0", "must be a quantity >= 0 such as 500m, 2 or 8Gi")
            ]
        }
    ),
]


_SCALE = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
}


def quantity_value(quantity: int | str) -> Decimal:
    """A quantity (valid by QUANTITY_PATTERN) as a number: `500m` is 0.5, `1Gi` 1073741824."""
    if isinstance(quantity, int):
        return Decimal(quantity)
    found = re.fullmatch(r"\+?([0-9.]+)(?:[eE]([-+]?[0-9.]+))?([KMGTPE]i|[numkMGTPE])?", quantity)
    if found is None:
        raise ValueError(f"not a quantity: {quantity!r}")
    number, exponent, suffix = found.groups()
    scale = Decimal(10) ** Decimal(exponent) if exponent else _SCALE[suffix or ""]
    return Decimal(number) * scale
