"""Every option of ``nprint --help`` (1.2.1), short and long, through `netdiff nprint`: texts, exit codes,
BPF filters against tcpdump's own filtering, -x/-I/-C, radiotap/wlan with -O 5, and live capture on ``lo``."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from netdiff_lib.cli.nprint import main
from netdiff_lib.nprint import helptext
from netdiff_lib.nprint.libpcap import LibpcapError, lib
from netdiff_lib.pcap import LINKTYPE_IEEE802_11_RADIOTAP, PcapFile, PcapWriter

REPO = Path(__file__).resolve().parents[1]
DNS = REPO / "samples" / "captures" / "dns" / "dns_01.pcap"
HELP_OPTION = re.compile(r"^  -(\S), --(\w+)(?:=(\S+))?", re.M)


def _run(capfdbinary: pytest.CaptureFixture, *argv: str) -> tuple[int, bytes, bytes]:
    rc = main(list(argv))
    sys.stdout.flush()
    out, err = capfdbinary.readouterr()
    return rc, out, err


def _option_args(tmp_path: Path, short: str) -> list[str]:
    """The rest of a command line exercising option ``short``; writes the input files options need."""
    (tmp_path / "hex.csv").write_text("id,label,hexpkt\n" + "".join(
        f"{i},dns,{next(PcapFile(DNS).batches()).packet(i).hex()}\n" for i in range(3)))
    (tmp_path / "ips.txt").write_text("127.0.0.1\n")
    if short == "N":
        main(["-P", str(DNS), "-4", "-u", "-p", "2000", "-W", str(tmp_path / "n.csv")])
        return ["-W", str(tmp_path / "back.pcap")]
    if short == "C":
        return ["-4", "-u"]
    return ["-P", str(DNS), "-4", "-u"]


HELP_OPTIONS = [(s, long, arg) for s, long, arg in HELP_OPTION.findall(helptext.HELP) if s not in "d?"]
TESTED_OPTIONS = [*HELP_OPTIONS, ("I", "ip_file", "FILE")]  # -I: nPrint's parser has it, its table does not


def test_help_lists_every_option_of_nprint_1_2_1() -> None:
    assert len(HELP_OPTIONS) == 23  # the 24 of nPrint's table, less -d (tested live below); argp's -? aside
    assert "--version" in helptext.HELP and "--usage" in helptext.HELP


@pytest.mark.parametrize(("short", "long", "arg"), TESTED_OPTIONS, ids=[o[1] for o in TESTED_OPTIONS])
def test_every_option_short_and_long_gives_the_same_result(
    short: str, long: str, arg: str, tmp_path: Path, capfdbinary: pytest.CaptureFixture,
) -> None:
    rest = _option_args(tmp_path, short)
    value = {"c": "3", "C": str(tmp_path / "hex.csv"), "f": "udp", "F": "-1", "O": "2", "p": "4",
             "x": "ipv4_opt_.*", "W": str(tmp_path / "w.csv"), "P": str(DNS), "N": str(tmp_path / "n.csv"),
             "I": str(tmp_path / "ips.txt")}
    results = []
    for form in ([f"-{short}"], [f"--{long}"], [f"--{long[:-1]}"] if long == "nprint_filter_help" else None):
        if form is None:
            continue
        argv = [*rest, *form, value[short]] if arg else [*rest, *form]
        rc, out, err = _run(capfdbinary, *argv)
        written = (tmp_path / "w.csv").read_bytes() if short == "W" else b""
        written += (tmp_path / "back.pcap").read_bytes() if short == "N" else b""
        results.append((rc, out + written, err))
    assert results[0][0] == 0, results[0][2]
    assert all(r == results[0] for r in results), f"-{short} and --{long} differ"
    assert results[0][1], "nothing written"


def test_version_is_what_nprintml_expects(capfdbinary: pytest.CaptureFixture) -> None:
    rc, out, _ = _run(capfdbinary, "--version")
    assert rc == 0 and out == b"nprint 1.2.1\n"
    assert re.match(r"nprint ([.\d]+)", out.decode()).group(1) == "1.2.1"


@pytest.mark.parametrize(("argv", "text"), [
    (["--help"], helptext.HELP), (["-?"], helptext.HELP), (["--usage"], helptext.USAGE),
    (["-h"], helptext.FILTER_HELP), (["--nprint_filter_help"], helptext.FILTER_HELP),
    (["-4", "--he"], helptext.HELP),
])
def test_help_texts(argv: list[str], text: str, capfdbinary: pytest.CaptureFixture) -> None:
    assert _run(capfdbinary, *argv)[:2] == (0, text.encode())


@pytest.mark.parametrize(("argv", "status", "message"), [
    (["-z"], 64, "nprint: invalid option -- 'z'\n"),
    (["--bogus"], 64, "nprint: unrecognized option '--bogus'\n"),
    (["-c"], 64, "nprint: option requires an argument -- 'c'\n"),
    (["--count"], 64, "nprint: option '--count' requires an argument\n"),
    (["--c=3"], 64, "nprint: option '--c=3' is ambiguous; possibilities: '--count' '--csv_file'\n"),
    (["--ipv4=1"], 64, "nprint: option '--ipv4' doesn't allow an argument\n"),
    (["stray"], 64, "nprint: Too many arguments\n"),
    (["-O", "7"], 3, "invald index configuration, exiting\n"),
    (["-P", "a", "-C", "b"], 1, "Only one of {pcap, csv, nprint} input files can be selected\n"),
    (["-N", "x.csv"], 1, "nprint infile option requires outfile for writing reversed pcap\n"),
])
def test_errors_and_exit_codes(argv: list[str], status: int, message: str, capfdbinary: pytest.CaptureFixture) -> None:
    rc, _, err = _run(capfdbinary, *argv)
    assert rc == status
    assert err.decode().startswith(message)


def test_long_names_as_nprintml_passes_them(capfdbinary: pytest.CaptureFixture) -> None:
    short = _run(capfdbinary, "-P", str(DNS), "-4", "-c", "20", "-p", "10", "-t", "-u")
    long = _run(capfdbinary, "--pcap_file", str(DNS), "--ipv4", "--count", "20", "--payload", "10", "--tcp", "--udp")
    bundled = _run(capfdbinary, "-4tuP", str(DNS), "-c20", "-p10")
    assert short == long == bundled and short[0] == 0 and short[1].count(b"\n") == 21


FILTERS = ["udp", "tcp", "icmp or icmp6", "ip6", "tcp[tcpflags] & tcp-syn != 0", "greater 200",
           "src port 53 or dst port 53", "not udp and not tcp"]


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
@pytest.mark.parametrize("expr", FILTERS)
def test_bpf_filter_keeps_what_tcpdump_keeps(expr: str, samples_dir: Path, tmp_path: Path,
                                             capfdbinary: pytest.CaptureFixture) -> None:
    for pcap in (samples_dir / "dns" / "dns_01.pcap", samples_dir / "icmp" / "icmp_02.pcap",
                 samples_dir / "http" / "http_01.pcap"):
        filtered = tmp_path / "f.pcap"
        subprocess.run(["tcpdump", "-r", str(pcap), "-w", str(filtered), expr], check=True, capture_output=True)
        flags = ["-4", "-6", "-t", "-u", "-i", "-R", "-c", "1000"]
        want = _run(capfdbinary, "-P", str(filtered), *flags)
        got = _run(capfdbinary, "-P", str(pcap), *flags, "-f", expr)
        assert got == want, f"{pcap.name} with {expr!r}"


def test_bpf_syntax_error_is_reported(capfdbinary: pytest.CaptureFixture) -> None:
    rc, out, err = _run(capfdbinary, "-P", str(DNS), "-4", "-f", "udp and")
    assert rc == 2 and out.count(b"\n") <= 1 and b"Couldn't parse filter udp and" in err  # at most the header


def test_regex_filter_drops_matching_columns(capfdbinary: pytest.CaptureFixture) -> None:
    rc, out, _ = _run(capfdbinary, "-P", str(DNS), "-4", "-t", "-x", "ipv4_(src|dst|opt)_.*|tcp_opt_.*")
    header, first = out.split(b"\n")[:2]
    assert rc == 0 and len(header.split(b",")) == 257 == len(first.split(b","))  # nprint.md section 5
    assert not any(c.startswith((b"ipv4_src", b"tcp_opt")) for c in header.split(b","))


def test_ip_file_keeps_listed_sources_n_each(tmp_path: Path, capfdbinary: pytest.CaptureFixture) -> None:
    ips = tmp_path / "ips.txt"
    ips.write_text("127.0.0.1\n10.9.9.9\n")
    rc, out, _ = _run(capfdbinary, "-P", str(DNS), "-4", "-I", str(ips), "-c", "3")
    lines = out.decode().splitlines()
    assert rc == 0 and lines[1] == "ip map loaded" and len(lines) == 2 + 3
    ips.write_text("10.9.9.9\n")
    assert _run(capfdbinary, "-P", str(DNS), "-4", "-I", str(ips))[1].decode().splitlines()[1:] == ["ip map loaded"]


def test_csv_hex_input_copies_its_columns_and_stops_at_unparseable(tmp_path: Path,
                                                                    capfdbinary: pytest.CaptureFixture) -> None:
    batch = next(PcapFile(DNS).batches())
    arp = "ffffffffffff000000000001" + "0806" + "0001080006040001" + "00" * 20
    rows = [f"{i},dns,{batch.packet(i).hex()}" for i in range(3)] + ["3,bad,zz", f"4,arp,{arp}", "5,dns,"
                                                                       + batch.packet(3).hex()]
    src = tmp_path / "hex.csv"
    src.write_text("id,label,hexpkt\n" + "\n".join(rows) + "\n")
    rc, out, _ = _run(capfdbinary, "-C", str(src), "-4", "-u")
    lines = out.decode().splitlines()
    assert rc == 0 and lines[0].startswith("id,label,hexpkt,ipv4_ver_0")
    assert [ln.split(",")[:2] for ln in lines[1:4]] == [["0", "dns"], ["1", "dns"], ["2", "dns"]]
    assert lines[4] == "Error parsing line: 3,bad,zz, skipping" and len(lines) == 5  # stops at the ARP frame
    want = _run(capfdbinary, "-P", str(DNS), "-4", "-u", "-c", "3")[1].decode().splitlines()
    assert [ln.split(",", 3)[3] for ln in lines[1:4]] == [ln.split(",", 1)[1] for ln in want[1:]]


def _radiotap_capture(path: Path) -> Path:
    """An 802.11 beacon behind a radiotap header (link type 127); nPrint reads the 802.11 header at byte 56."""
    wlan = bytes([0x80, 0, 0, 0]) + b"\xff" * 6 + bytes([2, 0x11, 0x22, 0x33, 0x44, 0x55]) + bytes(12)
    frame = bytes([0, 0, 8, 0, 0, 0, 0, 0]) + bytes(range(48)) + wlan + b"beacon body" * 3
    with PcapWriter(path, linktype=LINKTYPE_IEEE802_11_RADIOTAP) as w:
        w.write_many([frame, frame[:40]], np.array([1_000_000_000, 2_000_000_000]))
    return path


def test_radiotap_wlan_and_tx_mac(tmp_path: Path, capfdbinary: pytest.CaptureFixture) -> None:
    capture = _radiotap_capture(tmp_path / "radiotap.pcap")
    rc, out, _ = _run(capfdbinary, "-P", str(capture), "-r", "-w", "-4", "-O", "5")
    header, row = (line.split(",") for line in out.decode().splitlines()[:2])
    assert rc == 0 and header[0] == "tx_mac" and len(header) == 1 + 448 + 80 + 480 == len(row)
    assert header[449] == "wlan_type_0" and row[449:529] == row[1:81]  # nPrint writes radiotap bits for -w
    data = next(PcapFile(capture).batches()).packet(0)
    assert row[0] == "02:11:22:33:44:55" == data[56 + 10 : 56 + 16].hex(":")
    assert row[1:449] == [str((b >> (7 - k)) & 1) for b in data[:56] for k in range(8)]
    # the 448-bit radiotap copy runs on into the ipv4 columns, which hold its bits 80-447, then ipv4 fill
    assert row[529 : 529 + 368] == row[81:449] and set(row[529 + 368 :]) == {"-1"}


def test_live_capture_on_loopback(capfdbinary: pytest.CaptureFixture) -> None:
    try:
        lib()
    except LibpcapError as exc:
        pytest.skip(str(exc))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        stop = threading.Event()

        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                while not stop.is_set():
                    tx.sendto(b"netdiff-live", ("127.0.0.1", port))
                    time.sleep(0.05)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            rc, out, err = _run(capfdbinary, "-d", "lo", "-c", "3", "-f", f"udp dst port {port}", "-4", "-u",
                                "-O", "3")
        finally:
            stop.set()
            sender.join()
    if rc == 2 and b"Couldn't open device" in err:
        pytest.skip(f"no permission to capture on lo: {err.decode().strip()}")
    assert rc == 0, err
    assert [ln.split(",")[0] for ln in out.decode().splitlines()[1:]] == [str(port)] * 3


HEAVY = r"torch|kfp|diffusers|accelerate|pandas|sklearn|scipy|matplotlib|minio"
# The drop-in (called once per capture by nprintML and scripts) loads only the codec: numpy and the stdlib.
CODEC_ONLY = HEAVY + r"|PIL|tqdm|netdiff_lib\.(image|repair|evaluate|models|stages|payloads|dataset|kfp_\w+)"
# ... and of those, only what its options need: no argparse or command discovery, no libpcap (ctypes) without
# -f/-d, no decoder without -N, no socket for IPv4 addresses.
LEAN = CODEC_ONLY + r"|argparse|pkgutil|socket|netdiff_lib\.nprint\.(libpcap|decode|verbose)"


@pytest.mark.parametrize(("argv", "forbidden"), [
    (["nprint", "--version"], LEAN),
    (["nprint", "-P", str(DNS), "-4", "-t", "-u", "-i", "-R"], LEAN),  # a real capture, start to finish
    (["nprint", "-P", str(DNS), "-4", "-6", "-t", "-u", "-i", "-p", "16", "-O", "4", "-A"], LEAN),
    (["nprint", "-P", str(DNS), "-4", "-u", "-f", "ip", "-V"], CODEC_ONLY),
    (["--help"], HEAVY),
    (["train", "--help"], HEAVY),
])
def test_commands_start_without_heavy_modules(argv: list[str], forbidden: str) -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "netdiff_lib.cli", *argv],
                          capture_output=True, text=True, cwd=REPO, check=True)
    if argv[1:] == ["--version"]:
        assert proc.stdout == "nprint 1.2.1\n"
    elif argv[0] == "nprint":
        assert proc.stdout.count("\n") == 21  # the header and dns_01's 20 rows
    imported = [ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")]
    assert "netdiff_lib.nprint.options" in imported  # the import trace was read
    heavy = [m for m in imported if re.match(rf"({forbidden})(\.|$)", m)]
    assert not heavy, heavy[:5]
