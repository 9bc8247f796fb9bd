"""The README's "Use a method on your own model" snippets run as written."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippets() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Use a method on your own model"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_every_method_with_an_entry_point_has_a_snippet():
    imported = {m for code in _snippets() for m in re.findall(r"from labkit\.methods import (\w+)", code)}
    assert imported == {"dual_contrastive", "knowledge_evolution", "svmax", "fingerprints", "lottery", "jpeg",
                        "asap_nms_rpn", "l2_caf"}


@pytest.mark.parametrize("index", range(len(_snippets())))
def test_snippet_runs(index, one_thread, capsys):
    code = _snippets()[index]
    exec(compile(code, f"README snippet {index}", "exec"), {"__name__": "__readme__"})
