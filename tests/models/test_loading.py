"""The hub-name / local-path loading path, exercised with tiny models of real architectures saved to disk."""

import pytest
import torch

from caopd_pl.data import DistillExample, collate_distill
from caopd_pl.losses import masked_mean_divergence
from caopd_pl.models.loading import ModelConfig, final_hidden_states, load_model, load_tokenizer
from caopd_pl.models.tiny import TinyModelConfig, build_tiny_model
from caopd_pl.tasks.arithmetic import ArithmeticTask
from caopd_pl.templates import prompt_ids

ARCHITECTURES = ["qwen2", "llama", "qwen3", "olmo2"]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_local_checkpoint_loads_and_trains(tmp_path, tokenizer, architecture):
    spec = TinyModelConfig(architecture=architecture, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1)
    original = build_tiny_model(spec, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    original.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    model, loaded_tokenizer = load_model(ModelConfig(name_or_path=str(tmp_path)))
    assert type(model) is type(original)
    assert loaded_tokenizer.eos_token_id == tokenizer.eos_token_id and loaded_tokenizer.chat_template
    # Beside a model config, AutoTokenizer alone would swap in the model type's tokenizer class and its
    # pre-tokenizer; the ids of a whole prompt must stay those the model was trained with.
    task_example = ArithmeticTask(num_train=8, num_val=8, num_test=8).split("test")[0]
    for messages in (task_example.student_messages(), [{"role": "user", "content": "a b\n c"}]):
        assert prompt_ids(loaded_tokenizer, messages) == prompt_ids(tokenizer, messages)
    for (name, a), b in zip(model.state_dict().items(), original.state_dict().values()):
        assert torch.equal(a, b), name

    batch = collate_distill([DistillExample([2, 10, 11], [2, 12, 13, 14], [20, 21, 3])], tokenizer.pad_token_id)
    hidden = final_hidden_states(model, batch["student_ids"], batch["student_attention"])
    logits = model(input_ids=batch["student_ids"], attention_mask=batch["student_attention"]).logits
    torch.testing.assert_close(hidden @ model.lm_head.weight.T, logits, atol=1e-5, rtol=1e-5)

    teacher_hidden = final_hidden_states(original, batch["teacher_ids"], batch["teacher_attention"]).detach()
    loss, count = masked_mean_divergence(
        hidden,
        model.lm_head.weight,
        teacher_hidden,
        original.lm_head.weight,
        batch["student_mask"],
        batch["teacher_mask"],
    )
    loss.backward()
    assert count.item() == 3 and loss.item() > 0
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0  # tied head receives the gradient


def test_tokenizer_without_chat_template_is_refused(tmp_path, tokenizer):
    spec = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
    build_tiny_model(spec, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id).save_pretrained(tmp_path)
    tokenizer.chat_template = None
    try:
        tokenizer.save_pretrained(tmp_path)
    finally:
        tokenizer.chat_template = __import__("caopd_pl.models.tokenizer").models.tokenizer.CHATML_TEMPLATE
    with pytest.raises(
        ValueError, match="chat template; use an instruct/chat model, or give one with model.model.chat"
    ):
        load_model(ModelConfig(name_or_path=str(tmp_path)))

    # A base model gets a template from the config: a built-in, a Jinja file, or the text (issue 25, item 3).
    chat = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    _, plain = load_model(ModelConfig(name_or_path=str(tmp_path), chat_template="plain"))
    assert plain.apply_chat_template(chat, tokenize=False) == f"User: 2+2?\n\nAssistant: 4{plain.eos_token}\n\n"
    assert (
        plain.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True) == "User: 2+2?\n\nAssistant: "
    )
    _, chatml = load_model(ModelConfig(name_or_path=str(tmp_path), chat_template="chatml"))
    assert chatml.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    template = tmp_path / "mine.jinja"
    template.write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    _, mine = load_model(ModelConfig(name_or_path=str(tmp_path), chat_template=str(template)))
    assert mine.apply_chat_template(chat, tokenize=False) == "[2+2?][4]"
    mine.save_pretrained(tmp_path / "saved")  # checkpoints and exports carry it
    assert load_tokenizer(str(tmp_path / "saved")).apply_chat_template(chat, tokenize=False) == "[2+2?][4]"
    for bad, says in [
        ("chat-ml", r"neither a built-in \(chatml, plain\)"),
        (str(tmp_path / "no.jinja"), "no such file"),
    ]:
        with pytest.raises(ValueError, match=rf"model.model.chat_template=.*{says}"):
            load_model(ModelConfig(name_or_path=str(tmp_path), chat_template=bad))


def test_tiny_model_is_deterministic_in_its_seed(tokenizer):
    a, _ = load_model(ModelConfig(tiny=TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)))
    b, _ = load_model(ModelConfig(tiny=TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_invalid_tiny_shape_names_the_key():
    with pytest.raises(ValueError, match="model.tiny.hidden_size"):
        TinyModelConfig(hidden_size=30, num_heads=4)
