#!/usr/bin/env python3
"""cpio-newc.py DIR: DIR's tree as a cpio "newc" archive on stdout (what the Linux kernel
unpacks as an initramfs), names sorted, owner root. For trees whose busybox cannot run on
this host (an arm64 one), and hosts without cpio."""
import os
import stat
import sys

root, out, ino = sys.argv[1], sys.stdout.buffer, 1


def entry(name, st, data):
    global ino
    name = name.encode() + b"\0"
    hdr = b"070701" + b"".join(b"%08X" % v for v in (ino, st.st_mode, 0, 0, 1, int(st.st_mtime), len(data), 0, 0, 0, 0, len(name), 0))
    ino += 1
    out.write(hdr + name + b"\0" * (-(110 + len(name)) % 4) + data + b"\0" * (-len(data) % 4))


paths = []
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        paths.append(os.path.relpath(os.path.join(d, n), root))
for rel in sorted(paths):
    full = os.path.join(root, rel)
    st = os.lstat(full)
    if stat.S_ISLNK(st.st_mode):
        data = os.readlink(full).encode()
    elif stat.S_ISREG(st.st_mode):
        data = open(full, "rb").read()
    else:
        data = b""
    entry(rel, st, data)
entry("TRAILER!!!", os.stat_result((0,) * 10), b"")
