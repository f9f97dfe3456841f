"""Load profiles as objects (velollm_core.bench.profiles): each class's levels, request counts, arrivals and
flag checks, and no profile chosen by comparing its name anywhere in the engine."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.profiles import (
    PROFILES,
    ConstantRate,
    LevelSpec,
    Poisson,
    Sequential,
    Sweep,
    profile_named,
)
from velollm_core.bench.workloads import Workload
from velollm_core.contract.errors import UserInputError

BENCH = Path(__file__).resolve().parents[1] / "velollm_core" / "bench"


def plan(**fields) -> BenchmarkPlan:
    return BenchmarkPlan(**{"backend": "b", "model": "m", "suites": [], "workloads": [Workload(8, 4)], **fields})


def test_every_profile_is_a_class_named_by_its_cli_name():
    assert list(PROFILES) == ["sequential", "concurrent", "constant", "poisson", "sweep"]
    assert all(cls.name == name for name, cls in PROFILES.items())
    assert isinstance(plan().profile, Sequential) and isinstance(plan(profile="sweep").profile, Sweep)
    with pytest.raises(UserInputError, match="unknown load profile"):
        profile_named("burst")


@pytest.mark.parametrize(("fields", "expected"), [
    ({"concurrency": [1, 4]}, [("seq", "sequential", 3, 1, 1), ("c4", "concurrent", 12, 4, 4)]),
    ({"profile": "concurrent", "concurrency": [1, 4]}, [("c1", "concurrent", 3, 1, 1), ("c4", "concurrent", 12, 4, 4)]),
    ({"profile": "constant", "rates": [0.5, 2.5]}, [("rate0.5", "constant", 8, 1, 8), ("rate2.5", "constant", 9, 3, 8)]),
    ({"profile": "poisson", "rates": [2.0], "max_concurrency": 3}, [("poisson2", "poisson", 8, 2, 3)]),
    ({"profile": "sweep", "concurrency": [16]}, [("c1", "concurrent", 3, 1, 1), ("c16", "concurrent", 48, 16, 16)]),
])
def test_levels_request_counts_and_concurrency(fields, expected):
    levels = plan(**fields).profile.levels(plan(**fields))
    assert [(lv.key, lv.profile.name, lv.requests, lv.warmup, lv.max_concurrency) for lv in levels] == expected


def test_max_concurrency_sizes_the_server_and_the_progress_counts_every_run():
    assert plan(concurrency=[1, 4]).profile.max_concurrency(plan(concurrency=[1, 4])) == 4
    sweep = plan(profile="sweep", requests=10, iterations=2)
    assert sweep.profile.max_concurrency(sweep) == 8
    # c1 and c8 (10 measured each, 1 and 8 warm-ups) and five rate levels of 10.
    assert sweep.profile.total_runs(sweep) == (1 + 10) + (8 + 10) + 5 * 10


def test_a_sweeps_rate_levels_arrive_as_asked():
    sweep = plan(profile="sweep", arrivals="poisson")
    levels = sweep.profile.rate_levels(sweep, 1.0, 5.0)
    assert [lv.key for lv in levels] == ["poisson2", "poisson3", "poisson4", "poisson4.6", "poisson5"]
    assert all(isinstance(lv.profile, Poisson) for lv in levels)


def test_arrivals_constant_gaps_and_seeded_poisson_gaps():
    assert list(itertools.islice(ConstantRate().gaps(LevelSpec("rate4", "constant", rate=4.0)), 3)) == [0.25] * 3
    level = LevelSpec("poisson4", "poisson", rate=4.0, seed=7)
    first, again = (list(itertools.islice(Poisson().gaps(level), 50)) for _ in range(2))
    assert first == again and len(set(first)) == 50 and 0.15 < sum(first) / 50 < 0.4


@pytest.mark.parametrize(("name", "rates", "workloads", "message"), [
    ("constant", [], [], "--profile constant needs --rate"),
    ("sequential", [2.0], [], "--rate goes with --profile constant or --profile poisson"),
    ("sweep", [2.0], [], "--rate goes with"),
    ("poisson", [2.0], [Workload(8, 4, 64)], "open-loop"),
    ("sweep", [], [Workload(8, 4, 64)], "open-loop"),
])
def test_each_profile_checks_its_flags(name, rates, workloads, message):
    with pytest.raises(UserInputError, match=re.escape(message)):
        profile_named(name).check(rates=rates, workloads=workloads)


@pytest.mark.parametrize("name", ["sequential", "concurrent"])
def test_closed_loop_profiles_take_depth_workloads(name):
    profile_named(name).check(rates=[], workloads=[Workload(8, 4, 64)])


def test_no_profile_is_chosen_by_its_name():
    offenders = [f"{path.name}:{number}" for path in sorted(BENCH.glob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"profile\w*\s*(==|!=|\bin\b|\bnot in\b)\s*[(\"']", line)]
    assert not offenders, offenders
