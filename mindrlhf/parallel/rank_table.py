"""HCCL rank tables: load, validate and write the JSON that tells Ascend's HCCL which device is which rank.

The layout is the one MindFormers' `hccl_tools.py` writes (`hccl_8p_01234567_127.0.0.1.json`)::

    {"version": "1.0", "server_count": "1",
     "server_list": [{"server_id": "127.0.0.1", "host_nic_ip": "reserve",
                      "device": [{"device_id": "0", "device_ip": "192.1.27.6", "rank_id": "0"}, ...]}],
     "status": "completed"}

Numbers are written as strings by hccl_tools; integers are accepted too. Every problem is reported as one
`RankTableError` naming the file and the JSON path (`server_list[0].device[3].rank_id`).

CLI (`mindrlhf.cli.rank_table`; exit 0 with a one-line summary, exit 2 with the message)::

    mindrlhf-rank-table validate FILE [--rank_start N --local_device_num N] [--print_env]
    python -m mindrlhf.parallel.rank_table validate FILE [--rank_start N --local_device_num N] [--print_env]
    python -m mindrlhf.parallel.rank_table write --device_ips ip0,ip1,... --server_ip IP --output FILE
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mindrlhf.errors import MindRLHFError
from mindrlhf.utils.io import atomic_write


class RankTableError(MindRLHFError):
    """A user-fixable problem in a rank table; the message names the file and the JSON path."""

    def __init__(self, message: str, source: Optional[str] = None, path: Optional[str] = None):
        where = [str(source)] if source else []
        if path:
            where.append(path)
        super().__init__(f"{': '.join(where)}: {message}" if where else message)
        self.source = source
        self.path = path


@dataclasses.dataclass(frozen=True)
class Device:
    """One NPU of the table: global `rank_id`, the server it sits on and its local `device_id` there."""

    rank_id: int
    device_id: int
    device_ip: str
    server_id: str


@dataclasses.dataclass(frozen=True)
class RankTable:
    """A validated rank table; `devices` are sorted by rank id (0..N-1)."""

    path: str
    version: str
    server_ids: Tuple[str, ...]
    devices: Tuple[Device, ...]

    @property
    def rank_size(self) -> int:
        return len(self.devices)

    def local_devices(self, rank_start: int, local_device_num: int) -> Tuple[Device, ...]:
        """The devices of ranks `[rank_start, rank_start + local_device_num)`, which must all sit on one server.

        This is what one machine's launcher starts: rank `rank_start + i` on device `device_id` of that rank.
        """
        if isinstance(rank_start, bool) or not isinstance(rank_start, int) or rank_start < 0:
            raise RankTableError(f"RANK_START must be an integer >= 0, got {rank_start!r}", self.path)
        if (
            isinstance(local_device_num, bool)
            or not isinstance(local_device_num, int)
            or local_device_num < 1
        ):
            raise RankTableError(
                f"LOCAL_DEVICE_NUM must be an integer >= 1, got {local_device_num!r}", self.path
            )
        end = rank_start + local_device_num
        if end > self.rank_size:
            offset = self._device_offset_advice(rank_start, local_device_num)
            if offset:
                raise RankTableError(offset, self.path)
            raise RankTableError(
                f"RANK_START {rank_start} + LOCAL_DEVICE_NUM {local_device_num} = {end} exceeds the {self.rank_size} "
                f"device(s) in the table (ranks 0..{self.rank_size - 1}); lower LOCAL_DEVICE_NUM to "
                f"{max(self.rank_size - rank_start, 0)} or use a rank table listing {end} devices",
                self.path,
            )
        chosen = self.devices[rank_start:end]
        servers = sorted({d.server_id for d in chosen})
        if len(servers) > 1:
            raise RankTableError(
                f"ranks {rank_start}..{end - 1} span servers {', '.join(servers)}; one launcher starts the ranks "
                "of one server: run it on each server with that server's RANK_START and LOCAL_DEVICE_NUM",
                self.path,
            )
        return chosen

    def _device_offset_advice(self, rank_start: int, local_device_num: int) -> Optional[str]:
        """Advice when RANK_START was given as a device id, as the original MindRLHF launcher took it.

        The original `run_distribute_train.sh` used RANK_START as the first *device id* of the machine; here it is
        the first global `rank_id` in the table. When devices `rank_start..rank_start+n-1` sit on one server under
        consecutive ranks, say which RANK_START those devices have (e.g. hccl_tools' table of devices 4-7 numbers
        them ranks 0-3). Returns None when the numbers do not read as a device offset.
        """
        wanted = range(rank_start, rank_start + local_device_num)
        for server in self.server_ids:
            found = [d for d in self.devices if d.server_id == server and d.device_id in wanted]
            ranks = sorted(d.rank_id for d in found)
            if len(found) == local_device_num and ranks == list(range(ranks[0], ranks[0] + local_device_num)):
                ids = f"{wanted[0]}..{wanted[-1]}"
                return (
                    f"RANK_START {rank_start} + LOCAL_DEVICE_NUM {local_device_num} exceeds the {self.rank_size} "
                    f"device(s) in the table (ranks 0..{self.rank_size - 1}). RANK_START is the global rank_id of "
                    f"this server's first device in the rank table, not a device id (the original MindRLHF launcher "
                    f"took it as a device offset). This table gives device_id(s) {ids} of server {server} the "
                    f"ranks {ranks[0]}..{ranks[-1]}: pass RANK_START {ranks[0]} and LOCAL_DEVICE_NUM "
                    f"{local_device_num}; the device ids are read from the table"
                )
        return None

    def summary(self) -> str:
        return (
            f"{self.path}: rank table version {self.version}, {len(self.server_ids)} server(s), "
            f"{self.rank_size} device(s), ranks 0..{self.rank_size - 1}"
        )


def _as_int(value: Any, source: str, path: str) -> int:
    """hccl_tools writes numbers as strings ("3"); accept those and plain ints, nothing else."""
    if isinstance(value, bool):
        raise RankTableError(f"expected a non-negative integer, got {value!r}", source, path)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        number = int(value)
    else:
        raise RankTableError(f'expected a non-negative integer (e.g. "0"), got {value!r}', source, path)
    if number < 0:
        raise RankTableError(f"expected a non-negative integer, got {value!r}", source, path)
    return number


def _require(node: Dict[str, Any], key: str, source: str, path: str) -> Any:
    if key not in node:
        where = f"{path}.{key}" if path else key
        raise RankTableError(
            "required key is missing (see MindFormers' hccl_tools.py for the layout)", source, where
        )
    return node[key]


def _check_ip(value: Any, source: str, path: str) -> str:
    if not isinstance(value, str):
        raise RankTableError(f"expected an IP address string, got {value!r}", source, path)
    try:
        ipaddress.ip_address(value.strip())
    except ValueError:
        raise RankTableError(f"{value!r} is not an IP address", source, path) from None
    return value.strip()


def parse_rank_table(data: Any, source: str = "<rank table>") -> RankTable:
    """Validate a decoded rank table (see module docstring) and return it typed; raises RankTableError."""
    if not isinstance(data, dict):
        raise RankTableError(f"expected a JSON object at the top level, got {type(data).__name__}", source)
    version = _require(data, "version", source, "")
    if not isinstance(version, str):
        raise RankTableError(f'expected a string such as "1.0", got {version!r}', source, "version")
    status = _require(data, "status", source, "")
    if status != "completed":
        raise RankTableError(
            f'is {status!r}; HCCL only accepts a finished table ("completed"): regenerate it',
            source,
            "status",
        )
    server_count = _as_int(_require(data, "server_count", source, ""), source, "server_count")
    servers = _require(data, "server_list", source, "")
    if not isinstance(servers, list) or not servers:
        raise RankTableError(f"expected a non-empty list of servers, got {servers!r}", source, "server_list")
    if server_count != len(servers):
        raise RankTableError(
            f"says {server_count} but server_list has {len(servers)} server(s); make them agree",
            source,
            "server_count",
        )

    devices: List[Device] = []
    server_ids: List[str] = []
    rank_owner: Dict[int, str] = {}
    ip_owner: Dict[str, str] = {}
    for s, server in enumerate(servers):
        spath = f"server_list[{s}]"
        if not isinstance(server, dict):
            raise RankTableError(f"expected an object, got {server!r}", source, spath)
        server_id = _require(server, "server_id", source, spath)
        if not isinstance(server_id, str) or not server_id.strip():
            raise RankTableError(
                f"expected the server's IP as a string, got {server_id!r}", source, f"{spath}.server_id"
            )
        if server_id in server_ids:
            raise RankTableError(f"server {server_id!r} is listed twice", source, f"{spath}.server_id")
        server_ids.append(server_id)
        device_list = _require(server, "device", source, spath)
        if not isinstance(device_list, list) or not device_list:
            raise RankTableError(
                f"expected a non-empty list of devices, got {device_list!r}", source, f"{spath}.device"
            )
        seen_device: Dict[int, str] = {}
        for d, dev in enumerate(device_list):
            dpath = f"{spath}.device[{d}]"
            if not isinstance(dev, dict):
                raise RankTableError(f"expected an object, got {dev!r}", source, dpath)
            device_id = _as_int(_require(dev, "device_id", source, dpath), source, f"{dpath}.device_id")
            device_ip = _check_ip(_require(dev, "device_ip", source, dpath), source, f"{dpath}.device_ip")
            rank_id = _as_int(_require(dev, "rank_id", source, dpath), source, f"{dpath}.rank_id")
            if device_id in seen_device:
                raise RankTableError(
                    f"device_id {device_id} appears twice on server {server_id} (also at {seen_device[device_id]})",
                    source,
                    f"{dpath}.device_id",
                )
            if rank_id in rank_owner:
                raise RankTableError(
                    f"rank_id {rank_id} is used twice (also at {rank_owner[rank_id]}); every device needs its own rank",
                    source,
                    f"{dpath}.rank_id",
                )
            if device_ip in ip_owner:
                raise RankTableError(
                    f"device_ip {device_ip} is used twice (also at {ip_owner[device_ip]})",
                    source,
                    f"{dpath}.device_ip",
                )
            seen_device[device_id] = dpath
            rank_owner[rank_id] = f"{dpath}.rank_id"
            ip_owner[device_ip] = f"{dpath}.device_ip"
            devices.append(
                Device(rank_id=rank_id, device_id=device_id, device_ip=device_ip, server_id=server_id)
            )

    n = len(devices)
    missing = sorted(set(range(n)) - set(rank_owner))
    if missing:
        # With unique ids, a missing one implies one out of range.
        first_extra = min(r for r in rank_owner if r >= n)
        raise RankTableError(
            f"rank ids must be 0..{n - 1} for {n} device(s), but {missing[0]} is missing and {first_extra} is out "
            "of range; number the ranks 0..N-1",
            source,
            rank_owner[first_extra],
        )
    devices.sort(key=lambda dev: dev.rank_id)
    return RankTable(path=source, version=version, server_ids=tuple(server_ids), devices=tuple(devices))


def load_rank_table(path: str) -> RankTable:
    """Read and validate the rank table at `path`; raises RankTableError naming the file and the JSON path."""
    if not os.path.isfile(path):
        raise RankTableError(
            "file not found (give the rank table JSON, e.g. hccl_8p_01234567_127.0.0.1.json; write one with "
            "`python -m mindrlhf.parallel.rank_table write`)",
            path,
        )
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise RankTableError(f"not UTF-8 text ({exc.reason})", path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RankTableError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", path
        ) from None
    return parse_rank_table(data, source=path)


def build_rank_table(
    device_ips: Sequence[str], server_ip: str, device_ids: Optional[Sequence[int]] = None
) -> Dict:
    """The hccl_tools layout for one server: device `device_ids[i]` (default i) with IP `device_ips[i]` is rank i."""
    if not device_ips:
        raise RankTableError("give at least one device IP (--device_ips ip0,ip1,...)")
    ids = list(range(len(device_ips))) if device_ids is None else list(device_ids)
    if len(ids) != len(device_ips):
        raise RankTableError(
            f"{len(device_ips)} device IP(s) but {len(ids)} device id(s); give one IP per device"
        )
    _check_ip(server_ip, "--server_ip", "")
    for i, ip in enumerate(device_ips):
        _check_ip(ip, "--device_ips", f"item {i}")
    devices = [
        {"device_id": str(dev_id), "device_ip": ip.strip(), "rank_id": str(rank)}
        for rank, (dev_id, ip) in enumerate(zip(ids, device_ips))
    ]
    table = {
        "version": "1.0",
        "server_count": "1",
        "server_list": [{"server_id": server_ip.strip(), "device": devices, "host_nic_ip": "reserve"}],
        "status": "completed",
    }
    parse_rank_table(table, source="<generated rank table>")  # duplicates etc. are caught before writing
    return table


def default_file_name(device_ids: Sequence[int], server_ip: str) -> str:
    """hccl_tools' name: `hccl_8p_01234567_127.0.0.1.json`."""
    return f"hccl_{len(device_ids)}p_{''.join(str(i) for i in device_ids)}_{server_ip}.json"


def write_rank_table(table: Dict, path: str) -> str:
    """Write `table` as JSON atomically (`mindrlhf.utils.io.atomic_write`)."""
    with atomic_write(path) as f:
        json.dump(table, f, indent=4)
        f.write("\n")
    return path


def read_hccn_conf(path: str) -> Dict[int, str]:
    """`address_<device_id>=<ip>` lines of /etc/hccn.conf (where hccl_tools reads the device IPs)."""
    if not os.path.isfile(path):
        raise RankTableError("file not found (device IPs live in /etc/hccn.conf on an Ascend server)", path)
    ips: Dict[int, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            match = re.match(r"\s*address_(\d+)\s*=\s*(\S+)", line)
            if match:
                ips[int(match.group(1))] = _check_ip(match.group(2), path, f"line {lineno}")
    if not ips:
        raise RankTableError("no `address_<device_id>=<ip>` lines found", path)
    return ips


if __name__ == "__main__":  # `python -m mindrlhf.parallel.rank_table`: the command is mindrlhf.cli.rank_table
    from mindrlhf.cli.rank_table import main

    sys.exit(main())
