"""`mindrlhf-rank-table` (also `python -m mindrlhf.parallel.rank_table`): validate or write an HCCL rank table.

    mindrlhf-rank-table validate FILE [--rank_start N --local_device_num N] [--print_env]
    mindrlhf-rank-table write --device_ips ip0,ip1,... --server_ip IP --output FILE
    mindrlhf-rank-table write --hccn_conf /etc/hccn.conf --server_ip IP --output DIR

Exit 0 with a one-line summary (or the `--print_env` lines scripts/run_distribute_train.sh reads), exit 2 with
the message naming the file and JSON path. The table layout is in mindrlhf/parallel/rank_table.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

from mindrlhf.cli import common
from mindrlhf.parallel.rank_table import (
    RankTableError,
    build_rank_table,
    default_file_name,
    load_rank_table,
    read_hccn_conf,
    write_rank_table,
)

PROG = "python -m mindrlhf.parallel.rank_table"


def _parse_int_list(text: str, flag: str) -> List[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RankTableError(f"{flag} must be comma-separated integers, got {text!r}") from None


def _cmd_validate(args: argparse.Namespace) -> int:
    table = load_rank_table(args.file)
    if (args.rank_start is None) != (args.local_device_num is None):
        raise RankTableError("give both --rank_start and --local_device_num, or neither", args.file)
    if args.rank_start is None:
        if args.print_env:
            raise RankTableError("--print_env needs --rank_start and --local_device_num", args.file)
        print(table.summary())
        return 0
    local = table.local_devices(args.rank_start, args.local_device_num)
    if args.print_env:
        # Read by scripts/run_distribute_train.sh; one KEY=value per line, values without spaces but DEVICE_IDS.
        print(f"RANK_SIZE={table.rank_size}")
        print(f"SERVER_ID={local[0].server_id}")
        print("DEVICE_IDS=" + " ".join(str(d.device_id) for d in local))
        return 0
    ids = ",".join(str(d.device_id) for d in local)
    print(
        f"{table.summary()}; ranks {local[0].rank_id}..{local[-1].rank_id} run on server {local[0].server_id} "
        f"device_id(s) {ids}"
    )
    return 0


def _cmd_write(args: argparse.Namespace) -> int:
    device_ids = _parse_int_list(args.device_ids, "--device_ids") if args.device_ids else None
    if args.device_ips:
        ips = [ip.strip() for ip in args.device_ips.split(",") if ip.strip()]
    elif args.hccn_conf:
        conf = read_hccn_conf(args.hccn_conf)
        ids = device_ids if device_ids is not None else sorted(conf)
        absent = [i for i in ids if i not in conf]
        if absent:
            raise RankTableError(f"no address for device(s) {absent}", args.hccn_conf)
        ips, device_ids = [conf[i] for i in ids], ids
    else:
        raise RankTableError("give --device_ips ip0,ip1,... or --hccn_conf /etc/hccn.conf")
    table = build_rank_table(ips, args.server_ip, device_ids)
    ids_written = [int(d["device_id"]) for d in table["server_list"][0]["device"]]
    output = args.output or default_file_name(ids_written, args.server_ip)
    if os.path.isdir(output):
        output = os.path.join(output, default_file_name(ids_written, args.server_ip))
    write_rank_table(table, output)
    print(f"wrote {output}: {len(ips)} device(s) on server {args.server_ip}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    val = sub.add_parser("validate", help="check a rank table (and that a launcher's ranks fit in it)")
    val.add_argument("file")
    val.add_argument("--rank_start", type=int, help="first global rank this machine starts")
    val.add_argument("--local_device_num", type=int, help="how many ranks this machine starts")
    val.add_argument(
        "--print_env", action="store_true", help="print RANK_SIZE / SERVER_ID / DEVICE_IDS lines"
    )
    wr = sub.add_parser("write", help="write a one-server rank table (the hccl_tools layout)")
    wr.add_argument("--device_ips", help="comma-separated device IPs, rank i gets the i-th")
    wr.add_argument("--hccn_conf", help="read the device IPs from this hccn.conf instead (address_<id>=<ip>)")
    wr.add_argument("--device_ids", help="comma-separated device ids (default 0..n-1, or all in --hccn_conf)")
    wr.add_argument("--server_ip", required=True, help="this server's host IP (the table's server_id)")
    wr.add_argument("--output", help="file or directory (default: hccl_<n>p_<ids>_<server_ip>.json)")
    args = parser.parse_args(argv)
    return common.run_tool(
        PROG, lambda: _cmd_validate(args) if args.command == "validate" else _cmd_write(args)
    )


if __name__ == "__main__":
    sys.exit(main())
