"""The sync and async clients are one piece of code, the second with ``await``.

Everything about a call that does no I/O lives in ``promptwire.client._transport.exchange`` and its
neighbours; the shells only move bytes. This checks that each method of the async shell, with
its awaits and async names taken out (as httpcore's unasync script does), is the sync shell's
method of the same name, so a fix made to one and not the other fails here. The few methods that
differ by design (how connections are held) are named below.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

from promptwire.client._transport import aio, sync

#: Async names and their sync twins.
RENAMED = {
    "AsyncIterator": "Iterator",
    "AsyncGenerator": "Generator",
    "AsyncClient": "Client",
    "AsyncTurn": "Turn",
    "aiter_raw": "iter_raw",
    "aclosing": "closing",
    "anext": "next",
    "aclose": "close",
}
#: How each shell holds its connections (pools per event loop; one pool for all threads).
DIFFERENT_BY_DESIGN = {"__init__", "http_client", "_lease", "close", "aclose"}


class Unasync(ast.NodeTransformer):
    def visit_Await(self, node: ast.Await) -> ast.AST:
        return self.visit(node.value)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return self.visit(ast.FunctionDef(**{f: getattr(node, f) for f in node._fields}))

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        return self.visit(ast.For(**{f: getattr(node, f) for f in node._fields}))

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        return self.visit(ast.With(**{f: getattr(node, f) for f in node._fields}))

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Name(id=RENAMED.get(node.id, node.id), ctx=node.ctx)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        value = self.visit(node.value)
        return ast.Attribute(value=value, attr=RENAMED.get(node.attr, node.attr), ctx=node.ctx)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        node = self.generic_visit(node)  # type: ignore[assignment]
        # Awaitable[T] is T; AsyncGenerator[Y, None] is Generator[Y, None, None].
        if isinstance(node.value, ast.Name) and node.value.id == "Awaitable":
            return node.slice
        generator = isinstance(node.value, ast.Name) and node.value.id == "Generator"
        if generator and isinstance(node.slice, ast.Tuple) and len(node.slice.elts) == 2:
            node.slice.elts.append(ast.Constant(None))
        return node


def methods(cls: type, unasync: bool = False) -> dict[str, str]:
    tree = ast.parse(inspect.getsource(cls))
    [node] = tree.body
    assert isinstance(node, ast.ClassDef)
    found = {}
    for item in node.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            if unasync:
                item = Unasync().visit(item)
            found[item.name] = ast.dump(item, annotate_fields=False, include_attributes=False)
    return found


def test_the_async_shell_is_the_sync_shell_with_await() -> None:
    async_methods = methods(aio.AsyncEndpointClient, unasync=True)
    sync_methods = methods(sync.SyncEndpointClient)
    shared = set(async_methods) - DIFFERENT_BY_DESIGN
    assert shared == set(sync_methods) - DIFFERENT_BY_DESIGN
    assert {"complete", "stream", "health", "_retrying", "_send", "_read"} <= shared
    differing = [name for name in sorted(shared) if async_methods[name] != sync_methods[name]]
    assert differing == []


def test_the_check_sees_a_one_word_difference() -> None:
    """Not vacuous: the async ``_retrying`` matches the sync one, and not once a word changed."""
    async_retrying = methods(aio.AsyncEndpointClient, unasync=True)["_retrying"]
    source = textwrap.dedent(inspect.getsource(sync.SyncEndpointClient._retrying))
    assert dump(source) == async_retrying
    assert dump(source.replace("raise", "return None")) != async_retrying
    assert methods(aio.AsyncEndpointClient)["_retrying"] != async_retrying  # await counts


def dump(source: str) -> str:
    [node] = ast.parse(source).body
    return ast.dump(node, annotate_fields=False, include_attributes=False)


#: The chat model's async names and their sync twins.
CHAT_RENAMED = {
    "_astream": "_stream",
    "_aevents": "_events",
    "AsyncCallbackManagerForLLMRun": "CallbackManagerForLLMRun",
}


class UnasyncChat(Unasync):
    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.name = CHAT_RENAMED.get(node.name, node.name)
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return super().visit_Name(ast.Name(id=CHAT_RENAMED.get(node.id, node.id), ctx=node.ctx))

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        node.attr = CHAT_RENAMED.get(node.attr, node.attr)
        return super().visit_Attribute(node)


def test_the_chat_models_async_stream_is_its_sync_stream_with_await() -> None:
    """Both read events through one ``_ChunkReader``: the shells differ by ``async`` alone."""
    from promptwire.langchain.chat import ChatPromptwire

    [node] = ast.parse(textwrap.dedent(inspect.getsource(ChatPromptwire._astream))).body
    unasynced = ast.dump(UnasyncChat().visit(node), annotate_fields=False)
    sync_stream = textwrap.dedent(inspect.getsource(ChatPromptwire._stream))
    assert dump(sync_stream) == unasynced
    assert dump(sync_stream.replace("reader.done", "True")) != unasynced
