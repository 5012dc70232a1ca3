"""schema.py against fal's published JSON Schemas of the whole ACE-Step family (fal-ace-step-schemas.json).

For each of the five endpoints, input and output: the same fields in fal's display order
(``x-fal-order-properties``, which fal's App derives from the declaration order), the same types, defaults, bounds, enum options and enum type names,
examples, titles, required fields, ``x-fal-file-input`` markers and descriptions (ours may end in
the "Default value" note that fal's llms.txt pages add).
"""

from __future__ import annotations

import json
import re

import pytest

from acestep_app.acestep_v1 import schema

MODELS = {
    "AceStepInputSchema": schema.TextToAudioInput,
    "AceStepOutputSchema": schema.TextToAudioOutput,
    "AceStepPromptToAudioInputSchema": schema.PromptToAudioInput,
    "AceStepPromptToAudioOutputSchema": schema.PromptToAudioOutput,
    "AceStepAudioToAudioInputSchema": schema.AudioToAudioInput,
    "AceStepAudioToAudioOutputSchema": schema.AudioToAudioOutput,
    "AceStepAudioInpaintInputSchema": schema.AudioInpaintInput,
    "AceStepAudioInpaintOutputSchema": schema.AudioInpaintOutput,
    "AceStepAudioOutpaintInputSchema": schema.AudioOutpaintInput,
    "AceStepAudioOutpaintOutputSchema": schema.AudioOutpaintOutput,
}
DEFAULT_NOTE = re.compile(r" Default value: `[^`]*`$")
COMPARED_KEYS = ("type", "anyOf", "default", "minimum", "maximum", "enum", "examples", "x-fal-file-input")


@pytest.fixture(scope="module")
def fal_schemas(shared_dir) -> dict[str, dict]:
    return json.loads((shared_dir / "spec" / "fal-ace-step-schemas.json").read_text(encoding="utf-8"))


def published(model) -> dict:
    mode = "serialization" if model.__name__.endswith("Output") else "validation"
    return model.model_json_schema(mode=mode)


def resolved(prop: dict, defs: dict) -> dict:
    """A property with its enum ``$ref`` inlined (as fal's extraction shows it), plus the enum's type name."""
    if "$ref" not in prop:
        return prop
    name = prop["$ref"].rsplit("/", 1)[-1]
    target = defs[name]
    if "enum" not in target:
        return prop
    return {**prop, "type": target["type"], "enum": target["enum"], "enum_type": name}


def test_every_endpoint_of_the_family_is_covered(fal_schemas):
    assert set(fal_schemas) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fields_order_required_and_title(fal_schemas, name):
    expected, ours = fal_schemas[name], published(MODELS[name])
    assert list(ours["properties"]) == expected["x-fal-order-properties"]
    assert set(ours.get("required", [])) == set(expected["required"])
    assert ours["title"] == expected["title"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_field_matches(fal_schemas, name):
    expected, ours = fal_schemas[name], published(MODELS[name])
    defs = ours.get("$defs", {})
    for field, fal_prop in expected["properties"].items():
        prop = resolved(ours["properties"][field], defs)
        for key in COMPARED_KEYS:
            assert prop.get(key) == fal_prop.get(key), (name, field, key)
        assert DEFAULT_NOTE.sub("", prop["description"]) == fal_prop["description"], (name, field)
        if "enum" in fal_prop:  # llms.txt names an enum type "<Title without spaces>Enum"
            assert prop["enum_type"] == fal_prop["title"].replace(" ", "") + "Enum", (name, field)
        elif "$ref" not in fal_prop:
            assert prop["title"] == fal_prop["title"], (name, field)


@pytest.mark.parametrize("name", [name for name in sorted(MODELS) if name.endswith("OutputSchema")])
def test_output_file_model(fal_schemas, name):
    expected, ours = fal_schemas[name], published(MODELS[name])
    assert ours["properties"]["audio"]["$ref"] == "#/$defs/File"
    fal_file, our_file = expected["$defs"]["File"], ours["$defs"]["File"]
    assert set(our_file["properties"]) == set(fal_file["properties"])
    assert our_file["required"] == fal_file["required"]
    for field, fal_prop in fal_file["properties"].items():
        for key in ("type", "anyOf", "examples", "description", "title"):
            assert our_file["properties"][field].get(key) == fal_prop.get(key), (name, field, key)


def test_editing_models_accept_fal_examples():
    source = "data:audio/wav;base64,UklGRg=="
    remix = schema.AudioToAudioInput(audio_url=source, original_tags="lofi", tags="jazz")
    assert (remix.edit_mode, remix.original_lyrics, remix.original_seed) == ("remix", "", None)
    inpaint = schema.AudioInpaintInput(audio_url=source, tags="lofi")
    assert (inpaint.start_time, inpaint.end_time, inpaint.variance) == (0.0, 30.0, 0.5)
    assert inpaint.start_time_relative_to == inpaint.end_time_relative_to == "start"
    outpaint = schema.AudioOutpaintInput(audio_url=source, tags="lofi")
    assert (outpaint.extend_before_duration, outpaint.extend_after_duration) == (0.0, 30.0)


@pytest.mark.parametrize(("model", "field", "value"), [
    (schema.AudioToAudioInput, "edit_mode", "retake"),
    (schema.AudioToAudioInput, "original_seed", 2**63),
    (schema.AudioInpaintInput, "start_time", 240.5),
    (schema.AudioInpaintInput, "end_time", -1),
    (schema.AudioInpaintInput, "variance", 1.01),
    (schema.AudioInpaintInput, "end_time_relative_to", "middle"),
    (schema.AudioOutpaintInput, "extend_after_duration", float("nan")),
    (schema.AudioOutpaintInput, "extend_before_duration", 241),
])
def test_out_of_range_editing_values_name_the_field(model, field, value):
    base = {"audio_url": "https://example.com/a.wav", "tags": "lofi", "original_tags": "lofi"}
    with pytest.raises(ValueError) as caught:
        model.model_validate({**base, field: value})
    assert [error["loc"][0] for error in caught.value.errors()] == [field]


def test_required_editing_fields():
    with pytest.raises(ValueError) as caught:
        schema.AudioToAudioInput.model_validate({})
    assert {error["loc"][0] for error in caught.value.errors()} == {"audio_url", "original_tags", "tags"}
