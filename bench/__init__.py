"""`make bench`: Laneway's router measured side by side with direct calls, nginx and LiteLLM.

`bench/run.py` is the entry point; the modules here hold its parts (processes, servers, load
generation, statistics, the report). Nothing in the product imports this package.
"""
