"""PTB tokenization as used by the COCO caption scorer (METEOR / ROUGE-L / CIDEr inputs of the E2E scorer).

The official E2E scorer (``tuetschek/e2e-metrics``) feeds references and outputs through the COCO caption code,
which runs Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase`` over all captions joined by
newlines, then drops the punctuation tokens in :data:`COCO_PUNCTUATION` and joins the rest with single spaces.

Two back-ends produce that text:

* ``"java"`` (the default) runs the very jar the official scorer uses (``stanford-corenlp-3.4.1.jar``, shipped
  inside the ``pycocoevalcap`` wheel of the ``metrics`` extra) in a subprocess. This *is* the official
  tokenization. Without Java it fails with :class:`TokenizerUnavailableError`, which names the opt-in below; it
  never falls back silently.
* ``"python"`` (opt-in: ``tokenizer="python"``, ``peftlab evaluate e2e --tokenizer python``, or the environment
  variable ``PEFTLAB_PTB_TOKENIZER=python`` for every scorer that is not told otherwise, such as the final
  evaluation of ``peftlab train e2e``) is :class:`PTBLexer`, a re-implementation of the parts of CoreNLP's JFlex
  lexer (``PTBLexer.flex``, 3.4.x defaults: PTB3 escaping, LaTeX quotes, ``#`` for the pound sign, no
  Americanization, no hyphen splitting) that occur in English restaurant descriptions: words and hyphenated
  words, contractions (``n't``, ``'s``), numbers, fractions, abbreviations and acronyms with the tokenizer's
  sentence-end rules, quotes, currency, brackets, dashes and ellipses. Like the JFlex scanner it takes the longest
  match at each position (ties go to the earlier rule), with right context where the original rule has one. It is
  verified to give exactly the jar's output on every E2E reference, MR and the metric-check hypotheses
  (tests/test_metrics_e2e.py; all 61,621 distinct E2E strings and 22,589 GLUE sentences were also checked once);
  rarer constructs (URLs, e-mail addresses, SGML, emoticons) are approximated. It needs neither Java nor
  pycocoevalcap.

The scorer records which back-end ran (``E2EScores.tokenizer``).

Deliberate difference from the official scorer: characters that CoreNLP treats as line breaks inside one caption
(``\\r``, U+2028, U+2029, U+000B, U+000C, U+0085) are replaced by spaces before tokenizing. The official code
would instead emit extra lines and silently misalign every later caption with its image.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .._optional import missing_message
from ..errors import ConfigError, PeftlabError

__all__ = [
    "BACKENDS",
    "COCO_PUNCTUATION",
    "PTBLexer",
    "TOKENIZER_ENV",
    "TokenizerUnavailableError",
    "coco_tokenize",
    "find_pycocoevalcap_file",
    "java_available",
    "ptb_tokenize_java",
    "ptb_tokenize_python",
    "resolve_backend",
]

#: Tokens the COCO caption code removes after PTB tokenization (compared case-sensitively, after lowercasing,
#: so ``-lrb-`` and friends survive, exactly as in the official scorer).
COCO_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

_INNER_NEWLINES = re.compile("[\r\n\u2028\u2029\x0b\x0c\x85]")


#: The PTB tokenizer back-ends: the official jar (default) and the opt-in pure-Python port.
BACKENDS = ("java", "python")
#: Environment variable naming the back-end used when none is passed (``python`` opts in to the Python port).
TOKENIZER_ENV = "PEFTLAB_PTB_TOKENIZER"


class TokenizerUnavailableError(PeftlabError, RuntimeError):
    """The requested tokenizer back-end (Java + CoreNLP jar) cannot run here; the message names the opt-in."""


# ----------------------------------------------------------------------------------------------------------------
# Regular-expression macros (names follow PTBLexer.flex so the rules can be checked against it)
# ----------------------------------------------------------------------------------------------------------------
def _letter_class() -> str:
    """A character class of Java's ``[:letter:]`` (plus combining marks, as PTBLexer's LETTER) over the BMP."""
    parts: list[str] = []
    start: int | None = None
    for cp in range(0x10001):
        ok = cp < 0x10000 and (chr(cp).isalpha() or unicodedata.category(chr(cp)) in {"Mn", "Mc"} or cp == 0xAD)
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            lo, hi = re.escape(chr(start)), re.escape(chr(cp - 1))
            parts.append(lo if start == cp - 1 else f"{lo}-{hi}")
            start = None
    return "[" + "".join(parts) + "]"


_L = _letter_class()  # a letter
_D = "[0-9\u0660-\u0669\u06f0-\u06f9\u0966-\u096f\u07c0-\u07c9\uff10-\uff19]"  # a digit
_LD = f"(?:{_L}|{_D})"
_SPACE = "[ \t\u00a0\u2000-\u200a\u3000]"
_SPACENL = "[ \t\u00a0\u2000-\u200a\u3000\n]"
_NOT_SPACENL = "[^ \t\u00a0\u2000-\u200a\u3000\n]"
_APOS = "(?:['\u0092\u2019]|&apos;)"
_APOSETC = "(?:['\u0092\u2019\u0091\u2018\u201b]|&apos;)"
_HYPHEN = "[-_\u058a\u2010\u2011]"
_NUM = f"(?:{_D}+|{_D}*(?:[.:,\u00ad\u066b\u066c]{_D}+)+)"
_ACRO = r"[A-Za-z](?:\.[A-Za-z])*"
_WORD = f"{_L}{_LD}*(?:[.!?]{_L}{_LD}*)*"
_REDAUX = f"{_APOS}(?:[msdMSD]|(?i:re|ve|ll))"
# Abbreviation lists as CoreNLP 3.4.1 behaves (probed against the jar): ABBREV1 get their period duplicated as a
# sentence end before a capitalised word, ABBREV2/4 never do, ABBREV3 are abbreviations only before a number.
_ABBREV1 = (
    r"(?:(?i:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec|Mon|Tues?|Wed|Thu|Thurs|Fri"
    r"|Ala|Ariz|Calif|Colo|Conn|Ct|Dak|Fla|Ga|Ind|Kans?|Ky|Md|Mich|Minn|Mo|Mont|Neb|Nev|Okla|Penn|Tenn|Va|Vt"
    r"|Wisc?|Wyo|Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys|tel|est|ext|sq"
    r"|Jr|Sr|Bros|Ed\.D|Ph\.D|Esq|Blvd|Rd|etc|al|seq|Bldg)"
    r"|A(?i:z|rk)|D(?i:el)|I(?i:ll)|L(?i:a)|M(?i:ass|iss)|O(?i:re)|P(?i:a)|T(?i:ex)|W(?i:ash))\."
)
_ABBREV4 = (
    r"(?:(?i:Mrs?|Ms|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|Capt|Ste?"
    r"|Ave|Pres|Lieut|Rt|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp|Mlle|Mme|Msgr|Sfc"
    r"|Sr|vs|Alex|Wm|Jos|Cie|a\.k\.a|cf|TREAS|Ph|Invt|Elec|Natl|M[ft]g|Dept|Blvd|Rd)|M(?i:iss)|" + _ACRO + ")"
)
_ABBREV3 = r"(?i:ca|figs?|prop|nos?|art|pp|op)\."
_ACRONYM_FOLLOWER = (
    r"(?:About|According|Additionally|After|An|A|As|At|But|Earlier|He|Her|Here|However|If|In|It|Last|Many|More"
    r"|Mr\.|Ms\.|Now|Once|One|Other|Our|She|Since|So|Some|Such|That|The|Their|Then|There|These|They|This|We|When"
    r"|While|What|Yet|You)"
)
#: alternatives of APOWORD, one pattern each so that the longest one wins (as in a DFA scanner)
_APOWORDS = (
    f"{_APOS}(?i:n){_APOS}?",
    f"[lLdDjJ]{_APOS}",
    f"(?i:dunkin|somethin|ol){_APOS}",
    f"{_APOS}(?i:em)",
    f"[A-HJ-XZn]{_APOSETC}{_L}{{2}}{_L}*",
    f"{_APOS}[2-9]0(?i:s)",
    f"{_APOS}(?i:till?)",
    f"{_L}+[aeiouyAEIOUY]{_APOSETC}[aeiouA-Z]{_L}*",
    f"{_APOS}(?i:cause)",
    r"(?i:cont'd\.?|'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)",
)
_THING_PART = f"(?:[dDoOlL]{_APOSETC}{_LD})?{_LD}+"
_THING = f"{_THING_PART}(?:{_HYPHEN}{_THING_PART})*"
_HTHING = r"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:[A-Za-z0-9\u00ad]+|[A-Za-z](?:\.[A-Za-z])+\.))+"
_THING3 = r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
_QUOTE_CHARS = "`\u2018\u2019\u201a\u201b\u201c\u201d\u0091-\u0094\u201e\u201f\u2039\u203a\u00ab\u00bb"
_MISC_SYMBOL = (
    "[%&~^|\\\\+<>\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00ba\u00d7\u00f7\u0387\u2020-\u2023"
    "\u2030-\u2038\u2044\u207a-\u207f\u208a-\u208e\u2100-\u214f\u2190-\u21ff\u2200-\u22ff\u2300-\u23ff"
    "\u25a0-\u25ff\u2600-\u26ff\u3012\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
)

Action = Callable[[str], "tuple[str | None, int]"]


@dataclass(frozen=True)
class _Rule:
    """One lexer rule. Each pattern is matched at the current position; a group ``tok`` (if present) is the token
    and what follows it is right context: counted for the longest-match decision but not consumed. Several
    patterns per rule stand for the alternatives of one JFlex expression (each tried, the longest kept)."""

    name: str
    patterns: tuple[re.Pattern[str], ...]
    action: Action


def _plain(tok: str) -> tuple[str | None, int]:
    return tok.replace("\u00ad", ""), len(tok)


def _const(out: str) -> Action:
    return lambda tok: (out, len(tok))


def _pushback(n: int) -> Action:
    return lambda tok: (tok[:-n], len(tok) - n)


def _dup_period(tok: str) -> tuple[str | None, int]:
    """Sentence-final abbreviation: keep the period on the word and lex it again as its own token."""
    return tok, len(tok) - 1


def _acronym_end(tok: str) -> tuple[str | None, int]:
    if len(tok) == 2:  # "I." before a sentence start: the letter, then the period
        return tok[0], 1
    return tok, len(tok) - 1


def _spaces_to_nbsp(tok: str) -> tuple[str | None, int]:
    return tok.replace(" ", "\u00a0"), len(tok)


def _latex_quotes(tok: str, probably_left: bool) -> str:
    if probably_left:
        tok = re.sub("&apos;|'", "`", tok)
        tok = re.sub('"|&quot;', "``", tok)
    else:
        tok = re.sub("&apos;|'", "'", tok)
        tok = re.sub('"|&quot;', "''", tok)
    tok = re.sub("[\u0091\u2018\u201b\u2039]", "`", tok)
    tok = re.sub("[\u0092\u2019\u203a]", "'", tok)
    tok = re.sub("[\u0093\u201c\u00ab]", "``", tok)
    return re.sub("[\u0094\u201d\u00bb]", "''", tok)


def _quote(probably_left: bool) -> Action:
    return lambda tok: (_latex_quotes(tok, probably_left), len(tok))


def _currency(tok: str) -> tuple[str | None, int]:
    out = tok.replace("\u00a2", "cents").replace("\u00a3", "#")
    return re.sub("[\u0080\u00a4\u20a0\u20ac]", "$", out), len(tok)


_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3"}


def _fraction_char(tok: str) -> tuple[str | None, int]:
    return _FRACTIONS.get(tok, tok), len(tok)


def _hyphens(tok: str) -> tuple[str | None, int]:
    return ("--" if 3 <= len(tok) <= 4 else tok), len(tok)


def _untokenizable(tok: str) -> tuple[str | None, int]:
    """CoreNLP drops characters no rule covers (with a warning); everything else becomes a one-character token."""
    cat = unicodedata.category(tok)
    if ord(tok) > 0xFFFF or cat[0] in "CSZ" and not (" " < tok < "\x7f"):
        return None, 1
    return tok, 1


def _rule(name: str, action: Action, *patterns: str) -> _Rule:
    return _Rule(name, tuple(re.compile(p) for p in patterns), action)


def _build_rules() -> list[_Rule]:
    """The rules in PTBLexer.flex order (order only decides between equally long matches)."""
    sentend = f"(?:{_SPACENL}(?:{_SPACENL}|[A-Z]|<[A-Za-z/!])|{_SPACENL}?\\Z)"
    return [
        _rule("cannot", _pushback(3), r"(?i:cannot)"),
        _rule("assimilation3", _pushback(3), r"(?i:'twas)"),
        _rule("assimilation2", _pushback(2), f"{_APOS}(?i:tis)", r"(?i:gonna|gotta|lemme|gimme|wanna)"),
        _rule("sgml", _spaces_to_nbsp, r"<\/?[A-Za-z!][^>\n]*>"),
        _rule("mdash", _const("--"), "&(?i:MD|mdash|ndash);", "[\u0096\u0097\u2013\u2014\u2015]"),
        _rule("amp", _const("&"), r"(?i:&amp;)"),
        _rule("prog_langs", _plain, r"(?i:c\+\+|[cf]#)"),
        _rule("word_redaux", _plain, f"(?P<tok>{_WORD}){_REDAUX}"),
        _rule("sword_sredaux", _plain, f"(?P<tok>[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*)(?i:n){_APOSETC}(?i:t)"),
        _rule("word", _plain, _WORD),
        _rule("apoword", _plain, *_APOWORDS),
        _rule("apoword2", _plain, f"(?P<tok>(?i:y){_APOS}){_L}"),
        _rule("fullurl", _plain, r"(?i:https?|ftp)://[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-]"),
        _rule(
            "likelyurl",
            _plain,
            r"(?:www\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4}|(?:[^ \t\n\f\r\"`'<>|.!?(){},\-_$]+\.)+"
            r"(?:com|net|org|edu))(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?",
        ),
        _rule("email", _plain, r"[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00a0]*@(?:[^ \t\n\f\r\"<>|().\u00a0]+\.)+[a-zA-Z]{2,4}"),
        _rule("twitter", _plain, r"[@\uff20][a-zA-Z_][a-zA-Z_0-9]*", f"[#\uff03]{_L}(?:{_LD}|_)*{_LD}"),
        _rule("redaux", _quote(False), f"(?P<tok>{_REDAUX})(?:[^A-Za-z]|\\Z)"),
        _rule("sredaux", _quote(False), f"(?P<tok>(?i:n){_APOSETC}(?i:t))(?:[^A-Za-z]|\\Z)"),
        _rule("date", _plain, f"{_D}{{1,2}}[\\-/]{_D}{{1,2}}[\\-/]{_D}{{2,4}}"),
        _rule("number", _plain, f"[\\-+]?{_D}+", f"[\\-+]?{_D}*(?:[.:,\u00ad\u066b\u066c]{_D}+)+"),
        _rule("frac", _spaces_to_nbsp, f"(?:{_D}{{1,4}}[- \u00a0])?{_D}{{1,4}}(?:\\\\?/|\u2044){_D}{{1,4}}"),
        _rule("frac2", _fraction_char, "[\u00bc\u00bd\u00be\u2153-\u215e]"),
        _rule(
            "tbspec",
            _plain,
            r"-(?:RRB|LRB|RCB|LCB|RSB|LSB)-",
            r"(?i:C\.D\.s|pro-|anti-|S&P-500|S&Ls)",
            f"(?i:Cap){_APOS}(?i:n)",
            f"(?i:c){_APOS}(?i:est)",
        ),
        _rule("thing", _plain, _THING),
        _rule("thinga", _plain, r"[A-Z]+(?:(?:[+&]|&amp;)[A-Z]+)+"),
        _rule("thing3", _plain, _THING3),
        _rule("dolsign", _plain, r"[A-Z]*\$", "#"),
        _rule("dolsign2", _currency, "[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]"),
        _rule("acronym_end", _acronym_end, f"(?P<tok>{_ACRO}\\.){_SPACENL}+{_ACRONYM_FOLLOWER}(?:{_SPACENL}|[?!])"),
        _rule("abbrev3", _plain, f"(?P<tok>{_ABBREV3}){_SPACENL}?{_D}"),
        _rule("abbrev1_end", _dup_period, f"(?P<tok>{_ABBREV1}){sentend}"),
        _rule("abbrev1", _plain, f"(?P<tok>{_ABBREV1})[\\s\\S]{{2}}"),
        _rule("abbrev1_eof", _dup_period, f"{_ABBREV1}(?=[\\s\\S]?\\Z)"),
        _rule("abbrev2", _plain, f"{_ABBREV4}\\."),
        _rule("abbrev4", _plain, f"(?P<tok>{_ABBREV4}){_SPACE}"),
        _rule("acro", _plain, f"(?P<tok>{_ACRO}){_SPACENL}"),
        _rule("tbspec2", _plain, f"(?P<tok>{_APOS}{_D}{_D}){_SPACENL}"),
        _rule("word_period", _plain, f"(?P<tok>{_WORD}\\.)[,;:]", f"(?P<tok>{_THING}\\.)[,;:]"),
        _rule("phone", _spaces_to_nbsp, r"(?:\(\d{3}\)[ \u00a0]?|\d{3}[\- \u00a0.])\d{3}[\- \u00a0.]\d{4}"),
        _rule("dblquote_left", _quote(True), r'(?P<tok>"|&quot;)[A-Za-z0-9$]'),
        _rule("dblquote", _quote(False), '"', "&quot;"),
        _rule("lbrace", _const("-LCB-"), r"\{"),
        _rule("rbrace", _const("-RCB-"), r"\}"),
        _rule("lbracket", _const("-LSB-"), r"\["),
        _rule("rbracket", _const("-RSB-"), r"\]"),
        _rule("lparen", _const("-LRB-"), r"\("),
        _rule("rparen", _const("-RRB-"), r"\)"),
        _rule("hyphens", _hyphens, r"-+"),
        _rule("ldots", _const("..."), r"\.{3,5}", "(?:\\.[ \u00a0]){2,4}\\.", "[\u0085\u2026]"),
        _rule("fnmarks", _plain, "@+", "#+", "_+"),
        _rule("asts", _plain, r"\*+", r"(?:\\\*){1,3}"),
        _rule("insentp", _plain, "[,;:]"),
        _rule("bang", _plain, "[?!]+"),
        _rule("period", _plain, r"\."),
        _rule("equals", _plain, "=+"),
        _rule("slash", _plain, "/"),
        _rule("hthing", _plain, _HTHING),
        _rule(
            "quotes_left",
            _quote(True),
            f"(?P<tok>{_APOS}|''|[{_QUOTE_CHARS}]{{1,2}})[A-Za-z]{_NOT_SPACENL}",
        ),
        _rule("quotes", _quote(False), _APOS, "''", f"[{_QUOTE_CHARS}]{{1,2}}"),
        _rule("misc", _plain, _MISC_SYMBOL),
        _rule("any", _untokenizable, r"[\s\S]"),
    ]


_FAST_WORD = re.compile(r"[A-Za-z]+(?=[ \n]|\Z)")
_FAST_EXCLUDE = frozenset({"cannot", "gonna", "gotta", "lemme", "gimme", "wanna"})


class PTBLexer:
    """Longest-match PTB tokenizer approximating CoreNLP 3.4.1 ``PTBTokenizer -preserveLines``.

    :meth:`tokenize_lines` keeps one output line per input line; a line's last token can depend on the start of
    the next line (sentence-final abbreviations), exactly as when CoreNLP reads the newline-joined file.
    """

    def __init__(self) -> None:
        self._rules = _build_rules()

    def _next_token(self, text: str, pos: int) -> tuple[str | None, int]:
        best_len, best_rule, best_match = 0, -1, None
        for index, rule in enumerate(self._rules):
            for pattern in rule.patterns:
                match = pattern.match(text, pos)
                if match is not None and match.end() - pos > best_len:
                    best_len, best_rule, best_match = match.end() - pos, index, match
        assert best_match is not None  # the last rule matches any character
        tok = best_match.group("tok") if "tok" in best_match.re.groupindex else best_match.group(0)
        return self._rules[best_rule].action(tok)

    def tokenize_text(self, text: str) -> list[list[str]]:
        """Tokenize a newline-separated text; returns the tokens of each line (original case)."""
        lines: list[list[str]] = [[]]
        pos, end = 0, len(text)
        while pos < end:
            ch = text[pos]
            if ch == "\n":
                lines.append([])
                pos += 1
                continue
            if ch in " \t\u00a0\u3000" or "\u2000" <= ch <= "\u200a":
                pos += 1
                continue
            fast = _FAST_WORD.match(text, pos)  # plain word before a space: every rule agrees on it
            if fast is not None and fast.group(0).lower() not in _FAST_EXCLUDE:
                lines[-1].append(fast.group(0))
                pos = fast.end()
                continue
            token, consumed = self._next_token(text, pos)
            if token is not None:
                lines[-1].append(token)
            pos += consumed
        return lines

    def tokenize_lines(self, lines: Sequence[str]) -> list[list[str]]:
        """Tokenize each caption (one per line) in the context of its neighbours, as the jar does."""
        if not lines:
            return []
        text = "\n".join(_INNER_NEWLINES.sub(" ", line) for line in lines)
        return self.tokenize_text(text)[: len(lines)]


_LEXER: PTBLexer | None = None


def _finish(tokens: Iterable[str]) -> str:
    """Lowercase, drop COCO punctuation, join with spaces (the COCO caption code's post-processing)."""
    return " ".join(t for t in (tok.lower() for tok in tokens) if t not in COCO_PUNCTUATION)


def ptb_tokenize_python(lines: Sequence[str]) -> list[str]:
    """COCO-style PTB tokenization of each line with the pure-Python :class:`PTBLexer`."""
    global _LEXER
    if _LEXER is None:
        _LEXER = PTBLexer()
    return [_finish(tokens) for tokens in _LEXER.tokenize_lines(lines)]


def find_pycocoevalcap_file(relative: str) -> Path | None:
    """Path of a file shipped in the ``pycocoevalcap`` wheel (e.g. ``tokenizer/stanford-corenlp-3.4.1.jar``)."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    return None


def java_available() -> str | None:
    """Path of the ``java`` executable, or None."""
    return shutil.which("java")


_TOKENIZER_JAR = "tokenizer/stanford-corenlp-3.4.1.jar"


_OPT_IN = ("or opt in to peftlab's pure-Python port of the tokenizer (equal to the jar on all E2E data): "
           f"tokenizer='python' (CLI: --tokenizer python; or set {TOKENIZER_ENV}=python)")


def java_tokenizer_problem() -> str | None:
    """None when the official jar can run; otherwise what is missing, how to install it, and the opt-in."""
    if java_available() is None:
        return ("the official PTB tokenizer of the E2E scorer (ROUGE-L, CIDEr, METEOR inputs) is the CoreNLP jar, "
                "which needs a Java runtime (`java` on PATH); none was found. Install one (e.g. `apt-get install -y "
                f"default-jre-headless`), {_OPT_IN}; METEOR itself still needs Java and is then reported unavailable")
    if find_pycocoevalcap_file(_TOKENIZER_JAR) is None:
        missing = missing_message("pycocoevalcap (its CoreNLP jar)", "metrics", "The official PTB tokenizer")
        return f"{missing}; {_OPT_IN}"
    return None


def ptb_tokenize_java(lines: Sequence[str], timeout: float = 600.0) -> list[str]:
    """COCO-style PTB tokenization with the official CoreNLP 3.4.1 jar (requires Java and ``pycocoevalcap``)."""
    problem = java_tokenizer_problem()
    if problem is not None:
        raise TokenizerUnavailableError(problem)
    java, jar = java_available(), find_pycocoevalcap_file(_TOKENIZER_JAR)
    assert java is not None and jar is not None
    if not lines:
        return []
    text = "\n".join(_INNER_NEWLINES.sub(" ", line) for line in lines)
    with tempfile.TemporaryDirectory(prefix="peftlab-ptb-") as tmp:
        path = os.path.join(tmp, "captions.txt")
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        cmd = [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", path]
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise TokenizerUnavailableError(
            f"the CoreNLP PTB tokenizer failed (exit {proc.returncode}): {proc.stderr.decode('utf-8', 'replace')[-500:]}"
        )
    out_lines = proc.stdout.decode("utf-8").split("\n")
    if len(out_lines) < len(lines):
        raise TokenizerUnavailableError(
            f"the CoreNLP PTB tokenizer returned {len(out_lines)} lines for {len(lines)} captions"
        )
    return [" ".join(w for w in line.rstrip().split(" ") if w and w not in COCO_PUNCTUATION) for line in out_lines[: len(lines)]]


def resolve_backend(backend: str | None = None) -> str:
    """The back-end to use: ``backend``, else ``$PEFTLAB_PTB_TOKENIZER``, else ``"java"``.

    ``"java"`` is checked here, so that a scorer fails before any work when the jar cannot run
    (:class:`TokenizerUnavailableError` naming the ``"python"`` opt-in); nothing falls back silently.
    """
    source = "tokenizer"
    if backend is None:
        backend, source = os.environ.get(TOKENIZER_ENV) or "java", TOKENIZER_ENV
    if backend not in BACKENDS:
        hint = " ('auto' is gone: the Python port is opt-in, never a silent fallback)" if backend == "auto" else ""
        raise ConfigError(f"{source} must be 'java' or 'python', not {backend!r}{hint}")
    if backend == "java":
        problem = java_tokenizer_problem()
        if problem is not None:
            raise TokenizerUnavailableError(problem)
    return backend


def coco_tokenize(lines: Sequence[str], backend: str | None = None) -> list[str]:
    """Tokenize captions the way the COCO caption scorer does (back-end as :func:`resolve_backend` picks it)."""
    if resolve_backend(backend) == "java":
        return ptb_tokenize_java(lines)
    return ptb_tokenize_python(lines)
