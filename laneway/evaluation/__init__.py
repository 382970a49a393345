"""`laneway eval`: route a labelled prompt set, optionally call every lane, and report the map.

Layers, each its own module: `dataset` reads the JSONL prompt file; `checks` holds the declared
answer checks and `judges` the judge-lane grading; `offline` routes every prompt with the
sidecar's own decision code; `live` calls every lane of the policy and grades the answers;
`routing_map` turns live results into the per-family routing map; `report` renders Markdown,
`exports` the CSV and JSON files, `chart` the PNG charts. `laneway.cmd_eval` wires them together;
nothing here parses command-line arguments.
"""
