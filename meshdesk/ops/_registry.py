"""The registry of control operations: name → argument schema, help and handler.

Operations are declared by topic. A :class:`Topic` holds the operations that need
the same context (the running node, a case book, the call manager) and binds them
to one; a :class:`Registry` is the set of every topic's operations, with unique
names. Serving a registry over bound topics gives a :class:`Dispatcher`, what the
control socket answers with::

    CASES = Topic["CaseBook"]("case", "consultation cases")

    @CASES.op("case_show", "show one case in full", text("id", required=True))
    async def show(book: CaseBook, args: Args) -> object: ...

    dispatcher = Registry(CASES).serve(CASES.bind(book))
    await dispatcher.run("case_show", {"id": "0199"})

Adding an operation is one such entry: the node serves it, the CLI and the
console find it by name, and its arguments are checked before the handler runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from meshdesk.errors import MeshdeskError, UsageError
from meshdesk.ops._schema import Args, Param, check_args, shown

__all__ = ["Binding", "Dispatcher", "OpSpec", "Registry", "Topic"]

C = TypeVar("C")

#: A handler: the topic's context and the checked arguments → a JSON-safe result.
Handler = Callable[[C, Args], Awaitable[object]]


@dataclass(frozen=True)
class OpSpec(Generic[C]):
    """One operation: its name, topic, help, arguments, handler and error class.

    ``handler`` is None for the one operation that streams (``subscribe``): the
    control socket serves it itself from the node's event bus.
    """

    name: str
    topic: str
    help: str
    params: tuple[Param, ...]
    handler: Handler[C] | None
    error: type[MeshdeskError] = UsageError

    @property
    def streams(self) -> bool:
        return self.handler is None

    def check(self, args: Mapping[str, object]) -> Args:
        """The arguments checked against :attr:`params`.

        Raises:
            MeshdeskError: of class :attr:`error`, one line naming the key.
        """
        return check_args(self.params, args, op=self.name, error=self.error)

    def usage(self) -> str:
        """``name key=kind …`` (optional keys in brackets), for listings."""
        words = [self.name]
        for p in self.params:
            word = f"{p.name}={p.kind}"
            words.append(word if p.required else f"[{word}]")
        return " ".join(words)


class Topic(Generic[C]):
    """Operations sharing one context type; errors default to ``error``."""

    def __init__(self, name: str, help: str, *, error: type[MeshdeskError] = UsageError) -> None:
        self.name = name
        self.help = help
        self.error = error
        self._specs: dict[str, OpSpec[C]] = {}

    def __iter__(self) -> Iterator[OpSpec[C]]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def _add(self, spec: OpSpec[C]) -> None:
        if spec.name in self._specs:
            raise ValueError(f"operation {spec.name!r} is declared twice")
        if len({p.name for p in spec.params}) != len(spec.params):
            raise ValueError(f"operation {spec.name!r} names an argument twice")
        self._specs[spec.name] = spec

    def op(
        self, name: str, help: str, *params: Param, error: type[MeshdeskError] | None = None
    ) -> Callable[[Handler[C]], Handler[C]]:
        """Declare operation ``name`` with the decorated handler."""

        def register(handler: Handler[C]) -> Handler[C]:
            self._add(OpSpec(name, self.name, help, params, handler, error or self.error))
            return handler

        return register

    def stream(self, name: str, help: str, *params: Param) -> None:
        """Declare the streaming operation (served by the control socket itself)."""
        self._add(OpSpec(name, self.name, help, params, None, self.error))

    def bind(self, context: C) -> Binding:
        """This topic's handlers, each given ``context``."""

        def bound(handler: Handler[C]) -> Callable[[Args], Awaitable[object]]:
            return lambda args: handler(context, args)

        return Binding(
            self.name,
            {s.name: bound(s.handler) for s in self._specs.values() if s.handler is not None},
        )


@dataclass(frozen=True)
class Binding:
    """A topic's handlers with their context: name → ``handler(args)``."""

    topic: str
    handlers: Mapping[str, Callable[[Args], Awaitable[object]]]


class Registry:
    """Every operation of some topics, by unique name."""

    def __init__(self, *topics: Topic[Any]) -> None:
        self._specs: dict[str, OpSpec[Any]] = {}
        self._topics = {t.name: t for t in topics}
        for topic in topics:
            for spec in topic:
                if spec.name in self._specs:
                    raise ValueError(f"operation {spec.name!r} is declared by two topics")
                self._specs[spec.name] = spec

    def __iter__(self) -> Iterator[OpSpec[Any]]:
        return iter(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def names(self, topic: str | None = None) -> list[str]:
        """Operation names, sorted; only ``topic``'s when given."""
        return sorted(s.name for s in self if topic is None or s.topic == topic)

    def topic(self, name: str) -> list[OpSpec[Any]]:
        """The operations of topic ``name``, in declaration order."""
        return [s for s in self if s.topic == name]

    def spec(self, name: str) -> OpSpec[Any]:
        """The operation called ``name``.

        Raises:
            UsageError: no such operation; the message lists the known ones.
        """
        spec = self._specs.get(name)
        if spec is None:
            known = ", ".join(self.names())
            raise UsageError(f"unknown operation {shown(name)} (known: {known})")
        return spec

    def check(self, name: str, args: Mapping[str, object]) -> tuple[OpSpec[Any], Args]:
        """Look ``name`` up and check ``args``: what every client does before running."""
        spec = self.spec(name)
        return spec, spec.check(args)

    def serve(self, *bindings: Binding, complete: bool = True) -> Dispatcher:
        """A dispatcher over ``bindings``.

        Raises:
            ValueError: a binding holds an operation this registry does not declare,
                or ``complete`` and an operation that does not stream has no handler.
        """
        handlers: dict[str, Callable[[Args], Awaitable[object]]] = {}
        for binding in bindings:
            stray = sorted(set(binding.handlers) - set(self._specs))
            if stray:
                raise ValueError(f"operations not in the registry: {', '.join(stray)}")
            handlers.update(binding.handlers)
        missing = [s.name for s in self if not s.streams and s.name not in handlers]
        if complete and missing:
            raise ValueError(f"operations without a handler: {', '.join(missing)}")
        return Dispatcher(self, handlers)


class Dispatcher:
    """Runs operations by name: check the arguments, then call the handler."""

    def __init__(
        self, registry: Registry, handlers: Mapping[str, Callable[[Args], Awaitable[object]]]
    ) -> None:
        self.registry = registry
        self._handlers = dict(handlers)

    def handled(self) -> list[str]:
        """Names this dispatcher runs (streaming operations are the socket's)."""
        return sorted(self._handlers)

    async def run(self, name: str, args: Mapping[str, object]) -> object:
        """Run operation ``name``.

        Raises:
            MeshdeskError: unknown operation, bad argument (nothing ran), or
                whatever the handler raises.
        """
        spec, checked = self.registry.check(name, args)
        handler = self._handlers.get(name)
        if handler is None:
            raise spec.error(f"{name} is not served here")
        return await handler(checked)
