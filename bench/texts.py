"""Texts to count, made here from what any Python installation holds (nothing is downloaded).

- ``prose``: English prose, the paragraphs of the standard library's documentation strings that are
  sentences (no code examples, no tables).
- ``code``: Python source, the standard library's ``asyncio`` package, file after file.
- ``cjk``: Chinese and Japanese sentences (below), in an order drawn with a fixed seed.
- ``licence``: Python's licence, hard-wrapped plain-ASCII English (many short lines), as licences and man
  pages are.

Each is cut to a size in UTF-8 bytes at a character boundary, and is the same on every run.
"""

from __future__ import annotations

import inspect
import random
import re
import sysconfig
from functools import cache
from pathlib import Path
from typing import Final

# Modules whose documentation is prose more than reference tables.
PROSE_MODULES: Final = (
    "argparse",
    "asyncio",
    "collections",
    "concurrent.futures",
    "contextlib",
    "dataclasses",
    "email.message",
    "functools",
    "http.client",
    "inspect",
    "logging",
    "pathlib",
    "shutil",
    "subprocess",
    "tempfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "urllib.request",
    "zipfile",
)

CJK_SENTENCES: Final = (
    "上下文窗口正在慢慢填满，代理需要在达到上限之前压缩它的历史记录。",
    "每一次工具调用都会把结果写回对话之中，因此令牌数量增长得很快。",
    "仪表盘实时显示已经使用的令牌、剩余的空间以及下一次压缩的时间。",
    "如果模型的回复被截断，通常是因为没有为输出保留足够的令牌。",
    "我们在浏览器里打开会话页面，看到进度条从绿色变成了黄色。",
    "服务器在同一台机器上运行，消息通过本地网络在进程之间传递。",
    "开发者可以为每个会话设置压缩阈值，也可以使用模型的默认窗口。",
    "当网络中断时，客户端会自动重新连接并读取最新的状态。",
    "这个项目把计数、状态和推送分成三个部分，各自可以独立扩展。",
    "长时间运行的任务会产生大量日志，摘要可以节省很多上下文。",
    "コンテキストウィンドウが少しずつ埋まっていき、エージェントは履歴を要約します。",
    "ツールの結果が会話に追加されるたびに、トークンの数は大きく増えていきます。",
    "画面のメーターは、使用済みのトークンと残りの容量をリアルタイムで表示します。",
    "応答が途中で切れる場合は、出力のために十分なトークンを確保していないことが多いです。",
    "ブラウザでセッションのページを開くと、バーの色が緑から黄色に変わりました。",
    "ネットワークが切れても、クライアントは自動的に再接続して最新の状態を読み込みます。",
    "開発者はセッションごとに圧縮のしきい値を設定することができます。",
    "東京の天気は晴れで、午後から少し風が強くなるでしょう。",
    "この仕組みは、数える部分と状態を保つ部分と配信する部分に分かれています。",
    "長い作業の記録を短くまとめることで、次の指示に使える余白が生まれます。",
)

_BULLET_OR_CODE = re.compile(r"^\s*(>>>|\.\.\.|[-*+|=]|\d+\.|:|\w+\s*=|[A-Za-z_.]+\(.*\)$)")


def _cut(text: str, size: int) -> str:
    """``text`` repeated as needed, then cut to ``size`` UTF-8 bytes at a character boundary."""
    data = text.encode()
    while len(data) < size:
        data += b"\n\n" + text.encode()
    return data[:size].decode(errors="ignore")


def _is_prose(paragraph: str) -> bool:
    lines = paragraph.splitlines()
    words = paragraph.split()
    return (
        len(words) >= 12
        and not any(_BULLET_OR_CODE.match(line) for line in lines)
        and sum(word.isalpha() for word in words) / len(words) > 0.7
    )


@cache
def _prose_corpus() -> str:
    import importlib

    paragraphs: list[str] = []
    seen: set[str] = set()
    for name in PROSE_MODULES:
        module = importlib.import_module(name)
        documented = [module, *(value for _, value in sorted(vars(module).items()) if callable(value))]
        for item in documented:
            doc = inspect.getdoc(item) or ""
            for paragraph in doc.split("\n\n"):
                paragraph = " ".join(paragraph.split())
                if paragraph not in seen and _is_prose(paragraph):
                    seen.add(paragraph)
                    paragraphs.append(paragraph)
    return "\n\n".join(paragraphs)


def prose(size: int) -> str:
    return _cut(_prose_corpus(), size)


def code(size: int) -> str:
    import asyncio

    package = Path(asyncio.__file__).parent
    return _cut("\n".join(path.read_text(encoding="utf-8") for path in sorted(package.glob("*.py"))), size)


def cjk(size: int) -> str:
    rng = random.Random(7)
    pieces: list[str] = []
    length = 0
    while length < size:
        sentence = rng.choice(CJK_SENTENCES)
        pieces.append(sentence)
        length += len(sentence.encode())
        if rng.random() < 0.2:
            pieces.append("\n")
    return _cut("".join(pieces), size)


def licence(size: int) -> str:
    """Python's own licence (``LICENSE.txt`` beside the standard library): hard-wrapped plain-ASCII English,
    short lines, indented and underlined headings, like licence texts and man pages."""
    return _cut((Path(sysconfig.get_path("stdlib")) / "LICENSE.txt").read_text(encoding="utf-8"), size)


TEXTS: Final = {"prose": prose, "code": code, "cjk": cjk, "licence": licence}
