"""exp, expm1, log1p, tanh, erf and the normal distribution that LLVM can vectorize, in the argument's own precision.

Numba turns ``math.exp`` into a call to libm for every element: no SIMD (Numba vectorizes it only with Intel's SVML
runtime installed), and the exps dominated a wide softmax cross-entropy. These are plain arithmetic, so a loop of them
vectorizes like any other:

    exp(x) = 2^n * e^r,  n = round(x / ln 2),  r = x - n ln 2  (Cody & Waite: ln 2 in two parts, |r| <= ln(2)/2)

e^r is 1 + r + r^2 P(r) with Cephes' degree-5 minimax P (float32) or its Taylor series up to r^13 (float64),
both below a unit in the last place at |r| = ln(2)/2, evaluated with fused multiply-adds (``multiply_add``:
one rounding per step, and half the instructions of a multiply and an add); 2^n is built from exponent bits,
in 32-bit integers for float32 (converting 8 floats to 64-bit integers took a third of exp's time). Every
polynomial here is evaluated with ``multiply_add``. expm1 is a series near 0 and exp - 1 beyond; tanh and erf
are polynomials (float32) or rational functions (float64, Cephes') near 0 and exp-based forms beyond. Each is
within 2 units in the last place of numpy's or Python's over the whole range,
subnormal results, signed zeros, infinities and NaN included (tests/test_vector_math.py). Each picks its precision
by an @overload: ``exp(x)`` in a kernel is the float32 form for a float32 x.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload


# float <-> integer of the same width: the IEEE bits of one read as the other
_SAME_WIDTH = {types.int32: types.float32, types.int64: types.float64, types.float32: types.int32,
               types.float64: types.int64}


@intrinsic
def _reinterpret(typingctx, value):
    """``value``'s bits as the other kind of number of its width (int32 <-> float32, int64 <-> float64)."""
    result = _SAME_WIDTH.get(value)
    if result is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(result))

    return result(value), codegen


_float_from_bits = _bits_from_float = _reinterpret


@intrinsic
def multiply_add(typingctx, a, b, c):
    """a * b + c rounded once (LLVM's fma; a vector FMA instruction in a vectorized loop). Written out, as
    ``a * b + c``, LLVM keeps the two roundings: Numba does not let it contract them."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, signature, args):
        value_type = context.get_value_type(signature.return_type)
        name = "llvm.fma.f32" if signature.return_type == types.float32 else "llvm.fma.f64"
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(value_type, [value_type] * 3), name)
        return builder.call(function, args)

    return a(a, b, c), codegen


@njit
def _times_power_of_two(p, n, bits_type, bias, shift):
    """p * 2^n for an integral float n, as two factors 2^(n // 2) and 2^(n - n // 2), each built from its
    exponent bits: one factor alone would leave the normal range at either end of exp's domain."""
    whole = bits_type(n)
    half = bits_type(whole >> 1)
    low = _float_from_bits(bits_type((half + bias) << shift))
    high = _float_from_bits(bits_type((whole - half + bias) << shift))
    return (p * low) * high


@njit
def _exp32(x):
    t = min(max(x, np.float32(-104.0)), np.float32(89.0))  # beyond these exp is 0 or inf in float32
    # round to nearest by adding and subtracting 1.5 * 2^23 (branch-free, unlike floor, so it vectorizes)
    n = (t * np.float32(1.442695) + np.float32(12582912.0)) - np.float32(12582912.0)
    r = multiply_add(n, np.float32(2.12194440e-4), multiply_add(n, np.float32(-0.693359375), t))
    p = np.float32(1.9875691500e-4)
    p = multiply_add(p, r, np.float32(1.3981999507e-3))
    p = multiply_add(p, r, np.float32(8.3334519073e-3))
    p = multiply_add(p, r, np.float32(4.1665795894e-2))
    p = multiply_add(p, r, np.float32(1.6666665459e-1))
    p = multiply_add(p, r, np.float32(5.0000001201e-1))
    p = multiply_add(p, r * r, r) + np.float32(1.0)
    result = _times_power_of_two(p, n, np.int32, 127, 23)
    result = np.float32(0.0) if x < np.float32(-104.0) else result
    result = np.float32(np.inf) if x > np.float32(89.0) else result
    return result if x == x else x  # NaN in, NaN out


@njit
def _series_to_one_half(p, r):
    """The Horner steps of e^r's Taylor series from 1/12! down to 1/2! (float64 exp and expm1 share them)."""
    p = multiply_add(p, r, 1.0 / 479001600.0)
    p = multiply_add(p, r, 1.0 / 39916800.0)
    p = multiply_add(p, r, 1.0 / 3628800.0)
    p = multiply_add(p, r, 1.0 / 362880.0)
    p = multiply_add(p, r, 1.0 / 40320.0)
    p = multiply_add(p, r, 1.0 / 5040.0)
    p = multiply_add(p, r, 1.0 / 720.0)
    p = multiply_add(p, r, 1.0 / 120.0)
    p = multiply_add(p, r, 1.0 / 24.0)
    p = multiply_add(p, r, 1.0 / 6.0)
    p = multiply_add(p, r, 0.5)
    return p


@njit
def _exp64(x):
    t = min(max(x, -746.0), 710.0)  # beyond these exp is 0 or inf in float64
    n = (t * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0  # round to nearest: 1.5 * 2^52
    r = multiply_add(n, -1.9082149292705877e-10, multiply_add(n, -0.6931471803691238, t))
    p = 1.0 / 6227020800.0
    p = _series_to_one_half(p, r)
    p = multiply_add(p, r, 1.0)
    p = multiply_add(p, r, 1.0)
    result = _times_power_of_two(p, n, np.int64, 1023, 52)
    result = 0.0 if x < -746.0 else result
    result = np.inf if x > 710.0 else result
    return result if x == x else x  # NaN in, NaN out


@njit
def _tanh32(x):
    # |x| < 0.625: x + x^3 P(x^2) (Cephes' tanhf); above, 1 - 2 / (e^(2|x|) + 1), which no longer cancels there
    # (e^(2|x|) > 3.4). Both are computed and one is selected, so a loop of it stays branch-free.
    square = x * x
    p = np.float32(-5.70498872745e-3)
    p = multiply_add(p, square, np.float32(2.06390887954e-2))
    p = multiply_add(p, square, np.float32(-5.37397155531e-2))
    p = multiply_add(p, square, np.float32(1.33314422036e-1))
    p = multiply_add(p, square, np.float32(-3.33332819422e-1))
    small = p * square * x + x
    magnitude = abs(x)
    large = np.float32(1.0) - np.float32(2.0) / (_exp32(magnitude + magnitude) + np.float32(1.0))
    large = large if x >= 0 else -large
    small = small if x != 0 else x  # keeps the sign of -0.0
    return small if magnitude < np.float32(0.625) else large


@njit(inline="always")  # too large for LLVM's inliner: see _erf32
def _expm132(x):
    # |x| < 0.7: the Taylor series up to x^10 (truncation below 1e-9, relative); beyond, e^x - 1 loses nothing
    # that matters: |e^x - 1| > 0.5 there. Both computed, one selected.
    p = np.float32(1.0 / 39916800.0)
    p = multiply_add(p, x, np.float32(1.0 / 3628800.0))
    p = multiply_add(p, x, np.float32(1.0 / 362880.0))
    p = multiply_add(p, x, np.float32(1.0 / 40320.0))
    p = multiply_add(p, x, np.float32(1.0 / 5040.0))
    p = multiply_add(p, x, np.float32(1.0 / 720.0))
    p = multiply_add(p, x, np.float32(1.0 / 120.0))
    p = multiply_add(p, x, np.float32(1.0 / 24.0))
    p = multiply_add(p, x, np.float32(1.0 / 6.0))
    p = multiply_add(p, x, np.float32(0.5))
    small = (p * x) * x + x
    small = small if x != 0 else x  # keeps the sign of -0.0
    return small if abs(x) < np.float32(0.7) else _exp32(x) - np.float32(1.0)


@njit(inline="always")
def _expm164(x):
    # as _expm132, with the series up to x^18
    p = 1.0 / 121645100408832000.0
    p = multiply_add(p, x, 1.0 / 6402373705728000.0)
    p = multiply_add(p, x, 1.0 / 355687428096000.0)
    p = multiply_add(p, x, 1.0 / 20922789888000.0)
    p = multiply_add(p, x, 1.0 / 1307674368000.0)
    p = multiply_add(p, x, 1.0 / 87178291200.0)
    p = multiply_add(p, x, 1.0 / 6227020800.0)
    p = _series_to_one_half(p, x)
    small = (p * x) * x + x
    small = small if x != 0 else x
    return small if abs(x) < 0.7 else _exp64(x) - 1.0


@njit
def _tanh64(x):
    # as _tanh32, with Cephes' rational form for |x| < 0.625, x + x^3 P(x^2) / Q(x^2) (a polynomial would need
    # twice the terms for float64's digits)
    square = x * x
    p = multiply_add(-9.64399179425052238628e-1, square, -9.92877231001918586564e1)
    p = multiply_add(p, square, -1.61468768441708447952e3)
    q = square + 1.12811678491632931402e2
    q = multiply_add(q, square, 2.23548839060100448583e3)
    q = multiply_add(q, square, 4.84406305325125486048e3)
    small = x * square * (p / q) + x
    magnitude = abs(x)
    large = 1.0 - 2.0 / (_exp64(magnitude + magnitude) + 1.0)
    large = large if x >= 0 else -large
    small = small if x != 0 else x  # keeps the sign of -0.0
    return small if magnitude < 0.625 else large


# Inlined by Numba itself (inline="always", here and in erf's overload): it is too large for LLVM's inliner,
# and a loop that calls it would not vectorize. Its callees are plain functions, which LLVM inlines; nesting
# Numba-inlined functions that hold conditional expressions made Numba warn (NumbaIRAssumptionWarning).
@njit(inline="always")
def _erf32(x):
    # |x| < 0.921875: x P(x^2); up to 3.92: 1 - e^(-x^2) Q(1/x), Q fitted to erfc(x) e^(x^2) (degree 10 in 1/x,
    # mapped onto [-1, 1]). Both are least-squares fits to Python's float64 math.erf / math.erfc on Chebyshev
    # nodes (relative error 5e-10 and 2e-7 evaluated in float32). Beyond 3.92, erf is 1 in float32.
    magnitude = abs(x)
    square = magnitude * magnitude
    p = np.float32(8.438735676463693e-05)
    p = multiply_add(p, square, np.float32(-0.0008160776342265308))
    p = multiply_add(p, square, np.float32(0.005202834960073233))
    p = multiply_add(p, square, np.float32(-0.02686024084687233))
    p = multiply_add(p, square, np.float32(0.11283713579177856))
    p = multiply_add(p, square, np.float32(-0.37612634897232056))
    p = multiply_add(p, square, np.float32(1.128379225730896))
    small = magnitude * p
    # the divisor is at least 0.92: no division by zero, whatever the caller's error model checks
    w = np.float32(2.4106733375026055) / max(magnitude, np.float32(0.921875)) + np.float32(-1.6149676881384196)
    q = np.float32(-3.6263420497562038e-06)
    q = multiply_add(q, w, np.float32(5.626258825941477e-06))
    q = multiply_add(q, w, np.float32(8.531856110494118e-06))
    q = multiply_add(q, w, np.float32(-5.269134635454975e-05))
    q = multiply_add(q, w, np.float32(0.00018030119827017188))
    q = multiply_add(q, w, np.float32(-0.0004457648901734501))
    q = multiply_add(q, w, np.float32(0.00041470176074653864))
    q = multiply_add(q, w, np.float32(0.0033608470112085342))
    q = multiply_add(q, w, np.float32(-0.028608467429876328))
    q = multiply_add(q, w, np.float32(0.1522674411535263))
    q = multiply_add(q, w, np.float32(0.32278281450271606))
    large = np.float32(1.0) - q * _exp32(-square)
    result = small if magnitude < np.float32(0.921875) else large
    result = np.float32(1.0) if magnitude >= np.float32(3.92) else result
    result = -result if x < 0 else result
    result = result if x != 0 else x  # keeps the sign of -0.0
    return result if x == x else x  # NaN in, NaN out


# Cephes' erf for |x| < 1 (ndtr.c) is x T(x^2) / U(x^2) with U's leading coefficient 1; _erf64 evaluates it as
# x + x (T - U) / U, a correction to x, so the quotient's rounding costs a fraction of an ulp (x T / U was off by
# up to 3 ulp near |x| = 1). The coefficients of T - U, lowest degree last:
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3, 7.00332514112805075473e3,
          5.55923013010394962768e4)
_ERF_U = (3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3, 2.26290000613890934246e4,
          4.92673942608635921086e4)
_ERF_D0, _ERF_D1, _ERF_D2, _ERF_D3, _ERF_D4 = (t - u for t, u in zip(_ERF_T, _ERF_U))


@njit(inline="always")  # too large for LLVM's inliner, as _erf32
def _erf64(x):
    # |x| < 1: x + x (T - U) / U in x^2 (above); beyond, 1 - e^(-x^2) P(|x|) / Q(|x|) with |x| capped at 6, past
    # which erf is 1 to float64 (erfc(6) < 3e-17): Cephes' erfc form. Both computed, one selected (branch-free).
    square = x * x
    d = multiply_add(-1.0, square, _ERF_D0)
    d = multiply_add(d, square, _ERF_D1)
    d = multiply_add(d, square, _ERF_D2)
    d = multiply_add(d, square, _ERF_D3)
    d = multiply_add(d, square, _ERF_D4)
    u = square + _ERF_U[0]
    u = multiply_add(u, square, _ERF_U[1])
    u = multiply_add(u, square, _ERF_U[2])
    u = multiply_add(u, square, _ERF_U[3])
    u = multiply_add(u, square, _ERF_U[4])
    small = multiply_add(x, d / u, x)
    magnitude = abs(x)
    a = magnitude if magnitude < 6.0 else 6.0
    p = multiply_add(2.46196981473530512524e-10, a, 5.64189564831068821977e-1)
    p = multiply_add(p, a, 7.46321056442269912687e0)
    p = multiply_add(p, a, 4.86371970985681366614e1)
    p = multiply_add(p, a, 1.96520832956077098242e2)
    p = multiply_add(p, a, 5.26445194995477358631e2)
    p = multiply_add(p, a, 9.34528527171957607540e2)
    p = multiply_add(p, a, 1.02755188689515710272e3)
    p = multiply_add(p, a, 5.57535335369399327526e2)
    q = a + 1.32281951154744992508e1
    q = multiply_add(q, a, 8.67072140885989742329e1)
    q = multiply_add(q, a, 3.54937778887819891062e2)
    q = multiply_add(q, a, 9.75708501743205489753e2)
    q = multiply_add(q, a, 1.82390916687909736289e3)
    q = multiply_add(q, a, 2.24633760818710981792e3)
    q = multiply_add(q, a, 1.65666309194161350182e3)
    q = multiply_add(q, a, 5.57535340817727675546e2)
    large = 1.0 - _exp64(-(a * a)) * p / q
    large = large if x >= 0 else -large
    result = small if magnitude < 1.0 else large
    return result if x == x else x  # NaN in, NaN out


@njit(inline="always")  # too large for LLVM's inliner, as _erf32
def _normal_cdf_pdf32(x):
    # The lower tail Phi(-s) = phi(s) R(s), s = |x|, with R Mills' ratio written t P(t) in t = 1 / (1 + 0.4 s):
    # P of degree 9, 1/sqrt(2 pi) folded in, fitted to relative error 1.6e-8 on s <= 16 (least squares reweighted
    # towards minimax, from Python's math.erfc). phi(s) is one exp whose argument is exact: s^2 = square + error
    # (error by a fused multiply-add), e^(-s^2/2) = e^(-square/2) (1 - error/2). Past s = 16 both tails are
    # exactly 0 and 1 in float32, so s is capped there (and x = +-inf needs no case of its own).
    s = min(abs(x), np.float32(16.0))
    t = np.float32(1.0) / multiply_add(np.float32(0.4), s, np.float32(1.0))
    p = np.float32(0.032427966594696045)
    p = multiply_add(p, t, np.float32(-0.17794793844223022))
    p = multiply_add(p, t, np.float32(0.3848913311958313))
    p = multiply_add(p, t, np.float32(-0.37734100222587585))
    p = multiply_add(p, t, np.float32(0.12209722399711609))
    p = multiply_add(p, t, np.float32(-0.0281499233096838))
    p = multiply_add(p, t, np.float32(0.0917520821094513))
    p = multiply_add(p, t, np.float32(0.1330585479736328))
    p = multiply_add(p, t, np.float32(0.1596362292766571))
    p = multiply_add(p, t, np.float32(0.15957549214363098))
    square = s * s
    gauss = _exp32(np.float32(-0.5) * square) * multiply_add(np.float32(-0.5), multiply_add(s, s, -square),
                                                            np.float32(1.0))
    tail = gauss * (t * p)
    cdf = tail if x < 0 else np.float32(1.0) - tail
    pdf = gauss * np.float32(0.3989422804014327)
    return (cdf, pdf) if x == x else (x, x)  # NaN in, NaN out


# Below x = -1, Phi(x) = phi(s) t P(t) with s = -x, t = 1 / (1 + 0.2 s): Mills' ratio as a polynomial of degree 18,
# least-squares fitted here to 60-digit values (mpmath) on s in [1, 38], relative error 5.7e-16 evaluated in float64.
# Above, 0.5 (1 + erf(x / sqrt 2)) loses at most 2 bits to the cancellation (at x = -1).
@njit(inline="always")
def _normal_cdf_pdf64(x):
    s = min(abs(x), 40.0)  # past 40 both tails are exactly 0 and 1
    square = s * s
    gauss = _exp64(-0.5 * square) * multiply_add(-0.5, multiply_add(s, s, -square), 1.0)  # s^2 = square + error
    pdf = gauss * 0.3989422804014327
    t = 1.0 / multiply_add(0.2, s, 1.0)
    p = -0.006070496289555337
    p = multiply_add(p, t, 0.05298122291344397)
    p = multiply_add(p, t, -0.2046338200753482)
    p = multiply_add(p, t, 0.46016875783348365)
    p = multiply_add(p, t, -0.677307665681906)
    p = multiply_add(p, t, 0.7141954458994636)
    p = multiply_add(p, t, -0.5786993459219655)
    p = multiply_add(p, t, 0.3523755195867765)
    p = multiply_add(p, t, -0.1697945380532887)
    p = multiply_add(p, t, 0.08445549131791533)
    p = multiply_add(p, t, 0.017218213089520547)
    p = multiply_add(p, t, 0.06929472227912503)
    p = multiply_add(p, t, 0.09324206731070672)
    p = multiply_add(p, t, 0.12494343250968808)
    p = multiply_add(p, t, 0.15294388053056585)
    p = multiply_add(p, t, 0.1760013218115425)
    p = multiply_add(p, t, 0.19199992558088558)
    p = multiply_add(p, t, 0.20000000256557784)
    p = multiply_add(p, t, 0.19999999995925663)
    lower_tail = pdf * (t * p)
    return (lower_tail if x < -1.0 else 0.5 * (1.0 + _erf64(x * 0.7071067811865476))), pdf


@njit(inline="always")
def _log1p(x, T, bits_type, one_bits, sqrt_half_bits, mantissa_mask, shift, series):
    """log(1 + x) in x's precision (both precisions share it; see _log1p32 and _log1p64).

    u = 1 + x rounded; e = (1 + x) - u exactly (Sterbenz); log(1 + x) = log(u) + e / u to first order. u = 2^k m
    with m in [sqrt(1/2), sqrt(2)) read from u's bits (an integer offset moves its mantissa into that range),
    and with f = m - 1 (exact), s = f / (2 + f), |s| < 0.172: log(m) = 2 atanh(s) = f - f^2/2 + s (f^2/2 + R),
    R = 2 s^2 (1/3 + s^2/5 + ...) (f = 2s + sf turns the series into this form, whose leading term f is exact).
    k ln 2 goes in two parts (Cody & Waite), the small one with the small terms."""
    u = T(1.0) + x
    e = x - (u - T(1.0)) if u < T(2.0) else T(1.0) - (u - x)
    bits = _bits_from_float(max(u, T(1.0e-30))) + bits_type(one_bits - sqrt_half_bits)
    k = T((bits >> shift) - (one_bits >> shift))
    f = _float_from_bits(bits_type((bits & mantissa_mask) + sqrt_half_bits)) - T(1.0)
    s = f / (T(2.0) + f)
    z = s * s
    half_square = T(0.5) * f * f
    small = s * (half_square + (z + z) * series(z)) + (k * T(1.428606820309417e-06) + e / u)
    result = ((small - half_square) + f) + k * T(0.693145751953125)
    result = result if x != 0 else x  # keeps the sign of -0.0 (and returns tiny x itself)
    result = T(-np.inf) if u == 0 else result
    result = T(np.nan) if u < 0 else result
    return result if x < T(np.inf) else x  # inf stays inf; NaN stays NaN (a NaN fails every comparison above)


@njit
def _atanh_series32(z):
    # 1/3 + z/5 + z^2/7 + z^3/9: the next term is below 2^-24 of the result for z < 0.0295
    p = np.float32(1.0 / 9.0)
    p = multiply_add(p, z, np.float32(1.0 / 7.0))
    p = multiply_add(p, z, np.float32(1.0 / 5.0))
    return p * z + np.float32(1.0 / 3.0)


@njit
def _atanh_series64(z):
    # 1/3 + z/5 + ... + z^9/21: the next term is below 2^-53 of the result for z < 0.0295
    p = 1.0 / 21.0
    p = multiply_add(p, z, 1.0 / 19.0)
    p = multiply_add(p, z, 1.0 / 17.0)
    p = multiply_add(p, z, 1.0 / 15.0)
    p = multiply_add(p, z, 1.0 / 13.0)
    p = multiply_add(p, z, 1.0 / 11.0)
    p = multiply_add(p, z, 1.0 / 9.0)
    p = multiply_add(p, z, 1.0 / 7.0)
    p = multiply_add(p, z, 1.0 / 5.0)
    return p * z + 1.0 / 3.0


@njit
def _log1p32(x):
    return _log1p(x, np.float32, np.int32, 0x3F800000, 0x3F3504F3, 0x007FFFFF, 23, _atanh_series32)


@njit
def _log1p64(x):
    return _log1p(x, np.float64, np.int64, 0x3FF0000000000000, 0x3FE6A09E667F3BCD, 0x000FFFFFFFFFFFFF, 52,
                  _atanh_series64)


def _by_precision(for_float32, for_float64):
    """An @overload's choice of implementation by the argument's type (float32 or float64; others: none)."""

    def choose(x):
        if x == types.float32:
            return lambda x: for_float32(x)
        if x == types.float64:
            return lambda x: for_float64(x)
        return None

    return choose


def exp(x):
    """e^x in x's precision (float32 or float64), vectorizable; see the module's docstring."""
    return math.exp(x)


def tanh(x):
    """tanh(x) in x's precision, vectorizable (within 2 ulp of np.tanh, tested)."""
    return math.tanh(x)


overload(exp)(_by_precision(_exp32, _exp64))
overload(tanh)(_by_precision(_tanh32, _tanh64))


def expm1(x):
    """e^x - 1 in x's precision, accurate near 0 (within 2 ulp of np.expm1, tested), vectorizable."""
    return math.expm1(x)


overload(expm1, inline="always")(_by_precision(_expm132, _expm164))


def erf(x):
    """erf(x) in x's precision, vectorizable (within 2 ulp of math.erf, tested)."""
    return math.erf(x)


overload(erf, inline="always")(_by_precision(_erf32, _erf64))


def log1p(x):
    """log(1 + x) in x's precision, accurate near 0 (within 2 ulp of np.log1p, tested), vectorizable."""
    return math.log1p(x)


overload(log1p, inline="always")(_by_precision(_log1p32, _log1p64))


def normal_cdf_pdf(x):
    """(Phi(x), phi(x)), the standard normal's distribution function and density, in x's precision, vectorizable:
    GELU is x Phi(x), its derivative Phi(x) + x phi(x). float32 shares one exp between the two and is accurate in
    relative terms in the lower tail too (within 8 ulp of the float64 values, tested), where 1 + erf(x / sqrt 2)
    cancels; so is float64 (its own Mills-ratio fit below x = -1)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0)), math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


overload(normal_cdf_pdf, inline="always")(_by_precision(_normal_cdf_pdf32, _normal_cdf_pdf64))
