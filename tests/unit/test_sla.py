"""One judgement of "met its SLA" (cato.core.sla) for every driver and client."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from cato.core.sla import bound_met, sla_met
from cato.core.task import SlaKind

lat = st.one_of(st.none(), st.floats(min_value=0.0, max_value=100.0))


@given(ttft=lat, e2e=lat, sla=st.floats(min_value=0.001, max_value=100.0))
def test_ttft_kind_judges_the_first_token_and_e2e_the_last(ttft: float | None,
                                                           e2e: float | None, sla: float) -> None:
    assert sla_met(SlaKind.TTFT, sla, ttft_s=ttft, e2e_s=e2e) == (ttft is not None and ttft <= sla)
    assert sla_met("e2e", sla, ttft_s=ttft, e2e_s=e2e) == (e2e is not None and e2e <= sla)


def test_the_boundary_is_inclusive_and_a_missing_latency_misses() -> None:
    assert sla_met("ttft", 0.25, ttft_s=0.25, e2e_s=None)
    assert not sla_met("ttft", 0.25, ttft_s=0.2500001, e2e_s=0.1)
    assert not sla_met(SlaKind.E2E, 5.0, ttft_s=0.1, e2e_s=None)


def test_an_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError):
        sla_met("tpot", 1.0, ttft_s=0.1, e2e_s=0.2)


def test_the_secondary_bound() -> None:
    assert bound_met(None, 1.0) is None
    assert bound_met(2.0, 2.0) is True
    assert bound_met(2.0, 2.1) is False
    assert bound_met(2.0, None) is False
