"""HCCL rank tables: every malformed table gets one message naming the file and JSON path; the writer round-trips."""

import copy
import json
import os
import subprocess
import sys

import pytest

from mindrlhf.cli.rank_table import main
from mindrlhf.parallel.rank_table import (
    RankTableError,
    build_rank_table,
    default_file_name,
    load_rank_table,
    parse_rank_table,
    write_rank_table,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IPS8 = [f"192.168.10{i % 4}.{101 if i < 4 else 100}" for i in range(8)]


def table(n=8, server="127.0.0.1"):
    return build_rank_table(IPS8[:n], server)


def two_servers():
    t = table(4, "10.0.0.1")
    second = copy.deepcopy(t["server_list"][0])
    second["server_id"] = "10.0.0.2"
    for d in second["device"]:
        d["rank_id"] = str(int(d["rank_id"]) + 4)
        d["device_ip"] = d["device_ip"].replace("192.168", "192.169")
    t["server_list"].append(second)
    t["server_count"] = "2"
    return t


def dump(tmp_path, data, name="rank_table.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=4))
    return str(path)


def error_of(data, path="t.json"):
    with pytest.raises(RankTableError) as info:
        parse_rank_table(data, source=path)
    return str(info.value)


def test_writer_matches_hccl_tools_layout_and_validates():
    t = table()
    assert t["version"] == "1.0" and t["server_count"] == "1" and t["status"] == "completed"
    devices = t["server_list"][0]["device"]
    assert [d["rank_id"] for d in devices] == [str(i) for i in range(8)]  # strings, as hccl_tools writes them
    assert devices[5] == {"device_id": "5", "device_ip": IPS8[5], "rank_id": "5"}
    parsed = parse_rank_table(t, "t.json")
    assert parsed.rank_size == 8 and parsed.server_ids == ("127.0.0.1",)
    assert default_file_name(range(8), "127.0.0.1") == "hccl_8p_01234567_127.0.0.1.json"


def test_integers_are_accepted_as_well_as_digit_strings():
    t = table(2)
    for d in t["server_list"][0]["device"]:
        d["rank_id"], d["device_id"] = int(d["rank_id"]), int(d["device_id"])
    assert parse_rank_table(t).rank_size == 2


def test_bad_json_names_line_and_column(tmp_path):
    path = dump(tmp_path, '{\n  "version": "1.0",\n  "server_count": 1\n  "status": "completed"\n}')
    with pytest.raises(RankTableError, match=r"rank_table\.json: invalid JSON at line 4, column 3"):
        load_rank_table(path)


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(RankTableError, match="file not found.*rank_table write"):
        load_rank_table(str(tmp_path / "nope.json"))


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda t: t.pop("server_list"), "t.json: server_list: required key is missing"),
        (lambda t: t.pop("version"), "t.json: version: required key is missing"),
        (
            lambda t: t["server_list"][0]["device"][3].pop("rank_id"),
            "server_list[0].device[3].rank_id: required",
        ),
        (
            lambda t: t["server_list"][0]["device"][1].pop("device_ip"),
            "server_list[0].device[1].device_ip: required",
        ),
        (lambda t: t["server_list"][0].pop("server_id"), "server_list[0].server_id: required"),
    ],
)
def test_missing_keys_name_the_json_path(mutate, where):
    t = table()
    mutate(t)
    assert where in error_of(t)


def test_non_integer_rank_id():
    t = table()
    t["server_list"][0]["device"][2]["rank_id"] = "two"
    msg = error_of(t)
    assert "server_list[0].device[2].rank_id" in msg and "'two'" in msg


def test_duplicate_rank_ids_name_both_places():
    t = table()
    t["server_list"][0]["device"][6]["rank_id"] = "1"
    msg = error_of(t)
    assert "device[6].rank_id: rank_id 1 is used twice (also at server_list[0].device[1].rank_id)" in msg


def test_duplicate_device_id_on_a_server():
    t = table()
    t["server_list"][0]["device"][7]["device_id"] = "0"
    assert "device[7].device_id: device_id 0 appears twice on server 127.0.0.1" in error_of(t)


def test_rank_ids_must_be_zero_to_n_minus_one():
    t = table(4)
    t["server_list"][0]["device"][3]["rank_id"] = "9"
    msg = error_of(t)
    assert "rank ids must be 0..3" in msg and "3 is missing and 9 is out of range" in msg


def test_server_count_mismatch_and_status():
    t = two_servers()
    t["server_count"] = "1"
    assert "server_count: says 1 but server_list has 2 server(s)" in error_of(t)
    t = table()
    t["status"] = "initializing"
    assert "status: is 'initializing'" in error_of(t)


def test_bad_device_ip():
    t = table()
    t["server_list"][0]["device"][0]["device_ip"] = "192.168.1"
    assert "device[0].device_ip: '192.168.1' is not an IP address" in error_of(t)


def test_local_devices_fit_and_span():
    t = parse_rank_table(table(), "t.json")
    assert [d.device_id for d in t.local_devices(4, 4)] == [4, 5, 6, 7]
    with pytest.raises(RankTableError, match=r"RANK_START 4 \+ LOCAL_DEVICE_NUM 8 = 12 exceeds the 8 device"):
        t.local_devices(4, 8)
    t2 = parse_rank_table(two_servers(), "t2.json")
    assert [d.rank_id for d in t2.local_devices(4, 4)] == [4, 5, 6, 7]
    assert {d.server_id for d in t2.local_devices(4, 4)} == {"10.0.0.2"}
    with pytest.raises(RankTableError, match="span servers 10.0.0.1, 10.0.0.2"):
        t2.local_devices(2, 4)


def test_device_ids_come_from_the_table_not_the_loop_index():
    # hccl_tools with visible devices 4-7: rank 0 lives on device 4, so DEVICE_ID must be 4.
    t = parse_rank_table(build_rank_table(IPS8[:4], "127.0.0.1", device_ids=[4, 5, 6, 7]))
    assert [(d.rank_id, d.device_id) for d in t.local_devices(0, 4)] == [(0, 4), (1, 5), (2, 6), (3, 7)]


def test_atomic_write_round_trip_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "sub" / "hccl.json")
    write_rank_table(table(), path)
    assert load_rank_table(path).rank_size == 8
    assert os.listdir(tmp_path / "sub") == ["hccl.json"]


def test_writer_refuses_duplicates_before_writing(tmp_path):
    with pytest.raises(RankTableError, match="device_ip 192.168.100.101 is used twice"):
        build_rank_table([IPS8[0], IPS8[0]], "127.0.0.1")


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "mindrlhf.parallel.rank_table", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_validate_and_write(tmp_path):
    out = run_cli(
        "write", "--device_ips", ",".join(IPS8), "--server_ip", "127.0.0.1", "--output", str(tmp_path)
    )
    assert out.returncode == 0, out.stderr
    path = tmp_path / "hccl_8p_01234567_127.0.0.1.json"
    ok = run_cli("validate", str(path), "--rank_start", "0", "--local_device_num", "8")
    assert ok.returncode == 0 and ok.stdout.count("\n") == 1 and "8 device(s)" in ok.stdout
    env = run_cli("validate", str(path), "--rank_start", "6", "--local_device_num", "2", "--print_env")
    assert env.stdout.splitlines() == ["RANK_SIZE=8", "SERVER_ID=127.0.0.1", "DEVICE_IDS=6 7"]
    bad = run_cli("validate", str(path), "--rank_start", "6", "--local_device_num", "4")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().count("\n") == 0 and "exceeds the 8 device(s)" in bad.stderr


def test_cli_write_from_hccn_conf(tmp_path):
    conf = tmp_path / "hccn.conf"
    conf.write_text("".join(f"address_{i}={ip}\nnetmask_{i}=255.255.255.0\n" for i, ip in enumerate(IPS8)))
    out = run_cli(
        "write",
        "--hccn_conf",
        str(conf),
        "--device_ids",
        "4,5",
        "--server_ip",
        "10.1.1.1",
        "--output",
        str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    t = load_rank_table(str(tmp_path / "hccl_2p_45_10.1.1.1.json"))
    assert [(d.device_id, d.device_ip) for d in t.devices] == [(4, IPS8[4]), (5, IPS8[5])]


def test_main_returns_2_with_one_line(tmp_path, capsys):
    path = dump(tmp_path, {"version": "1.0"})
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "status: required key is missing" in err
