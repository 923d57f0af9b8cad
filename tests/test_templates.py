from caopd_pl.confidence import parse_confidence
from caopd_pl.models.bpe import build_qwen3_style_tokenizer
from caopd_pl.templates import NOTE, prompt_ids, revised_completion_ids, teacher_messages


def test_revised_completion_ends_with_target_confidence_and_eos(tokenizer):
    ids = revised_completion_ids(tokenizer, "12+3=15\nAnswer: 15\nConfidence: 1.00", 0.625)
    assert ids[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(ids[:-1])
    assert text.endswith("\nConfidence: 0.62") or text.endswith("\nConfidence: 0.63")
    assert text.startswith("12+3=15\nAnswer: 15\n")
    assert parse_confidence(text).value == round(0.625, 2)
    assert text.count("Confidence:") == 1


def test_revision_adds_confidence_when_missing(tokenizer):
    ids = revised_completion_ids(tokenizer, "Answer: 7", 0.25)
    assert tokenizer.decode(ids) == "Answer: 7\nConfidence: 0.25<|im_end|>"


def test_demo_template_edits_the_question_message_and_keeps_the_rest():
    chat = [
        {"role": "system", "content": "You are careful."},
        {"role": "user", "content": "Earlier question"},
        {"role": "assistant", "content": "Earlier answer"},
        {"role": "user", "content": "What is 2+2?"},
    ]
    out = teacher_messages(chat, "2+2=4\nAnswer: 4\nConfidence: 1.00", 0.5, "demo", note=True)
    assert out[:3] == chat[:3] and len(out) == 4  # system prompt and earlier turns kept
    content = out[3]["content"]
    assert content.startswith("What is 2+2?\n\nThis is an example for a response to the question:\n2+2=4\nAnswer: 4\n")
    assert "Confidence: 0.50" in content and "Confidence: 1.00" not in content  # the demo's 1.00 became P_acc
    note = NOTE.format(value=0.5)
    assert content.endswith(f"{note}\n\nNow answer with a response of your own, including the thinking process.")
    assert chat[3]["content"] == "What is 2+2?"  # input not mutated


def test_correct_solution_template_without_note():
    chat = [{"role": "user", "content": "Q"}]
    out = teacher_messages(chat, "my answer\nConfidence: 0.9", 0.75, "correct_solution", note=False)
    assert out == [
        {
            "role": "user",
            "content": "Q\n\nCorrect solution:\nmy answer\nConfidence: 0.75\n\nCorrectly solve the original question.",
        }
    ]


def test_prompt_ids_end_with_assistant_turn(tokenizer):
    ids = prompt_ids(tokenizer, [{"role": "user", "content": "hi"}])
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")


def test_revision_strips_every_confidence_line_whatever_its_case_or_markup(tokenizer):
    completion = "12+3=15\nconfidence: 0.9.\nAnswer: 15\n**Confidence:** 1.00"
    text = tokenizer.decode(revised_completion_ids(tokenizer, completion, 0.5)[:-1])
    assert text == "12+3=15\nConfidence: 0.50"  # no earlier line survives, no stray "**"


def test_revised_completion_is_capped_at_the_generation_length(tokenizer):
    body = "12+3=15, checked twice, " * 4 + "\nAnswer: 15"
    uncapped = revised_completion_ids(tokenizer, f"{body}\nConfidence: 1.00", 0.25)
    assert revised_completion_ids(tokenizer, f"{body}\nConfidence: 1.00", 0.25, len(uncapped)) == uncapped
    capped = revised_completion_ids(tokenizer, f"{body}\nConfidence: 1.00", 0.25, 40)
    assert len(capped) == 40 and capped[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(capped[:-1])
    assert text.endswith("\nConfidence: 0.25") and body.startswith(text.removesuffix("\nConfidence: 0.25"))
    assert parse_confidence(text).value == 0.25


def test_a_cap_below_the_confidence_line_keeps_the_line_and_eos(tokenizer):
    ids = revised_completion_ids(tokenizer, "Answer: 15\nConfidence: 1.00", 0.25, 3)
    assert tokenizer.decode(ids) == "\nConfidence: 0.25<|im_end|>"


def test_capping_a_byte_level_bpe_completion_keeps_its_own_encoding():
    # Cutting multi-byte characters and merges across the cut must still give the tokenizer's own encoding.
    tokenizer = build_qwen3_style_tokenizer(vocab_size=1_100, bpe_size=1_000)
    completion = "Thought: the molécule é 日本語 has a ring.\n<answer>B</answer>\n" * 5 + "Confidence: 1.00"
    for cap in (60, 30, 12):
        ids = revised_completion_ids(tokenizer, completion, 0.375, cap)
        text = tokenizer.decode(ids[:-1])
        assert len(ids) <= cap and ids[-1] == tokenizer.eos_token_id
        assert text.endswith("\nConfidence: 0.38") and "\ufffd" not in text
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids[:-1]
