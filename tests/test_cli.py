"""The entry points as a package (`mindrlhf.cli`): one user-error base, old spellings kept, packaged defaults,
a device the MindSpore build lacks, and that the library never imports an entry point."""

import ast
import os
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

import mindrlhf
from mindrlhf.cli import common
from mindrlhf.configs.loader import ConfigError
from mindrlhf.configs.run_config import write_run_yaml
from mindrlhf.data.schemas import DataError
from mindrlhf.errors import MindRLHFError
from mindrlhf.models.llama import LlamaConfig
from mindrlhf.parallel import DistributedEnvError
from mindrlhf.parallel.rank_table import RankTableError
from mindrlhf.tools.convert_hf import ConversionError
from mindrlhf.utils.checkpoint import CheckpointError

TINY = dict(
    seq_length=32,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    n_kv_heads=2,
    vocab_size=64,
    intermediate_size=48,
)
COMMANDS = ["train", "sft", "rm", "dpo", "data", "convert_hf", "generate", "rank_table", "tokenizer",
            "plan_memory"]  # fmt: skip


def _env():
    return dict(os.environ, PYTHONPATH=ROOT)


def _run(args, cwd=None, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env or _env(),
        timeout=timeout,
    )


def _guarded_by_main(node: ast.If) -> bool:
    """`if __name__ == "__main__":`"""
    t = node.test
    return (
        isinstance(t, ast.Compare)
        and isinstance(t.left, ast.Name)
        and t.left.id == "__name__"
        and len(t.comparators) == 1
        and isinstance(t.comparators[0], ast.Constant)
        and t.comparators[0].value == "__main__"
    )


def _cli_imports(tree: ast.AST):
    """Line numbers of `mindrlhf.cli` imports outside `if __name__ == "__main__":` blocks."""
    found = []

    def visit(node):
        if isinstance(node, ast.If) and _guarded_by_main(node):
            return
        if isinstance(node, ast.Import):
            found.extend(node.lineno for a in node.names if a.name.startswith("mindrlhf.cli"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("mindrlhf.cli") or (
                node.module == "mindrlhf" and "cli" in {a.name for a in node.names}
            ):
                found.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_library_never_imports_an_entry_point():
    offenders = []
    for folder, _, files in os.walk(os.path.join(ROOT, "mindrlhf")):
        if os.path.relpath(folder, ROOT).split(os.sep)[:2] == ["mindrlhf", "cli"]:
            continue
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                lines = _cli_imports(ast.parse(open(path, encoding="utf-8").read()))
                offenders += [f"{os.path.relpath(path, ROOT)}:{n}" for n in lines]
    assert not offenders, f"library modules import mindrlhf.cli outside a __main__ shim: {offenders}"
    # The scan can fail: an import at module level or inside a function is found, one under the guard is not.
    bad = ast.parse(
        "import os\nfrom mindrlhf.cli.sft import main\ndef f():\n    import mindrlhf.cli.common\n"
    )
    assert _cli_imports(bad) == [2, 4]
    ok = ast.parse('if __name__ == "__main__":\n    from mindrlhf.cli.sft import main\n')
    assert _cli_imports(ok) == []


def test_every_command_has_a_main_and_a_console_script():
    import importlib

    setup_text = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    scripts = dict(re.findall(r'"(mindrlhf-[\w-]+)=(mindrlhf\.cli\.\w+):main"', setup_text))
    assert sorted(scripts.values()) == sorted(f"mindrlhf.cli.{c}" for c in COMMANDS)
    assert "mindrlhf-convert-hf" in scripts and "mindrlhf-rank-table" in scripts
    for name in COMMANDS:
        assert callable(importlib.import_module(f"mindrlhf.cli.{name}").main), name


def test_user_errors_share_one_base_that_is_not_value_error():
    for cls in (
        ConfigError,
        DataError,
        CheckpointError,
        DistributedEnvError,
        RankTableError,
        ConversionError,
    ):
        assert issubclass(cls, MindRLHFError) and not issubclass(cls, ValueError), cls
    assert issubclass(DataError, ConfigError)
    assert mindrlhf.MindRLHFError is MindRLHFError and mindrlhf.DataError is DataError


def test_inputs_collects_user_errors_and_lets_bugs_through():
    inputs = common.Inputs()

    def bad_config():
        raise ConfigError("expected an integer, got 'x'", "a.yaml", "batch_size")

    assert inputs.attempt(bad_config) is None
    assert inputs.attempt(lambda: 7) == 7
    assert inputs.problems == ["a.yaml: field 'batch_size': expected an integer, got 'x'"]
    with pytest.raises(ValueError, match="a bug"):
        inputs.attempt(lambda: (_ for _ in ()).throw(ValueError("a bug")))
    with pytest.raises(FileNotFoundError):
        inputs.attempt(open, "/nonexistent/file")
    assert len(inputs.problems) == 1


@pytest.mark.parametrize("bug", ["ValueError", "TypeError"])
def test_a_bug_inside_validation_surfaces_with_its_traceback(tmp_path, bug):
    """A non-user exception raised while the SFT command checks its inputs is not reported as an input problem."""
    script = tmp_path / "buggy.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            import mindrlhf.configs.run_config as rc
            def broken(path):
                raise {bug}("bug inside the model YAML check")
            rc.load_run_config = broken
            from mindrlhf.cli.sft import main
            sys.exit(main(sys.argv[1:]))
            """
        )
    )
    model = write_run_yaml(LlamaConfig(**TINY), str(tmp_path / "m.yaml"))
    proc = _run([str(script), "--model_config", model, "--dataset", str(tmp_path / "d.mindrecord"), "--save_dir",
                 str(tmp_path / "out"), "--device_target", "CPU"], cwd=str(tmp_path))  # fmt: skip
    assert proc.returncode not in (0, 2), proc.stderr[-2000:]
    assert "Traceback (most recent call last)" in proc.stderr
    assert f"{bug}: bug inside the model YAML check" in proc.stderr
    assert "problem(s) with the inputs" not in proc.stderr


def test_yaml_asking_for_a_device_this_build_lacks_says_what_to_pass(tmp_path):
    """Issue 14.5: an Ascend run YAML on a CPU-only MindSpore, no --device_target: one message, exit 2."""
    import mindspore as ms

    if ms.hal.is_available("Ascend"):
        pytest.skip("this MindSpore build runs on Ascend")
    sft = write_run_yaml(LlamaConfig(**TINY), str(tmp_path / "sft.yaml"), device_target="Ascend")
    proc = _run(["train.py", "--sft_model_path", sft, "--reward_model_path", sft, "--dataset_dir",
                 str(tmp_path / "d.mindrecord"), "--save_dir", str(tmp_path / "out")])  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    problems = [line for line in proc.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 1, proc.stderr
    assert sft in problems[0] and "asks for Ascend" in problems[0] and "runs only on CPU" in problems[0]
    assert "pass --device_target CPU" in problems[0]
    assert not os.path.exists(tmp_path / "out")
    # The same on the SFT command, and an explicit flag naming the missing device gets its own message.
    proc = _run(["-m", "mindrlhf.train_sft", "--model_config", sft, "--dataset", "d", "--save_dir",
                 str(tmp_path / "out"), "--device_target", "ascend"])  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (
        "--device_target ascend: this MindSpore build cannot run on Ascend (it runs only on CPU)"
        in proc.stderr
    )


def test_old_module_spellings_run_without_a_runpy_warning():
    for module in ("mindrlhf.data.tokenizer", "mindrlhf.parallel.rank_table", "mindrlhf.tools.convert_hf",
                   "mindrlhf.tools.generate", "mindrlhf.train_sft", "mindrlhf.train_rm", "mindrlhf.cli.data",
                   "mindrlhf.tools.plan_memory"):  # fmt: skip
        proc = _run(["-m", module, "--help"])
        assert proc.returncode == 0 and "usage:" in proc.stdout, (module, proc.stderr[-2000:])
        assert "RuntimeWarning" not in proc.stderr and "sys.modules" not in proc.stderr, (module, proc.stderr)
    for script in ("train.py", os.path.join("examples", "rlhf_train_tutorial", "rlhf_data.py")):
        proc = _run([script, "--help"])
        assert proc.returncode == 0 and "usage:" in proc.stdout, (script, proc.stderr[-2000:])


def test_tokenizer_module_run_prints_no_warning_on_a_real_call(tmp_path):
    """`python -m mindrlhf.data.tokenizer encode` with a missing model: exit 2, one error line, no RuntimeWarning."""
    proc = _run(["-m", "mindrlhf.data.tokenizer", "encode", "--model", str(tmp_path / "missing"), "x"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "RuntimeWarning" not in proc.stderr, proc.stderr


def test_default_trainer_configs_are_package_data_linked_from_model_configs():
    for kind in ("ppo", "sft", "rm", "dpo"):
        path = common.default_config_path(kind)
        assert os.path.dirname(path) == os.path.join(
            os.path.dirname(mindrlhf.__file__), "configs", "defaults"
        )
        link = os.path.join(ROOT, "model_configs", f"{kind}_config.yaml")
        assert os.path.islink(link) and os.path.samefile(link, path), link  # one copy
    # Nothing finds files relative to the repository root any more.
    for folder, _, files in os.walk(os.path.join(ROOT, "mindrlhf")):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name), encoding="utf-8").read()
                assert "dirname(os.path.dirname(" not in text and not re.search(r"^ROOT = ", text, re.M), name


def test_print_config_uses_the_packaged_yaml(tmp_path):
    proc = _run(["-m", "mindrlhf.cli.sft", "--model_config", "m", "--dataset", "d", "--save_dir", "s",
                 "--print_config", "--warmup_steps", "7"], cwd=str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    import json

    config = json.loads(proc.stdout)
    assert config["learning_rate"] == 1e-3 and config["epochs"] == 3 and config["warmup_steps"] == 7
    assert "configs/defaults/sft_config.yaml with --warmup_steps 7" in proc.stderr


def test_non_editable_install_uses_the_packaged_defaults(tmp_path):
    """`pip install` the project (a wheel, not editable) into a fresh venv, run the SFT command from another
    directory: it must use sft_config.yaml's values (lr 1e-3, 3 epochs), not the dataclass defaults (3e-4, 1).
    Without package_data in setup.py it fails (the packaged default is missing). 3-30 s, most of it pip."""
    import shutil
    import sysconfig

    src = tmp_path / "src"
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:  # a copy: building in the checkout would leave build/ and *.egg-info behind
        if os.path.lexists(os.path.join(ROOT, name)):
            os.makedirs(os.path.dirname(src / name), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), src / name, follow_symlinks=False)
    wheels = tmp_path / "wheels"
    build = _run(["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(wheels),
                  str(src)], cwd=str(tmp_path), timeout=600)  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("mindrlhf-*.whl")
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    python = str(fresh / "bin" / "python")
    pip = _run(["-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", "--prefix", str(fresh), str(wheel)],
               cwd=str(tmp_path))  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-3000:]
    # Heavy dependencies (mindspore, numpy, yaml) from this test's environment, without its editable finder.
    fresh_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    with open(os.path.join(fresh_site, "deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = tmp_path / "elsewhere"
    where.mkdir()
    probe = subprocess.run([python, "-c", "import mindrlhf; print(mindrlhf.__file__)"], cwd=str(where), env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert probe.stdout.strip().startswith(fresh_site), (probe.stdout, probe.stderr[-2000:])
    script = fresh / "bin" / "mindrlhf-sft"
    assert script.is_file()
    proc = subprocess.run([python, str(script), "--model_config", "m.yaml", "--dataset", "d", "--save_dir", "out",
                           "--print_config"], cwd=str(where), env=env, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    config = json.loads(proc.stdout)
    assert config["learning_rate"] == pytest.approx(1e-3) and config["epochs"] == 3, config
    assert fresh_site in proc.stderr and "defaults/sft_config.yaml" in proc.stderr
