from transformers import AutoTokenizer

from caopd_pl.models.tokenizer import PHRASES
from caopd_pl.templates import SENTENCES, teacher_messages


def test_round_trip_and_phrases(tokenizer):
    text = "Answer: 12\nConfidence: 0.50\tÿ"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text.replace("ÿ", "<|unk|>")
    for phrase in PHRASES:
        assert len(tokenizer(phrase, add_special_tokens=False)["input_ids"]) == 1


def test_chat_template_and_save_load(tokenizer, tmp_path):
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded("Confidence: 1")["input_ids"] == tokenizer("Confidence: 1")["input_ids"]
    assert loaded.eos_token == "<|im_end|>" and loaded.pad_token == "<|endoftext|>"


# The tiny tokenizer's vocabulary as built before its phrases were read from caopd_pl.templates (recorded then): ids
# are part of the embedded model, so the phrases must keep their text and their order.
RECORDED_PHRASES = [
    "End your response with a final line 'Confidence: <a number between 0 and 1>' giving the probability that your "
    "answer is correct.",
    "Confidence:",
    "Answer:",
    "This is an example for a response to the question:",
    "Now answer with a response of your own, including the thinking process.",
    "Correct solution:",
    "Correctly solve the original question.",
    "Note: The empirical confidence for this question is",
    "Output this exact value in the 'Confidence:' field.",
    "user",
    "assistant",
    "system",
]


def test_vocabulary_is_the_recorded_one(tokenizer):
    tokens = ["<|endoftext|>", "<|unk|>", "<|im_start|>", "<|im_end|>", "\t", "\n"]
    tokens += [chr(c) for c in range(32, 127)] + RECORDED_PHRASES
    assert tokenizer.get_vocab() == {token: index for index, token in enumerate(tokens)}


def test_template_sentences_come_from_the_templates(tokenizer):
    chat = teacher_messages([{"role": "user", "content": "Q"}], "A", 0.5, "demo", note=True)
    demo = tokenizer(chat[0]["content"], add_special_tokens=False)["input_ids"]
    chat = teacher_messages([{"role": "user", "content": "Q"}], "A", 0.5, "correct_solution", note=False)
    solution = tokenizer(chat[0]["content"], add_special_tokens=False)["input_ids"]
    for sentence in SENTENCES:  # every fixed sentence of a teacher prompt is one token of it
        assert tokenizer.convert_tokens_to_ids(sentence) in demo + solution, sentence
    assert set(SENTENCES) <= set(PHRASES)
