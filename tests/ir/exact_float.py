"""An exact reference for binary float formats, written from the definitions.

It shares no code with `lpcc.ir.dtypes`: values come from the textbook
formula with `fractions.Fraction`, and rounding is a nearest-neighbour search
over the sorted list of representable values, so the bit-twiddling codecs are
checked against arithmetic they do not use.
"""

from __future__ import annotations

import bisect
import itertools
import math
from fractions import Fraction

NAN = "nan"
OVERFLOW = -1
SHIFT = 1100  # below float64's smallest subnormal, 2**-1074


class ExactFloat:
    """All codes of float<e, m, variant> and round-to-nearest-even into it."""

    def __init__(self, e: int, m: int, variant: str) -> None:
        self.e, self.m, self.variant = e, m, variant
        self.width = e + m
        self.bias = 2 ** (e - 1) - 1 + (1 if variant == "fnuz" else 0)
        self.emin = 1 - self.bias
        self.value: dict[int, Fraction | str] = {}
        for code in range(2 ** (1 + e + m)):
            self.value[code] = self._decode(code)
        positive = [
            (v, c)
            for c, v in self.value.items()
            if c < 2**self.width and not isinstance(v, str)
        ]
        positive.sort()
        self.mags = [v for v, _ in positive]
        self.codes = [c for _, c in positive]
        self.max = self.mags[-1]
        # Rounding works on integers in units of 2**-SHIFT (exact for every
        # float64 and every value of the format), which is much faster than
        # Fractions and just as exact.
        self._int_mags = [self._scaled(v) for v in self.mags]
        self._int_codes = list(self.codes)
        if variant != "finite":
            # The first value past max in an unbounded format: rounding there
            # (ties included, by the usual rule) is overflow.
            self._int_mags.append(self._scaled(self.max + self._quantum(self.max)))
            self._int_codes.append(OVERFLOW)

    def _decode(self, code: int) -> Fraction | str:
        e, m = self.e, self.m
        sign = code >> (e + m)
        field = (code >> m) & (2**e - 1)
        frac = code & (2**m - 1)
        if self.variant == "ieee" and field == 2**e - 1:
            return NAN if frac else ("-inf" if sign else "+inf")
        if self.variant == "fn" and field == 2**e - 1 and frac == 2**m - 1:
            return NAN
        if self.variant == "fnuz" and code == 2 ** (e + m):
            return NAN
        if field == 0:
            v = Fraction(frac, 2**m) * Fraction(2) ** self.emin
        else:
            v = (1 + Fraction(frac, 2**m)) * Fraction(2) ** (field - self.bias)
        return -v if sign else v

    def _quantum(self, v: Fraction) -> Fraction:
        """Spacing of representable values in the binade that holds v >= 0."""
        if v == 0:
            return Fraction(2) ** (self.emin - self.m)
        k = v.numerator.bit_length() - v.denominator.bit_length()
        if Fraction(2) ** k > v:
            k -= 1
        return Fraction(2) ** (max(k, self.emin) - self.m)

    def encode(self, x: float) -> int:
        """The code of float x (a Python float, so -0.0 and NaN are seen)."""
        e, m = self.e, self.m
        sign = 1 if math.copysign(1.0, x) < 0 else 0
        if math.isnan(x):
            if self.variant == "ieee":
                return sign << (e + m) | (2**e - 1) << m | 1 << (m - 1)
            if self.variant == "fn":
                return sign << (e + m) | (2 ** (e + m) - 1)
            if self.variant == "fnuz":
                return 2 ** (e + m)
            return (1 - sign) << (e + m)  # finite: ml_dtypes' choice, documented
        overflow = not math.isfinite(x)
        mag = 0
        if not overflow:
            num, den = abs(x).as_integer_ratio()
            a = num * (2**SHIFT // den)
            if self.variant == "finite":
                a = min(a, self._int_mags[-1])  # saturate
            mag = self._nearest(a)
            overflow = mag == OVERFLOW
        if overflow:
            if self.variant == "ieee":
                return sign << (e + m) | (2**e - 1) << m
            if self.variant == "fn":
                return sign << (e + m) | (2 ** (e + m) - 1)
            if self.variant == "fnuz":
                return 2 ** (e + m)
            return sign << (e + m) | self.codes[-1]
        if self.variant == "fnuz" and mag == 0:
            return 0
        return sign << (e + m) | mag

    @staticmethod
    def _scaled(v: Fraction) -> int:
        scaled = v * 2**SHIFT
        assert scaled.denominator == 1, "format finer than 2**-SHIFT"
        return scaled.numerator

    def _nearest(self, a: int) -> int:
        """Nearest value to a; a tie goes to the even significand."""
        mags, codes = self._int_mags, self._int_codes
        i = bisect.bisect_right(mags, a) - 1
        lo = mags[i]
        if a == lo or i + 1 == len(mags):
            return codes[i]
        hi = mags[i + 1]
        if a - lo != hi - a:
            return codes[i] if a - lo < hi - a else codes[i + 1]
        quantum = self._scaled(self._quantum(Fraction(lo, 2**SHIFT)))
        return codes[i] if (lo // quantum) % 2 == 0 else codes[i + 1]

    def test_inputs(self) -> list[float]:
        """Every value, every midpoint, the float64 neighbours of both, extremes."""
        points: list[float] = []
        mags = [*self.mags, self.max + self._quantum(self.max)]
        for lo, hi in itertools.pairwise(mags):
            for v in (lo, (lo + hi) / 2):
                f = float(v)
                points += [f, math.nextafter(f, math.inf), math.nextafter(f, -math.inf)]
        points += [float(self.max) * 4, 1e300, 5e-324, 0.0, math.inf]
        return points + [-p for p in points] + [math.nan, -math.nan, -math.inf]
