"""Text analysis for documents: word count, e-mail addresses, phone numbers, dates and amounts."""

from __future__ import annotations

import re
from typing import Any

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
DATE = re.compile(
    r"(?<![\w/.-])(?:"
    r"\d{4}-\d{2}-\d{2}"  # 2024-03-15
    r"|\d{1,2}[./]\d{1,2}[./]\d{4}"  # 15.03.2024, 03/15/2024
    rf"|\d{{1,2}}\.? {_MONTH}\.? \d{{4}}"  # 15 March 2024
    rf"|{_MONTH}\.? \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}"  # March 15, 2024
    r")(?![\w/-])",
    re.IGNORECASE,
)
# Currency codes and signs we recognise, before or after the number.
_CURRENCIES = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "USD": "USD", "EUR": "EUR", "GBP": "GBP",
               "CHF": "CHF", "JPY": "JPY", "CAD": "CAD", "AUD": "AUD"}
_CURRENCY = "|".join(re.escape(symbol) for symbol in sorted(_CURRENCIES, key=len, reverse=True))
_NUMBER = r"\d{1,3}(?:[,.' ]\d{3})*(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?"
AMOUNT = re.compile(
    rf"(?P<before>{_CURRENCY})\s?(?P<number1>-?(?:{_NUMBER}))(?![\d])"
    rf"|(?<![\w.,])(?P<number2>-?(?:{_NUMBER}))\s?(?P<after>{_CURRENCY})(?![A-Za-z])"
)
# A phone number: an optional +country code, then groups of digits split by spaces, dots, dashes or (area).
PHONE = re.compile(r"(?<![\w+/.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,5}){0,4}(?![\w/-])")
_PHONE_DIGITS = (7, 15)  # E.164 allows at most 15 digits; fewer than 7 is a number, not a phone


def _masked(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with ``spans`` blanked out, so one piece of text is found once (a date is not a phone)."""
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _unique(values: list[Any]) -> list[Any]:
    return list({repr(value): value for value in values}.values())


def parse_amount(number: str) -> float:
    """The value of an amount as written: 1,234.50, 1.234,50, 1 234 and 1'234 all work."""
    digits = number.replace(" ", "").replace("'", "")
    last = max(digits.rfind(","), digits.rfind("."))
    # A separator followed by one or two digits at the end is the decimal point; the others group thousands.
    if last != -1 and len(digits) - last - 1 in (1, 2):
        whole, fraction = digits[:last], digits[last + 1:]
    else:
        whole, fraction = digits, ""
    whole = whole.replace(",", "").replace(".", "")
    return float(f"{whole}.{fraction or 0}")


def analyse_text(text: str) -> dict[str, Any]:
    """Word count and the e-mail addresses, phone numbers, dates and amounts in ``text``, each once, in order.

    Dates are kept as written; amounts come as ``{"text", "currency", "value"}``.
    """
    text = str(text or "")
    spans: list[tuple[int, int]] = []
    found: dict[str, list[Any]] = {}
    for key, pattern in (("emails", EMAIL), ("dates", DATE)):
        matches = list(pattern.finditer(_masked(text, spans)))
        found[key] = _unique([match.group() for match in matches])
        spans += [match.span() for match in matches]
    amounts = []
    for match in AMOUNT.finditer(_masked(text, spans)):
        symbol = match.group("before") or match.group("after")
        number = match.group("number1") or match.group("number2")
        amounts.append({"text": match.group().strip(), "currency": _CURRENCIES[symbol],
                        "value": parse_amount(number)})
        spans.append(match.span())
    phones = []
    for match in PHONE.finditer(_masked(text, spans)):
        digits = sum(char.isdigit() for char in match.group())
        if _PHONE_DIGITS[0] <= digits <= _PHONE_DIGITS[1]:
            phones.append(match.group().strip())
    return {
        "word_count": len(text.split()),
        "emails": found["emails"],
        "phone_numbers": _unique(phones),
        "dates": found["dates"],
        "amounts": _unique(amounts),
    }
