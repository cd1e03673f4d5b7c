// diskbench DEV [SEQ_MIB [RANDOM_OPS]]: what a Linux guest gets from a block device, with the
// page cache out of the way (O_DIRECT): sequential 4 MiB writes and reads over SEQ_MIB
// (default 64) MiB, then RANDOM_OPS (default 2000) random 4 KiB writes and reads over the
// whole device (a fixed-seed xorshift, the same offsets for every VMM). One line per pattern:
//   diskbench: seq-write-4M 812.3 MB/s 203 IOPS p50 4801.2 us p99 6011.0 us 1.00 interrupts/request
// Interrupts are the guest's own count of virtio interrupts (/proc/interrupts) per request.
// Built static for the guest (scripts/kvm-rig.sh build; no libc beyond glibc's static one).
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

// The sum of every CPU's count on the /proc/interrupts lines that name a virtio device.
static unsigned long virtio_interrupts(void) {
    FILE *f = fopen("/proc/interrupts", "r");
    if (!f) return 0;
    char line[1024];
    unsigned long sum = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, "virtio")) continue;
        char *p = strchr(line, ':');
        if (!p) continue;
        for (p++;;) {
            char *end;
            unsigned long v = strtoul(p, &end, 10);
            if (end == p) break;
            sum += v;
            p = end;
        }
    }
    fclose(f);
    return sum;
}

static int compare(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t state = 0x9e3779b97f4a7c15u;
static uint64_t next_random(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

// COUNT requests of BS bytes, sequential from 0 (wrapping at SPAN) or at random BS-aligned
// offsets below SPAN; returns 0, or 1 after printing why it stopped.
static int run(int fd, const char *name, size_t bs, long count, uint64_t span, int random, int write, char *buf) {
    uint64_t *lat = malloc(sizeof *lat * (size_t)count);
    if (!lat) { printf("diskbench: %s: out of memory\n", name); return 1; }
    uint64_t blocks = span / bs;
    unsigned long irq0 = virtio_interrupts();
    uint64_t t0 = now_ns();
    for (long i = 0; i < count; i++) {
        off_t at = (off_t)((random ? next_random() % blocks : (uint64_t)i % blocks) * bs);
        uint64_t s = now_ns();
        ssize_t n = write ? pwrite(fd, buf, bs, at) : pread(fd, buf, bs, at);
        if (n != (ssize_t)bs) {
            printf("diskbench: %s: request %ld at %lld: %zd of %zu bytes\n", name, i, (long long)at, n, bs);
            free(lat);
            return 1;
        }
        lat[i] = now_ns() - s;
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    unsigned long irqs = virtio_interrupts() - irq0;
    qsort(lat, (size_t)count, sizeof *lat, compare);
    printf("diskbench: %s %.1f MB/s %.0f IOPS p50 %.1f us p99 %.1f us %.2f interrupts/request\n", name,
           (double)bs * (double)count / secs / 1e6, (double)count / secs, (double)lat[count / 2] / 1e3,
           (double)lat[count * 99 / 100] / 1e3, (double)irqs / (double)count);
    fflush(stdout);
    free(lat);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: diskbench DEV [SEQ_MIB [RANDOM_OPS]]\n"); return 2; }
    long seq_mib = argc > 2 ? atol(argv[2]) : 64, ops = argc > 3 ? atol(argv[3]) : 2000;
    int fd = open(argv[1], O_RDWR | O_DIRECT);
    if (fd < 0) { perror(argv[1]); return 1; }
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) != 0 || size < (4u << 20)) {
        printf("diskbench: %s: %llu bytes, 4 MiB at least needed\n", argv[1], (unsigned long long)size);
        return 1;
    }
    char *buf;
    if (posix_memalign((void **)&buf, 4096, 4u << 20) != 0) return 1;
    memset(buf, 0x5a, 4u << 20);
    uint64_t seq_span = (uint64_t)seq_mib << 20 < size ? (uint64_t)seq_mib << 20 : size;
    long seq_count = seq_mib / 4 > 0 ? seq_mib / 4 : 1;
    printf("diskbench: %s, %llu MiB, sequential %ld x 4 MiB, random %ld x 4 KiB\n", argv[1],
           (unsigned long long)(size >> 20), seq_count, ops);
    int bad = run(fd, "seq-write-4M", 4u << 20, seq_count, seq_span, 0, 1, buf)
           || run(fd, "seq-read-4M", 4u << 20, seq_count, seq_span, 0, 0, buf)
           || run(fd, "rand-write-4K", 4096, ops, size, 1, 1, buf)
           || run(fd, "rand-read-4K", 4096, ops, size, 1, 0, buf);
    close(fd);
    return bad;
}
