"""Edges of IDN normalisation that the client-comparison tests do not reach."""

from __future__ import annotations

import pytest

from certpin import normalize_host
from certpin.core.hosts import HostError


def test_a_u_label_whose_a_label_is_too_long_is_refused() -> None:
    # 60 characters fit a label, but their A-label (xn--…) is longer than 63.
    with pytest.raises(HostError, match="invalid IDN label"):
        normalize_host("ü" * 60 + ".example")


def test_a_u_label_whose_a_label_fits_is_accepted() -> None:
    assert normalize_host("ü" * 10 + ".example").startswith("xn--")
