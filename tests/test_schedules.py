import math

import pytest

from lightning_ssl.schedules import cosine_schedule, linear_warmup_constant, linear_warmup_cosine


def test_cosine_schedule_start_middle_end_and_clamping():
    assert cosine_schedule(0, 100, start=0.996, end=1.0) == 0.996
    assert cosine_schedule(50, 100, start=0.996, end=1.0) == pytest.approx(0.998)
    assert cosine_schedule(100, 100, start=0.996, end=1.0) == 1.0
    assert cosine_schedule(250, 100, start=0.996, end=1.0) == 1.0
    assert cosine_schedule(-5, 100, start=0.996, end=1.0) == 0.996
    assert cosine_schedule(3, 0, start=0.5, end=2.0) == 2.0


def test_cosine_schedule_is_byol_formula():
    base, total = 0.99, 37
    for k in range(total + 1):
        byol = 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2
        assert cosine_schedule(k, total, start=base, end=1.0) == pytest.approx(byol, abs=1e-15)


def test_cosine_schedule_is_monotonic():
    values = [cosine_schedule(k, 20, start=0.04, end=0.4) for k in range(21)]
    assert values == sorted(values)


def test_linear_warmup_constant():
    assert linear_warmup_constant(0, 10, start=0.04, end=0.07) == 0.04
    assert linear_warmup_constant(5, 10, start=0.04, end=0.07) == pytest.approx(0.055)
    assert linear_warmup_constant(10, 10, start=0.04, end=0.07) == 0.07
    assert linear_warmup_constant(1000, 10, start=0.04, end=0.07) == 0.07
    assert linear_warmup_constant(-1, 10, start=0.04, end=0.07) == 0.04
    assert linear_warmup_constant(0, 0, start=0.04, end=0.07) == 0.07


def test_linear_warmup_cosine():
    f = lambda k: linear_warmup_cosine(k, warmup_steps=10, total_steps=110, end=0.01)  # noqa: E731
    assert f(0) == 0.0
    assert f(5) == pytest.approx(0.5)
    assert f(10) == 1.0
    assert f(60) == pytest.approx(0.505)  # half-way through the cosine: (1 + 0.01) / 2
    assert f(110) == pytest.approx(0.01)
    assert f(500) == pytest.approx(0.01)
    values = [f(k) for k in range(111)]
    assert values[:11] == sorted(values[:11]) and values[10:] == sorted(values[10:], reverse=True)


def test_linear_warmup_cosine_custom_start_and_peak():
    kw = dict(warmup_steps=4, total_steps=8, start=0.1, peak=2.0, end=0.5)
    assert linear_warmup_cosine(0, **kw) == pytest.approx(0.1)
    assert linear_warmup_cosine(4, **kw) == 2.0
    assert linear_warmup_cosine(6, **kw) == pytest.approx(1.25)
    assert linear_warmup_cosine(8, **kw) == 0.5
