"""Parses a /metrics scrape with Prometheus's own Python client library.

Usage: parse_metrics.py < scrape.txt

Reads the Prometheus text format (0.0.4) on stdin with
prometheus_client.parser.text_string_to_metric_families (a parse error
exits non-zero) and prints one JSON object: "families", each family's name
to its type, and "samples", a list of {name, labels, value}. Run by
tests/api/metrics.rs, which starts the real server and asserts on these.
"""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> None:
    families = {}
    samples = []
    for family in text_string_to_metric_families(sys.stdin.read()):
        if family.name in families:
            sys.exit(f"family {family.name} appears twice")
        families[family.name] = family.type
        for sample in family.samples:
            value = sample.value
            samples.append(
                {
                    "name": sample.name,
                    "labels": sample.labels,
                    # JSON has no infinity; no sample of ours should be one.
                    "value": value if math.isfinite(value) else str(value),
                }
            )
    json.dump({"families": families, "samples": samples}, sys.stdout)


if __name__ == "__main__":
    main()
