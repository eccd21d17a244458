"""A strict parser of the Prometheus text exposition format (0.0.4), for the
tests that read twigate's /metrics (test_ops_metrics.py, and the outbox
checks of test_ops_lifecycle.py).

Exposition(text) refuses anything a scraper could misread: a missing final
newline, a sample without a TYPE line before it, a family whose lines are not
one group, a repeated series or label, bad escapes, a negative counter, and a
histogram whose buckets are not cumulative, do not end in le="+Inf" or
disagree with _count.  test_ops_metrics.py's
test_exposition_parser_rejects_malformed_text proves each refusal."""

import math
import re

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_VALUE_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN")
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class ExpositionError(AssertionError):
    pass


def _parse_float(text, where):
    if not _VALUE_RE.fullmatch(text):
        raise ExpositionError(f"{where}: {text!r} is not a sample value")
    return float(text.replace("Inf", "inf"))


def _parse_labels(s, i, where):
    """s[i] == '{'; returns (labels dict, index after '}')."""
    labels = {}
    i += 1
    while True:
        if s.startswith("}", i):
            return labels, i + 1
        m = re.compile(_LABEL).match(s, i)
        if not m:
            raise ExpositionError(f"{where}: bad label name at column {i}: {s!r}")
        name = m.group(0)
        i = m.end()
        if not s.startswith('="', i):
            raise ExpositionError(f"{where}: expected =\" after label {name}: {s!r}")
        i += 2
        value = []
        while True:
            if i >= len(s):
                raise ExpositionError(f"{where}: unterminated label value: {s!r}")
            c = s[i]
            if c == "\\":
                esc = s[i + 1:i + 2]
                if esc not in ("\\", '"', "n"):
                    raise ExpositionError(f"{where}: bad escape \\{esc} in label value: {s!r}")
                value.append("\n" if esc == "n" else esc)
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise ExpositionError(f"{where}: raw newline in a label value")
            else:
                value.append(c)
                i += 1
        if name in labels:
            raise ExpositionError(f"{where}: label {name} repeated: {s!r}")
        labels[name] = "".join(value)
        if s.startswith(",", i):
            i += 1
        elif not s.startswith("}", i):
            raise ExpositionError(f"{where}: expected , or }} after label {name}: {s!r}")


class Exposition:
    """families: name -> {"type", "help", "samples": [(sample name, labels, value)]}."""

    def __init__(self, text):
        self.text = text
        self.families = {}
        self.series = {}       # (sample name, frozenset(labels)) -> value
        self._parse()
        self._check_histograms()

    # ---------------------------------------------------------- parsing
    def _family_of(self, sample):
        if sample in self.families:
            return sample
        for suffix in ("_bucket", "_sum", "_count"):
            base = sample[:-len(suffix)]
            if sample.endswith(suffix) and self.families.get(base, {}).get("type") in (
                    "histogram", "summary"):
                if suffix == "_bucket" and self.families[base]["type"] != "histogram":
                    continue
                return base
        return None

    def _parse(self):
        text = self.text
        if not text.endswith("\n"):
            raise ExpositionError("the exposition does not end with a newline")
        closed = set()         # families whose group of lines has ended
        current = None
        for n, line in enumerate(text[:-1].split("\n"), 1):
            where = f"line {n}"
            if line.strip() == "":
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                    if len(parts) < 4 or not re.fullmatch(_NAME, parts[2]):
                        raise ExpositionError(f"{where}: malformed {parts[1]} line {line!r}")
                    name, rest = parts[2], parts[3]
                    if name in closed or (current is not None and current != name
                                          and name in self.families
                                          and self.families[name]["samples"]):
                        raise ExpositionError(f"{where}: {parts[1]} for {name} after its samples")
                    fam = self.families.setdefault(name, {"type": None, "help": None,
                                                          "samples": []})
                    if fam["samples"]:
                        raise ExpositionError(f"{where}: {parts[1]} for {name} after its samples")
                    if parts[1] == "HELP":
                        if fam["help"] is not None:
                            raise ExpositionError(f"{where}: second HELP for {name}")
                        if re.search(r"\\[^\\n]", rest.replace("\\\\", "")):
                            raise ExpositionError(f"{where}: bad escape in HELP text {rest!r}")
                        fam["help"] = rest
                    else:
                        if fam["type"] is not None:
                            raise ExpositionError(f"{where}: second TYPE for {name}")
                        if rest not in _TYPES:
                            raise ExpositionError(f"{where}: unknown type {rest!r}")
                        fam["type"] = rest
                    if current is not None and current != name:
                        closed.add(current)
                    current = name
                continue                 # any other comment is allowed
            m = re.compile(_NAME).match(line)
            if not m:
                raise ExpositionError(f"{where}: no metric name: {line!r}")
            sample = m.group(0)
            i = m.end()
            labels = {}
            if line.startswith("{", i):
                labels, i = _parse_labels(line, i, where)
            rest = line[i:]
            if not rest.startswith(" "):
                raise ExpositionError(f"{where}: expected a space before the value: {line!r}")
            fields = rest.split()
            if len(fields) not in (1, 2):
                raise ExpositionError(f"{where}: expected value [timestamp]: {line!r}")
            value = _parse_float(fields[0], where)
            if len(fields) == 2 and not re.fullmatch(r"-?\d+", fields[1]):
                raise ExpositionError(f"{where}: bad timestamp {fields[1]!r}")
            fam_name = self._family_of(sample)
            if fam_name is None:
                raise ExpositionError(f"{where}: sample {sample} has no TYPE line before it")
            if fam_name in closed:
                raise ExpositionError(f"{where}: {fam_name} lines are not one group "
                                      f"(sample {sample} after another family)")
            if current is not None and current != fam_name:
                closed.add(current)
            current = fam_name
            key = (sample, frozenset(labels.items()))
            if key in self.series:
                raise ExpositionError(f"{where}: duplicate series {sample}{labels}")
            self.series[key] = value
            self.families[fam_name]["samples"].append((sample, labels, value))
        for name, fam in self.families.items():
            if fam["type"] is None:
                raise ExpositionError(f"{name} has HELP but no TYPE")

    def _check_histograms(self):
        for name, fam in self.families.items():
            t = fam["type"]
            for sample, labels, value in fam["samples"]:
                if t in ("histogram", "summary") and sample == name:
                    raise ExpositionError(f"{name}: a {t} has only _bucket/_sum/_count samples")
                if t == "counter" and (math.isnan(value) or value < 0):
                    raise ExpositionError(f"counter {sample}{labels} = {value}")
                if t != "histogram" and "le" in labels:
                    raise ExpositionError(f"{sample}: 'le' label outside a histogram")
            if t != "histogram":
                continue
            groups = {}
            for sample, labels, value in fam["samples"]:
                rest = frozenset((k, v) for k, v in labels.items() if k != "le")
                g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
                if sample == name + "_bucket":
                    if "le" not in labels:
                        raise ExpositionError(f"{name}_bucket{labels} without le")
                    g["buckets"].append((_parse_float(labels["le"], f"{name} le"), value))
                elif "le" in labels:
                    raise ExpositionError(f"{sample}{labels}: le on _sum/_count")
                elif sample == name + "_sum":
                    g["sum"] = value
                else:
                    g["count"] = value
            for rest, g in groups.items():
                where = f"{name}{dict(rest)}"
                les = [le for le, _ in g["buckets"]]
                if not les or les[-1] != math.inf:
                    raise ExpositionError(f"{where}: no le=\"+Inf\" bucket last")
                if any(b <= a for a, b in zip(les, les[1:])):
                    raise ExpositionError(f"{where}: le bounds not strictly increasing: {les}")
                counts = [c for _, c in g["buckets"]]
                if any(c != int(c) or c < 0 for c in counts):
                    raise ExpositionError(f"{where}: bucket counts not whole numbers: {counts}")
                if any(b < a for a, b in zip(counts, counts[1:])):
                    raise ExpositionError(f"{where}: buckets not cumulative: {counts}")
                if g["count"] is None or g["sum"] is None:
                    raise ExpositionError(f"{where}: _sum or _count missing")
                if g["count"] != counts[-1]:
                    raise ExpositionError(f"{where}: _count {g['count']} != +Inf bucket {counts[-1]}")
                if math.isnan(g["sum"]):
                    raise ExpositionError(f"{where}: _sum is NaN")

    # ---------------------------------------------------------- queries
    def value(self, sample, default=None, **labels):
        return self.series.get((sample, frozenset(labels.items())), default)

    def samples(self, sample):
        """[(labels, value)] of one sample name."""
        return [(dict(k[1]), v) for k, v in self.series.items() if k[0] == sample]

    def total(self, sample, **match):
        """Sum over the series of sample whose labels include match."""
        return sum(v for labels, v in self.samples(sample)
                   if all(labels.get(k) == w for k, w in match.items()))

    def monotonic_series(self):
        """Keys of every series that may only grow: counters and histogram parts."""
        out = []
        for name, fam in self.families.items():
            if fam["type"] in ("counter", "histogram"):
                out += [(s, frozenset(l.items())) for s, l, _ in fam["samples"]]
        return out
