"""The terminal client's small parts on their own: rendering, completion, the state file's place."""

from __future__ import annotations

from pathlib import Path

from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from imclient.terminal.lines import ChatCompleter
from imclient.terminal.places import default_state_path
from imclient.terminal.render import message_line, printable


def test_control_characters_are_escaped_and_newlines_indented() -> None:
    assert printable("a\x1b[2Jb\x07c\u009bd") == "a\\x1b[2Jb\\x07c\\x9bd"
    assert printable("one\ntwo\tthree") == "one\n    two\tthree"


def test_lines_name_the_sender_the_recipient_or_the_group() -> None:
    def name(group_id: str) -> str:
        return {"g1": "devs"}.get(group_id, group_id)

    base = {"ts": 0, "kind": "text", "body": "hi"}
    assert message_line({**base, "from": "bob", "to": "alice", "conv": "d:alice:bob"},
                        me="alice", group_name=name).endswith("] bob: hi")
    assert message_line({**base, "from": "alice", "to": "bob", "conv": "d:alice:bob"},
                        me="alice", group_name=name).endswith("] you -> bob: hi")
    assert message_line({**base, "from": "bob", "to": "g:g1", "conv": "g:g1"},
                        me="alice", group_name=name).endswith("] [devs] bob: hi")
    assert "[file notes.txt, 12 bytes]" in message_line(
        {**base, "kind": "file", "body": {"name": "notes.txt", "size": 12}, "from": "bob", "conv": "d:a:b"},
        me="alice", group_name=name)


def completions(text: str) -> list[str]:
    completer = ChatCompleter([":c", ":g", ":groups", ":q"], users=lambda: {"bob", "bea", "carol"},
                              groups=lambda: ["devs", "design"])
    return [c.text for c in completer.get_completions(Document(text), CompleteEvent(completion_requested=True))]


def test_commands_users_and_groups_complete() -> None:
    assert completions(":g") == [":groups"]
    assert completions(":c b") == ["bea", "bob"]
    assert completions(":g de") == ["design", "devs"]
    assert completions("ca") == ["carol;;"]
    assert completions("carol;;hel") == []
    assert completions("hello there") == []


def test_the_state_file_is_per_server_user_and_device(tmp_path: Path) -> None:
    path = default_state_path("http://127.0.0.1:8888", "bob", "cli", {"XDG_STATE_HOME": str(tmp_path)})
    assert path == tmp_path / "im-client" / "127.0.0.1_8888" / "bob-cli.json"
    # A relative XDG_STATE_HOME is invalid by the specification: the default is used.
    relative = default_state_path("https://chat.example", "bob", "cli", {"XDG_STATE_HOME": "state"})
    assert relative == Path.home() / ".local" / "state" / "im-client" / "chat.example" / "bob-cli.json"
