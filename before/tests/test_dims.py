import pytest

from cogip.dims import DIMENSIONS, SCORE_RANGE, get_dimension
from cogip.errors import CogipError


@pytest.mark.parametrize("score,label", [
    (0.0, "very low"), (3.499, "very low"), (3.5, "low"), (4.999, "low"), (5.0, "medium"), (6.5, "high"),
    (7.999, "high"), (8.0, "very high"), (10.0, "very high")])
def test_aesthetics_bins_closed_left(score, label):
    assert DIMENSIONS["Aesthetics"].label_for(score) == label


@pytest.mark.parametrize("score,label", [(0.0, "very low"), (0.35, "low"), (0.5, "medium"), (0.65, "high"),
                                         (0.8, "very high"), (1.0, "very high"), (0.3499, "very low")])
def test_memorability_bins(score, label):
    assert DIMENSIONS["Memorability"].label_for(score) == label


@pytest.mark.parametrize("score,label", [(-3, "negative"), (-1, "negative"), (-0.1, "negative"), (-0.06, "negative"),
                                         (-0.05, "neutral"), (0, "neutral"), (0.1, "neutral"), (0.54, "neutral"),
                                         (0.55, "positive"), (1, "positive"), (3, "positive")])
def test_valence_bins_and_gaps(score, label):
    assert DIMENSIONS["Emotional_Valence"].label_for(score) == label


def test_format_answer():
    assert DIMENSIONS["Aesthetics"].format_answer(5.5774) == "medium 5.577"
    assert DIMENSIONS["Emotional_Valence"].format_answer(2) == "positive 2.000"
    assert DIMENSIONS["Emotional_Valence"].format_answer(-2) == "negative -2.000"
    assert DIMENSIONS["Memorability"].format_answer(0.042) == "very low 0.042"
    # the label of the score as written: 6.4997 reads 6.500, which is `high` (it was `medium`, and the
    # bench's own validation then rejected the item)
    assert DIMENSIONS["Aesthetics"].format_answer(6.4997) == "high 6.500"
    assert DIMENSIONS["Memorability"].format_answer(0.49996) == "medium 0.500"


@pytest.mark.parametrize("dim,score", [("Aesthetics", 10.01), ("Aesthetics", -0.5), ("Memorability", 1.2),
                                       ("Emotional_Valence", 3.5), ("Funniness", float("nan"))])
def test_out_of_range_raises(dim, score):
    with pytest.raises(CogipError, match="outside"):
        DIMENSIONS[dim].label_for(score)


def test_lookup_and_ranges():
    assert get_dimension("emotional-valence").name == "Emotional_Valence"
    assert get_dimension("valence").name == "Emotional_Valence"
    assert SCORE_RANGE == {"Aesthetics": 10, "Funniness": 10, "Emotional_Valence": 6, "Memorability": 1}
    with pytest.raises(CogipError, match="unknown dimension"):
        get_dimension("beauty")


def test_prompts_list_every_label():
    for dim in DIMENSIONS.values():
        for label in dim.labels:
            assert label in dim.prompt
