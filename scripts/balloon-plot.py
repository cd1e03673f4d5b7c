#!/usr/bin/env python3
"""Draws the free page reporting comparison of `scripts/kvm-rig.sh balloon` as an SVG.

    scripts/balloon-plot.py DIR LABEL > balloon-LABEL.svg

DIR holds the rig's memory samples (balloon-axvm.mem, balloon-qemu.mem, written by
rig/init.sh's memwatch: "seconds RssShmem_kB RssAnon_kB" lines and "# seconds guest-line"
marks). Each VMM's guest memory (axvm: RssShmem; QEMU: RssAnon) is drawn against the time
since its guest deleted the 256 MiB it wrote (the curves are aligned there: the VMMs run at
different speeds), until its second write is done, with the delete and the end of the wait
for reporting as dashed lines.
"""
import os
import sys

SERIES = [("axvm", "axvm (RssShmem)", 1, "#1f77b4"), ("qemu", "QEMU (RssAnon)", 2, "#ff7f0e")]
PHASES = [("freed", "delete"), ("waited for reporting", "20 s later")]


def load(path, column):
    samples, marks = [], []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "#":
                marks.append((float(parts[1]), " ".join(parts[2:])))
            elif len(parts) >= 3:
                samples.append((float(parts[0]), int(parts[column]) / 1024))
    return samples, marks


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: balloon-plot.py DIR LABEL")
    directory, label = sys.argv[1], sys.argv[2]
    curves, phases = [], []
    for key, name, column, colour in SERIES:
        path = os.path.join(directory, "balloon-%s.mem" % key)
        if not os.path.exists(path):
            continue
        samples, marks = load(path, column)
        zero = next((t for t, text in marks if "freed" in text), None)
        first = next((t for t, text in marks if "writing 256 MiB" in text), None)
        end = next((t for t, text in marks if "again" in text), None)
        if zero is None or not samples:
            continue
        # From just before the first write to the second write's end (not the VM's teardown).
        lo = (first if first is not None else samples[0][0]) - 2
        hi = end if end is not None else samples[-1][0]
        curves.append((name, colour, [(t - zero, m) for t, m in samples if lo <= t <= hi]))
        if not phases:
            for t, text in marks:
                for needle, short in PHASES:
                    if needle in text:
                        phases.append((t - zero, short))
    if not curves:
        sys.exit("balloon-plot: no samples with a 'freed' mark in %s" % directory)
    width, height, left, right, top, bottom = 760, 380, 64, 24, 56, 48
    t_max = max(t for _, _, c in curves for t, _ in c)
    t_min = min(t for _, _, c in curves for t, _ in c)
    m_max = max(m for _, _, c in curves for _, m in c) * 1.08

    def x(t):
        return left + (t - t_min) / (t_max - t_min or 1) * (width - left - right)

    def y(m):
        return top + (1 - m / (m_max or 1)) * (height - top - bottom)

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">' % (width, height),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="22" font-size="15">Free page reporting (%s): guest memory held by the VMM</text>' % (left, label),
           '<text x="%d" y="40" fill="#555">256 MiB written into a guest tmpfs, deleted, written again; sampled every 100 ms</text>' % left]
    for i in range(6):
        m = m_max * i / 5
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, width - right, y(m), y(m)))
        out.append('<text x="%d" y="%.1f" text-anchor="end" fill="#555">%d MiB</text>' % (left - 6, y(m) + 4, m))
    step = 10 if t_max - t_min > 40 else 5
    t = step * int(t_min / step)
    while t <= t_max:
        if t >= t_min:
            out.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%d s</text>' % (x(t), height - bottom + 16, t))
        t += step
    for at, short in phases:
        out.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#999" stroke-dasharray="4 3"/>' % (x(at), x(at), top, height - bottom))
        out.append('<text x="%.1f" y="%d" fill="#555" text-anchor="end" transform="rotate(-90 %.1f %d)">%s</text>'
                   % (x(at) + 12, top + 4, x(at) + 12, top + 4, short))
    for i, (name, colour, points) in enumerate(curves):
        path = " ".join("%.1f,%.1f" % (x(t), y(m)) for t, m in points)
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (colour, path))
        out.append('<rect x="%d" y="%d" width="14" height="4" fill="%s"/>' % (width - right - 200, top + 8 + 18 * i, colour))
        out.append('<text x="%d" y="%d">%s</text>' % (width - right - 180, top + 14 + 18 * i, name))
    out.append('<text x="%d" y="%d" fill="#555">seconds since the guest deleted what it wrote</text>' % (left, height - 10))
    out.append("</svg>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
