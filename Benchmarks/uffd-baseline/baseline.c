// C reference VMM for the first-touch benchmark (scripts/bench-faults.sh): runs the same
// memtest guest as axvm with the same mechanism — one memfd, a VMM view and a guest window,
// a KVM memslot over the window, userfaultfd MISSING|MINOR on it, a fault thread that
// materializes the page through the VMM view and maps it with UFFDIO_CONTINUE — but with
// no address-space library. Usage: baseline GUEST.bin MEMORY_MiB lazy|populated ORDER SEED
// Prints: pages=<test pages> faults=<n> run_ns=<KVM_RUN loop time> checksum=<hex>
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CHECK(x) do { if ((x) < 0) { perror(#x); exit(2); } } while (0)
static uint8_t *view, *window;
static int uffd;
static long faults;

static uint64_t now_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void *fault_thread(void *arg) {
    (void)arg;
    struct pollfd p = { uffd, POLLIN, 0 };
    struct uffd_msg msg;
    for (;;) {
        if (poll(&p, 1, -1) < 0) continue;
        if (read(uffd, &msg, sizeof msg) != sizeof msg) continue;
        if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
        uint64_t page = msg.arg.pagefault.address & ~0xfffull;
        if (!(msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR)) {
            view[page - (uint64_t)window] = 0;   // the kernel allocates a zeroed page
            faults++;
        }
        struct uffdio_continue c = { { page, 4096 }, 0, 0 };
        if (ioctl(uffd, UFFDIO_CONTINUE, &c) < 0 && errno != EEXIST) { perror("UFFDIO_CONTINUE"); exit(2); }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: %s GUEST MiB lazy|populated ORDER SEED\n", argv[0]); return 2; }
    uint64_t mem = strtoull(argv[2], 0, 0) << 20;
    int lazy = strcmp(argv[3], "lazy") == 0;
    int fd = open(argv[1], O_RDONLY); CHECK(fd);
    static uint8_t image[1 << 16];
    ssize_t n = read(fd, image, sizeof image); CHECK(n);
    uint64_t entry = *(uint64_t *)(image + 8);

    int mfd = memfd_create("baseline", MFD_CLOEXEC); CHECK(mfd);
    CHECK(ftruncate(mfd, mem));
    view = mmap(0, mem, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    window = mmap(0, mem, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (view == MAP_FAILED || window == MAP_FAILED) { perror("mmap"); return 2; }
    if (!lazy) for (uint64_t o = 0; o < mem; o += 4096) view[o] = 0;

    // Boot data, as axvm lays it out (Sources/AxVMM/X86/X86Boot.swift).
    // The parameter page of Sources/AxVMM/X86/X86Boot.swift (GuestParams): magic, memory,
    // test base, test size, order, stride, seed, 3 results, hole start and size (no hole
    // below 3 GiB), spacing 1, one vCPU, split mode. vCPU 0's results are at 0x100.
    uint64_t params[15] = { 0x4d5241504d565841ull, mem, 2 << 20, mem - (2 << 20), strtoull(argv[4], 0, 0), 16,
                            strtoull(argv[5], 0, 0), 0, 0, 0, 0xc0000000ull, 0, 1, 1, 0 };
    memcpy(view + 0x7000, params, sizeof params);
    uint64_t gdt[5] = { 0, 0x00af9b000000ffffull, 0x00cf93000000ffffull, 0x00affb000000ffffull, 0x00cff3000000ffffull };
    memcpy(view + 0x500, gdt, sizeof gdt);
    *(uint64_t *)(view + 0x9000) = 0xa000 | 7;
    for (int i = 0; i < 4; i++) ((uint64_t *)(view + 0xa000))[i] = (0xb000 + i * 0x1000) | 7;
    for (int i = 0; i < 2048; i++) ((uint64_t *)(view + 0xb000))[i] = ((uint64_t)i << 21) | 0x87;
    memcpy(view + 0x100000, image, n);

    if (lazy) {
        uffd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (uffd >= 0) uffd = ioctl(uffd, USERFAULTFD_IOC_NEW, O_CLOEXEC);
        else uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
        CHECK(uffd);
        struct uffdio_api api = { UFFD_API, UFFD_FEATURE_MINOR_SHMEM, 0 };
        CHECK(ioctl(uffd, UFFDIO_API, &api));
        struct uffdio_register reg = { { (uint64_t)window, mem }, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR, 0 };
        CHECK(ioctl(uffd, UFFDIO_REGISTER, &reg));
        pthread_t t;
        pthread_create(&t, 0, fault_thread, 0);
    }

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC); CHECK(kvm);
    int vm = ioctl(kvm, KVM_CREATE_VM, 0); CHECK(vm);
    CHECK(ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000));
    struct kvm_userspace_memory_region region = { 0, 0, 0, mem, (uint64_t)window };
    CHECK(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region));
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0); CHECK(vcpu);
    int runsize = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(0, runsize, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);

    struct kvm_sregs s; CHECK(ioctl(vcpu, KVM_GET_SREGS, &s));
    struct kvm_segment code = { .base = 0, .limit = 0xffffffff, .selector = 8, .type = 11, .present = 1, .s = 1, .l = 1, .g = 1 };
    struct kvm_segment data = code; data.selector = 0x10; data.type = 3; data.db = 1; data.l = 0;
    s.cs = code; s.ds = s.es = s.fs = s.gs = s.ss = data;
    s.gdt.base = 0x500; s.gdt.limit = 39;
    s.cr3 = 0x9000; s.cr4 = 1 << 5; s.cr0 = 1 | 1 << 4 | 1 << 5 | 1u << 31; s.efer = 1 << 8 | 1 << 10;
    CHECK(ioctl(vcpu, KVM_SET_SREGS, &s));
    struct kvm_regs r = { 0 };
    r.rflags = 2; r.rip = 0x100000 + entry; r.rsp = 0x80000; r.rdi = 0x7000; r.rsi = 0;
    CHECK(ioctl(vcpu, KVM_SET_REGS, &r));

    uint64_t t0 = now_ns();
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) { if (errno == EINTR) continue; perror("KVM_RUN"); return 2; }
        if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT) {
            if (run->io.port == 0xf4) break;
            continue;
        }
        if (run->exit_reason == KVM_EXIT_IO) { memset((uint8_t *)run + run->io.data_offset, 0xff, run->io.size); continue; }
        fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
        return 3;
    }
    uint64_t t1 = now_ns();
    printf("pages=%llu faults=%ld run_ns=%llu checksum=%llx\n", (unsigned long long)((mem - (2 << 20)) >> 12), faults,
           (unsigned long long)(t1 - t0), (unsigned long long)*(uint64_t *)(view + 0x7000 + 0x100));
    return 0;
}
