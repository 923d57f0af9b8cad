"""A character-level tokenizer with a ChatML chat template, built in code (no downloads).

Every printable ASCII character, newline and tab is one token. A handful of fixed phrases of the confidence format
and the teacher templates are single tokens too, which keeps the tiny model's privileged prompts short. It is a
regular ``PreTrainedTokenizerFast``: ``save_pretrained`` writes files that ``AutoTokenizer`` (and vLLM) load.
"""

from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from caopd_pl.confidence import CONFIDENCE_INSTRUCTION, CONFIDENCE_KEY
from caopd_pl.templates import SENTENCES

PAD, UNK, IM_START, IM_END = "<|endoftext|>", "<|unk|>", "<|im_start|>", "<|im_end|>"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Fixed phrases of the prompts and templates, each one token; the order is the token ids' (changing it changes the
# embedded model). "Answer:" opens the answer line of the generated tasks; the roles are ChatML's.
PHRASES = (CONFIDENCE_INSTRUCTION, CONFIDENCE_KEY, "Answer:", *SENTENCES, "user", "assistant", "system")


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """The embedded default's tokenizer: ids 0-3 special, then characters, then phrases."""
    specials = [PAD, UNK, IM_START, IM_END]
    chars = ["\t", "\n"] + [chr(c) for c in range(32, 127)]
    vocab = {token: index for index, token in enumerate(specials + chars)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in specials])
    backend.add_tokens([AddedToken(phrase, special=False, normalized=False) for phrase in PHRASES])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=IM_END,
        chat_template=CHATML_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
