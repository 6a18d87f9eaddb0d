import pytest

from gsam2.core import PromptError, parse_prompt, prompt_text


@pytest.mark.parametrize(
    ("prompt", "phrases"),
    [
        ("car. person. dog.", ["car", "person", "dog"]),
        ("Car.Person .  DOG", ["car", "person", "dog"]),
        ("traffic   light. fire hydrant.", ["traffic light", "fire hydrant"]),
        ("car, person, dog", ["car", "person", "dog"]),  # commas when there is no period
        ("car. car. person.", ["car", "person"]),  # duplicates dropped, order kept
        ("person", ["person"]),
        (["Car", " person. ", "dog"], ["car", "person", "dog"]),
        (("cat",), ["cat"]),
    ],
)
def test_parse_prompt_normalises(prompt, phrases):
    assert parse_prompt(prompt) == phrases


@pytest.mark.parametrize("prompt", ["", "   ", ". . .", [], ["", " . "]])
def test_empty_prompt_is_a_clear_error(prompt):
    with pytest.raises(PromptError, match="empty"):
        parse_prompt(prompt)


@pytest.mark.parametrize("prompt", [None, 42, ["car", 3]])
def test_malformed_prompt_names_the_problem(prompt):
    with pytest.raises(PromptError, match="prompt"):
        parse_prompt(prompt)


def test_prompt_text_is_the_reference_format():
    assert prompt_text(["car", "traffic light"]) == "car. traffic light."


@pytest.mark.parametrize(
    ("prompt", "phrases"),
    [
        ("car\nperson", ["car", "person"]),
        ("Car.\r\nperson\n\ntraffic light", ["car", "person", "traffic light"]),
        ("car, truck\nperson", ["car", "truck", "person"]),  # commas still separate on each line
    ],
)
def test_line_breaks_separate_phrases(prompt, phrases):
    assert parse_prompt(prompt) == phrases


@pytest.mark.parametrize("prompt", ["!!! ??? ---", "?", "\u200b", "car. ?", ["car", "--"]])
def test_a_phrase_without_letters_or_digits_is_refused(prompt):
    with pytest.raises(PromptError, match="has no letter or digit"):
        parse_prompt(prompt)
