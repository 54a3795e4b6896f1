"""The bad-input catalog: every mistake users make gets a typed plait error whose message names
the culprit and says what to do.

Each case is a function that makes one mistake; the table below lists the error type it must
raise and text fragments its message must contain (the culprit, then the fix). Cases that need
an LLM endpoint use the loopback server; every wait is bounded by ``arun``.
"""

from __future__ import annotations

import asyncio
import copy
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plait import (
    ExecutionSettings,
    LLMInference,
    Module,
    Parameter,
    ResourceConfig,
    run,
)
from plait.errors import (
    APIConnectionError,
    ConfigError,
    InputError,
    MissingAPIKeyError,
    ModuleDefinitionError,
    NodeExecutionError,
    PlaitError,
    ResponseFormatError,
    TraceError,
)
from plait.resources import EndpointConfig, OpenAIEndpointConfig
from plait.testing import Fault, LLMServer


def arun(coro: Any, timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def call(module: Module, *args: Any, faults: list[Fault] | None = None,
         aliases: dict[str, str] | None = None, **options: Any) -> Any:
    """Run ``module(*args)`` against a fresh loopback server (used by the cases below)."""

    async def main() -> Any:
        async with LLMServer(faults=faults or []) as server:
            res = server.resource_config(aliases or {"fast": "m"}, **options)
            return await module.bind(resources=res)(*args)

    return arun(main())


class One(Module):
    def __init__(self, alias: str = "fast") -> None:
        super().__init__()
        self.llm = LLMInference(alias=alias)

    def forward(self, text: str) -> Any:
        return self.llm(text)


class Two(Module):
    def __init__(self) -> None:
        super().__init__()
        self.llm = LLMInference(alias="fast")

    def forward(self, a: str, b: str) -> Any:
        return self.llm(f"{a} {b}")


def forward_module(body: Callable[[Any, Any], Any]) -> Module:
    """A one-LLM module whose forward is ``body(self, text)``."""

    class Custom(Module):
        def __init__(self) -> None:
            super().__init__()
            self.llm = LLMInference(alias="fast")

        def forward(self, text: str) -> Any:
            return body(self, text)

    return Custom()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the cases ------------------------------------------------------------------------------


def unknown_alias_in_module() -> Any:
    return call(One(alias="smart"), "x")


def missing_input() -> Any:
    return call(Two(), "only a")


def unknown_keyword_input() -> Any:
    async def main() -> Any:
        async with LLMServer() as server:
            return await One().bind(resources=server.resource_config({"fast": "m"}))(txt="x")

    return arun(main())


def no_resources_bound() -> Any:
    return arun(One()("x"))


def alias_missing_from_config() -> Any:
    return ResourceConfig(endpoints={"fast": OpenAIEndpointConfig(model="m")})["smart"]


def empty_alias() -> Any:
    return LLMInference(alias="")


def zero_max_concurrent() -> Any:
    return OpenAIEndpointConfig(model="m", max_concurrent=0)


def negative_rate_limit() -> Any:
    return OpenAIEndpointConfig(model="m", rate_limit=-5)


def zero_tokens_per_minute() -> Any:
    return OpenAIEndpointConfig(model="m", tokens_per_minute=0)


def negative_max_retries() -> Any:
    return OpenAIEndpointConfig(model="m", max_retries=-1)


def zero_timeout() -> Any:
    return OpenAIEndpointConfig(model="m", timeout=0)


def zero_max_inflight() -> Any:
    return ExecutionSettings(max_inflight=0)


def zero_max_tokens() -> Any:
    return LLMInference(alias="fast", max_tokens=0)


def unknown_endpoint_key() -> Any:
    return ResourceConfig.from_dict({"endpoints": {"fast": {
        "provider_api": "openai", "model": "m", "max_concurency": 4}}})


def unknown_top_level_key() -> Any:
    return ResourceConfig.from_dict({"endpoints": {}, "endpoint": {}})


def unknown_provider() -> Any:
    return EndpointConfig(provider_api="gemini", model="m")  # pyright: ignore[reportArgumentType]


def vllm_without_base_url() -> Any:
    return EndpointConfig(provider_api="vllm", model="m")


def malformed_yaml(tmp_path: Path) -> Any:
    path = tmp_path / "resources.yaml"
    path.write_text("endpoints:\n  fast: {provider_api: openai, model: [unclosed\n")
    return ResourceConfig.from_yaml(path)


def unknown_key_in_yaml(tmp_path: Path) -> Any:
    path = tmp_path / "resources.yaml"
    path.write_text("endpoints:\n  fast: {provider_api: openai, model: m, rpm: 3}\n")
    return ResourceConfig.from_yaml(path)


def resources_of_wrong_type() -> Any:
    return One().bind(resources=42)


def missing_api_key(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    async def main() -> Any:
        async with LLMServer() as server:
            res = ResourceConfig(endpoints={
                "fast": OpenAIEndpointConfig(model="m", base_url=server.openai_base_url)})
            try:
                return await One().bind(resources=res)("x")
            finally:
                assert server.stats().total_requests == 0  # raised before any request

    return arun(main())


def unreachable_base_url() -> Any:
    res = ResourceConfig(endpoints={"fast": OpenAIEndpointConfig(
        model="m", base_url=f"http://127.0.0.1:{unused_port()}/v1", api_key="k",
        max_retries=1)})
    return arun(One().bind(resources=res)("x"))


def forgot_super_init() -> Any:
    class Forgetful(Module):
        def __init__(self) -> None:
            self.llm = LLMInference(alias="fast")

    return Forgetful()


def child_forgot_super_init() -> Any:
    class Child(Module):
        def __init__(self) -> None:
            pass

    class Parent(Module):
        def __init__(self) -> None:
            super().__init__()
            self.child = Child()

    return Parent()


def forward_returns_nothing() -> Any:
    def body(self: Any, text: Any) -> None:
        self.llm(text)

    return call(forward_module(body), "x")


def forward_returns_unserialisable() -> Any:
    return call(forward_module(lambda self, text: (self.llm(text), object())), "x")


def async_forward() -> Any:
    class Awaiting(Module):
        def __init__(self) -> None:
            super().__init__()
            self.llm = LLMInference(alias="fast")

        async def forward(self, text: str) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
            return await self.llm(text)

    return call(Awaiting(), "x")


def branch_on_traced_value() -> Any:
    return call(forward_module(lambda self, text: self.llm(text) if self.llm(text) else text), "x")


def iterate_traced_value() -> Any:
    return call(forward_module(lambda self, text: [w for w in self.llm(text)]), "x")


def len_of_traced_value() -> Any:
    return call(forward_module(lambda self, text: len(self.llm(text))), "x")


def compare_traced_value() -> Any:
    return call(forward_module(lambda self, text: self.llm(text) == "yes"), "x")


def join_traced_value() -> Any:
    return call(forward_module(lambda self, text: ", ".join(self.llm(text))), "x")


def non_string_prompt() -> Any:
    return call(forward_module(lambda self, text: self.llm(42)), "x")


def two_prompts_to_one_llm() -> Any:
    return call(forward_module(lambda self, text: self.llm(text, text)), "x")


def module_not_registered() -> Any:
    stray = LLMInference(alias="fast")
    return call(forward_module(lambda self, text: stray(text)), "x")


def parameter_not_registered() -> Any:
    stray = Parameter("be brief", requires_grad=False)
    return call(forward_module(lambda self, text: self.llm(f"{stray}{text}") + stray), "x")


def list_where_single_value_meant() -> Any:
    return call(Two(), ["a", "b"], "c")


def too_many_inputs() -> Any:
    return call(One(), "a", "b")


def batch_of_mixed_shapes() -> Any:
    return call(Two(), [("a", "b"), ("a",)])


def batch_row_not_a_tuple() -> Any:
    return call(Two(), ["a", "b"])


def parameter_without_description() -> Any:
    return Parameter("Be concise.")


def parameter_with_non_str_value() -> Any:
    return Parameter(3, description="a number")  # pyright: ignore[reportArgumentType]


def load_state_dict_unknown_keys() -> Any:
    module = One()
    return module.load_state_dict({"llm.system_prompt": "s", "llm.sytem": "typo"})


def load_state_dict_non_str_value() -> Any:
    return One().load_state_dict({"llm.system_prompt": 3}, strict=False)  # pyright: ignore[reportArgumentType]


def response_format_not_pydantic() -> Any:
    return LLMInference(alias="fast", response_format=dict)  # pyright: ignore[reportArgumentType]


def unknown_execution_setting() -> Any:
    return ExecutionSettings(max_inflights=4)


def unknown_bind_setting() -> Any:
    return One().bind(max_concurency=4)


def unknown_run_setting() -> Any:
    return run(One(), "x", stream=True)


def bad_resume_value() -> Any:
    return ExecutionSettings(resume="yes")


def unknown_executor_name() -> Any:
    async def main() -> Any:
        async with LLMServer() as server:
            res = server.resource_config({"fast": "m"})
            return await run(One(), "x", resources=res, executor="threads")

    return arun(main())


def settings_entered_twice() -> Any:
    settings = ExecutionSettings()
    with settings, settings:
        pass


def malformed_json_reply() -> Any:
    return call(One(), "x", faults=[Fault("malformed", every=1)], max_retries=1)


def empty_choices_reply() -> Any:
    return call(One(), "x", faults=[Fault("empty_choices", every=1)], max_retries=1)


def truncated_reply() -> Any:
    return call(One(), "x", faults=[Fault("truncated", every=1)], max_retries=1)


def timeout_as_string() -> Any:
    return OpenAIEndpointConfig(model="m", timeout="30")  # pyright: ignore[reportArgumentType]


def timeout_as_string_in_yaml(tmp_path: Path) -> Any:
    path = tmp_path / "resources.yaml"
    path.write_text("endpoints:\n  fast: {provider_api: openai, model: m, timeout: '30'}\n")
    return ResourceConfig.from_yaml(path)


def base_url_without_scheme() -> Any:
    async def main() -> Any:
        async with LLMServer() as server:
            url = f"127.0.0.1:{server.port}/v1"  # the scheme forgotten
            try:
                return await run(One(), "x", resources={"endpoints": {"fast": {
                    "provider_api": "openai", "model": "m", "base_url": url, "api_key": "k",
                }}})
            finally:
                assert server.stats().total_requests == 0  # refused, not retried

    return arun(main())


KEY_WITH_NEWLINE = "sk-catalog-newline-0123456789\n"


def api_key_with_trailing_newline() -> Any:
    return OpenAIEndpointConfig(model="m", api_key=KEY_WITH_NEWLINE)


def env_api_key_with_trailing_newline(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PLAIT_CATALOG_KEY", KEY_WITH_NEWLINE)

    async def main() -> Any:
        async with LLMServer() as server:
            res = ResourceConfig(endpoints={"fast": OpenAIEndpointConfig(
                model="m", base_url=server.openai_base_url, api_key_env="PLAIT_CATALOG_KEY")})
            try:
                return await One().bind(resources=res)("x")
            finally:
                assert server.stats().total_requests == 0  # raised before any request

    return arun(main())


# (case, error type, fragments the message must contain: culprit first, then the fix)
CATALOG: list[tuple[Callable[..., Any], type[PlaitError], tuple[str, ...]]] = [
    (unknown_alias_in_module, ConfigError, ("'smart'", "node 'llm'", "Add endpoints=")),
    (no_resources_bound, ConfigError, ("'fast'", "bind(resources=")),
    (alias_missing_from_config, ConfigError, ("'smart'", "['fast']", "Add endpoints=")),
    (empty_alias, ConfigError, ("alias", "non-empty string")),
    (zero_max_concurrent, ConfigError, ("max_concurrent", "got 0", "use None")),
    (negative_rate_limit, ConfigError, ("rate_limit", "-5", "use None")),
    (zero_tokens_per_minute, ConfigError, ("tokens_per_minute", "got 0", "use None")),
    (negative_max_retries, ConfigError, ("max_retries", "-1", ">= 0")),
    (zero_timeout, ConfigError, ("timeout", "got 0", "> 0")),
    (zero_max_inflight, ConfigError, ("max_inflight", "got 0", ">= 1")),
    (zero_max_tokens, ConfigError, ("max_tokens", "got 0", ">= 1")),
    (unknown_endpoint_key, ConfigError, ("max_concurency", "'fast'", "max_concurrent")),
    (unknown_top_level_key, ConfigError, ("'endpoint'", "['endpoints']")),
    (unknown_provider, ConfigError, ("'gemini'", "openai")),
    (vllm_without_base_url, ConfigError, ("vllm", "base_url=")),
    (malformed_yaml, ConfigError, ("Malformed YAML", "resources.yaml")),
    (unknown_key_in_yaml, ConfigError, ("resources.yaml", "rpm", "max_concurrent")),
    (resources_of_wrong_type, ConfigError, ("resources", "int", "ResourceConfig")),
    (missing_api_key, MissingAPIKeyError, ("OPENAI_API_KEY", "'fast'", "api_key=",
                                           "plait.testing")),
    (unreachable_base_url, NodeExecutionError, ("node 'llm'", "alias='fast'",
                                                "APIConnectionError", "Check base_url",
                                                "max_retries=1")),
    (forgot_super_init, ModuleDefinitionError, ("Forgetful", "super().__init__()")),
    (child_forgot_super_init, ModuleDefinitionError, ("Child", "super().__init__()")),
    (forward_returns_nothing, TraceError, ("returned None", "return self.llm")),
    (forward_returns_unserialisable, TraceError, ("object", "returned by forward()",
                                                  "pydantic models")),
    (async_forward, TraceError, ("async def", "without `await`")),
    (branch_on_traced_value, TraceError, ("branch", "test_bad_input_catalog.py:", "leaf")),
    (iterate_traced_value, TraceError, ("iterate", "test_bad_input_catalog.py:", "Index it")),
    (len_of_traced_value, TraceError, ("len()", "test_bad_input_catalog.py:",
                                       "functional.op")),
    (compare_traced_value, TraceError, ("compare", "test_bad_input_catalog.py:",
                                        "functional.op")),
    (join_traced_value, TraceError, ("iterate", "test_bad_input_catalog.py:",
                                     "functional.op")),
    (non_string_prompt, TraceError, ("'llm'", "int", "f-string")),
    (two_prompts_to_one_llm, TraceError, ("'llm'", "exactly one prompt", "self.llm(f\"")),
    (module_not_registered, TraceError, ("LLMInference", "not a submodule",
                                         "Assign it as an attribute")),
    (parameter_not_registered, TraceError, ("Parameter", "not registered", "self.p = Parameter")),
    (list_where_single_value_meant, InputError, ("Two()", "input 0", "ONE list of rows")),
    (missing_input, InputError, ("Two.forward(a, b)", "missing", "every input")),
    (unknown_keyword_input, InputError, ("One.forward(text)", "'txt'", "every input")),
    (too_many_inputs, InputError, ("forward(text)", "got 2", "ONE list")),
    (batch_of_mixed_shapes, InputError, ("row 1", "mixes row shapes", "same inputs")),
    (batch_row_not_a_tuple, InputError, ("Row 0", "takes 2 inputs", "tuple (a, b)")),
    (parameter_without_description, ConfigError, ("'Be concise.'", "description=",
                                                  "requires_grad=False")),
    (parameter_with_non_str_value, ConfigError, ("Parameter value", "int", "string")),
    (load_state_dict_unknown_keys, ConfigError, ("'llm.sytem'", "unknown keys",
                                                 "strict=False")),
    (load_state_dict_non_str_value, ConfigError, ("'llm.system_prompt'", "must be a string")),
    (response_format_not_pydantic, ConfigError, ("response_format", "dict", "BaseModel")),
    (unknown_execution_setting, ConfigError, ("max_inflights", "Valid", "max_inflight")),
    (unknown_bind_setting, ConfigError, ("max_concurency", "Valid", "max_concurrent")),
    (unknown_run_setting, ConfigError, ("'stream'", "Valid", "streaming")),
    (bad_resume_value, ConfigError, ("resume", "'yes'", "'auto'")),
    (unknown_executor_name, ConfigError, ("'threads'", "'local' or 'ray'")),
    (settings_entered_twice, ConfigError, ("already active", "create a new one")),
    (malformed_json_reply, NodeExecutionError, ("node 'llm'", "alias='fast'",
                                                "ResponseFormatError", "max_retries=1")),
    (empty_choices_reply, NodeExecutionError, ("node 'llm'", "choices", "max_retries=1")),
    (truncated_reply, NodeExecutionError, ("node 'llm'", "truncated", "max_retries=1")),
    (timeout_as_string, ConfigError, ("timeout", "'30'", "str", "timeout=30")),
    (timeout_as_string_in_yaml, ConfigError, ("resources.yaml", "timeout", "'30'",
                                              "timeout=30")),
    (base_url_without_scheme, ConfigError, ("base_url '127.0.0.1:", "no scheme",
                                            "base_url='https://127.0.0.1:", "'http://'")),
    (api_key_with_trailing_newline, ConfigError, ("API key from api_key=", "newline",
                                                  "at its end", "key.strip()")),
    (env_api_key_with_trailing_newline, ConfigError, ("PLAIT_CATALOG_KEY", "'fast'",
                                                      "newline", "key.strip()")),
]


@pytest.mark.parametrize(("case", "error", "fragments"), CATALOG,
                         ids=[c[0].__name__ for c in CATALOG])
def test_bad_input(case: Callable[..., Any], error: type[PlaitError], fragments: tuple[str, ...],
                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = case.__code__.co_varnames[:case.__code__.co_argcount]
    fixtures = {"tmp_path": tmp_path, "monkeypatch": monkeypatch}
    with pytest.raises(error) as info:
        case(**{name: fixtures[name] for name in params})
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"


def test_key_errors_never_quote_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for case in (api_key_with_trailing_newline,
                 lambda: env_api_key_with_trailing_newline(monkeypatch)):
        with pytest.raises(ConfigError) as info:
            case()
        assert KEY_WITH_NEWLINE.strip() not in str(info.value)


def test_a_copied_config_keeps_its_inline_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deepcopy (modules and configs get copied) must not switch to the environment's key."""
    monkeypatch.setenv("PLAIT_CATALOG_ENV_KEY", "sk-wrong-key-from-the-environment")

    async def main() -> Any:
        async with LLMServer(require_api_key="sk-the-right-inline-key") as server:
            original = ResourceConfig(endpoints={"fast": OpenAIEndpointConfig(
                model="m", base_url=server.openai_base_url, api_key="sk-the-right-inline-key",
                api_key_env="PLAIT_CATALOG_ENV_KEY", max_retries=0)})
            copied = copy.deepcopy(original)
            shallow = copy.copy(original["fast"])
            assert shallow.api_key == "sk-the-right-inline-key"
            return await One().bind(resources=copied)("x")

    assert arun(main()) == "[m] echo: x"


def test_the_catalog_is_big_enough() -> None:
    assert len(CATALOG) >= 25


def test_failed_replies_carry_the_typed_cause_after_retries() -> None:
    for kind in ("malformed", "empty_choices", "truncated"):
        async def main(kind: str = kind) -> tuple[BaseException, int]:
            async with LLMServer(faults=[Fault(kind, every=1)]) as server:  # pyright: ignore[reportArgumentType]
                res = server.resource_config({"fast": "m"}, max_retries=2)
                with pytest.raises(NodeExecutionError) as info:
                    await One().bind(resources=res)("x")
                return info.value.cause, server.stats().total_requests

        cause, requests = arun(main())
        assert isinstance(cause, ResponseFormatError), kind
        assert requests == 3, kind  # one try + max_retries=2 retries


def test_connection_refused_is_retried_then_reported() -> None:
    res = ResourceConfig(endpoints={"fast": OpenAIEndpointConfig(
        model="m", base_url=f"http://127.0.0.1:{unused_port()}/v1", api_key="k",
        max_retries=2)})
    with pytest.raises(NodeExecutionError) as info:
        arun(One().bind(resources=res)("x"))
    assert isinstance(info.value.cause, APIConnectionError)
    assert "gave up after 3 attempts" in str(info.value)
