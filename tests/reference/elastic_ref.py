"""Plain-Python twin of bench.detection.references.elastic_reduce: Elastic's beaconing reduce_script
(elastic/integrations packages/beaconing/elasticsearch/transform/pivot_transform/transform.yml) transliterated
function by function, with lists and closures as in the Painless source."""

from __future__ import annotations

import math


def first_complete(counts):
    """firstComplete(): the first non-empty bucket."""
    i = 0
    while i < len(counts) and counts[i] == 0:
        i += 1
    return i


def last_complete(counts):
    """lastComplete(): one past the last non-empty bucket."""
    i = len(counts)
    while i > 0 and counts[i - 1] == 0:
        i -= 1
    return i


def count_if_not(a, b, stride, skip):
    """countIfNot(): buckets a..b-1 (every stride) that skip() does not drop."""
    return sum(0 if skip(i) else 1 for i in range(a, b, stride))


def percentiles(percents, values, skip):
    """percentiles(): nearest-rank values of the kept buckets, sorted."""
    ordered = sorted(values[i] for i in range(len(values)) if not skip(i))
    n = len(ordered)
    return [ordered[min(int(p * float(n) + 0.5), n - 1)] for p in percents]


def mean(a, b, stride, values, skip):
    """mean() of the kept buckets (0 if none)."""
    m = n = 0.0
    for i in range(a, b, stride):
        if not skip(i):
            m += values[i]
            n += 1
    return m / n if n > 0 else 0.0


def variance(mu, a, b, stride, values, skip):
    """variance() about mu of the kept buckets (population; 0 if none)."""
    v = n = 0.0
    for i in range(a, b, stride):
        if not skip(i):
            v += (values[i] - mu) * (values[i] - mu)
            n += 1
    return v / n if n > 0 else 0.0


def imax(a, b, values):
    """max(): index of the first largest value in a..b-1."""
    best_i, best = a, values[a]
    for i in range(a + 1, b):
        if values[i] > best:
            best_i, best = i, values[i]
    return best_i


def java_div(x, y):
    """Java's int division (truncates toward zero)."""
    q = abs(x) // abs(y)
    return q if (x >= 0) == (y > 0) else -q


def reduce_script(counts, source_bytes, destination_bytes, params):
    """The reduce_script's result map for one group's summed bucket vectors."""
    counts = [float(c) for c in counts]
    sb = [float(x) for x in source_bytes]
    db = [float(x) for x in destination_bytes]
    for i in range(len(counts)):
        if counts[i] > 0:
            sb[i] /= counts[i]
            db[i] /= counts[i]
    mp = params["min_number_periods"]
    a, b = first_complete(counts), last_complete(counts)
    not_empty = count_if_not(a, b, 1, lambda i: counts[i] == 0)
    if b - a < 2 * mp or not_empty < mp + 1:
        return {"is_beaconing": False, "interval": b - a, "non_empty_buckets": not_empty}
    ne_src = count_if_not(a, b, 1, lambda i: sb[i] == 0)
    ne_dst = count_if_not(a, b, 1, lambda i: db[i] == 0)

    def low_cov(values, n_not_empty, limit, need):
        if not n_not_empty > need:
            return False
        p = percentiles(params["truncate_at"], values, lambda i: values[i] == 0)
        out = lambda i: values[i] < p[0] or values[i] > p[1]  # noqa: E731
        mu = mean(a, b, 1, values, out)
        return math.sqrt(variance(mu, a, b, 1, values, out)) <= limit * abs(mu)

    low_src = low_cov(sb, ne_src, params["max_beaconing_bytes_cov"], mp)
    low_dst = low_cov(db, ne_dst, params["max_beaconing_bytes_cov"], mp)
    low_rv = low_cov(counts, not_empty, params["max_beaconing_count_rv"], int(params["min_not_empty"] * (b - a)))

    max_period = java_div(b - a, mp)
    n_counts = [0.0] * (max_period - 1)
    xy_cov = [0.0] * (max_period - 1)
    mj_frac = params["max_jitter"]
    for period in range(2, max_period + 1):
        mj = int(mj_frac * period)
        a_, b_ = a + mj, b - 2 * period
        mcp = mean(a_ + period, a_ + period * java_div(b_ + 1 - a_, period), 1, counts, lambda i: False)
        xv = [0.0] * (period - 1)
        yv = [0.0] * (period - 1)
        xy = [0.0] * (period - 1)
        for i in range(a_, b_ + 1, period):
            xvi = 0.0
            yvi = [0.0] * (2 * mj + 1)
            xyi = [0.0] * (2 * mj + 1)
            for j in range(i + period, i + 2 * period):
                xvi += (counts[j] - mcp) * (counts[j] - mcp)
            for jitter in range(-mj, mj + 1):
                for j in range(i + period, i + 2 * period):
                    yvi[mj + jitter] += (counts[j - period - jitter] - mcp) * (counts[j - period - jitter] - mcp)
                    xyi[mj + jitter] += (counts[j - period - jitter] - mcp) * (counts[j] - mcp)
            sigma = []
            for j in range(2 * mj + 1):
                z = math.sqrt(xvi * yvi[j])
                sigma.append(1.0 if z == 0.0 else xyi[j] / z)
            j = imax(0, 2 * mj + 1, sigma)
            xv[period - 2] += xvi
            yv[period - 2] += yvi[j]
            xy[period - 2] += xyi[j]
            for p_ in range(2, java_div(period, 2)):
                if period % p_ == 0:
                    k = imax(mj - int(mj_frac * p_), mj + int(mj_frac * p_) + 1, xyi)
                    xv[p_ - 2] += xvi
                    yv[p_ - 2] += yvi[k]
                    xy[p_ - 2] += xyi[k]
        z = math.sqrt(xv[period - 2] * yv[period - 2])
        n_counts[period - 2] += 1
        xy_cov[period - 2] = 1.0 if z == 0.0 else xy[period - 2] / z
        for p_ in range(2, java_div(period, 2)):
            if period % p_ == 0:
                n = n_counts[p_ - 2] + 1
                z_ = math.sqrt(xv[p_ - 2] * yv[p_ - 2])
                c = 1.0 if z_ == 0.0 else xy[p_ - 2] / z_
                n_counts[p_ - 2] += 1
                xy_cov[p_ - 2] = ((n - 1) * xy_cov[p_ - 2] + c) / n
    best = imax(0, len(xy_cov), xy_cov) + 2
    max_cov = xy_cov[best - 2]
    high_cov = max_cov >= params["min_beaconing_count_autocovariance"]
    return {"is_beaconing": low_src or low_dst or low_rv or high_cov,
            "beaconing_score": (1 if (low_rv or high_cov) else 0) + (1 if low_src else 0) + (1 if low_dst else 0),
            "low_source_bytes_variation": low_src, "low_destination_bytes_variation": low_dst,
            "low_count_variation": low_rv, "periodic": high_cov, "interval": b - a, "non_empty_buckets": not_empty,
            "autocovariance": max_cov, "max_autocovariance_period": best}
