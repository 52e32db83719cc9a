from hyperprag.data import Passage
from hyperprag.prompts import EXAMPLE_ANSWER, build_prompt, extract_answer


def test_closed_prompt_ends_in_answer_slot_without_context():
    p = build_prompt("Who founded the Glass Regatta?")
    assert p.endswith("Question: Who founded the Glass Regatta?\nAnswer:")
    assert "Context:" not in p
    assert EXAMPLE_ANSWER in p


def test_rag_prompt_contains_numbered_passages_in_order():
    ps = [Passage("A", "alpha text"), Passage("B", "beta text")]
    p = build_prompt("q?", ps)
    assert p.index("[1] A: alpha text") < p.index("[2] B: beta text") < p.index("Question: q?")
    assert p.endswith("Answer:")


def test_extract_keeps_commas_in_dates():
    assert extract_answer(" August 25, 1963\nQuestion: next") == "August 25, 1963"


def test_extract_stops_at_end_of_line_and_trims_full_stop():
    assert extract_answer(" Pell Okonjo.\n\nQuestion: Who?") == "Pell Okonjo"
    assert extract_answer("\n\n  kelmash\n") == "kelmash"
    assert extract_answer(' "Vask"') == "Vask"


def test_extract_cuts_a_next_example_on_the_same_line():
    assert extract_answer(" Mira Castellane Question: who else") == "Mira Castellane"


def test_extract_keeps_abbreviation_stop_and_handles_empty():
    assert extract_answer(" Washington D.C.") == "Washington D.C."
    assert extract_answer("   \n  ") == ""
