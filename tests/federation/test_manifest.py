"""The federation manifest: the worked example, the corpus of bad manifests, the CLI."""

from __future__ import annotations

import io
import ipaddress
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck as HealthCheck_
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from federation import codec
from federation.manifest import (
    Manifest,
    ManifestError,
    check_manifest,
    check_manifest_text,
    load_manifest,
    parse_manifest,
)
from federation.model import (
    Access,
    CircuitBreaker,
    Cluster,
    Failover,
    Federation,
    HealthCheck,
    Retries,
    Service,
    Timeouts,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "clusters.example.yaml"
BAD = Path(__file__).parent / "manifests" / "bad"
GOOD = Path(__file__).parent / "manifests" / "good"
FEDGATE = ROOT / ".venv" / "bin" / "fedgate"
ERROR_LINE = re.compile(
    r'^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<path>\S+|.*?"\]\S*): (?P<msg>.+)$'
)

MINIMAL = """\
apiVersion: fedgate/v1
kind: Federation
metadata: {name: tiny}
clusters:
  - name: aws-eu-west-1
    region: eu-west-1
    cloud: aws
    gateway: {eastWest: "https://gw.example.net:15443"}
services:
  - name: web
    routes: [{host: Shop.Example.COM}]
    port: 8080
    clusters: [aws-eu-west-1]
"""


def _errors(text: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, filename="m.yaml")
    return info.value


# ------------------------------------------------------------------ the worked example


def test_example_validates_with_the_expected_shape() -> None:
    fed = load_manifest(EXAMPLE)
    assert isinstance(fed, Federation)
    assert fed.name == "acme-prod"
    assert len(fed.clusters) >= 5
    clouds = {c.cloud for c in fed.clusters}
    assert {"aws", "gcp", "onprem"} <= clouds
    assert {c.tier for c in fed.clusters} == {0, 1}
    assert all(c.tier == 1 for c in fed.clusters if c.cloud == "onprem")
    assert all(c.tier == 0 for c in fed.clusters if c.cloud != "onprem")
    assert all(c.kubernetes is not None for c in fed.clusters if c.cloud != "onprem")
    assert len(fed.services) >= 3
    assert sum(len(s.routes) for s in fed.services) == 7


def test_example_uses_every_section() -> None:
    fed = load_manifest(EXAMPLE)
    hosts = [r.host for s in fed.services for r in s.routes]
    assert any(h.startswith("*.") for h in hosts) and any(not h.startswith("*.") for h in hosts)
    assert any(s.endpoints for s in fed.services)
    assert any(s.health_check != HealthCheck() for s in fed.services)
    assert {s.failover.policy for s in fed.services} == {"healthiest", "ordered"}
    assert any(s.retries != Retries() for s in fed.services)
    assert any(s.circuit_breaker != CircuitBreaker() for s in fed.services)
    scopes = {s.rate_limit.scope for s in fed.services if s.rate_limit is not None}
    assert scopes == {"gateway", "federation"}
    accesses = [s.access for s in fed.services if s.access is not None]
    assert any(a.spiffe_ids for a in accesses) and any(a.networks for a in accesses)
    assert any(s.timeouts != Timeouts() for s in fed.services)
    assert any(s.max_body_bytes is not None for s in fed.services)
    assert any(c.labels for c in fed.clusters)


def test_example_converts_to_the_model_values() -> None:
    fed = load_manifest(EXAMPLE)
    checkout = next(s for s in fed.services if s.name == "checkout")
    assert checkout.health_check == HealthCheck(
        path="/healthz", interval=2.0, timeout=0.5, healthy_after=2, unhealthy_after=3
    )
    assert checkout.retries.on == frozenset(
        {"connect-failure", "reset", "timeout", "502", "503", "504"}
    )
    assert checkout.retries.per_try_timeout == 2.0
    assert checkout.timeouts == Timeouts(connect=1.0, request=15.0, idle=90.0)
    assert checkout.endpoints["onprem-fra1"] == ("10.20.0.5:8443", "10.20.0.6:8443")
    payments = next(s for s in fed.services if s.name == "payments")
    assert payments.failover == Failover(
        policy="ordered",
        order=("aws-eu-west-1", "azure-westeurope", "onprem-fra1"),
        failback_window=60.0,
    )
    assert payments.access is not None
    assert "spiffe://acme.net/ns/shop/sa/checkout" in payments.access.spiffe_ids
    assert [str(n) for n in payments.access.networks] == [
        "10.20.0.0/16",
        "192.0.2.10/32",
        "2001:db8:ac::/48",
    ]


def test_example_round_trips_through_the_codec() -> None:
    fed = load_manifest(EXAMPLE)
    for service in fed.services:
        assert codec.decode(Service, codec.encode(service)) == service
    for cluster in fed.clusters:
        assert codec.decode(Cluster, codec.encode(cluster)) == cluster
    assert codec.decode(Federation, codec.encode(fed)) == fed


# ------------------------------------------------------------------ defaults


def test_defaults_are_filled_in() -> None:
    fed = Manifest.from_yaml(MINIMAL, filename="tiny.yaml")
    (cluster,) = fed.clusters
    assert cluster.environment == "prod"
    assert cluster.tier == 0
    assert cluster.kubernetes is None
    assert dict(cluster.labels) == {}
    (service,) = fed.services
    assert service.routes[0].host == "shop.example.com"  # lowercased
    assert service.routes[0].path_prefix == "/"
    assert dict(service.endpoints) == {}
    assert service.health_check == HealthCheck()
    assert service.failover == Failover()
    assert service.retries == Retries()
    assert service.circuit_breaker == CircuitBreaker()
    assert service.timeouts == Timeouts()
    assert service.rate_limit is None
    assert service.access is None
    assert service.max_body_bytes is None


def test_model_defaults_match_the_documented_ones() -> None:
    """The wire defaults and the model defaults are the same numbers."""
    assert HealthCheck() == HealthCheck(
        path="/healthz", interval=1.0, timeout=0.5, healthy_after=2, unhealthy_after=3
    )
    assert Retries().on == frozenset({"connect-failure", "reset", "timeout", "502", "503", "504"})
    assert Failover().failback_window == 10.0
    assert Timeouts() == Timeouts(connect=1.0, request=30.0, idle=60.0)


def test_rate_limit_burst_defaults_to_the_average_rounded_up() -> None:
    text = MINIMAL + "    rateLimit: {average: 2.5}\n"
    (service,) = parse_manifest(text).services
    assert service.rate_limit is not None
    assert service.rate_limit.burst == 3
    assert service.rate_limit.per == "client-ip"
    assert service.rate_limit.scope == "gateway"


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("500ms", 0.5), ("1s", 1.0), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0), ("1m30s", 90.0)],
)
def test_durations(written: str, seconds: float) -> None:
    text = MINIMAL + f"    circuitBreaker: {{openFor: {written}}}\n"
    assert parse_manifest(text).services[0].circuit_breaker.open_for == seconds


def test_status_codes_may_be_numbers_or_strings() -> None:
    text = MINIMAL + "    retries: {on: [502, '503', reset]}\n"
    assert parse_manifest(text).services[0].retries.on == frozenset({"502", "503", "reset"})


def test_yaml_1_2_on_is_a_key_not_a_boolean() -> None:
    text = MINIMAL + "    retries:\n      on: [timeout]\n"
    assert parse_manifest(text).services[0].retries.on == frozenset({"timeout"})


def test_anchors_and_extension_fields() -> None:
    text = (
        "x-probe: &probe {path: /ready, interval: 3s}\n"
        + MINIMAL
        + "    healthCheck:\n      <<: *probe\n      timeout: 1s\n"
    )
    hc = parse_manifest(text).services[0].health_check
    assert (hc.path, hc.interval, hc.timeout) == ("/ready", 3.0, 1.0)


def test_access_splits_spiffe_ids_and_networks() -> None:
    text = MINIMAL + (
        "    access:\n      allow: [spiffe://acme.net/ns/web/sa/front, 10.0.0.0/8, "
        "'::1', spiffe://acme.net]\n"
    )
    access = parse_manifest(text).services[0].access
    assert access == Access(
        spiffe_ids=frozenset({"spiffe://acme.net/ns/web/sa/front", "spiffe://acme.net"}),
        networks=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")),
    )


def test_http_east_west_is_accepted() -> None:
    text = MINIMAL.replace("https://gw.example.net:15443", "http://127.0.0.2:15443")
    assert parse_manifest(text).clusters[0].east_west == "http://127.0.0.2:15443"


@pytest.mark.parametrize("path", sorted(GOOD.glob("*.yaml")), ids=lambda p: p.stem)
def test_good_manifests(path: Path) -> None:
    load_manifest(path)


# ------------------------------------------------------------------ errors


def _corpus() -> list[Path]:
    return sorted(BAD.glob("*.yaml"))


def test_the_corpus_is_large_enough() -> None:
    assert len(_corpus()) >= 30


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: p.stem)
def test_bad_manifest(path: Path) -> None:
    lines = path.read_text().splitlines()
    expect = re.fullmatch(r"# expect: (\S+): (.+)", lines[0])
    assert expect, f"{path.name}: first line must be '# expect: <path>: <message>'"
    want_path, want_message = expect.group(1), expect.group(2)
    want_line = None
    if len(lines) > 1 and (m := re.fullmatch(r"# line: (\d+)", lines[1])):
        want_line = int(m.group(1))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    issues = info.value.issues
    matching = [i for i in issues if i.path == want_path and want_message in i.message]
    assert matching, f"no error {want_path}: {want_message!r} in:\n" + "\n".join(info.value.lines)
    if want_line is not None:
        assert want_line in [i.line for i in matching], "\n".join(info.value.lines)
    for line in info.value.lines:
        assert ERROR_LINE.match(line), line
        assert line.startswith(f"{path}:")


def test_all_errors_are_reported_sorted_by_line() -> None:
    text = MINIMAL.replace("cloud: aws", "cloud: ibm").replace("port: 8080", "port: 0") + (
        "    healthCheck: {interval: 1, timeout: 2s}\n    bogus: true\n"
    )
    err = _errors(text)
    assert [(i.line, i.path) for i in err.issues] == [
        (7, "clusters[0].cloud"),
        (12, "services[0].port"),
        (14, "services[0].healthCheck.interval"),
        (15, "services[0].bogus"),
    ]
    assert err.lines[0] == (
        "m.yaml:7:12: clusters[0].cloud: expected one of 'aws', 'gcp', 'azure', 'onprem' "
        "or 'other', got 'ibm'"
    )
    assert "(and 3 more)" in str(err)


def test_every_duplicate_key_is_reported() -> None:
    text = MINIMAL.replace(
        "    region: eu-west-1\n", "    region: a\n    region: b\n    region: c\n"
    )
    err = _errors(text)
    assert [(i.line, i.path) for i in err.issues] == [
        (7, "clusters[0].region"),
        (8, "clusters[0].region"),
    ]


def test_column_points_at_the_value() -> None:
    err = _errors(MINIMAL.replace("port: 8080", "port:    99999"))
    (issue,) = err.issues
    assert (issue.line, issue.column) == (12, 14)


def test_missing_field_points_at_its_mapping() -> None:
    err = _errors(MINIMAL.replace("    region: eu-west-1\n", ""))
    (issue,) = err.issues
    assert (issue.line, issue.column, issue.path) == (5, 5, "clusters[0].region")


def test_a_wrong_section_does_not_hide_cross_checks() -> None:
    """A bad value in one section and an unknown cluster elsewhere are both reported."""
    text = MINIMAL.replace("clusters: [aws-eu-west-1]", "clusters: [aws-eu-west-1, nowhere]") + (
        "    retries: {attempts: -1}\n"
    )
    paths = {i.path for i in _errors(text).issues}
    assert paths == {"services[0].clusters[1]", "services[0].retries.attempts"}


def test_billion_laughs_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    err = _errors("\n".join(lines) + "\n")
    assert "too large" in err.lines[0]


@pytest.mark.parametrize(
    "text",
    ["a: " + "[" * 5000 + "]" * 5000 + "\n", "a: " + "{b: " * 3000 + "1" + "}" * 3000 + "\n"],
    ids=["lists", "mappings"],
)
def test_deep_nesting_is_one_error(text: str) -> None:
    assert _errors(text).lines == ("m.yaml: not valid YAML: nested too deeply",)


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "nope.yaml")
    assert info.value.lines == (
        f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory",
    )


def test_binary_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert len(info.value.lines) == 1
    assert "not a text file" in info.value.lines[0]


# ------------------------------------------------------------------ the command line


def _fedgate(*args: str) -> subprocess.CompletedProcess[str]:
    exe = [str(FEDGATE)] if FEDGATE.exists() else [sys.executable, "-m", "federation.cli"]
    return subprocess.run(
        [*exe, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


def test_cli_validate_example() -> None:
    result = _fedgate("validate", "clusters.example.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "clusters.example.yaml: ok: federation acme-prod, 5 clusters (aws, gcp, azure, onprem), "
        "2 tiers, 3 services, 7 routes\n"
    )
    assert result.stderr == ""


def test_cli_validate_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        MINIMAL.replace("cloud: aws", "cloud: ibm") + "    retries: {perTryTimeout: 5}\n"
    )
    result = _fedgate("validate", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    for line in lines:
        m = ERROR_LINE.match(line)
        assert m, line
        assert m.group("file") == str(path)
    assert lines[0].startswith(f"{path}:7:12: clusters[0].cloud: ")
    assert lines[1].startswith(f"{path}:14:30: services[0].retries.perTryTimeout: ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (None, "cannot read: No such file or directory"),
        (b"\x00\x01\x02\xff", "not a text file"),
        (b"a: [1\nb: 2\n", "not valid YAML"),
        (b"", "the manifest is empty"),
        (b"- just\n- a list\n", "expected a mapping at the top level"),
        (b"\tkey: tab\n", "not valid YAML"),
    ],
    ids=["missing", "binary", "syntax", "empty", "list", "tab"],
)
def test_cli_unreadable_input_is_one_line(
    tmp_path: Path, content: bytes | None, expect: str
) -> None:
    path = tmp_path / "m.yaml"
    if content is not None:
        path.write_bytes(content)
    result = _fedgate("validate", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(str(path))
    assert expect in lines[0]


def test_cli_validate_directory(tmp_path: Path) -> None:
    result = _fedgate("validate", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_cli_validate_corpus_sample_never_tracebacks() -> None:
    """A sample through the real command (the whole corpus is checked in-process above)."""
    for path in _corpus()[::9]:
        result = _fedgate("validate", str(path.relative_to(ROOT)))
        assert result.returncode == 2, path
        assert "Traceback" not in result.stderr, path
        assert result.stderr.strip(), path


# ------------------------------------------------------------------ the reference page


def _wire_fields() -> list[tuple[str, str, str | None]]:
    from pydantic import BaseModel

    from federation.manifest import schema

    out = []
    for model in vars(schema).values():
        if isinstance(model, type) and issubclass(model, BaseModel) and model is not schema.Doc:
            for name, info in model.model_fields.items():
                out.append((model.__name__, info.alias or name, info.description))
    return out


def test_every_field_is_documented_with_its_default() -> None:
    page = (ROOT / "docs" / "manifest.md").read_text()
    fields = _wire_fields()
    assert len(fields) > 50
    for model, alias, description in fields:
        assert f"`{alias}`" in page or f"`{alias}." in page or f".{alias}`" in page, (
            f"{model}.{alias} is not in docs/manifest.md"
        )
        assert description and ("Default" in description or "Required" in description), (
            f"{model}.{alias}: the Field description states no default"
        )


# ------------------------------------------------------------------ warnings


def test_a_cluster_without_any_endpoint_source_is_a_warning() -> None:
    # MINIMAL: the service's only cluster has neither kubernetes nor static endpoints
    checked = check_manifest_text(MINIMAL, filename="m.yaml")
    assert [str(w) for w in checked.warnings] == [
        "m.yaml:13:16: services[0].clusters[0]: warning: cluster 'aws-eu-west-1' has no "
        "kubernetes discovery and the service lists no endpoints for it: it will never have "
        "an endpoint there"
    ]
    assert checked.federation == parse_manifest(MINIMAL)
    fixed = MINIMAL + "    endpoints: {aws-eu-west-1: ['10.0.0.1:8080']}\n"
    assert check_manifest_text(fixed).warnings == ()


def test_the_example_has_no_warnings() -> None:
    assert check_manifest(EXAMPLE).warnings == ()


def test_cli_prints_warnings_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MINIMAL)
    result = _fedgate("validate", str(path))
    assert result.returncode == 0
    assert result.stdout.endswith("1 service, 1 route (1 warning)\n")
    assert result.stderr.startswith(f"{path}:13:16: services[0].clusters[0]: warning: ")


# ------------------------------------------------------------------ robustness


def _paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["0s", "1ms", "-1s", "1h", "*.x", "spiffe://a/b", "10.0.0.0/8", "a:1"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck_.too_slow])
@given(data=st.data())
def test_any_mutation_of_the_example_gives_a_model_or_error_lines(data: st.DataObject) -> None:
    raw = YAML(typ="safe").load(EXAMPLE.read_text())
    path = data.draw(st.sampled_from(_paths(raw)[1:]))
    parent = raw
    for part in path[:-1]:
        parent = parent[part]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(_VALUES)
    out = io.StringIO()
    YAML(typ="safe").dump(raw, out)
    text = out.getvalue()
    try:
        fed = parse_manifest(text, filename="m.yaml")
    except ManifestError as exc:
        assert exc.lines
        last = text.count("\n") + 1
        for issue in exc.issues:
            assert 1 <= issue.line <= last, str(issue)
            assert ERROR_LINE.match(str(issue)), str(issue)
    else:
        assert isinstance(fed, Federation)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_gives_a_model_or_error_lines(text: str) -> None:
    try:
        parse_manifest(text, filename="m.yaml")
    except ManifestError as exc:
        assert exc.lines
        for line in exc.lines:
            assert line.startswith("m.yaml")
            assert "\n" not in line


# ------------------------------------------------------------------ size and speed


def test_honest_size_is_not_capped_but_expansion_is() -> None:
    """80,000 static endpoint addresses validate (no node cap on what is written); a
    document whose aliases expand past the cap is refused with a position."""
    from bench.genmanifest import generate

    fed = parse_manifest(generate(1000, endpoints=2), filename="big.yaml")
    assert sum(len(v) for s in fed.services for v in s.endpoints.values()) == 80_000
    lines = ["x-a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"x-a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    err = _errors("\n".join(lines) + "\n" + MINIMAL)
    assert len(err.lines) == 1 and "aliases expand to more than" in err.lines[0]
    assert re.match(r"m\.yaml:\d+:\d+: x-a\d", err.lines[0])


def test_merge_keys_are_linear_and_bounded() -> None:
    """A 458 kB chain of merge keys is refused at once with a position (it was quadratic:
    49 s for 138 kB); merges multiplying a source are capped like aliases; honest merges
    over thousands of services stay cheap."""
    import time

    chain = ["x-a0: &a0 {k0: 0}"]
    chain += [f"x-a{i}: &a{i} {{<<: *a{i - 1}, k{i}: {i}}}" for i in range(1, 11_000)]
    text = "\n".join(chain) + "\n"
    assert len(text) > 458_000
    started = time.process_time()
    err = _errors(text)
    assert time.process_time() - started < 1.0
    assert len(err.lines) == 1 and "nesting too deep" in err.lines[0]

    doubling = ["x-b0: &b0 {k: 0, j: 1, l: 2}"]
    doubling += [f"x-b{i}: &b{i} {{<<: [*b{i - 1}, *b{i - 1}], k{i}: 1}}" for i in range(1, 40)]
    started = time.process_time()
    err = _errors("\n".join(doubling) + "\n")
    assert time.process_time() - started < 2.0
    assert "aliases expand to more than" in err.lines[0]

    shared = "x-svc: &svc\n  port: 8080\n  retries: {attempts: 2, on: [reset, timeout, 503]}\n"
    services = "".join(
        f"  - <<: *svc\n    name: s{j}\n    routes: [{{host: s{j}.example.com}}]\n"
        f"    clusters: [aws-eu-west-1]\n"
        for j in range(3000)
    )
    head, _, _ = MINIMAL.partition("services:\n")
    fed = parse_manifest(shared + head + "services:\n" + services, filename="m.yaml")
    assert len(fed.services) == 3000 and fed.services[-1].retries.attempts == 2


def test_tls_acme_per_service_and_per_route_host() -> None:
    from federation.model import acme_hosts

    text = MINIMAL.replace(
        "    routes: [{host: Shop.Example.COM}]",
        "    tls: acme\n"
        "    routes: [{host: Shop.Example.COM}, {host: api.example.com, tls: vault}]",
    )
    fed = parse_manifest(text, filename="m.yaml")
    assert acme_hosts(fed.services) == {"shop.example.com"}
    assert codec.decode(Service, codec.encode(fed.services[0])) == fed.services[0]
