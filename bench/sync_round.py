#!/usr/bin/env python3
"""What one durability round costs the device and the CPU, by how it makes N partitions durable
(issue 12: "one durability round should cost a bounded number of device flushes per shard, not
one per partition").

Each round appends 4 KiB with O_DIRECT to each of --files files (as a shard's flush writes each
dirty partition's new tail), then makes them durable one of these ways:

  per-file        fdatasync every file (what Spool does now), --threads at once (io_uring's
                  workers run them side by side);
  syncfs          one syncfs(2) on the filesystem (every file's size and extents, then one
                  device flush);
  prealloc-one    files preallocated and zero-filled beforehand, so a round overwrites written
                  blocks (no metadata changes), then one fdatasync of one file: the device
                  flush covers every write completed before it;
  prealloc-each   preallocated as above, fdatasync every file.

Prints, per mode, the median wall time of a round, the CPU (this process, user + system) per
round, and the device's flush requests per round (/sys/block/<dev>/stat, field 16, when the
kernel reports it). A benchmark for design notes, not a test; runs on the disk of --dir, and
removes its files.

    python3 bench/sync_round.py --dir /var/tmp/sync-round --files 64 --rounds 200
"""
import argparse
import ctypes
import mmap
import os
import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

BLOCK = 4096
LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def block_device_of(path):
    """The whole-disk name under /sys/block holding `path`, or None."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    link = f"/sys/dev/block/{major}:{minor}"
    if not os.path.exists(link):
        return None
    real = os.path.realpath(link)
    # A partition's directory sits inside its disk's.
    name = os.path.basename(real)
    parent = os.path.basename(os.path.dirname(real))
    return parent if os.path.exists(f"/sys/block/{parent}") else name


def flushes(dev):
    if dev is None:
        return None
    fields = open(f"/sys/block/{dev}/stat").read().split()
    return int(fields[15]) if len(fields) >= 16 else None


def syncfs(fd):
    if LIBC.syncfs(fd) != 0:
        raise OSError(ctypes.get_errno(), "syncfs")


def run(mode, args, dev):
    root = os.path.join(args.dir, mode)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    buf = mmap.mmap(-1, BLOCK)
    buf.write(b"x" * BLOCK)
    fds = []
    prealloc = mode.startswith("prealloc")
    for i in range(args.files):
        fd = os.open(os.path.join(root, f"p{i}.log"), os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
        if prealloc:
            zero = mmap.mmap(-1, BLOCK * 64)
            for off in range(0, BLOCK * args.rounds, BLOCK * 64):
                os.pwrite(fd, zero, off)
            os.fdatasync(fd)
        fds.append(fd)
    dir_fd = os.open(root, os.O_RDONLY)
    os.fsync(dir_fd)
    pool = ThreadPoolExecutor(args.threads)
    walls, cpus = [], []
    f0 = flushes(dev)
    for r in range(args.rounds):
        c0, w0 = time.process_time(), time.monotonic()
        for fd in fds:
            os.pwrite(fd, buf, r * BLOCK)
        if mode in ("per-file", "prealloc-each"):
            list(pool.map(os.fdatasync, fds))
        elif mode == "syncfs":
            syncfs(dir_fd)
        else:
            os.fdatasync(fds[0])
        c1, w1 = time.process_time(), time.monotonic()
        walls.append(w1 - w0)
        cpus.append(c1 - c0)
    f1 = flushes(dev)
    pool.shutdown()
    for fd in fds:
        os.close(fd)
    os.close(dir_fd)
    shutil.rmtree(root, ignore_errors=True)
    per_round = None if f0 is None or f1 is None else (f1 - f0) / args.rounds
    return statistics.median(walls), statistics.mean(cpus), per_round


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--files", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--modes", default="per-file,syncfs,prealloc-one,prealloc-each")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    dev = block_device_of(args.dir)
    print(f"{args.files} files, {args.rounds} rounds of 4 KiB each, {args.threads} threads, "
          f"device {dev}")
    print("| mode | round ms (median) | CPU ms per round | device flushes per round |")
    print("|---|---:|---:|---:|")
    for mode in args.modes.split(","):
        wall, cpu, fl = run(mode, args, dev)
        fl = "?" if fl is None else f"{fl:.1f}"
        print(f"| {mode} | {wall * 1000:.2f} | {cpu * 1000:.2f} | {fl} |", flush=True)


if __name__ == "__main__":
    main()
