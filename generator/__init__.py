"""A deterministic, seeded generator of a demo district's month for Chibo.

``python -m generator --seed 2026 --out PATH`` builds a district (province → optional
district → wards → cells → members), one month of its cells' meetings and petitions,
the contract commands that record it, and the figures a correct ward report must show
for that month (computed from the generated data, not from the services). See
``generator/__main__.py`` for the command line and ``generator/expected.py`` for the
shape of ``expected.json``.
"""
