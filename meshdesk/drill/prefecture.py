"""Write the shipped ``prefecture-300`` scenario: a prefecture of 300 nodes (sim only).

    python -m meshdesk.drill.prefecture > field-kit/scenarios/prefecture-300.toml

The prefectural office (2 HQ nodes) has a link to each of 24 municipal halls
(the prefecture's disaster network); each hall reaches its evacuation centres
(11, or 12 for the first ten municipalities) over point-to-point links:
2 + 24 + 274 = 300 nodes.
"""

from __future__ import annotations

import random

__all__ = ["prefecture"]


def prefecture() -> str:
    """The scenario text."""
    rng = random.Random(300)
    out = [
        "# prefecture-300 — made by `python -m meshdesk.drill.prefecture`; edit that, not this.",
        "# The prefectural office (2 HQ nodes) links 24 municipal halls; each hall links its",
        "# evacuation centres. Sim only: 300 nodes.",
        "",
        "[drill]",
        'name = "prefecture-300"',
        'description = "a prefecture: 2 HQ nodes, 24 municipal halls, 274 evacuation centres"',
        'duration = "30m"',
        "seed = 300",
        'tick = "1s"',
        'sample = "30s"',
        'drain = "20m"',
        "sim_only = true",
        "",
        "[[sites]]",
        'name = "pref-hq"',
        'role = "hq"',
        'departments = ["disaster", "health", "welfare"]',
        "[[sites.nodes]]",
        'name = "pref-hq-1"',
        "[[sites.nodes]]",
        'name = "pref-hq-2"',
        "",
    ]
    halls = [f"m{m:02d}-hall" for m in range(1, 25)]
    centres: dict[str, list[str]] = {}
    for m, hall in enumerate(halls, start=1):
        out += ["[[sites]]", f'name = "{hall}"']
        count = 12 if m <= 10 else 11
        centres[hall] = [f"m{m:02d}-c{c:02d}" for c in range(1, count + 1)]
        for centre in centres[hall]:
            out += ["[[sites]]", f'name = "{centre}"']
        out.append("")
    out += ["[topology]", "links = ["]
    out += [f'  ["{hall}", "pref-hq"],' for hall in halls]
    out += [f'  ["{c}", "{hall}"],' for hall in halls for c in centres[hall]]
    out += ["]", ""]
    busy = sorted(rng.sample([c for cs in centres.values() for c in cs], 30))
    for centre in busy:
        out += [
            "[[timeline]]",
            'at = "0m"',
            'action = "consultations"',
            f'site = "{centre}"',
            f"per_minute = {rng.choice([0.25, 0.5, 0.75])}",
            'until = "20m"',
            "",
        ]
    faults = [
        ('at = "5m"', 'action = "link_down"', 'site = "m07-hall"', 'for = "12m"'),
        ('at = "8m"', 'action = "power_loss"', f'node = "{busy[3]}"', 'for = "6m"'),
        (
            'at = "10m"',
            'action = "link_quality"',
            'between = ["m03-hall", "pref-hq"]',
            "loss = 0.1",
            'latency = "3s"',
            'for = "10m"',
        ),
        (
            'at = "12m"',
            'action = "link_down"',
            f'between = ["{centres["m12-hall"][0]}", "m12-hall"]',
            'for = "15m"',
        ),
        (
            'at = "15m"',
            'action = "call"',
            'id = "m07-status"',
            'from = "m07-hall"',
            'to = "pref-hq"',
            'duration = "4m"',
        ),
        (
            'at = "18m"',
            'action = "call"',
            'id = "m03-medical"',
            f'from = "{centres["m03-hall"][1]}"',
            'to = "pref-hq"',
            'duration = "6m"',
        ),
        ('at = "19m"', 'action = "call_join"', 'call = "m03-medical"', 'department = "health"'),
    ]
    for fault in faults:
        out += ["[[timeline]]", *fault, ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(prefecture(), end="")
