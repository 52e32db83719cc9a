"""The README's Python API example runs as written on the default model and shipped checkpoint."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_api_example_runs(real_model, capsys):
    section = README.read_text().split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), scope)
    assert len(scope["passages"]) == 2 and len(scope["prag"]) == 1
    assert capsys.readouterr().out.startswith("Tessaly Vorne ")
