"""The parts of the terminal client (``im-client``, :mod:`imclient.cli`), one concern each.

- :mod:`imclient.terminal.render` — message lines, with text from others made safe to print;
- :mod:`imclient.terminal.groups` — the user's groups, found by name or id;
- :mod:`imclient.terminal.history` — a conversation's recent messages from the server's archive;
- :mod:`imclient.terminal.commands` — what a typed line does;
- :mod:`imclient.terminal.lines` — reading typed lines (prompt_toolkit on a terminal, plain on a pipe);
- :mod:`imclient.terminal.places` — where the client keeps its inbox place between runs.
"""
