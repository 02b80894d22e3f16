"""Write the shipped prefecture scenarios (sim only): 100, 300 and 1,000 nodes.

    python -m meshdesk.drill.prefecture 300 > field-kit/scenarios/prefecture-300.toml
    python -m meshdesk.drill.prefecture 1000 --couriers > field-kit/scenarios/prefecture-1000.toml
    python -m meshdesk.drill.prefecture 100 --couriers > field-kit/scenarios/prefecture-100.toml

The prefectural office (2 HQ nodes) has a link to each municipal hall (the
prefecture's disaster network); each hall reaches its evacuation centres (11 or
12 each) over point-to-point links: 2 + halls + centres = N nodes, a hall per
12.5 nodes. The workload does not grow with N: 30 busy centres take
consultations for 20 minutes, whatever the size of the mesh, so that the report
of the largest shows what a node's sync costs as the mesh grows with the same
records to move.

With ``--couriers`` three centres of the last halls lose their cable for the whole
drill (it comes back when everything heals at the end), and a courier laptop (a
desk of the prefecture) rides between them and a hall twice; their consultations
reach HQ only through it. prefecture-1000 names the two
smaller ones under ``compare`` so that its report sets bytes per node against
node count (100, 300, 1,000).
"""

from __future__ import annotations

import argparse
import random

__all__ = ["main", "prefecture"]

#: A municipal hall per this many nodes.
_NODES_PER_HALL = 12.5
_BUSY = 30


def _layout(nodes: int) -> tuple[list[str], dict[str, list[str]]]:
    halls_n = max(2, round(nodes / _NODES_PER_HALL))
    centres_n = nodes - 2 - halls_n
    per, extra = divmod(centres_n, halls_n)
    halls = [f"m{m:02d}-hall" for m in range(1, halls_n + 1)]
    centres = {
        hall: [f"m{m:02d}-c{c:02d}" for c in range(1, per + (1 if m <= extra else 0) + 1)]
        for m, hall in enumerate(halls, start=1)
    }
    return halls, centres


def prefecture(nodes: int = 300, *, couriers: bool = False, compare: tuple[int, ...] = ()) -> str:
    """The scenario text for a prefecture of ``nodes`` nodes."""
    name = f"prefecture-{nodes}"
    rng = random.Random(nodes)
    halls, centres = _layout(nodes - (1 if couriers else 0))
    count = len(centres) + sum(len(c) for c in centres.values()) + 2 + (1 if couriers else 0)
    assert count == nodes, (count, nodes)
    centre_count = nodes - 2 - len(halls) - (1 if couriers else 0)
    out = [
        f"# {name} — made by `python -m meshdesk.drill.prefecture`; edit that, not this.",
        f"# The prefectural office (2 HQ nodes) links {len(halls)} municipal halls; each hall"
        " links its",
        "# evacuation centres."
        + (" A courier laptop carries three unlinked centres." if couriers else "")
        + f" Sim only: {nodes} nodes.",
        "",
        "[drill]",
        f'name = "{name}"',
        f'description = "a prefecture: 2 HQ nodes, {len(halls)} municipal halls,'
        f" {centre_count} evacuation centres" + (', a courier"' if couriers else '"'),
        'duration = "30m"',
        f"seed = {nodes}",
        'tick = "1s"',
        'sample = "30s"',
        'drain = "20m"',
        "sim_only = true",
    ]
    if compare:
        out.append("compare = [" + ", ".join(f'"prefecture-{n}"' for n in compare) + "]")
    out += [
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
    for hall in halls:
        out += ["[[sites]]", f'name = "{hall}"']
        for centre in centres[hall]:
            out += ["[[sites]]", f'name = "{centre}"']
        out.append("")
    unlinked: list[str] = []
    if couriers:
        out += ["[[sites]]", 'name = "courier"', 'role = "desk"',
                "[[sites.nodes]]", 'name = "courier-laptop"', ""]  # fmt: skip
        unlinked = [centres[halls[-1 - i]][-1] for i in range(3)]
    out += ["[topology]", "links = ["]
    out += [f'  ["{hall}", "pref-hq"],' for hall in halls]
    out += [f'  ["{c}", "{hall}"],' for hall in halls for c in centres[hall]]
    out += ["]", ""]
    linked = [c for cs in centres.values() for c in cs if c not in unlinked]
    busy = sorted(rng.sample(linked, min(_BUSY, len(linked) // 2)))
    for centre in busy + unlinked:
        out += [
            "[[timeline]]",
            'at = "0m"',
            'action = "consultations"',
            f'site = "{centre}"',
            f"per_minute = {rng.choice([0.25, 0.5, 0.75])}",
            'until = "20m"',
            "",
        ]
    h = halls
    faults = [
        ('at = "5m"', 'action = "link_down"', f'site = "{h[6 % len(h)]}"', 'for = "12m"'),
        ('at = "8m"', 'action = "power_loss"', f'node = "{busy[3]}"', 'for = "6m"'),
        (
            'at = "10m"',
            'action = "link_quality"',
            f'between = ["{h[2]}", "pref-hq"]',
            "loss = 0.1",
            'latency = "3s"',
            'for = "10m"',
        ),
        (
            'at = "12m"',
            'action = "link_down"',
            f'between = ["{centres[h[11 % len(h)]][0]}", "{h[11 % len(h)]}"]',
            'for = "15m"',
        ),
        (
            'at = "15m"',
            'action = "call"',
            f'id = "{h[6 % len(h)][:3]}-status"',
            f'from = "{h[6 % len(h)]}"',
            'to = "pref-hq"',
            'duration = "4m"',
        ),
        (
            'at = "18m"',
            'action = "call"',
            f'id = "{h[2][:3]}-medical"',
            f'from = "{centres[h[2]][1]}"',
            'to = "pref-hq"',
            'duration = "6m"',
        ),
        (
            'at = "19m"',
            'action = "call_join"',
            f'call = "{h[2][:3]}-medical"',
            'department = "health"',
        ),
    ]
    if couriers:
        # The unlinked centres' cables are cut for the whole drill (restored at the end,
        # when everything heals); a second hall is cut off for a while, and a busy
        # centre's power is lost twice.
        faults += [
            (
                'at = "0m"',
                'action = "link_down"',
                f'between = ["{c}", "{h[-1 - i]}"]',
                'for = "30m"',
            )
            for i, c in enumerate(unlinked)
        ]
        faults += [
            ('at = "3m"', 'action = "link_down"', f'site = "{h[-4]}"', 'for = "9m"'),
            ('at = "16m"', 'action = "power_loss"', f'node = "{busy[17]}"', 'for = "5m"'),
            ('at = "22m"', 'action = "power_loss"', f'node = "{busy[17]}"', 'for = "3m"'),
        ]
        # The courier rides the three unlinked centres, then the hall of the last
        # one, twice (visits of 2 minutes).
        stops = [*unlinked, h[-1]] * 2
        for i, stop in enumerate(stops):
            # the last stop has no end: the courier stays at the hall, linked at the end
            stay = ('stay = "2m"',) if i < len(stops) - 1 else ()
            faults.append((f'at = "{4 + 3 * i}m"', 'action = "courier"',
                           'node = "courier-laptop"', f'site = "{stop}"', *stay))  # fmt: skip
    for fault in faults:
        out += ["[[timeline]]", *fault, ""]
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("nodes", type=int, nargs="?", default=300)
    parser.add_argument("--couriers", action="store_true")
    parser.add_argument("--compare", type=int, action="append", default=[])
    args = parser.parse_args()
    print(prefecture(args.nodes, couriers=args.couriers, compare=tuple(args.compare)), end="")


if __name__ == "__main__":
    main()
