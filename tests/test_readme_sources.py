"""The examples of README "Where models come from" run as written: the training script logs a weekly
model to a real MLflow server, the S3 script writes a drop to a real S3 server, and the README's
``drift-audit run`` lines audit them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from flows.cli import main
from tests.source_checks import s3_client
from tests.source_servers import MlflowServer, S3Server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

README = Path(__file__).resolve().parents[1] / "README.md"


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    return text.split("## Where models come from", 1)[1].split("\n## ", 1)[0]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), re.S)


def _command(block: str) -> list[str]:
    """The ``drift-audit run ...`` of a bash block, without its leading environment assignments."""
    words = shlex.split(block)
    return words[words.index("drift-audit") + 1 :]


def test_the_section_has_one_python_example_and_one_command_per_source() -> None:
    assert len(_blocks("python")) == 2 and len(_blocks("bash")) == 2
    assert "mlflow.keras.log_model" in _blocks("python")[0] and "s3.put" in _blocks("python")[1]


def test_the_mlflow_example(
    mlflow_server: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)  # the command's own value is an example
    monkeypatch.chdir(tmp_path)
    exec(compile(_blocks("python")[0], "README.md (MLflow example)", "exec"), {})
    out = tmp_path / "out"
    assert main([*_command(_blocks("bash")[0]), "--out", str(out), "--methods", "weight_sum", "--quiet"]) == 0
    assert (out / "2026-03-02" / "report.html").is_file()


def test_the_s3_example(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    client = s3_client(s3_server)
    if "ml-models" not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:  # type: ignore[attr-defined]
        client.create_bucket(Bucket="ml-models")  # type: ignore[attr-defined]
    monkeypatch.chdir(tmp_path)
    exec(compile(_blocks("python")[1], "README.md (S3 example)", "exec"), {})
    out = tmp_path / "out"
    assert main([*_command(_blocks("bash")[1]), "--out", str(out), "--methods", "weight_sum", "--quiet"]) == 0
    assert (out / "2026-03-02" / "report.html").is_file()
