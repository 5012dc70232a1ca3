"""schema.py against the seed document (shared/seed/fal-ace-step-prompt-to-audio.md), field by field,
and the validation policy (422s that name the field)."""

from __future__ import annotations

import json
import math
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from acestep_app.acestep_v1.schema import (
    MAX_LYRICS_LENGTH,
    MAX_PROMPT_LENGTH,
    MAX_TAGS_LENGTH,
    GuidanceTypeEnum,
    PromptToAudioInput,
    PromptToAudioOutput,
    SchedulerEnum,
    TextToAudioInput,
    TextToAudioOutput,
)
from acestep_app.serving.schema import SEED_MAX, SEED_MIN, File

SEED_DOC = "seed/fal-ace-step-prompt-to-audio.md"
JSON_TYPES = {"string": "string", "boolean": "boolean", "float": "number", "integer": "integer"}
FIELD_HEADER = re.compile(r"^- \*\*`(\w+)`\*\* \(`(\w+)`, _(required|optional)_\):$")
# Keys a property may carry: what fal's schema documents, nothing more (no extra published limits).
ALLOWED_KEYS = {"title", "type", "default", "description", "examples", "minimum", "maximum", "anyOf", "$ref"}


def _parse_fields(section: str) -> dict[str, dict]:
    """The documented fields of one schema section, in order: type, required, description, facts."""
    fields: dict[str, dict] = {}
    current = None
    for line in section.splitlines():
        if match := FIELD_HEADER.match(line):
            name, type_name, presence = match.groups()
            current = fields[name] = {"type": type_name, "required": presence == "required", "description": []}
        elif current is None or not line.strip():
            continue
        elif line.startswith("  - "):
            key, _, value = line[4:].partition(": ")
            current[key] = value
        elif line.startswith("  "):
            current["description"].append(line.strip())
    for field in fields.values():
        field["description"] = " ".join(field["description"])
    return fields


def _unquote(value: str):
    return json.loads(value.strip("`"))


@pytest.fixture(scope="module")
def seed_doc(shared_dir) -> str:
    return (shared_dir / SEED_DOC).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def documented_input(seed_doc) -> dict[str, dict]:
    return _parse_fields(seed_doc.split("### Input Schema")[1].split("**Required Parameters Example**")[0])


@pytest.fixture(scope="module")
def documented_output(seed_doc) -> dict[str, dict]:
    return _parse_fields(seed_doc.split("### Output Schema")[1].split("**Example Response**")[0])


def _json_block(seed_doc: str, heading: str) -> dict:
    block = seed_doc.split(heading)[1].split("```json")[1].split("```")[0]
    return json.loads(block)


def _check_property(name: str, documented: dict, schema: dict) -> None:
    prop = schema["properties"][name]
    assert set(prop) <= ALLOWED_KEYS, f"{name}: undocumented schema keys {set(prop) - ALLOWED_KEYS}"
    assert prop["description"] == documented["description"], name
    assert (name in schema.get("required", [])) == documented["required"], name

    if "$ref" in prop:
        definition = schema["$defs"][prop["$ref"].rsplit("/", 1)[1]]
        assert definition["title"] == documented["type"], name
        if "Options" in documented:
            assert definition["enum"] == [_unquote(v) for v in documented["Options"].split(", ")], name
    else:
        types = [t["type"] for t in prop.get("anyOf", [prop])]
        assert types[0] == JSON_TYPES[documented["type"]], name
        assert types[1:] == ([] if documented["required"] or "Default" in documented else ["null"]), name

    if "Default" in documented:
        assert prop["default"] == _unquote(documented["Default"]), name
    elif not documented["required"]:
        assert prop["default"] is None, name
    else:
        assert "default" not in prop, name

    if "Range" in documented:
        low, high = (float(v.strip("`")) for v in documented["Range"].split(" to "))
        assert (prop["minimum"], prop["maximum"]) == (low, high), name
    else:
        assert "minimum" not in prop and "maximum" not in prop, name

    if "Examples" in documented:
        assert prop["examples"] == [json.loads(documented["Examples"])], name
    else:
        assert "examples" not in prop, name


def test_input_fields_match_the_seed_document(documented_input):
    schema = PromptToAudioInput.model_json_schema()
    assert len(documented_input) == 14
    assert list(schema["properties"]) == list(documented_input)
    for name, documented in documented_input.items():
        _check_property(name, documented, schema)


def test_output_fields_match_the_seed_document(documented_output):
    schema = PromptToAudioOutput.model_json_schema()
    assert list(schema["properties"]) == list(documented_output) == ["audio", "seed", "tags", "lyrics"]
    assert schema["required"] == ["audio", "seed", "tags", "lyrics"]
    for name, documented in documented_output.items():
        _check_property(name, documented, schema)


def test_enums_are_the_documented_options():
    assert [e.value for e in SchedulerEnum] == ["euler", "heun"]
    assert [e.value for e in GuidanceTypeEnum] == ["cfg", "apg", "cfg_star"]
    assert PromptToAudioInput(prompt="x", scheduler="heun").scheduler == "heun"  # StrEnum compares as str


def test_documented_examples_validate_and_round_trip(seed_doc):
    full = _json_block(seed_doc, "**Full Example**")
    request = PromptToAudioInput.model_validate(full)
    assert request.model_dump(mode="json", exclude={"seed"}) == full
    required = _json_block(seed_doc, "**Required Parameters Example**")
    assert PromptToAudioInput.model_validate(required).model_dump(mode="json", exclude={"prompt"}) == {
        k: v for k, v in full.items() if k != "prompt"
    } | {"seed": None}
    response = _json_block(seed_doc, "**Example Response**")
    assert PromptToAudioOutput.model_validate(response).model_dump(mode="json", exclude_none=True) == response


def test_file_matches_fal_toolkit_file():
    from fal.toolkit import File as FalFile

    assert File.model_json_schema() == FalFile.model_json_schema(mode="serialization")
    uploaded = FalFile(url="data:audio/wav;base64,UklGRg==", content_type="audio/wav", file_name="a.wav", file_size=4)
    output = PromptToAudioOutput(audio=uploaded, seed=1, tags="t", lyrics="[inst]")
    assert output.audio == File(url=uploaded.url, content_type="audio/wav", file_name="a.wav", file_size=4)


def test_text_to_audio_shares_the_generation_fields():
    prompt_props = PromptToAudioInput.model_json_schema()["properties"]
    text_schema = TextToAudioInput.model_json_schema()
    text_props = text_schema["properties"]
    shared = [name for name in prompt_props if name not in ("prompt", "instrumental")]
    assert list(text_props) == ["tags", "lyrics", *shared]
    assert {name: text_props[name] for name in shared} == {name: prompt_props[name] for name in shared}
    assert text_schema["required"] == ["tags"]
    assert text_props["lyrics"]["default"] == ""
    assert TextToAudioInput(tags="lofi").lyrics == ""
    assert TextToAudioOutput.model_json_schema()["properties"] == PromptToAudioOutput.model_json_schema()["properties"]


def test_unknown_fields_are_ignored():
    request = PromptToAudioInput.model_validate({"prompt": "x", "format": "mp3", "batch_size": 4})
    assert "format" not in request.model_dump() and not hasattr(request, "batch_size")


BAD_INPUTS = [
    ("duration", 4.9),
    ("duration", 240.5),
    ("duration", math.nan),
    ("duration", math.inf),
    ("number_of_steps", 2),
    ("number_of_steps", 61),
    ("number_of_steps", 27.5),
    ("scheduler", "ddim"),
    ("guidance_type", "pag"),
    ("granularity_scale", 101),
    ("guidance_interval", 1.01),
    ("guidance_interval_decay", -0.1),
    ("guidance_scale", 200.5),
    ("guidance_scale", -math.inf),
    ("minimum_guidance_scale", math.nan),
    ("tag_guidance_scale", 10.5),
    ("lyric_guidance_scale", -1),
    ("seed", SEED_MAX + 1),
    ("seed", SEED_MIN - 1),
    ("seed", "abc"),
    ("prompt", "x" * (MAX_PROMPT_LENGTH + 1)),
    ("prompt", None),
]


@pytest.mark.parametrize(("field", "value"), BAD_INPUTS)
def test_bad_values_name_the_field(field, value):
    body = {"prompt": "a song", field: value}
    with pytest.raises(ValidationError) as caught:
        PromptToAudioInput.model_validate(body)
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]


def test_limits_and_bounds_are_inclusive():
    PromptToAudioInput(prompt="x" * MAX_PROMPT_LENGTH, seed=SEED_MAX, duration=240, number_of_steps=3)
    PromptToAudioInput(prompt="x", seed=SEED_MIN, duration=5, granularity_scale=-100)
    TextToAudioInput(tags="t" * MAX_TAGS_LENGTH, lyrics="l" * MAX_LYRICS_LENGTH)
    for field, limit in (("tags", MAX_TAGS_LENGTH), ("lyrics", MAX_LYRICS_LENGTH)):
        with pytest.raises(ValidationError) as caught:
            TextToAudioInput.model_validate({"tags": "t", field: "x" * (limit + 1)})
        assert caught.value.errors()[0]["loc"] == (field,)


def test_missing_required_fields():
    for model, field in ((PromptToAudioInput, "prompt"), (TextToAudioInput, "tags")):
        with pytest.raises(ValidationError) as caught:
            model.model_validate({})
        assert caught.value.errors()[0]["loc"] == (field,)
        assert caught.value.errors()[0]["type"] == "missing"


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()

    @app.post("/prompt-to-audio")
    def prompt_to_audio(request: PromptToAudioInput) -> dict:
        return request.model_dump(mode="json")

    return TestClient(app)


def test_http_422_names_the_field(client):
    response = client.post("/prompt-to-audio", json={"prompt": "x", "duration": 1000})
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "duration"]]


def _post_raw(client: TestClient, body: str):
    return client.post("/prompt-to-audio", content=body, headers={"content-type": "application/json"})


def test_http_rejects_nan_literals(client):
    response = _post_raw(client, '{"prompt": "x", "guidance_scale": NaN, "duration": Infinity}')
    assert response.status_code == 422
    assert sorted(error["loc"][-1] for error in response.json()["detail"]) == ["duration", "guidance_scale"]
    response = _post_raw(client, '{"prompt": -Infinity}')  # reported as text, so the 422 is valid JSON
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "prompt"]
    assert response.json()["detail"][0]["input"] == "-inf"


def test_http_defaults_and_unknown_fields(client):
    response = client.post("/prompt-to-audio", json={"prompt": "x", "unknown": 1})
    assert response.status_code == 200
    assert response.json()["number_of_steps"] == 27 and "unknown" not in response.json()
