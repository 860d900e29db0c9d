"""The environment's switches, parsed in one place."""
from __future__ import annotations

import pytest

from alexspec import settings


def test_each_switch_is_read_from_the_environment():
    read = settings.from_environment({"ALEXSPEC_AUTOTUNE": "quick", "ALEXSPEC_CONV": "cudnn", "ALEXSPEC_PRETUNED": "0",
                                      "ALEXSPEC_COMPILE_AHEAD": "0", "TRITON_INTERPRET": "1", "WORLD_SIZE": "4",
                                      "RANK": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert read == settings.Settings(autotune="quick", conv="cudnn", pretuned=False, compile_ahead=False,
                                     interpret=True, world_size=4, rank=2, local_rank=1, local_world_size=2)
    assert settings.from_environment({}) == settings.Settings()


@pytest.mark.parametrize("variable, said", [("ALEXSPEC_CONV", "is not one of auto, triton, cudnn; using 'auto'"),
                                            ("ALEXSPEC_PRETUNED", "is neither 0 nor 1; using the shipped choices"),
                                            ("WORLD_SIZE", "is not a whole number; taking 1")])
def test_a_value_out_of_range_warns_and_takes_the_default(variable, said):
    with pytest.warns(UserWarning, match=said):
        read = settings.from_environment({variable: "fast"})
    assert read == settings.Settings()


def test_an_override_holds_within_and_is_undone_after():
    before = settings.current()
    with settings.override(conv="triton", pretuned=False) as inside:
        assert settings.current() is inside and (inside.conv, inside.pretuned) == ("triton", False)
    assert settings.current() is before
