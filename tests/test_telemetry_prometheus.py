"""The Prometheus text format reader and the generic keys a backend's declared names map onto. Servers'
own names are tested in their plugins (velollm-openai: vLLM, SGLang; velollm-llamacpp: llama-server)."""

from __future__ import annotations

import math

import pytest

from velollm_core.contract.metricnames import MetricNames
from velollm_core.telemetry import prometheus

# The example of https://prometheus.io/docs/instrumenting/exposition_formats/ (text format 0.0.4).
FORMAT_EXAMPLE = r'''
# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320
'''


def test_the_formats_own_example():
    parsed = prometheus.parse(FORMAT_EXAMPLE)
    assert parsed.types == {"http_requests_total": "counter", "http_request_duration_seconds": "histogram"}
    requests = parsed.values("http_requests_total")
    assert [(s.label("code"), s.value) for s in requests] == [("200", 1027.0), ("400", 3.0)]
    (msdos,) = parsed.values("msdos_file_access_time_seconds")
    assert msdos.label("path") == "C:\\DIR\\FILE.TXT"
    assert msdos.label("error") == 'Cannot find file:\n"FILE.TXT"'
    assert msdos.value == 1.458255915e9
    assert parsed.values("metric_without_timestamp_and_labels")[0].value == 12.47
    weird = parsed.values("something_weird")[0]
    assert weird.value == math.inf and weird.label("problem") == "division by zero"
    assert parsed.values("http_request_duration_seconds_bucket")[1].label("le") == "+Inf"
    assert len(parsed.samples) == 9


@pytest.mark.parametrize("line", ["name{a=\"1\" 2", "name{a=1} 2", "name", "name 1 2 3", "name abc"])
def test_a_malformed_line_is_a_format_error(line):
    with pytest.raises(prometheus.MetricsFormatError):
        prometheus.parse(line)


def test_declared_names_use_only_the_generic_keys():
    with pytest.raises(ValueError, match="unknown keys tokens_out"):
        MetricNames(counters={"tokens_out": ("x_total",)})
    both = MetricNames(counters={"generated_tokens": ("a:total",)}, flavors={"a": "A"}) | MetricNames(
        counters={"generated_tokens": ("b:total", "a:total")}, flavors={"b": "B"})
    assert both.counters == {"generated_tokens": ("a:total", "b:total")} and list(both.flavors) == ["a", "b"]
    figures = prometheus.server_figures(prometheus.parse("b:total 3\n"), both)
    assert figures.counters == {"generated_tokens": 3.0} and figures.flavor == "B"
    assert not any(":" in key for key in (*prometheus.COUNTER_KEYS, *prometheus.GAUGE_KEYS))
    assert not hasattr(prometheus, "COUNTERS") and not hasattr(prometheus, "FLAVORS")  # no server's names here
