"""A confusable skeleton, in the spirit of Unicode UTS #39: text as a reader takes it, so that
look-alike spellings of a name compare equal (``ledger.events.reserved_actor`` uses it).

Not the full UTS #39 data (no new dependency): Unicode compatibility forms (NFKC) and case are
folded away, and a small explicit table (:data:`LOOK_ALIKES`) maps the common look-alikes of
ASCII letters and of ``-`` and ``:`` to them. Only characters that look like ASCII are mapped:
a name in another script keeps its other letters, so its skeleton reads as no ASCII name.
Letters with a diacritic (``é``), and ASCII characters that resemble one another (``0`` and
``O``, ``rn`` and ``m``) are left as they are.
"""

from __future__ import annotations

import unicodedata

# Capital and small forms both: the table is applied before case is folded, since a capital
# and its small letter may look like two different Latin letters (Greek Ν is N, ν is v).
_LETTERS = {
    "A": "\u0391\u0410",  # GREEK ALPHA, CYRILLIC A
    "B": "\u0392\u0412",  # GREEK BETA, CYRILLIC VE
    "C": "\u03f9\u0421",  # GREEK LUNATE SIGMA, CYRILLIC ES
    "E": "\u0395\u0415",  # GREEK EPSILON, CYRILLIC IE
    "H": "\u0397\u041d\u04ba",  # GREEK ETA, CYRILLIC EN, SHHA
    "I": "\u0399\u0406\u0130",  # GREEK IOTA, CYRILLIC BYELORUSSIAN-UKRAINIAN I, Turkish dotted I
    "J": "\u037f\u0408",  # GREEK YOT, CYRILLIC JE
    "K": "\u039a\u041a",  # GREEK KAPPA, CYRILLIC KA
    "M": "\u039c\u041c",  # GREEK MU, CYRILLIC EM
    "N": "\u039d",  # GREEK NU
    "O": "\u039f\u041e",  # GREEK OMICRON, CYRILLIC O
    "P": "\u03a1\u0420",  # GREEK RHO, CYRILLIC ER
    "Q": "\u051a",  # CYRILLIC QA
    "S": "\u0405",  # CYRILLIC DZE
    "T": "\u03a4\u0422",  # GREEK TAU, CYRILLIC TE
    "W": "\u051c",  # CYRILLIC WE
    "X": "\u03a7\u0425",  # GREEK CHI, CYRILLIC HA
    "Y": "\u03a5\u0423\u04ae",  # GREEK UPSILON, CYRILLIC U, STRAIGHT U
    "Z": "\u0396",  # GREEK ZETA
    "a": "\u03b1\u0430\u0251",  # GREEK ALPHA, CYRILLIC A, LATIN ALPHA
    "c": "\u03f2\u0441",  # GREEK LUNATE SIGMA, CYRILLIC ES
    "d": "\u0501",  # CYRILLIC KOMI DE
    "e": "\u0435",  # CYRILLIC IE
    "g": "\u0261",  # LATIN SCRIPT G
    "h": "\u04bb",  # CYRILLIC SHHA
    # GREEK IOTA, CYRILLIC BYELORUSSIAN-UKRAINIAN I, dotless i, LATIN IOTA
    "i": "\u03b9\u0456\u0131\u0269",
    "j": "\u03f3\u0458\u0237",  # GREEK YOT, CYRILLIC JE, dotless j
    "k": "\u03ba",  # GREEK KAPPA
    "l": "\u04c0\u04cf",  # CYRILLIC PALOCHKA (capital and small)
    "n": "\u03b7",  # GREEK ETA
    "o": "\u03bf\u043e",  # GREEK OMICRON, CYRILLIC O
    "p": "\u03c1\u0440",  # GREEK RHO, CYRILLIC ER
    "q": "\u051b",  # CYRILLIC QA
    "s": "\u0455",  # CYRILLIC DZE
    "u": "\u03c5",  # GREEK UPSILON
    "v": "\u03bd",  # GREEK NU
    "w": "\u051d",  # CYRILLIC WE
    "x": "\u03c7\u0445",  # GREEK CHI, CYRILLIC HA
    "y": "\u03b3\u0443\u04af",  # GREEK GAMMA, CYRILLIC U, STRAIGHT U
}
# The hyphens and dashes (U+2011 NON-BREAKING HYPHEN is U+2010 once NFKC is applied), the minus
# sign, the hyphen bullet and the modifier minus.
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2043\u02d7"
# Modifier letter colon, ratio, triangular colon, raised colon, Armenian full stop, Hebrew sof
# pasuq, Syriac colons, two-dot punctuation (U+FE13 and U+FE55 are ':' once NFKC is applied,
# listed in case the table is used alone).
_COLONS = "\ua789\u2236\u02d0\u02f8\u0589\u05c3\u0703\u0704\u205a\ufe13\ufe55"

# Every character that looks like an ASCII one, mapped to it.
LOOK_ALIKES: dict[int, str] = {
    ord(look_alike): ascii_char
    for ascii_char, look_alikes in (*_LETTERS.items(), ("-", _DASHES), (":", _COLONS))
    for look_alike in look_alikes
}


def skeleton(text: str) -> str:
    """``text`` as a reader takes it: compatibility forms (NFKC: a full-width colon is a colon),
    look-alikes (:data:`LOOK_ALIKES`: a Cyrillic ``ѕ`` is ``s``, U+2010 HYPHEN is ``-``) and
    case (``casefold``) folded away. Two spellings a reader cannot tell apart share it."""
    if text.isascii():
        # Most names: NFKC leaves ASCII as it is, the table maps none of it, and casefold is
        # lower. Checked per append, so the common case skips the rest.
        return text.lower()
    mapped = unicodedata.normalize("NFKC", text).translate(LOOK_ALIKES)
    # Case folding can make a look-alike of what was none (a dotted i, "i" + U+0307 COMBINING
    # DOT ABOVE, is a small i to a reader): the table applies again.
    folded = unicodedata.normalize("NFKC", mapped.casefold()).translate(LOOK_ALIKES)
    return folded.replace("i\u0307", "i")
