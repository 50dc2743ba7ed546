from tests.helpers import Node


async def test_send_and_pull_over_rest(node: Node) -> None:
    alice = await node.user("alice")
    bob = await node.user("bob")
    sent = await node.send(alice, "bob", "hello")
    assert sent.status == 201, sent.body
    pulled = await node.pull(bob)
    assert [m["body"] for m in pulled.body["messages"]] == ["hello"]
