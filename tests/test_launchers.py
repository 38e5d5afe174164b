"""The shell launchers as subprocesses: bad arguments start nothing; ranks get the right environment; a failing
rank (or a signal) stops every other rank and what it spawned."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from mindrlhf.parallel.rank_table import build_rank_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISTRIBUTE = os.path.join(ROOT, "scripts", "run_distribute_train.sh")
MSRUN_SCRIPT = os.path.join(ROOT, "scripts", "run_msrun_train.sh")

# A stand-in for train.py: records its environment and arguments, then behaves as FAKE_MODE says.
FAKE_TRAIN = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    out = os.environ["FAKE_OUT"]
    rank = os.environ.get("RANK_ID", "none")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a grandchild to clean up
    rec = {k: os.environ.get(k) for k in ("RANK_ID", "RANK_SIZE", "DEVICE_ID", "RANK_TABLE_FILE")}
    rec.update(argv=sys.argv[1:], pid=os.getpid(), child=child.pid)
    with open(os.path.join(out, "rank%s.json.tmp" % rank), "w") as f:
        json.dump(rec, f)
    os.replace(os.path.join(out, "rank%s.json.tmp" % rank), os.path.join(out, "rank%s.json" % rank))
    print("fake train rank", rank, flush=True)
    mode = os.environ.get("FAKE_MODE", "ok")
    if mode == "fail" and rank == os.environ["FAKE_FAIL_RANK"]:
        deadline = time.time() + 30  # fail once every rank is up, so there is something to stop
        while len([f for f in os.listdir(out) if f.endswith(".json")]) < int(os.environ["FAKE_RANKS"]):
            if time.time() > deadline:
                break
            time.sleep(0.05)
        sys.exit(3)
    if mode in ("fail", "hang"):
        time.sleep(120)
    child.kill()
    """
)

# A stand-in for train.py under a real msrun: MindSpore's own distributed init and one all-reduce on CPU.
DIST_TRAIN = textwrap.dedent(
    """
    import json, os, sys
    from mindrlhf.parallel import ParallelConfig, init_distributed, set_parallel_context
    info = init_distributed("CPU")  # the scheduler process never returns from here
    import numpy as np
    from mindspore import Tensor, ops
    pc = ParallelConfig.from_run_dict(
        {"use_parallel": True, "parallel": {"parallel_mode": 0}, "parallel_config": {"data_parallel": info.world_size}}
    )
    pc.validate(info.world_size, num_heads=4, n_kv_heads=None, num_layers=2, batch_size=4, vocab_size=32)
    ctx = set_parallel_context(pc, info.world_size)
    total = ops.AllReduce()(Tensor(np.array([info.rank + 1.0], np.float32))).asnumpy()[0]
    rec = dict(rank=info.rank, world=info.world_size, backend=info.backend, launcher=info.launcher,
               allreduce=float(total), ctx=ctx, argv=sys.argv[1:])
    with open(os.path.join(os.environ["FAKE_OUT"], "msrank%d.json" % info.rank), "w") as f:
        json.dump(rec, f)
    """
)

# A stand-in for msrun: records its arguments and which `python` it would start.
FAKE_MSRUN = textwrap.dedent(
    """\
    #!/usr/bin/env bash
    printf '%s\\n' "$@" > "$FAKE_OUT/msrun_args.txt"
    command -v python > "$FAKE_OUT/msrun_python.txt"
    exit "${FAKE_MSRUN_RC:-0}"
    """
)


@pytest.fixture()
def work(tmp_path):
    """Inputs for the launchers: dataset, YAMLs, a 4-device rank table on devices 4..7, fakes, an output dir."""
    (tmp_path / "data.mindrecord").write_text("")
    (tmp_path / "sft.yaml").write_text("model: {}\n")
    (tmp_path / "rm.yaml").write_text("model: {}\n")
    ips = [f"192.168.1.{i + 1}" for i in range(4)]
    (tmp_path / "hccl.json").write_text(json.dumps(build_rank_table(ips, "127.0.0.1", [4, 5, 6, 7])))
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    msrun = tmp_path / "msrun"
    msrun.write_text(FAKE_MSRUN)
    msrun.chmod(0o755)
    (tmp_path / "records").mkdir()
    return tmp_path


def env_for(work, **extra):
    env = dict(os.environ)
    env.update(
        PYTHON=sys.executable,
        MINDRLHF_TRAIN_ENTRY=str(work / "fake_train.py"),
        FAKE_OUT=str(work / "records"),
        OUTPUT_DIR=str(work / "out"),
        MSRUN=str(work / "msrun"),
        STOP_TIMEOUT="5",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def distribute_args(work, rank_start="0", local="2", table="hccl.json"):
    return [
        str(work / "data.mindrecord"),
        str(work / table),
        rank_start,
        local,
        str(work / "sft.yaml"),
        str(work / "rm.yaml"),
    ]


def run(script, args, env, timeout=60):
    return subprocess.run(
        ["bash", script, *args],
        env=env,
        cwd=env["OUTPUT_DIR"].rsplit("/", 1)[0],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def records(work):
    return sorted(f for f in os.listdir(work / "records") if f.endswith(".json") or f.endswith(".txt"))


def assert_refused(result, *words):
    """Exit 2, one clear `error:` line (plus the usage hint), nothing started."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].count("error:") == 1 and len(lines) <= 2, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert result.stdout == ""


def alive(pid):
    """Running (a zombie waiting for a reaper counts as dead: it holds no resources and runs no code)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


# ---- run_distribute_train.sh: refusals -----------------------------------------------------------------------------


def test_help_lists_the_six_arguments(work):
    result = run(DISTRIBUTE, ["-h"], env_for(work))
    assert result.returncode == 0
    for name in (
        "DATA_DIR",
        "RANK_TABLE_FILE",
        "RANK_START",
        "LOCAL_DEVICE_NUM",
        "SFT_MODEL_PATH",
        "REWARD_MODEL_PATH",
    ):
        assert name in result.stdout


@pytest.mark.parametrize("count", [0, 1, 5])
def test_distribute_wrong_argument_count(work, count):
    result = run(DISTRIBUTE, distribute_args(work)[:count], env_for(work))
    assert_refused(result, "expected 6 arguments", f"got {count}")
    assert records(work) == []


@pytest.mark.parametrize(
    "position, value, words",
    [
        (2, "one", ["RANK_START must be a non-negative integer, got 'one'"]),
        (2, "-1", ["RANK_START must be a non-negative integer"]),
        (3, "0", ["LOCAL_DEVICE_NUM must be a positive integer, got '0'"]),
        (3, "2.5", ["LOCAL_DEVICE_NUM must be a positive integer, got '2.5'"]),
        (0, "/nonexistent/data.mindrecord", ["DATA_DIR '/nonexistent/data.mindrecord' does not exist"]),
        (1, "/nonexistent/hccl.json", ["RANK_TABLE_FILE", "is not a file"]),
        (4, "/nonexistent/sft.yaml", ["SFT_MODEL_PATH", "is not a file"]),
        (5, "/nonexistent/rm.yaml", ["REWARD_MODEL_PATH", "is not a file"]),
    ],
)
def test_distribute_bad_arguments(work, position, value, words):
    args = distribute_args(work)
    args[position] = value
    assert_refused(run(DISTRIBUTE, args, env_for(work)), *words)
    assert records(work) == []


@pytest.mark.parametrize(
    "content, words",
    [
        ('{"version": "1.0",\n "server_count": "1",,}', ["invalid JSON at line 2, column 22"]),
        (
            {"version": "1.0", "server_count": "1", "status": "completed"},
            ["server_list: required key is missing"],
        ),
        ("dup", ["server_list[0].device[3].rank_id: rank_id 1 is used twice"]),
    ],
)
def test_distribute_malformed_rank_table(work, content, words):
    if content == "dup":
        table = build_rank_table([f"192.168.1.{i + 1}" for i in range(4)], "127.0.0.1")
        table["server_list"][0]["device"][3]["rank_id"] = "1"
        content = table
    (work / "bad.json").write_text(content if isinstance(content, str) else json.dumps(content))
    result = run(DISTRIBUTE, distribute_args(work, table="bad.json"), env_for(work))
    assert_refused(result, "bad.json", *words)
    assert records(work) == []


def test_distribute_more_local_devices_than_the_table_has(work):
    result = run(DISTRIBUTE, distribute_args(work, rank_start="2", local="4"), env_for(work))
    assert_refused(result, "RANK_START 2 + LOCAL_DEVICE_NUM 4 = 6 exceeds the 4 device(s)")
    assert records(work) == [] and not (work / "out").exists()


# ---- run_distribute_train.sh: running ranks ----------------------------------------------------------------------


def load_record(work, rank):
    with open(work / "records" / f"rank{rank}.json") as f:
        return json.load(f)


def test_distribute_sets_rank_environment_per_device(work):
    args = distribute_args(work, rank_start="2", local="2") + ["--config", "ppo.yaml", "--ppo_epochs", "2"]
    result = run(DISTRIBUTE, args, env_for(work))
    assert result.returncode == 0, result.stderr
    assert records(work) == ["rank2.json", "rank3.json"]
    for rank, device in ((2, "6"), (3, "7")):  # devices 6, 7 are what the table lists for ranks 2, 3
        rec = load_record(work, rank)
        assert rec["RANK_ID"] == str(rank) and rec["DEVICE_ID"] == device and rec["RANK_SIZE"] == "4"
        assert rec["RANK_TABLE_FILE"] == str(work / "hccl.json")
        assert rec["argv"] == [
            "--sft_model_path", str(work / "sft.yaml"),
            "--reward_model_path", str(work / "rm.yaml"),
            "--dataset_dir", str(work / "data.mindrecord"),
            "--save_dir", str(work / "out"),
            "--config", "ppo.yaml", "--ppo_epochs", "2",
        ]  # fmt: skip
        log = work / "out" / f"rank_{rank}" / "train.log"
        assert f"fake train rank {rank}" in log.read_text() and str(log) in result.stdout


def test_distribute_save_dir_from_args_is_not_doubled(work):
    result = run(DISTRIBUTE, distribute_args(work, local="1") + ["--save_dir", "mine"], env_for(work))
    assert result.returncode == 0, result.stderr
    argv = load_record(work, 0)["argv"]
    assert argv.count("--save_dir") == 1 and argv[-2:] == ["--save_dir", "mine"]


def test_distribute_failing_rank_stops_the_others(work):
    env = env_for(work, FAKE_MODE="fail", FAKE_FAIL_RANK="1", FAKE_RANKS="3")
    start = time.time()
    result = run(DISTRIBUTE, distribute_args(work, local="3"), env)
    assert result.returncode == 3, result.stderr  # the failing rank's code
    assert time.time() - start < 30  # not the survivors' 120 s sleep
    assert "rank 1 exited with code 3; stopping the other ranks" in result.stderr
    assert "fake train rank 1" in result.stderr  # the tail of its log
    for rank in (0, 1, 2):
        rec = load_record(work, rank)
        assert not alive(rec["pid"]), f"rank {rank} left running"
        assert not alive(rec["child"]), f"rank {rank}'s child process left running"


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_distribute_signal_stops_every_rank(work, sig, code):
    env = env_for(work, FAKE_MODE="hang")
    proc = subprocess.Popen(
        ["bash", DISTRIBUTE, *distribute_args(work)],
        env=env,
        cwd=str(work),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 30
        while len([f for f in records(work) if f.endswith(".json")]) < 2 and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code and "stopping 2 rank(s)" in err
    for rank in (0, 1):
        rec = load_record(work, rank)
        assert not alive(rec["pid"]) and not alive(rec["child"])


# ---- run_msrun_train.sh ------------------------------------------------------------------------------------------


def msrun_args(work, workers="2"):
    return [str(work / "data.mindrecord"), workers, str(work / "sft.yaml"), str(work / "rm.yaml")]


def test_msrun_help():
    result = subprocess.run(["bash", MSRUN_SCRIPT, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "WORKER_NUM" in result.stdout and "MASTER_PORT" in result.stdout


@pytest.mark.parametrize(
    "args, extra_env, words",
    [
        (lambda w: msrun_args(w)[:3], {}, ["expected 4 arguments", "got 3"]),
        (lambda w: [], {}, ["expected 4 arguments", "got 0"]),
        (lambda w: msrun_args(w, workers="two"), {}, ["WORKER_NUM must be a positive integer, got 'two'"]),
        (lambda w: msrun_args(w, workers="0"), {}, ["WORKER_NUM must be a positive integer, got '0'"]),
        (lambda w: msrun_args(w), {"MASTER_PORT": "80"}, ["MASTER_PORT must be an integer in 1024..65535"]),
        (lambda w: msrun_args(w), {"LOCAL_WORKER_NUM": "3"}, ["LOCAL_WORKER_NUM (3) exceeds WORKER_NUM (2)"]),
        (lambda w: msrun_args(w), {"LOCAL_WORKER_NUM": "1"}, ["set NODE_RANK"]),
        (lambda w: msrun_args(w)[:2] + ["/nonexistent.yaml", msrun_args(w)[3]], {}, ["SFT_MODEL_PATH"]),
    ],
)
def test_msrun_bad_arguments_start_nothing(work, args, extra_env, words):
    result = run(MSRUN_SCRIPT, args(work), env_for(work, **extra_env))
    assert_refused(result, *words)
    assert records(work) == []  # the fake msrun would have written msrun_args.txt


def test_msrun_port_in_use_is_refused(work):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(MSRUN_SCRIPT, msrun_args(work), env_for(work, MASTER_PORT=port))
    assert_refused(result, f"MASTER_PORT {port} is already in use")
    assert records(work) == []


def test_msrun_command_line(work):
    env = env_for(work, MASTER_PORT="29123", LOG_DIR=str(work / "logs"))
    result = run(MSRUN_SCRIPT, msrun_args(work) + ["--device_target", "CPU"], env)
    assert result.returncode == 0, result.stderr
    args = (work / "records" / "msrun_args.txt").read_text().splitlines()
    assert args == [
        "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1", "--master_port=29123",
        "--node_rank=0", f"--log_dir={work / 'logs'}", "--join=True",
        str(work / "fake_train.py"),
        "--sft_model_path", str(work / "sft.yaml"), "--reward_model_path", str(work / "rm.yaml"),
        "--dataset_dir", str(work / "data.mindrecord"), "--save_dir", str(work / "out"),
        "--device_target", "CPU",
    ]  # fmt: skip
    # msrun starts workers as plain `python`: it must be the chosen interpreter's.
    python = (work / "records" / "msrun_python.txt").read_text().strip()
    assert os.path.dirname(python) == os.path.dirname(sys.executable)


def test_msrun_failure_is_reported(work):
    result = run(MSRUN_SCRIPT, msrun_args(work), env_for(work, FAKE_MSRUN_RC="1", MASTER_PORT="29124"))
    assert result.returncode == 1 and "msrun exited with code 1; see" in result.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_msrun_real_two_cpu_workers_init_distributed(work):
    """Real msrun, real MindSpore: two CPU processes join through mccl and all-reduce (about 15 s)."""
    msrun = os.path.join(os.path.dirname(sys.executable), "msrun")
    if not os.path.exists(msrun):
        pytest.skip("msrun is not installed next to this python")
    (work / "dist_train.py").write_text(DIST_TRAIN)
    env = env_for(work, MINDRLHF_TRAIN_ENTRY=work / "dist_train.py", MSRUN=msrun, MASTER_PORT=free_port())
    result = run(MSRUN_SCRIPT, msrun_args(work), env, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert records(work) == ["msrank0.json", "msrank1.json"]  # two workers, nothing from the scheduler
    for rank in (0, 1):
        with open(work / "records" / f"msrank{rank}.json") as f:
            rec = json.load(f)
        assert (rec["rank"], rec["world"], rec["backend"], rec["launcher"]) == (rank, 2, "mccl", "msrun")
        assert rec["allreduce"] == 3.0  # 1 + 2: the two ranks really communicated
        assert rec["ctx"] == {"parallel_mode": "data_parallel", "gradients_mean": True, "device_num": 2}
        assert rec["argv"][:2] == ["--sft_model_path", str(work / "sft.yaml")]
    assert (work / "out" / "msrun_log" / "worker_1.log").exists()
