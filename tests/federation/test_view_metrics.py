"""The routing view's gauges follow the incremental view: a swap only keeps a reference,
the budgeted families are computed at scrape time (``gateway/upstream_metrics.py``), so
a gateway that saw every swap scrapes what a fresh one given the last view scrapes."""

from __future__ import annotations

import io
import random
import time

from federation.viewstate import ViewState
from gateway.telemetry import Telemetry
from tests.federation.test_viewstate import LAYOUT, Store, random_step

_VIEW_FAMILIES = (
    "fedgate_upstream_state",
    "fedgate_upstream_score",
    "fedgate_upstream_endpoints",
    "fedgate_upstream_pairs",
    "fedgate_service_clusters",
    "fedgate_cluster_services",
    "fedgate_view_revision",
    "fedgate_view_etcd_revision",
    "fedgate_view_stale",
)


def view_lines(t: Telemetry) -> list[str]:
    return sorted(
        line for line in t.metrics_text().decode().splitlines() if line.startswith(_VIEW_FAMILIES)
    )


def telemetry(per_pair_limit: int = 1000) -> Telemetry:
    return Telemetry(
        gateway_id="gw", cluster="a", tracing=False, log_stream=io.StringIO(),
        per_pair_limit=per_pair_limit,
    )  # fmt: skip


def test_scrape_follows_the_last_view_over_random_changes() -> None:
    rng = random.Random(7)
    store = Store()
    state = ViewState(LAYOUT)
    seen, tight = telemetry(), telemetry(per_pair_limit=2)
    swaps = 0.0
    for step in range(150):
        for _ in range(rng.randint(1, 3)):
            random_step(rng, store)
        view = state.apply(store.take(), revision=store.revision, now=1.0, config_floor=store.floor)
        started = time.perf_counter()
        seen.set_view(view)
        tight.set_view(view)
        swaps += time.perf_counter() - started
        if step % 5 == 0 or step == 149:
            fresh = telemetry()
            fresh.set_view(view)
            assert view_lines(seen) == view_lines(fresh)
            # the budget caps the pairs reported one by one, the aggregates keep them all
            pairs = {
                tuple(line.split('cluster="')[1].split('"')[:1])
                + tuple(line.split('service="')[1].split('"')[:1])
                for line in view_lines(tight)
                if line.startswith("fedgate_upstream_state")
            }
            assert len(pairs) <= 2
    assert swaps / 300 < 0.001  # a swap costs no per-pair work
