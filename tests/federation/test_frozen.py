"""federation.frozen.builder: the same object as the class's own __init__, or the class."""

from __future__ import annotations

import dataclasses

import pytest

from federation import model
from federation.aggregate import judge
from federation.frozen import builder
from federation.model import HealthState, Observation, Route, ServiceHealth

MODEL_CLASSES = [
    c for c in vars(model).values() if isinstance(c, type) and dataclasses.is_dataclass(c)
]


def test_built_objects_equal_the_classes_own() -> None:
    args = ("gw", "a", "shop", "b", HealthState.DEGRADED, 2, 3, 0.25, 12.5, 99.0)
    build = builder(Observation)
    assert build is not Observation
    built, made = build(*args), Observation(*args)
    assert built == made and hash(built) == hash(made) and type(built) is Observation
    assert repr(built) == repr(made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.observer = "other"  # type: ignore[misc]


def test_a_class_with_post_init_keeps_its_own_init() -> None:
    assert builder(Route) is Route  # Route.__post_init__ checks its fields
    for cls in MODEL_CLASSES:
        if hasattr(cls, "__post_init__"):
            assert builder(cls) is cls, cls


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_every_model_class_builds_what_init_builds(cls: type) -> None:
    build = builder(cls)
    if build is cls:
        return
    fields = dataclasses.fields(cls)
    values = [object() for _ in fields]  # the builder copies, it does not check
    obj = build(*values)
    assert [getattr(obj, f.name) for f in fields] == values


def test_judge_builds_a_plain_service_health() -> None:
    obs = Observation("gw", "b", "shop", "b", HealthState.HEALTHY, 3, 3, at=1.0)
    health = judge("shop", "b", (), [obs], 0, None, 5.0)
    assert type(health) is ServiceHealth
    assert health == ServiceHealth("shop", "b", HealthState.HEALTHY, 1.0, 3, 3, 0.0, 0.0, 1, 0, 5.0)
