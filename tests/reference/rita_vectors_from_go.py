"""Extract the test tables of RITA's analysis/beacons_test.go into tests/reference/rita_beacon_vectors.json.

    python tests/reference/rita_vectors_from_go.py RITA_CHECKOUT/analysis/beacons_test.go COMMIT > OUT.json

Each ``tests := []struct{...}{ ... }`` literal of a ``func TestX`` becomes a list of dicts (Go field names kept,
``[]T{..}`` -> list, ``map[K]V{..}`` -> dict, ``nil`` -> null); comments are dropped. Run once per RITA commit; the
JSON is what tests/analytics/test_references.py reads.
"""

from __future__ import annotations

import json
import re
import sys


def _string_end(s: str, i: int) -> int:
    j = i + 1
    while s[j] != '"':
        j += 2 if s[j] == "\\" else 1
    return j + 1


def _strip_comments(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        if s[i] == '"':
            j = _string_end(s, i)
            out.append(s[i:j])
            i = j
        elif s.startswith("//", i):
            while i < len(s) and s[i] != "\n":
                i += 1
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _to_python(body: str) -> str:
    out, stack, i = [], [], 0
    while i < len(body):
        c = body[i]
        if c == '"':
            j = _string_end(body, i)
            out.append(body[i:j])
            i = j
            continue
        m = re.match(r"\[\][A-Za-z0-9_.]+\{", body[i:])
        if m:
            out.append("[")
            stack.append("]")
            i += m.end()
            continue
        m = re.match(r"map\[[A-Za-z0-9_]+\][A-Za-z0-9_]+\{", body[i:])
        if m or c == "{":
            out.append("{")
            stack.append("}")
            i += m.end() if m else 1
            continue
        if c == "}":
            out.append(stack.pop())
            i += 1
            continue
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*:(?!=)", body[i:])
        if m and stack and stack[-1] == "}" and re.search(r"[{,\s]$", "".join(out[-3:]) or " "):
            out.append(f'"{m.group(1)}":')
            i += m.end()
            continue
        out.append(c)
        i += 1
    return "".join(out)


def extract(src: str) -> dict:
    """{test function: {"line": first line of its table, "cases": [...]}} of a Go test file."""
    res = {}
    for m in re.finditer(r"func (Test\w+)\(t \*testing\.T\) \{", src):
        k = src.index("}{", src.index("[]struct {", m.end())) + 2
        depth, j = 1, k
        while depth:
            if src[j] == '"':
                j = _string_end(src, j)
                continue
            depth += {"{": 1, "}": -1}.get(src[j], 0)
            j += 1
        body = _strip_comments(src[k:j - 1])
        body = re.sub(r"(\[\][A-Za-z0-9_]+|map\[[A-Za-z0-9_]+\][A-Za-z0-9_]+)\(nil\)", "nil", body)
        py = "[" + _to_python(body) + "]"
        py = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", py))
        # the tables hold literals and + / * of literals only; eval has no names but nil
        res[m.group(1)] = {"line": src[:k].count("\n") + 1,
                           "cases": eval(py, {"__builtins__": {}, "nil": None})}  # noqa: S307
    return res


if __name__ == "__main__":
    path, commit = sys.argv[1], sys.argv[2]
    data = {"source": f"github.com/activecm/rita@{commit}:analysis/beacons_test.go",
            "tests": extract(open(path).read())}
    json.dump(data, sys.stdout, indent=1)
    sys.stdout.write("\n")
