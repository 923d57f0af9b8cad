from transformers import AutoTokenizer

from caopd_pl.models.tokenizer import PHRASES


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
