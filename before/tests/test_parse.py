import pytest

from cogip.parse import parse_answer


@pytest.mark.parametrize("text,dim,label,score", [
    ("medium 5.577", "Aesthetics", "medium", 5.577),
    ("positive 2", "Emotional_Valence", "positive", 2.0),           # integers parse
    ("negative -2.000", "Emotional_Valence", "negative", -2.0),     # negative numbers parse
    ("<answer>very low 0.042</answer>", "Memorability", "very low", 0.042),
    ("<answer>high 7.1</answer> because it is pretty", "Aesthetics", "high", 7.1),
    ("The image is Very  High, 8.250 out of 10.", "Aesthetics", "very high", 8.25),   # first number after label
    ("Score 3: low 4.100", "Aesthetics", "low", 4.1),                # number before the label is ignored
    ("6.020", "Funniness", None, 6.02),                              # no label: the score still parses
    ("neutral .5", "Emotional_Valence", "neutral", 0.5),
])
def test_parses(text, dim, label, score):
    p = parse_answer(text, dim)
    assert p.ok and p.label == label and p.score == pytest.approx(score)


@pytest.mark.parametrize("text,dim,reason", [
    ("", "Aesthetics", "empty"), (None, "Aesthetics", "empty"), ("   ", "Funniness", "empty"),
    ("medium", "Aesthetics", "no score"), ("I cannot rate this image.", "Funniness", "no score"),
    ("high 12.5", "Aesthetics", "outside"), ("positive 4", "Emotional_Valence", "outside"),
    ("very high 1.5", "Memorability", "outside"),
])
def test_failures_are_recorded_not_invented(text, dim, reason):
    p = parse_answer(text, dim)
    assert not p.ok and p.score is None and reason in p.error
