"""``--option`` values: read by the type of the field they set, request-body fields nested and as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from velollm_core.bench.commands import parse_options
from velollm_core.contract import backends
from velollm_core.contract.errors import UserInputError
from velollm_core.contract.options import read_options
from velollm_core.contract.schemas import BackendInfo, GenerationTiming


class ShopOptions(backends.BackendOptions):
    label: str = ""
    maybe_label: str | None = None
    mode: Literal["fast", "slow"] = "fast"
    where: Path | None = None
    count: int = 1
    ratio: float = 0.5
    switch: bool = False
    layers: int | str | None = None
    flash: bool | str | None = None
    tags: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)


class ShopBackend(backends.BackendBase):
    name = "shop"
    Options = ShopOptions

    def generate(self, request, context) -> GenerationTiming:
        return GenerationTiming()

    def describe(self, context) -> BackendInfo | None:
        return None


def validated(**texts: str) -> ShopOptions:
    return backends.validate_options(ShopBackend(), read_options(ShopOptions, texts))


def test_a_text_option_keeps_digits_and_words_as_text():
    settings = validated(label="123", maybe_label="true", mode="slow", where="42")
    assert settings.label == "123" and settings.maybe_label == "true" and settings.mode == "slow"
    assert settings.where == Path("42")


def test_typed_options_get_numbers_flags_and_lists():
    settings = validated(count="3", ratio="1e-1", switch="on", layers="99", flash="on", tags='["a", "b"]',
                         timeout_s="30")
    assert (settings.count, settings.ratio, settings.switch, settings.timeout_s) == (3, 0.1, True, 30.0)
    assert settings.layers == 99 and settings.flash == "on" and settings.tags == ["a", "b"]
    assert validated(layers="all", flash="true").model_dump(include={"layers", "flash"}) == {
        "layers": "all", "flash": True}


def test_a_mistyped_value_is_still_one_user_error():
    with pytest.raises(UserInputError, match=r"--option count='many'"):
        validated(count="many")
    with pytest.raises(UserInputError, match="must be a positive number of seconds"):
        validated(timeout_s="soon")


def test_request_fields_take_json_lists_and_nest():
    settings = validated(**{"request.stop": '["\\n", "END"]', "request.top_p": "0.9", "request.user": "bob",
                            "request.response_format.type": "json_object", "request.a.b.c": "1"})
    assert settings.request == {"stop": ["\n", "END"], "top_p": 0.9, "user": "bob",
                                "response_format": {"type": "json_object"}, "a": {"b": {"c": 1}}}


def test_typed_dict_keys_keep_their_dots():
    assert validated(**{"env.A.B": "123"}).env == {"A.B": "123"}


def test_a_request_field_cannot_be_both_a_value_and_a_table():
    with pytest.raises(UserInputError, match="cannot be both a value and a table"):
        validated(**{"request.a": "1", "request.a.b": "2"})
    with pytest.raises(UserInputError, match="cannot be both a value and a table"):
        validated(**{"request.a.b": "2", "request.a": "1"})


def test_parse_options_without_a_registered_backend_reads_values_as_untyped():
    assert parse_options(("n=3", "flag=true", "name=llama3", "stop=[1]", "timeout_s=5", "x=")) == {
        "n": 3, "flag": True, "name": "llama3", "stop": [1], "timeout_s": 5, "x": ""}
