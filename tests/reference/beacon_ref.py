"""Plain-Python twin of analytics.beacon._pair_stats: loops, lists and math only (a direct DFT, no FFT)."""

from __future__ import annotations

import math

from analytics.beacon import FIELDS, JITTERS, BeaconParams

M64 = (1 << 64) - 1
EULER = 0.5772156649015329
GSCALE = math.sqrt(6.0) / math.pi


def quantile_sorted(a, q):
    n = len(a)
    if n == 0:
        return 0.0
    pos = q * (n - 1)
    i = int(math.floor(pos))
    if i >= n - 1:
        return a[n - 1]
    return a[i] + (a[i + 1] - a[i]) * (pos - i)


def p0(r):
    if r <= 1.0:
        return 0.0
    a = math.log(r) / (r - 1.0)
    return math.exp(-a) * (1.0 - 1.0 / r)


def p0_lattice(a, b, res):
    k1 = max(1.0, math.floor(a / res + 0.5))
    k2 = max(k1, math.floor(b / res + 0.5))
    return max((1 - i / 64) ** (k1 - 1) - (1 - i / 64) ** k2 for i in range(1, 64))


def binom_logsf(c, m, p):
    """-log10 P(X >= c), X ~ Bin(m, p), by summing the exact terms."""
    if c <= m * p or p <= 0.0 or p >= 1.0:
        return 0.0
    total = 0.0
    for k in range(c, m + 1):
        total += math.exp(math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1)
                          + k * math.log(p) + (m - k) * math.log1p(-p))
    return -math.log10(total) if total > 0 else 300.0


def xorshift(state):
    x = state
    x ^= x >> 12
    x ^= (x << 25) & M64
    x ^= x >> 27
    return x, (x * 0x2545F4914F6CDD1D) & M64


def shuffle(x, state):
    for i in range(len(x) - 1, 0, -1):
        state, r = xorshift(state)
        j = (r >> 11) % (i + 1)
        x[i], x[j] = x[j], x[i]
    return state


def periodogram(x):
    n = len(x)
    out = []
    for f in range(n // 2 + 1):
        re = im = 0.0
        for k in range(n):
            ang = 2.0 * math.pi * f * k / n
            re += x[k] * math.cos(ang)
            im -= x[k] * math.sin(ang)
        out.append(re * re + im * im)
    return out


def acf_at(x, lag, denom):
    n = len(x)
    if lag <= 0 or lag >= n or denom <= 0.0:
        return 0.0
    return sum(x[i] * x[i + lag] for i in range(n - lag)) / denom


def pair_stats(times, p: BeaconParams = BeaconParams(), res_pair: float = 0.0, dead: float = 0.0) -> dict:
    """The FIELDS of one pair's sorted event times (seconds), computed with plain loops."""
    out = {k: 0.0 for k in FIELDS}
    out["near_tie"] = False
    n = len(times)
    out["events"] = float(n)
    if n == 0:
        return out
    gaps0 = sorted(times[i] - times[i - 1] for i in range(1, n) if times[i] - times[i - 1] >= p.burst_min_s)
    thr = p.burst_min_s
    if gaps0:
        thr = max(p.burst_min_s, p.burst_frac * quantile_sorted(gaps0, 0.5))
        jumps = [(gaps0[i + 1] / gaps0[i], i) for i in range(len(gaps0) - 3)]
        if jumps:
            best = max(jumps, key=lambda r: (r[0], -r[1]))  # the first of equal jumps, as the kernel's strict >
            if best[0] * p.burst_frac >= 1.0:
                thr = max(thr, gaps0[best[1] + 1])
    beats = [times[0]]
    for i in range(1, n):
        if times[i] - times[i - 1] >= thr:
            beats.append(times[i])
    nb = len(beats)
    out["beats"] = float(nb)
    out["span_s"] = beats[-1] - beats[0]
    if nb < max(p.min_beats, 3):
        return out
    gs = sorted(beats[i + 1] - beats[i] for i in range(nb - 1))
    mg = len(gs)
    med = quantile_sorted(gs, 0.5)
    q1, q3 = quantile_sorted(gs, 0.25), quantile_sorted(gs, 0.75)
    bowley = (q3 + q1 - 2 * med) / (q3 - q1) if q3 > q1 else 0.0
    mad = quantile_sorted(sorted(abs(g - med) for g in gs), 0.5)
    out["bowley_skew"], out["mad_s"] = bowley, mad
    out["mad_ratio"] = mad / med if med > 0 else 0.0
    hist = [0] * 24
    for b in beats:
        hist[int(math.floor(b / 3600.0)) % 24] += 1
    hours = min(24, int(out["span_s"] // 3600.0) + 1)
    nonzero = [h for h in hist if h > 0]
    hmean = sum(nonzero) / len(nonzero)
    hcv = math.sqrt(sum((h - hmean) ** 2 for h in nonzero) / len(nonzero)) / hmean
    out["hist_coverage"] = min(1.0, len(nonzero) / hours)
    out["hist_cv"] = hcv
    out["rita_score"] = ((1 - min(1.0, abs(bowley))) + max(0.0, 1 - mad / p.madm_cutoff_s)
                         + out["hist_coverage"] * (1 - min(1.0, hcv))) / 3

    best = None  # (logp, i, j, c)
    for jit in JITTERS:
        r = 1.0 / (1.0 - float(jit))
        cand = None  # (count, i, j, b): the first window with the largest count
        res = max(p.resolution_s, res_pair)
        for i in range(mg):
            if gs[i] < 1.5 * dead:
                continue
            b = max(gs[i] * r, gs[i] + res)
            j = i
            while j < mg and gs[j] <= b:
                j += 1
            if cand is None or j - i > cand[0]:
                cand = (j - i, i, j, b)
        if cand is None:
            continue
        cc, ci, cj, cb = cand
        if gs[ci] <= dead:
            continue
        rr = (cb - dead) / (gs[ci] - dead)
        p_null = p0(rr)
        if res_pair > 0:
            p_null = max(p_null, p0_lattice(gs[ci], cb, res_pair))
        logp = binom_logsf(cc, mg, p_null)
        span_ratio = gs[-1] / gs[0] if gs[0] > 0 else gs[-1] / p.resolution_s
        neff = 1.0 + math.log(max(span_ratio, 1.0)) / math.log(rr)
        logp -= math.log10(neff * len(JITTERS))
        if best is None or logp > best[0]:
            best = (logp, ci, cj, cc)
    if best is None:
        best = (0.0, 0, 1, 0)
    logp, bi, bj, bc = best
    logp = max(logp, 0.0)
    out["concentration"] = bc / mg
    out["ia_logp"] = logp
    ia = min(1.0, max(0.0, (logp - p.logp_lo) / (p.logp_hi - p.logp_lo)))
    out["ia_score"] = ia
    win = gs[bi:bj]
    out["period_s"] = quantile_sorted(win, 0.5)
    pmean = sum(win) / len(win)
    out["jitter"] = 1.0 - gs[bi] / gs[bj - 1] if gs[bj - 1] > 0 else 0.0
    ks = [max(1.0, math.floor(g / pmean + 0.5)) for g in gs if g >= gs[bi] and pmean > 0]
    out["missed_fraction"] = sum(k - 1 for k in ks) / sum(ks) if ks else 0.0

    spec = 0.0
    if nb >= p.spec_min_beats and med > 0:
        nmax = p.spec_max_bins
        w = max(p.resolution_s, res_pair, med / 4.0)
        span = beats[-1] - beats[0]
        start = beats[0]
        if span / w + 1.0 > nmax:
            w2 = span / (nmax - 1.0)
            if w2 <= med / 2.0:
                w = w2
            else:
                start = beats[-1] - (nmax - 1.0) * w
        need = int((beats[-1] - start) / w) + 1
        nbins = 16
        while nbins < need and nbins < nmax:
            nbins *= 2
        x = [0.0] * nbins
        cnt = 0
        for b in beats:
            if b >= start:
                x[min(int((b - start) / w), nbins - 1)] += 1.0
                cnt += 1
        xm = cnt / nbins
        x = [v - xm for v in x]
        denom = sum(v * v for v in x)
        if denom > 0.0:
            obs = periodogram(x)
            half = nbins // 2
            pk = max(obs[2: half + 1])
            omean = denom * nbins / (nbins - 1.0)
            out["spec_logp"] = max(0.0, (pk / omean - math.log(half - 1.0)) / math.log(10.0))
            top2 = sorted(obs[2: half + 1])[-2:]
            out["near_tie"] = len(top2) == 2 and abs(top2[1] - top2[0]) <= 1e-7 * max(top2[1], 1e-12)
            nperm = p.n_perm if out["spec_logp"] >= p.logp_lo else 0
            state = (p.seed & M64) ^ ((nb * 0x9E3779B97F4A7C15) & M64) ^ (int(beats[0] * 1000.0) & M64) \
                ^ (((int(beats[-1] * 1000.0) & M64) << 7) & M64)
            if state == 0:
                state = 0x1234567
            xs = list(x)
            maxima = []
            for _ in range(nperm):
                state = shuffle(xs, state)
                maxima.append(max(periodogram(xs)[2: half + 1]))
            k = max(nperm, 1)
            mu = sum(maxima) / k
            sd = math.sqrt(max(sum(v * v for v in maxima) / k - mu * mu, 0.0))
            sd = max(sd, 0.05 * mu, 1e-12)
            beta = sd * GSCALE
            loc = mu - EULER * beta
            periods = []
            for rank in range(6 if nperm > 0 else 0):
                fbest, pbest = -1, 0.0
                for f in range(2, half + 1):
                    if obs[f] > pbest and (f == half or obs[f] >= obs[f + 1]) and obs[f] >= obs[f - 1]:
                        ok = True
                        for q in periods:
                            pf = nbins * w / q
                            ratio = f / pf
                            if abs(ratio - math.floor(ratio + 0.5)) < 0.05 * max(ratio, 1.0) or abs(f - pf) <= 1.0:
                                ok = False
                        if ok:
                            fbest, pbest = f, obs[f]
                if fbest < 0:
                    break
                y = (pbest - loc) / beta
                logp_s = min(y / math.log(10.0) if y > 0 else 0.0,
                             max(0.0, (pbest / omean - math.log(half - 1.0)) / math.log(10.0)))
                lag = int(math.floor(nbins / fbest + 0.5))
                acf = max(acf_at(x, lag - 1, denom), acf_at(x, lag, denom), acf_at(x, lag + 1, denom))
                if acf <= acf_at(x, lag // 2, denom) or acf <= acf_at(x, (3 * lag) // 2, denom) \
                        or fbest < 16 or nbins * w / fbest < 3.0 * dead:
                    acf = -acf if acf > 0 else acf
                if rank == 0:
                    out["spec_logp"], out["spec_acf"] = logp_s, acf
                if logp_s < p.logp_lo or acf < 3.0 / math.sqrt(nbins):
                    obs[fbest] = 0.0
                    continue
                if not periods:
                    out["spec_logp"], out["spec_acf"] = logp_s, acf
                    spec = min(1.0, max(0.0, (logp_s - p.logp_lo) / (p.logp_hi - p.logp_lo)))
                periods.append(nbins * w / fbest)
                obs[fbest] = 0.0
                if len(periods) == 3:
                    break
            periods += [0.0] * (3 - len(periods))
            out["spec_period_s"], out["period2_s"], out["period3_s"] = periods
    out["spec_score"] = spec
    out["score"] = max(ia, spec)
    return out
