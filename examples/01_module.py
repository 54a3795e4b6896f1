"""Module, Parameter and composition: the nn.Module habits, for LLM pipelines."""

from collections import OrderedDict

from plait import LLMInference, Module, ModuleList, Parameter, Sequential


class Perspective(Module):
    """One point of view on a text."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.style = Parameter(f"Analyse as a {name}.", description=f"How the {name} reads.")
        self.llm = LLMInference(alias="fast", system_prompt=self.style)

    def forward(self, text: str) -> str:
        return self.llm(text)


class Strip(Module):
    """Plain Python between LLM calls: a leaf runs forward() on the real text."""

    leaf = True

    def forward(self, text: str) -> str:
        return " ".join(text.split())


class Shout(Module):
    leaf = True

    def forward(self, text: str) -> str:
        return text.upper() + "!"


class MultiPerspective(Module):
    """Several perspectives, then one synthesis."""

    def __init__(self) -> None:
        super().__init__()
        self.views = ModuleList(Perspective(n) for n in ("lawyer", "engineer", "customer"))
        self.synthesis = LLMInference(alias="smart", system_prompt="Merge the analyses.")

    def forward(self, text: str) -> str:
        analyses = [view(text) for view in self.views]
        return self.synthesis("\n\n".join(f"- {a}" for a in analyses))


if __name__ == "__main__":
    model = MultiPerspective()
    print(model)
    print("\nparameters:")
    for name, param in model.named_parameters():
        print(f"  {name} = {param.value!r} (learnable={param.requires_grad})")
    state = model.state_dict()
    state["views.0.style"] = "Analyse as a cautious lawyer."
    model.load_state_dict(state)
    print("\nafter load_state_dict:", model.views[0].style.value)
    print("modules:", [name or "<root>" for name, _ in model.named_modules()])

    # A module that makes no LLM call (and is not bound) runs at once, as in PyTorch.
    clean = Sequential(OrderedDict([("strip", Strip()), ("shout", Shout())]))
    print("\ndirect call:", clean("  hello    plait  "))
    print("batch:", clean(["a  b", " c "]))
