"""Everything written to the terminal: streaming Markdown on a TTY, plain text on a pipe, JSON lines.

The package's modules, by what they hold: ``env`` (the terminal and its streams, the errors of
writing to them), ``renderers`` (how a reply's text reaches stdout; ``make_renderer`` picks one),
``markdown`` (streaming Markdown on a terminal), ``stream`` (one reply streamed: the activity line,
Ctrl-C, stats), ``writers`` (text, JSON documents and ``--json`` events), ``tables`` (Rich tables
and plain columns) and ``messages`` (what the chat shows besides replies). Commands import the
names from here.
"""

from gptcli.render.env import Env, OutputClosed, OutputFailed
from gptcli.render.markdown import MarkdownRenderer, reply_markdown, settle
from gptcli.render.messages import hint, say, show_exchanges
from gptcli.render.renderers import JsonRenderer, JsonValueRenderer, Renderer, make_renderer
from gptcli.render.stream import Activity, Reply, osc52, render_stream, stats_line
from gptcli.render.tables import Column, plain_columns, write_columns, write_table
from gptcli.render.writers import write_event, write_json, write_text

__all__ = [
    "Activity", "Column", "Env", "JsonRenderer", "JsonValueRenderer", "MarkdownRenderer", "OutputClosed",
    "OutputFailed", "Renderer", "Reply", "hint", "make_renderer", "osc52", "plain_columns", "render_stream",
    "reply_markdown", "say", "settle", "show_exchanges", "stats_line", "write_columns", "write_event", "write_json", "write_table",
    "write_text",
]
