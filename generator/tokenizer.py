"""A byte-level CLIP tokenizer built locally (no download).

Real CLIP tokenizers ship a 49k-entry BPE vocabulary. For the tiny test pipeline a vocabulary of
the 256 byte symbols (each also as an end-of-word ``</w>`` form) plus the two special tokens is
enough: every prompt tokenizes, deterministically, into byte tokens. No merges.
"""

from __future__ import annotations

from transformers import CLIPTokenizer

MAX_LENGTH = 77


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def byte_vocab() -> dict[str, int]:
    """The 256 byte symbols, their end-of-word forms, and the two special tokens."""
    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    for symbol in symbols:
        vocab[symbol + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def build_tokenizer() -> CLIPTokenizer:
    """A CLIPTokenizer over the byte vocabulary, with no merges. ``save_pretrained`` writes it out."""
    return CLIPTokenizer(vocab=byte_vocab(), merges=[], model_max_length=MAX_LENGTH)
