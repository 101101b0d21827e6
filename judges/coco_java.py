"""Java and pycocoevalcap plumbing: find `java` and the jars, and run the PTB tokenizer as pycocoevalcap does.

The jars are the ones shipped inside the installed `pycocoevalcap` package (never vendored). The PTB tokenizer
is run exactly as pycocoevalcap's `PTBTokenizer.tokenize` runs it (same jar, flags, input file layout and
punctuation filter), once for the references and once for the predictions, both processes in parallel.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness.errors import UserError
from harness.extras import install_hint

JAVA_MISSING = (
    "the lexical judge needs Java (PTB tokenizer and METEOR 1.5 run on the JVM) but `java` is not on PATH; "
    "install a Java runtime, e.g. `apt-get install default-jre-headless`"
)
# JVM settings for short runs: the client compiler only (no C2 compilation cost) and the serial collector. They
# change speed only (Java's floating point is strict); unknown options are ignored by other JVMs.
JVM_FLAGS = ("-XX:+IgnoreUnrecognizedVMOptions", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
PTB_JAR = "tokenizer/stanford-corenlp-3.4.1.jar"
METEOR_JAR = "meteor/meteor-1.5.jar"
PARAPHRASE_TABLE = "meteor/data/paraphrase-en.gz"

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS, verbatim
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
# Characters the PTB lexer (and Java's line reader) treat as line ends. pycocoevalcap only replaces "\n", so a
# caption holding one of these is split in two and every later caption is paired with the wrong id; we replace
# them by spaces too (the only place where our tokenization differs from pycocoevalcap's, on purpose).
_LINE_BREAKS = str.maketrans({c: " " for c in "\n\r\u2028\u2029\x0b\x0c\x85"})


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise UserError(JAVA_MISSING)
    return java


def coco_dir() -> Path:
    """The installed pycocoevalcap package folder (holds the jars and METEOR's paraphrase table)."""
    try:
        import pycocoevalcap
    except ImportError:
        raise UserError(
            f"the lexical judge needs the 'pycocoevalcap' and 'rouge-score' packages: {install_hint('lexical')}"
        ) from None
    folder = Path(next(iter(pycocoevalcap.__path__))).resolve()  # a namespace package: no __file__
    for rel in (PTB_JAR, METEOR_JAR, PARAPHRASE_TABLE):
        if not (folder / rel).is_file():
            raise UserError(f"pycocoevalcap at {folder} lacks {rel}; reinstall it: pip install --force-reinstall "
                            "pycocoevalcap")
    return folder


class PTBJob:
    """One PTB tokenizer process over a list of texts, started now, collected with `result()`."""

    def __init__(self, java: str, texts: list[str], workdir: Path, name: str) -> None:
        self.count = len(texts)
        path = workdir / f"{name}.txt"
        # pycocoevalcap writes '\n'.join(captions) with the newlines of each caption replaced by spaces
        # a lone surrogate (valid in JSON, not in UTF-8) is written as "?" (it was a UnicodeEncodeError traceback)
        path.write_bytes("\n".join(t.translate(_LINE_BREAKS) for t in texts).encode("utf-8", "replace"))
        cmd = [java, *JVM_FLAGS, "-cp", str(coco_dir() / PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", str(path)]
        self.proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def result(self) -> list[str]:
        out, err = self.proc.communicate()
        if self.proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            raise UserError(f"the PTB tokenizer (Java) failed (exit {self.proc.returncode}): "
                            f"{' | '.join(tail) or 'no message'}; nothing of this judge was recorded: score again")
        lines = out.decode().split("\n")
        if len(lines) < self.count:
            raise UserError(f"the PTB tokenizer (Java) returned {len(lines)} lines for {self.count} texts; score "
                            "again")
        return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)
                for line in lines[: self.count]]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class JavaVersion:
    """`java -version`, started now (it costs a JVM start), read with `result()`: recorded in results."""

    def __init__(self, java: str) -> None:
        self.proc = subprocess.Popen([java, "-version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self) -> str:
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "unknown"
        lines = (err or out).strip().splitlines()
        return lines[0] if lines else "unknown"
