"""A byte-level BPE tokenizer with Qwen3's special tokens and chat format, trained in code (no downloads).

Real checkpoints ship a byte-level BPE tokenizer; the embedded default's character tokenizer does not exercise that
path (multi-byte merges, a 151,936-id vocabulary, ids the model can emit that no text produces). This builder makes a
stand-in for Qwen3's tokenizer so the real-shape rehearsal (``benchmarks/real_shape.py``) runs the code a Qwen3
checkpoint runs:

- a BPE with Qwen2/3's pre-tokenizer (the same split regex, then ``ByteLevel``), trained on text generated in code
  (English-like sentences, numbers, JSON tool calls, SMILES-like strings, the confidence and teacher templates);
- Qwen3's 26 added tokens at Qwen3's ids (``<|endoftext|>`` = 151643, ``<|im_start|>`` = 151644,
  ``<|im_end|>`` = 151645, ..., ``<think>`` = 151667, ``</think>`` = 151668) when ``vocab_size`` is Qwen3's;
- every other id up to ``vocab_size`` is a *reserved* token ``<|reserved_N|>``. A random-weight model samples ids
  across its whole output layer, so every id must decode. Reserved tokens are non-special added tokens: they decode
  to their text and that text encodes back to the same id, so a decoded rollout re-tokenises to about its sampled
  length (the revised completion of a 1,024-token rollout stays ~1,024 tokens). Qwen's own tokenizer leaves its
  ids 151,669-151,935 undefined instead (they decode to nothing); special reserved tokens would likewise vanish
  from decoded text and shrink every revised completion to a few tokens, which is not the shape to rehearse;
- a ChatML chat template shaped like Qwen3's: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, the
  generation prompt ``<|im_start|>assistant\\n``, and with ``enable_thinking=False`` the empty think block
  ``<think>\\n\\n</think>\\n\\n`` as Qwen3 renders it.

EOS is ``<|im_end|>`` and padding ``<|endoftext|>``, as in Qwen3's instruct tokenizers. The result is a plain
``PreTrainedTokenizerFast``: ``save_pretrained`` writes files that :func:`caopd_pl.models.loading.load_tokenizer`,
``AutoTokenizer`` and vLLM load as they are.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from caopd_pl.confidence import CONFIDENCE_INSTRUCTION
from caopd_pl.templates import NOTE

QWEN3_VOCAB_SIZE = 151_936
"""Rows of Qwen3's embedding and output layers (all sizes 0.6B-32B)."""
QWEN3_FIRST_SPECIAL_ID = 151_643
"""Id of ``<|endoftext|>`` in Qwen3: its BPE holds ids 0-151,642, its 26 added tokens follow."""

# Qwen3's added tokens in id order, and whether each is special (skipped when decoding without special tokens).
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    *((token, True) for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")),
    *((f"<|{name}|>", True) for name in ("object_ref_start", "object_ref_end", "box_start", "box_end")),
    *((f"<|{name}|>", True) for name in ("quad_start", "quad_end", "vision_start", "vision_end")),
    *((f"<|{name}|>", True) for name in ("vision_pad", "image_pad", "video_pad")),
    ("<tool_call>", False),
    ("</tool_call>", False),
    *((f"<|{name}|>", False) for name in ("fim_prefix", "fim_middle", "fim_suffix", "fim_pad", "repo_name")),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
EOS, PAD, IM_START = "<|im_end|>", "<|endoftext|>", "<|im_start|>"

# Qwen2/Qwen3's pre-tokenizer split (contractions, letters, single digits, punctuation runs, newlines, spaces).
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

_WORDS = (
    "the of and to in is that for it as with was on be by this are from at or an which not have has but can "
    "molecule atom bond ring carbon oxygen nitrogen acid base reaction compound structure option answer question "
    "reasoning select correct following given property solubility charge weight formula chemistry science "
    "tool action input thought observation user assistant system response request search retrieve image "
    "weather city country name description documentation parameters output format object string number list "
    "random information source criteria specific color date time price currency convert translate text "
    "confidence probability example empirical value field solve original process thinking own now note exact"
).split()
_SMILES_PARTS = ("C", "CC", "O", "N", "c1ccccc1", "C(=O)", "O)", "(C)", "Cl", "Br", "[nH]", "=", "#", "S", "F")


def _sentences(rng: random.Random) -> Iterator[str]:
    while True:
        words = rng.choices(_WORDS, k=rng.randint(4, 16))
        yield " ".join(words).capitalize() + rng.choice((".", "?", "!", ":", ","))


def _training_text(seed: int, lines: int) -> Iterator[str]:
    """Lines of text in the shapes the paper's tasks use, generated from ``seed``."""
    rng = random.Random(seed)
    sentences = _sentences(rng)
    fixed = (CONFIDENCE_INSTRUCTION, NOTE.format(value=0.5), "This is an example for a response to the question:")
    for index in range(lines):
        kind = index % 6
        if kind == 0:
            yield next(sentences) + " " + next(sentences)
        elif kind == 1:
            yield f"Confidence: {rng.random():.2f}\n{rng.randint(0, 10 ** rng.randint(1, 6))}"
        elif kind == 2:
            yield "".join(rng.choices(_SMILES_PARTS, k=rng.randint(3, 12))) + f" <answer>{rng.choice('ABCD')}</answer>"
        elif kind == 3:
            key, value = rng.sample(_WORDS, 2)
            yield f'Thought: {next(sentences)}\nAction: get{key.capitalize()}\nAction Input: {{"{key}": "{value}"}}'
        elif kind == 4:
            yield f"<reasoning>\n{next(sentences)}\n</reasoning>\n<answer>\n{rng.choice('ABCD')}\n</answer>"
        else:
            yield rng.choice(fixed)


def train_byte_level_bpe(bpe_size: int = 8_000, seed: int = 0, lines: int = 20_000) -> Tokenizer:
    """A byte-level BPE of ``bpe_size`` tokens (256 byte tokens included) trained on generated text.

    Raises:
        ValueError: ``bpe_size`` below the 256 byte tokens.
    """
    if bpe_size < 256:
        raise ValueError(f"bpe_size must be >= 256 (one token per byte), got {bpe_size}")
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_training_text(seed, lines), trainer=trainer)
    return backend


def build_qwen3_style_tokenizer(
    vocab_size: int = QWEN3_VOCAB_SIZE, bpe_size: int = 8_000, seed: int = 0
) -> PreTrainedTokenizerFast:
    """A tokenizer whose ids cover ``0 .. vocab_size - 1`` with Qwen3's layout (see the module docstring).

    Args:
        vocab_size: rows of the model's embedding; every id below it decodes. Qwen3's 151,936 puts the added tokens
            at Qwen3's ids; a smaller one (tests) puts them right after the BPE.
        bpe_size: tokens of the trained BPE (it may come out smaller when the generated text has fewer merges).
        seed: seed of the generated training text.

    Raises:
        ValueError: ``vocab_size`` too small to hold the BPE and the added tokens.
    """
    backend = train_byte_level_bpe(bpe_size, seed)
    trained = backend.get_vocab_size()
    if vocab_size < trained + len(QWEN3_ADDED_TOKENS):
        raise ValueError(
            f"vocab_size={vocab_size} cannot hold the {trained}-token BPE and {len(QWEN3_ADDED_TOKENS)} added "
            f"tokens; use vocab_size >= {trained + len(QWEN3_ADDED_TOKENS)}"
        )
    first_special = QWEN3_FIRST_SPECIAL_ID if vocab_size == QWEN3_VOCAB_SIZE else trained
    _add_reserved(backend, trained, first_special)
    backend.add_tokens([AddedToken(token, special=special, normalized=False) for token, special in QWEN3_ADDED_TOKENS])
    _add_reserved(backend, first_special + len(QWEN3_ADDED_TOKENS), vocab_size)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=QWEN3_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=40_960,  # Qwen3's max_position_embeddings
    )
    if tokenizer.convert_tokens_to_ids(PAD) != first_special or len(tokenizer) != vocab_size:
        raise AssertionError(f"added tokens landed at the wrong ids: {PAD} at {tokenizer.convert_tokens_to_ids(PAD)}")
    return tokenizer


def _add_reserved(backend: Tokenizer, start: int, stop: int) -> None:
    # Ids start .. stop - 1 as non-special added tokens: decodable, and round-trip to the same id (module docstring).
    backend.add_tokens([AddedToken(f"<|reserved_{i}|>", special=False, normalized=False) for i in range(start, stop)])
