"""Beaconing kernels over pair segments: jitter-tolerant inter-arrival statistics and a spectral test.

For each pair (a CSR segment of sorted event times, seconds since the epoch as float64) one serial kernel
``_pair_stats`` computes, after collapsing zero-gap bursts into single beats:

(a) inter-arrival statistics: RITA's Bowley skew and MAD of the gaps, a 24-bin hour-of-day histogram (coverage and
    spread), and the jitter-tolerant *concentration* test: the largest share of gaps falling in one window
    ``[a, a*r]`` for jitter tolerances r = 1/(1-j), j in JITTERS, scored by its binomial tail against the most
    concentrated exponential (Poisson) law, Bonferroni-corrected for the windows scanned. A beacon whose interval
    is uniform in [S(1-j), S] puts all its single gaps in one such window, missed beats only thin them.
(b) a BAYWATCH-style spectral test: the beats binned at a quarter of the median gap, the periodogram (radix-2
    FFT), a threshold from seeded permutations of the bins (Gumbel fit of the permuted maxima), and the peak
    period verified on the autocorrelation; the top three verified periods are reported.

Explicit estimates: period, jitter, missed-beat fraction. The combined 0-1 score is the stronger of the two
tests. Layers follow STYLE "Kernels": private serial kernel, parallel driver over balanced chunks, public wrapper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

# Output columns (one row per pair).
FIELDS = ("events", "beats", "span_s", "period_s", "jitter", "missed_fraction", "concentration", "ia_logp",
          "ia_score", "bowley_skew", "mad_s", "mad_ratio", "hist_coverage", "hist_cv", "rita_score",
          "spec_period_s", "spec_logp", "spec_acf", "spec_score", "period2_s", "period3_s", "score")
F = {name: i for i, name in enumerate(FIELDS)}
NF = len(FIELDS)
(F_EVENTS, F_BEATS, F_SPAN, F_PERIOD, F_JITTER, F_MISSED, F_CONC, F_IA_LOGP, F_IA_SCORE, F_BOWLEY, F_MAD,
 F_MAD_RATIO, F_HIST_COVER, F_HIST_CV, F_RITA, F_SPEC_PERIOD, F_SPEC_LOGP, F_SPEC_ACF, F_SPEC_SCORE, F_PERIOD2,
 F_PERIOD3, F_SCORE) = range(NF)

#: Jitter tolerances scanned by the concentration test (interval uniform in [S(1-j), S]).
JITTERS = np.array([0.02, 0.1, 0.25, 0.5])
_GUMBEL_EULER = 0.5772156649015329
_GUMBEL_SCALE = math.sqrt(6.0) / math.pi


@dataclass(frozen=True)
class BeaconParams:
    """Scalars of the beacon kernels (defaults documented in docs/architecture.md)."""

    burst_min_s: float = 0.2  # gaps shorter than this are one burst (zero-gap bursts)
    burst_frac: float = 0.1  # ... as are gaps shorter than this share of the median gap, or below a jump of
    # 1/burst_frac in the sorted gaps (bursts of several connections per beat)
    min_beats: int = 4  # RITA's minimum number of connections
    resolution_s: float = 0.001  # timestamp resolution: the narrowest gap window
    spec_min_beats: int = 8  # fewest beats for the spectral test
    spec_max_bins: int = 512  # periodogram length cap (power of two)
    n_perm: int = 8  # seeded permutations for the spectral threshold
    seed: int = 0x5EED
    logp_lo: float = 1.5  # -log10(p) scoring 0 ...
    logp_hi: float = 6.0  # ... and scoring 1
    madm_cutoff_s: float = 30.0  # RITA: MAD of gaps scoring 0 at this many seconds


# ----------------------------------------------------------------------------------------------- small helpers


@numba.njit(cache=True)
def _sort_inplace(a, n):
    """Sort a[:n] in place: insertion sort for short runs (twice numba's quicksort there), else quicksort."""
    if n > 64:
        a[:n].sort()
        return
    for k in range(1, n):
        v = a[k]
        j = k
        while j > 0 and a[j - 1] > v:
            a[j] = a[j - 1]
            j -= 1
        a[j] = v


@numba.njit(cache=True)
def _quantile_sorted(a, n, q):
    """Linear-interpolated quantile of the first n values of a sorted array (numpy's default method)."""
    if n == 0:
        return 0.0
    pos = q * (n - 1)
    i = int(math.floor(pos))
    if i >= n - 1:
        return a[n - 1]
    frac = pos - i
    return a[i] + (a[i + 1] - a[i]) * frac


@numba.njit(cache=True)
def _p0(r):
    """Largest probability any exponential law puts in a window [a, a*r] (r > 1)."""
    if r <= 1.0:
        return 0.0
    a = math.log(r) / (r - 1.0)
    return math.exp(-a) * (1.0 - 1.0 / r)


@numba.njit(cache=True)
def _p0_lattice(a, b, res):
    """Largest probability a geometric law on the lattice res, 2res, ... puts in [a, b] (events placed only to
    within res: a random subset of slices has geometric gaps)."""
    k1 = max(1.0, math.floor(a / res + 0.5))
    k2 = max(k1, math.floor(b / res + 0.5))
    best = 0.0
    for i in range(1, 64):
        q = i / 64.0
        v = (1.0 - q) ** (k1 - 1.0) - (1.0 - q) ** k2
        if v > best:
            best = v
    return best


@numba.njit(cache=True)
def _binom_logsf(c, m, p):
    """-log10 P(X >= c) for X ~ Binomial(m, p); 0 when c is not above the mean."""
    if c <= m * p or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 0.0
    lp = math.log(p)
    lq = math.log1p(-p)
    lcm = math.lgamma(m + 1.0)
    first = lcm - math.lgamma(c + 1.0) - math.lgamma(m - c + 1.0) + c * lp + (m - c) * lq
    total = 1.0
    term = 1.0
    for k in range(c + 1, m + 1):
        term *= (m - k + 1.0) / k * p / (1.0 - p)
        total += term
        if term < 1e-17 * total:
            break
    return -(first + math.log(total)) / math.log(10.0)


@numba.njit(cache=True)
def _next_u64(state):
    """xorshift64* step: (new state, output)."""
    x = state
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    return x, x * np.uint64(0x2545F4914F6CDD1D)


@numba.njit(cache=True)
def _shuffle(x, n, state):
    """Fisher-Yates shuffle of x[:n] driven by xorshift64*; returns the new state."""
    for i in range(n - 1, 0, -1):
        state, r = _next_u64(state)
        j = int((r >> np.uint64(11)) % np.uint64(i + 1))
        tmp = x[i]
        x[i] = x[j]
        x[j] = tmp
    return state


@numba.njit(cache=True)
def _fft(re, im, n, cos_t, sin_t, table_n):
    """In-place iterative radix-2 complex FFT of re/im[:n] (n a power of two dividing table_n)."""
    j = 0
    for i in range(1, n):  # bit reversal
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            t = re[i]
            re[i] = re[j]
            re[j] = t
            t = im[i]
            im[i] = im[j]
            im[j] = t
    length = 2
    while length <= n:
        half = length // 2
        stride = table_n // length
        for s in range(0, n, length):
            for k in range(half):
                wr = cos_t[k * stride]
                wi = -sin_t[k * stride]
                a = s + k
                b = a + half
                tr = re[b] * wr - im[b] * wi
                ti = re[b] * wi + im[b] * wr
                re[b] = re[a] - tr
                im[b] = im[a] - ti
                re[a] += tr
                im[a] += ti
        length *= 2


@numba.njit(cache=True)
def _periodogram(x, n, re, im, power, cos_t, sin_t, table_n):
    """power[f] = |DFT(x[:n])[f]|^2 for f = 0..n/2: the real series packed into an n/2-point complex FFT."""
    h = n // 2
    for k in range(h):
        re[k] = x[2 * k]
        im[k] = x[2 * k + 1]
    _fft(re, im, h, cos_t, sin_t, table_n)
    step = table_n // n
    for k in range(h + 1):
        kk = k % h
        km = (h - k) % h
        zr = re[kk]
        zi = im[kk]
        cr = re[km]
        ci = -im[km]
        er = 0.5 * (zr + cr)
        ei = 0.5 * (zi + ci)
        o_r = 0.5 * (zi - ci)
        o_i = -0.5 * (zr - cr)
        if k == h:
            wr = -1.0
            wi = 0.0
        else:
            wr = cos_t[k * step]
            wi = -sin_t[k * step]
        xr = er + wr * o_r - wi * o_i
        xi = ei + wr * o_i + wi * o_r
        power[k] = xr * xr + xi * xi


@numba.njit(cache=True)
def _acf_at(x, n, lag, denom):
    if lag <= 0 or lag >= n or denom <= 0.0:
        return 0.0
    s = 0.0
    for i in range(n - lag):
        s += x[i] * x[i + lag]
    return s / denom


# ----------------------------------------------------------------------------------------------- serial kernel


@numba.njit(cache=True)
def _pair_stats(t, lo, hi, burst_min, burst_frac, min_beats, res, lattice, dead, spec_min_beats, nmax, nperm, seed, logp_lo,
                logp_hi, madm_cutoff, jitters, out, beats, tmp, gsb, hist, obs, x, xs, re, im, power, cos_t, sin_t):
    """All statistics of one pair's sorted event times t[lo:hi] into out (length NF); the rest is scratch."""
    for k in range(out.shape[0]):
        out[k] = 0.0
    n = hi - lo
    out[F_EVENTS] = n
    if n == 0:
        return
    # zero-gap bursts: gaps under burst_min, then gaps under burst_frac of the median remaining gap; and when the
    # sorted gaps jump by 1/burst_frac or more (with three or more above the jump), everything below the largest
    # such jump: an implant that opens two to four connections a second apart at each beat makes most of its gaps
    # intra-burst, which the median then calls typical
    m = 0
    for i in range(lo + 1, hi):
        g = t[i] - t[i - 1]
        if g >= burst_min:
            tmp[m] = g
            m += 1
    thr = burst_min
    if m > 0:
        _sort_inplace(tmp, m)
        thr = max(burst_min, burst_frac * _quantile_sorted(tmp, m, 0.5))
        best = 0.0
        cut = -1
        for i in range(m - 3):
            if tmp[i + 1] > best * tmp[i]:
                best = tmp[i + 1] / tmp[i]
                cut = i
        if cut >= 0 and best * burst_frac >= 1.0:
            thr = max(thr, tmp[cut + 1])
    beats[0] = t[lo]
    nb = 1
    for i in range(lo + 1, hi):
        if t[i] - t[i - 1] >= thr:
            beats[nb] = t[i]
            nb += 1
    out[F_BEATS] = nb
    out[F_SPAN] = beats[nb - 1] - beats[0]
    if nb < max(min_beats, 3):
        return
    mg = nb - 1
    if nb == n and m == mg:
        for i in range(mg):  # nothing collapsed: the gaps are the ones already sorted
            gsb[i] = tmp[i]
    else:
        for i in range(mg):
            gsb[i] = beats[i + 1] - beats[i]
        _sort_inplace(gsb, mg)
    gs = gsb[:mg]
    med = _quantile_sorted(gs, mg, 0.5)
    q1 = _quantile_sorted(gs, mg, 0.25)
    q3 = _quantile_sorted(gs, mg, 0.75)
    bowley = (q3 + q1 - 2.0 * med) / (q3 - q1) if q3 > q1 else 0.0
    for i in range(mg):
        tmp[i] = abs(gs[i] - med)
    _sort_inplace(tmp, mg)
    mad = _quantile_sorted(tmp, mg, 0.5)
    out[F_BOWLEY] = bowley
    out[F_MAD] = mad
    out[F_MAD_RATIO] = mad / med if med > 0 else 0.0

    # hour-of-day histogram (RITA's 24 bins)
    for h in range(24):
        hist[h] = 0.0
    for i in range(nb):
        hist[int(math.floor(beats[i] / 3600.0)) % 24] += 1.0
    hours = min(24, int(out[F_SPAN] // 3600.0) + 1)
    nz = 0
    hsum = 0.0
    for h in range(24):
        if hist[h] > 0:
            nz += 1
            hsum += hist[h]
    hmean = hsum / nz
    hvar = 0.0
    for h in range(24):
        if hist[h] > 0:
            hvar += (hist[h] - hmean) ** 2
    hcv = math.sqrt(hvar / nz) / hmean
    out[F_HIST_COVER] = min(1.0, nz / hours)
    out[F_HIST_CV] = hcv
    skew_score = 1.0 - min(1.0, abs(bowley))
    madm_score = max(0.0, 1.0 - mad / madm_cutoff)
    hist_score = out[F_HIST_COVER] * (1.0 - min(1.0, hcv))
    out[F_RITA] = (skew_score + madm_score + hist_score) / 3.0

    # jitter-tolerant concentration of the gaps
    best_logp = 0.0
    best_i = 0
    best_j = 1
    best_c = 0
    for ri in range(jitters.shape[0]):
        r = 1.0 / (1.0 - jitters[ri])
        j = 0
        ci = -1
        cc = 0
        cj = 0
        cb = 0.0
        for i in range(mg):
            if gs[i] < 1.5 * dead:
                continue  # gaps in the dead time's shadow pile up by construction
            b = max(gs[i] * r, gs[i] + res)
            if j < i:
                j = i
            while j < mg and gs[j] <= b:
                j += 1
            if j - i > cc:
                cc = j - i
                ci = i
                cj = j
                cb = b
        if ci < 0 or gs[ci] <= dead:
            continue
        rr = (cb - dead) / (gs[ci] - dead)
        p0 = _p0(rr)
        if lattice > 0.0:
            p0 = max(p0, _p0_lattice(gs[ci], cb, lattice))
        logp = _binom_logsf(cc, mg, p0)
        span_ratio = gs[mg - 1] / gs[0] if gs[0] > 0 else gs[mg - 1] / res
        neff = 1.0 + math.log(max(span_ratio, 1.0)) / math.log(rr)
        logp -= math.log10(neff * jitters.shape[0])
        if logp > best_logp or best_c == 0:
            best_logp = logp
            best_i = ci
            best_j = cj
            best_c = cc
    best_logp = max(best_logp, 0.0)
    out[F_CONC] = best_c / mg
    out[F_IA_LOGP] = best_logp
    ia_score = min(1.0, max(0.0, (best_logp - logp_lo) / (logp_hi - logp_lo)))
    out[F_IA_SCORE] = ia_score
    # period, jitter and missed beats from the gaps in the best window
    period = _quantile_sorted(gs[best_i:best_j], best_j - best_i, 0.5)
    pmean = 0.0
    for i in range(best_i, best_j):
        pmean += gs[i]
    pmean /= best_j - best_i
    out[F_PERIOD] = period
    out[F_JITTER] = 1.0 - gs[best_i] / gs[best_j - 1] if gs[best_j - 1] > 0 else 0.0
    ksum = 0.0
    kmiss = 0.0
    for i in range(mg):
        if gs[i] >= gs[best_i] and pmean > 0:
            k = max(1.0, math.floor(gs[i] / pmean + 0.5))
            ksum += k
            kmiss += k - 1.0
    out[F_MISSED] = kmiss / ksum if ksum > 0 else 0.0

    # spectral test
    spec_score = 0.0
    if nb >= spec_min_beats and med > 0:
        w = max(res, med / 4.0)
        span = beats[nb - 1] - beats[0]
        start = beats[0]
        if span / w + 1.0 > nmax:
            w2 = span / (nmax - 1.0)
            if w2 <= med / 2.0:
                w = w2
            else:
                start = beats[nb - 1] - (nmax - 1.0) * w
        need = int((beats[nb - 1] - start) / w) + 1
        nbins = 16
        while nbins < need and nbins < nmax:
            nbins *= 2
        for k in range(nbins):
            x[k] = 0.0
        cnt = 0
        for i in range(nb):
            if beats[i] >= start:
                k = int((beats[i] - start) / w)
                if k >= nbins:
                    k = nbins - 1
                x[k] += 1.0
                cnt += 1
        xm = cnt / nbins
        denom = 0.0
        for k in range(nbins):
            x[k] -= xm
            denom += x[k] * x[k]
        if denom > 0.0:
            _periodogram(x, nbins, re, im, power, cos_t, sin_t, cos_t.shape[0] * 2)
            half = nbins // 2
            for f in range(half + 1):
                obs[f] = power[f]
            # screening: a shuffled series' ordinates are about exponential with mean denom*n/(n-1); a peak far
            # below the level that could reach logp_lo skips the permutations (the common, aperiodic case)
            pk = 0.0
            for f in range(2, half + 1):
                if obs[f] > pk:
                    pk = obs[f]
            omean = denom * nbins / (nbins - 1.0)
            logp_an = max(0.0, (pk / omean - math.log(half - 1.0)) / math.log(10.0))
            out[F_SPEC_LOGP] = logp_an
            nperm_run = nperm if logp_an >= logp_lo else 0
            # permutation threshold: maxima of the periodograms of shuffled bins, Gumbel-fitted
            state = np.uint64(seed) ^ (np.uint64(nb) * np.uint64(0x9E3779B97F4A7C15)) ^ \
                np.uint64(np.int64(beats[0] * 1000.0)) ^ (np.uint64(np.int64(beats[nb - 1] * 1000.0)) << np.uint64(7))
            if state == 0:
                state = np.uint64(0x1234567)
            for k in range(nbins):
                xs[k] = x[k]
            mu = 0.0
            m2 = 0.0
            for p in range(nperm_run):
                state = _shuffle(xs, nbins, state)
                _periodogram(xs, nbins, re, im, power, cos_t, sin_t, cos_t.shape[0] * 2)
                pm = 0.0
                for f in range(2, half + 1):
                    if power[f] > pm:
                        pm = power[f]
                mu += pm
                m2 += pm * pm
            mu /= max(nperm_run, 1)
            sd = math.sqrt(max(m2 / max(nperm_run, 1) - mu * mu, 0.0))
            sd = max(sd, 0.05 * mu, 1e-12)
            beta = sd * _GUMBEL_SCALE
            loc = mu - _GUMBEL_EULER * beta
            # top verified peaks (local maxima, not harmonics of a stronger one)
            found = 0
            periods = np.zeros(3)
            for rank in range(6 if nperm_run > 0 else 0):
                fbest = -1
                pbest = 0.0
                for f in range(2, half + 1):
                    if obs[f] > pbest and (f == half or obs[f] >= obs[f + 1]) and obs[f] >= obs[f - 1]:
                        fbest_ok = True
                        for q in range(found):
                            pf = nbins * w / periods[q]
                            ratio = f / pf
                            if abs(ratio - math.floor(ratio + 0.5)) < 0.05 * max(ratio, 1.0) or \
                                    abs(f - pf) <= 1.0:
                                fbest_ok = False
                        if fbest_ok:
                            fbest = f
                            pbest = obs[f]
                if fbest < 0:
                    break
                y = (pbest - loc) / beta
                # the weaker of the permutation (Gumbel) and the analytic (exponential ordinates) significance
                logp_s = min(y / math.log(10.0) if y > 0 else 0.0,
                             max(0.0, (pbest / omean - math.log(half - 1.0)) / math.log(10.0)))
                lag = int(math.floor(nbins / fbest + 0.5))
                acf = max(_acf_at(x, nbins, lag - 1, denom), _acf_at(x, nbins, lag, denom),
                          _acf_at(x, nbins, lag + 1, denom))
                # a period shows a peak of the autocorrelation at its lag, above the half lag (clustered,
                # bursty traffic has a decaying or flat autocorrelation instead); at least 16 cycles in the series;
                # and not the ripple that an idle-timeout dead time puts near 2-3 dead times
                if acf <= _acf_at(x, nbins, lag // 2, denom) or acf <= _acf_at(x, nbins, (3 * lag) // 2, denom) \
                        or fbest < 16 or nbins * w / fbest < 3.0 * dead:
                    acf = -acf if acf > 0 else acf
                if rank == 0:
                    out[F_SPEC_LOGP] = logp_s
                    out[F_SPEC_ACF] = acf
                if logp_s < logp_lo or acf < 3.0 / math.sqrt(nbins):
                    obs[fbest] = 0.0  # not significant or not verified: try the next peak
                    continue
                if found == 0:
                    out[F_SPEC_LOGP] = logp_s
                    out[F_SPEC_ACF] = acf
                    spec_score = min(1.0, max(0.0, (logp_s - logp_lo) / (logp_hi - logp_lo)))
                periods[found] = nbins * w / fbest
                found += 1
                obs[fbest] = 0.0
                if found == 3:
                    break
            out[F_SPEC_PERIOD] = periods[0]
            out[F_PERIOD2] = periods[1]
            out[F_PERIOD3] = periods[2]
    out[F_SPEC_SCORE] = spec_score
    out[F_SCORE] = max(ia_score, spec_score)


# ----------------------------------------------------------------------------------------------- parallel driver


@numba.njit(cache=True)
def _twiddles(nmax):
    half = nmax // 2
    c = np.empty(half)
    s = np.empty(half)
    for k in range(half):
        c[k] = math.cos(2.0 * math.pi * k / nmax)
        s[k] = math.sin(2.0 * math.pi * k / nmax)
    return c, s


@numba.njit(cache=True, parallel=True)
def _score_all(offsets, t, res_pair, dead_pair, burst_min, burst_frac, min_beats, res, spec_min_beats, nmax, nperm,
               seed, logp_lo, logp_hi, madm_cutoff, jitters, nchunks):
    npairs = offsets.shape[0] - 1
    out = np.zeros((npairs, NF))
    total = offsets[npairs]
    bounds = np.searchsorted(offsets, np.linspace(0, total, nchunks + 1).astype(np.int64))
    bounds[0] = 0
    bounds[nchunks] = npairs
    cos_t, sin_t = _twiddles(nmax)
    for c in prange(nchunks):
        longest = 1
        for p in range(bounds[c], bounds[c + 1]):
            longest = max(longest, offsets[p + 1] - offsets[p])
        beats = np.empty(longest)
        tmp = np.empty(longest)
        gsb = np.empty(longest)
        hist = np.empty(24)
        obs = np.empty(nmax // 2 + 1)
        x = np.empty(nmax)
        xs = np.empty(nmax)
        re = np.empty(nmax)
        im = np.empty(nmax)
        power = np.empty(nmax // 2 + 1)
        for p in range(bounds[c], bounds[c + 1]):
            _pair_stats(t, offsets[p], offsets[p + 1], burst_min, burst_frac, min_beats, max(res, res_pair[p]),
                        res_pair[p], dead_pair[p], spec_min_beats, nmax, nperm, seed, logp_lo, logp_hi, madm_cutoff, jitters,
                        out[p], beats, tmp, gsb, hist, obs, x, xs, re, im, power, cos_t, sin_t)
    return out


# ----------------------------------------------------------------------------------------------- public wrapper


def score_segments(offsets: np.ndarray, t_s: np.ndarray, params: BeaconParams = BeaconParams(),
                   resolution_s: np.ndarray | None = None, dead_s: np.ndarray | None = None) -> np.ndarray:
    """Beacon statistics for every pair: an (n_pairs, NF) float64 array, columns named by FIELDS.

    offsets: int64 CSR offsets (n_pairs + 1); t_s: float64 event times in seconds since the epoch, sorted within
    each segment. Optional per-pair float64 arrays from the stitcher: resolution_s (events are placed only to
    within this, e.g. timeout slices), dead_s (events are never closer than this, e.g. idle-timeout records).
    """
    offsets = np.ascontiguousarray(offsets)
    t_s = np.ascontiguousarray(t_s)
    if offsets.dtype != np.int64 or offsets.ndim != 1 or len(offsets) < 1:
        raise TypeError("offsets must be a non-empty 1-D int64 array")
    if t_s.dtype != np.float64 or t_s.ndim != 1:
        raise TypeError("t_s must be a 1-D float64 array")
    if offsets[0] != 0 or offsets[-1] != len(t_s) or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must start at 0, be non-decreasing and end at len(t_s)")
    nmax = int(params.spec_max_bins)
    if nmax < 16 or nmax & (nmax - 1):
        raise ValueError("spec_max_bins must be a power of two >= 16")
    npairs = len(offsets) - 1
    if npairs == 0:
        return np.zeros((0, NF))
    res_pair = np.zeros(npairs) if resolution_s is None else np.ascontiguousarray(resolution_s, dtype=np.float64)
    dead_pair = np.zeros(npairs) if dead_s is None else np.ascontiguousarray(dead_s, dtype=np.float64)
    if res_pair.shape != (npairs,) or dead_pair.shape != (npairs,):
        raise ValueError("resolution_s and dead_s must have one value per pair")
    nchunks = max(1, min(npairs, numba.get_num_threads() * 16))
    return _score_all(offsets, t_s, res_pair, dead_pair, float(params.burst_min_s), float(params.burst_frac), int(params.min_beats),
                      float(params.resolution_s), int(params.spec_min_beats), nmax, int(params.n_perm),
                      int(params.seed) & 0xFFFFFFFFFFFFFFFF, float(params.logp_lo), float(params.logp_hi),
                      float(params.madm_cutoff_s), JITTERS, nchunks)


def row_dict(row: np.ndarray) -> dict[str, float]:
    """One output row as {field: value}."""
    return {name: float(row[i]) for i, name in enumerate(FIELDS)}
