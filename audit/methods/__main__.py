"""``python -m audit.methods``: print the README's table of method options, made from the methods'
declared options (`audit.options.options_markdown`); tests/test_method_options.py checks the README
holds exactly this text."""

from __future__ import annotations

from audit.methods import option_schemas
from audit.options import options_markdown

print(options_markdown(option_schemas()))
