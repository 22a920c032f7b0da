"""A promtool-style lint of a Prometheus text exposition (``promtool check metrics`` in
Python, with fedgate's own rules): what ``tests/gateway/test_metric_conventions.py``
runs on a gateway's ``/metrics``.

Rules (https://prometheus.io/docs/practices/naming/ and promtool's ``promlint``):

* metric and label names in snake_case (lower case, digits, single underscores);
* fedgate's metrics start with ``fedgate_`` (the client library's ``process_`` and
  ``python_`` families are the only others);
* a counter's samples end in ``_total`` (``_created`` is the library's own); nothing else
  ends in ``_total``;
* no ``_count``, ``_sum`` or ``_bucket`` suffix outside histograms and summaries (they
  would clash with a histogram's series); ``le`` and ``quantile`` are theirs only;
* base units only: ``_seconds`` not milliseconds or minutes, ``_bytes`` not kilobytes,
  ratios not percent; a unix time ends in ``_timestamp_seconds``;
* an ``_info`` metric is a gauge whose samples are 1;
* every family has a HELP text;
* no label that is unbounded by nature (client address, path, host, trace id, user
  agent...): those belong in logs and spans.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

_SNAKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
_PREFIXES = ("fedgate_", "process_", "python_")
_NON_BASE_UNITS = (
    "milliseconds",
    "millis",
    "ms",
    "microseconds",
    "us",
    "nanoseconds",
    "ns",
    "minutes",
    "hours",
    "days",
    "kilobytes",
    "kb",
    "megabytes",
    "mb",
    "gigabytes",
    "bits",
    "percent",
    "pct",
)
_RESERVED_SUFFIXES = ("_count", "_sum", "_bucket")
UNBOUNDED_LABELS = frozenset(
    {
        "client",
        "client_ip",
        "address",
        "ip",
        "path",
        "url",
        "host",
        "upstream",
        "endpoint",
        "trace_id",
        "span_id",
        "request_id",
        "user_agent",
        "user",
        "method",  # bounded in principle, but any token is a valid method
    }
)


def lint_text(text: str) -> list[str]:
    """Every problem found in an exposition (empty: clean)."""
    return lint(text_string_to_metric_families(text))


def lint(families: Iterable[Metric]) -> list[str]:
    problems: list[str] = []
    for fam in families:
        name, kind = fam.name, fam.type
        where = f"{name} ({kind})"
        if not _SNAKE.fullmatch(name):
            problems.append(f"{where}: name is not snake_case")
        if not name.startswith(_PREFIXES):
            problems.append(f"{where}: name lacks the fedgate_ prefix")
        if not fam.documentation.strip():
            problems.append(f"{where}: no HELP text")
        words = name.split("_")
        for unit in _NON_BASE_UNITS:
            if unit in words:
                problems.append(f"{where}: unit {unit!r} is not a base unit (seconds, bytes)")
        if "timestamp" in words and not name.endswith("_timestamp_seconds"):
            problems.append(f"{where}: a timestamp is named ..._timestamp_seconds")
        point_in_time = name.endswith(("_expiry_seconds", "_time_seconds"))
        if point_in_time and "timestamp" not in words and name.startswith("fedgate_"):
            problems.append(f"{where}: a point in time is named ..._timestamp_seconds")
        histogram = kind in ("histogram", "summary", "gaugehistogram")
        if not histogram and name.endswith(_RESERVED_SUFFIXES):
            problems.append(f"{where}: suffix clashes with histogram/summary series")
        if kind != "counter" and name.endswith("_total"):
            problems.append(f"{where}: _total is for counters only")
        if name.endswith("_info") and kind not in ("gauge", "info"):
            problems.append(f"{where}: an _info metric is a gauge")
        labels: set[str] = set()
        for sample in fam.samples:
            if kind == "counter" and not sample.name.endswith(("_total", "_created")):
                problems.append(f"{where}: counter sample {sample.name} lacks _total")
            if name.endswith("_info") and sample.value != 1:
                problems.append(f"{where}: an _info sample is 1")
            labels.update(sample.labels)
        for label in sorted(labels):
            if label in ("le", "quantile"):
                if kind not in ("histogram", "summary", "gaugehistogram"):
                    problems.append(f"{where}: label {label!r} belongs to histograms/summaries")
                continue
            if not _SNAKE.fullmatch(label):
                problems.append(f"{where}: label {label!r} is not snake_case")
            if label in UNBOUNDED_LABELS:
                problems.append(f"{where}: label {label!r} is unbounded (logs, spans)")
    return problems
