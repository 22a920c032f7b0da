"""federation.view_gauges: the per-view gauges updated for what changed equal a full rewrite."""

from __future__ import annotations

import io
import random

from federation.view_gauges import ViewGauges
from federation.viewstate import ViewState
from gateway.telemetry import HEALTH_VALUE, Telemetry
from tests.federation.test_viewstate import LAYOUT, Store, random_step


def upstream_lines(t: Telemetry) -> list[str]:
    return sorted(
        line
        for line in t.metrics_text().decode().splitlines()
        if line.startswith(("fedgate_upstream", "fedgate_view", "fedgate_config", "fedgate_etcd"))
        and "_created" not in line
    )


def telemetry() -> Telemetry:
    return Telemetry(gateway_id="gw", cluster="a", tracing=False, log_stream=io.StringIO())


def test_incremental_gauges_equal_a_full_rewrite_over_random_changes() -> None:
    rng = random.Random(7)
    store = Store()
    state = ViewState(LAYOUT)
    incremental, full = telemetry(), telemetry()
    gauges = ViewGauges(incremental, health_value=HEALTH_VALUE)
    for _ in range(150):
        for _ in range(rng.randint(1, 3)):
            random_step(rng, store)
        view = state.apply(store.take(), revision=store.revision, now=1.0, config_floor=store.floor)
        gauges(view)
        full.set_view(view)
        assert upstream_lines(incremental) == upstream_lines(full)
    assert gauges.pairs > 0 and gauges.full < 150  # some swaps were incremental
