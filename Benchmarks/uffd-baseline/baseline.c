// C reference VMM for the first-touch benchmarks (scripts/bench-faults.sh, scripts/bench-smp.sh):
// runs the same memtest guest as axvm with the same mechanism — one memfd, a VMM view and a
// guest window, a KVM memslot over the window, userfaultfd MISSING|MINOR on it, fault threads
// that materialize the page in the memfd and map it with UFFDIO_CONTINUE — but with no
// address-space library.
//
// riscv64 (guests/riscv64/defs.inc): RAM at 0x8000_0000, every hart entered at once in VS-mode
// with satp = 0 (no guest translation: G-stage only), a0 = the parameter page, a1 = the hart
// index, sp = its stack; the run ends when every hart has stored its exit code to MMIO
// 0x1010_0000. KVM keeps every vCPU but 0 powered off (SBI HSM) until KVM_SET_MP_STATE.
//
// Usage: baseline GUEST.bin MEMORY_MiB lazy|populated ORDER SEED
//                 [VCPUS [FAULT_THREADS [split|overlap [BATCH [view|fallocate [poll|exclusive]]]]]]
//        baseline hold-vm   (one empty VM until killed: see main)
// Defaults 1, 1, split, 1, view, poll. Every vCPU runs on its own thread from the same long-mode
// entry with rsi = its index and its own stack (Sources/AxVMM/X86/X86Boot.swift); the run
// ends when every vCPU has written its exit code to port 0xf4.
// Built for aarch64 (the arm64 KVM rig, scripts/kvm-rig.sh build aarch64), the same VMM runs
// the AArch64 guests (guests/aarch64/defs.inc): RAM at 0x4000_0000, entry at EL1h with the
// MMU on (an identity map of 1 GiB blocks the VMM writes), x0 = the parameter page, x1 = the
// vCPU index, and the run ends when every vCPU has stored its exit code to MMIO 0x0910_0000. The fault threads all poll and
// read the one non-blocking userfaultfd (a message goes to one reader; the others get EAGAIN).
// BATCH: messages a fault thread reads at once at most (axvm reads up to 64), served one after
// the other. view: a missing page is brought into the memfd by a write fault through the VMM's
// view; fallocate: by fallocate on the memfd, as axvm does. poll: the fault threads wait in
// poll(2) on the userfaultfd, as axvm does (every message wakes them all); exclusive: each in its
// own epoll with EPOLLEXCLUSIVE (a message wakes one).
//
// Prints one line: pages=<test pages> faults=<missing-page events> run_ns=<first KVM_RUN →
// last vCPU's exit> checksum=<hex: split, the sum of the vCPUs' checksums (= the one-vCPU
// checksum); overlap, vCPU 0's>, then vcpus=V threads=T mode=split|overlap mismatches=<sum>
// minor=<minor-fault events> eexist=<CONTINUEs that found the page mapped, each followed by
// UFFDIO_WAKE> eagain=<wake-ups of a fault thread whose read found no message left>
// batched=<messages read together with others>, then per vCPU
// v<i>=<checksum hex>:<pages>:<run_ns>:<cpu_ns>:<wait_ns> and per fault thread
// t<i>=<events>:<busy_ns>:<cpu_ns>:<wait_ns>:<preempted> (busy: from a message read to its
// CONTINUE/WAKE done; cpu and wait: the thread's time on a CPU and runnable but waiting for
// one, from /proc's schedstat, 0 where the kernel has none; preempted: its involuntary context
// switches). No extra field name ends in "pages", "faults", "run_ns" or "checksum", so the
// greedy sed of rig/init.sh and the key=value split of the bench scripts read the first four
// fields as before. Exit status 1 if a vCPU reported mismatches.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CHECK(x) do { if ((x) < 0) { perror(#x); exit(2); } } while (0)
#define MAX_VCPUS 64   // the parameter page's slots (X86Layout.maxVCPUs)
#define MAX_THREADS 64
#define PARAMS 0x7000                      // offsets from the start of RAM (the view)
#define SLOT(i) (PARAMS + 0x100 + 48 * (i))
#if defined(__aarch64__)
// guests/aarch64/defs.inc: RAM from 1 GiB; devices are MMIO below it.
#define RAM_BASE 0x40000000ull
#define L1_TABLE 0x9000                    // the stage 1 table of 1 GiB blocks, RAM + 0x9000
#define EXIT_DEV 0x09100000ull             // 32-bit store: this vCPU's exit code
#define STACK_TOP 0x80000                  // vCPU i's sp: RAM + STACK_TOP - 1 KiB * i, as on x86
#define CORE_REG(r) (KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (offsetof(struct kvm_regs, r) / sizeof(uint32_t)))
#elif defined(__riscv)
// guests/riscv64/defs.inc: RAM from 2 GiB (QEMU virt's DRAM base); devices are MMIO below it.
#define RAM_BASE 0x80000000ull
#define EXIT_DEV 0x10100000ull             // 32-bit store: this hart's exit code
#define STACK_TOP 0x80000                  // hart i's sp: RAM + STACK_TOP - 1 KiB * i, as on x86
#define CORE_REG(r) (KVM_REG_RISCV | KVM_REG_SIZE_U64 | KVM_REG_RISCV_CORE | KVM_REG_RISCV_CORE_REG(r))
#else
#define RAM_BASE 0ull
#endif

static uint8_t *view, *window;
static int uffd, mfd, batch = 1, fill_fallocate, exclusive;

// Each fault thread's counters, written by that thread only, read after the vCPUs ended
// (a counter read while its thread is still polling can only be stale by events that came
// after the guest was done, and there are none). Padded to a cache line each.
struct handler_stats { long events, missing, minor, eexist, eagain, batched; uint64_t busy_ns; pid_t tid; char pad[4]; };
static struct handler_stats hstats[MAX_THREADS];

static uint64_t now_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

// A thread's time on a CPU and waiting on a run queue, ns (/proc/<pid>/task/<tid>/schedstat).
static void schedstat(pid_t tid, uint64_t *cpu, uint64_t *wait) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", (int)tid);
    unsigned long long c = 0, w = 0;
    FILE *f = fopen(path, "r");
    if (f) { if (fscanf(f, "%llu %llu", &c, &w) != 2) c = w = 0; fclose(f); }
    *cpu = c; *wait = w;
}

// A thread's involuntary context switches (/proc/<pid>/task/<tid>/status).
static long preemptions(pid_t tid) {
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)tid);
    long n = 0;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) if (sscanf(line, "nonvoluntary_ctxt_switches: %ld", &n) == 1) break;
    fclose(f);
    return n;
}

static void *fault_thread(void *arg) {
    struct handler_stats *st = arg;
    st->tid = gettid();
    struct pollfd p = { uffd, POLLIN, 0 };
    // exclusive: each thread waits in its own epoll with EPOLLEXCLUSIVE, so that a new message
    // wakes one waiting thread, not all of them (the uffd's poll queue wakes every waiter).
    int ep = -1;
    if (exclusive) {
        ep = epoll_create1(EPOLL_CLOEXEC); CHECK(ep);
        struct epoll_event e = { .events = EPOLLIN | EPOLLEXCLUSIVE };
        CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, uffd, &e));
    }
    struct uffd_msg msgs[64];
    for (;;) {
        struct epoll_event e;
        if (exclusive ? epoll_wait(ep, &e, 1, -1) < 0 : poll(&p, 1, -1) < 0) continue;
        // poll: every waiting thread wakes for a new message; one read gets it, the others EAGAIN.
        ssize_t got = read(uffd, msgs, batch * sizeof msgs[0]);
        if (got < 0) {
            if (errno == EAGAIN) st->eagain++;
            if (errno == EAGAIN || errno == EINTR) continue;
            perror("read(userfaultfd)"); exit(2);
        }
        if (got > (ssize_t)sizeof msgs[0]) st->batched += got / sizeof msgs[0];
        for (struct uffd_msg *m = msgs; m < msgs + got / sizeof msgs[0]; m++) {
            if (m->event != UFFD_EVENT_PAGEFAULT) continue;
            uint64_t t0 = now_ns();
            uint64_t page = m->arg.pagefault.address & ~0xfffull;
            if (!(m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR)) {
                // The kernel allocates a zeroed page in the memfd.
                if (fill_fallocate) {
                    // As axvm does (HostMemory.materialize): no mapping in the VMM, but
                    // shmem's fallocate takes the inode lock exclusively.
                    if (fallocate(mfd, 0, page - (uint64_t)window, 4096) < 0) { perror("fallocate"); exit(2); }
                } else {
                    // An atomic add of zero, not a store: a second event for the same page
                    // (two vCPUs) may come after the guest has written it, and must not change
                    // its bytes. Volatile, or the compiler makes it a load (a read fault, which
                    // leaves the memfd hole for CONTINUE to refuse).
                    __atomic_fetch_add((volatile uint8_t *)view + (page - (uint64_t)window), 0, __ATOMIC_RELAXED);
                }
                st->missing++;
            } else {
                st->minor++;
            }
            struct uffdio_continue c = { { page, 4096 }, 0, 0 };
            if (ioctl(uffd, UFFDIO_CONTINUE, &c) < 0) {
                if (errno != EEXIST) { perror("UFFDIO_CONTINUE"); exit(2); }
                // Another thread mapped it (its CONTINUE woke the waiters it saw); this
                // event's vCPU may have queued after that wake-up: wake it.
                st->eexist++;
                struct uffdio_range w = { page, 4096 };
                CHECK(ioctl(uffd, UFFDIO_WAKE, &w));
            }
            st->events++;
            st->busy_ns += now_ns() - t0;
        }
    }
    return NULL;
}

struct vcpu { int fd; struct kvm_run *run; pthread_t thread; uint64_t end_ns, cpu_ns, wait_ns; int code; };
static struct vcpu vcpus[MAX_VCPUS];
static pthread_barrier_t start_line;
static uint64_t t_start;

static void *vcpu_thread(void *arg) {
    struct vcpu *v = arg;
    // All vCPUs start together; the last to arrive takes the start time.
    if (pthread_barrier_wait(&start_line) == PTHREAD_BARRIER_SERIAL_THREAD) t_start = now_ns();
    for (;;) {
        if (ioctl(v->fd, KVM_RUN, 0) < 0) { if (errno == EINTR) continue; perror("KVM_RUN"); exit(2); }
        struct kvm_run *run = v->run;
#if defined(__aarch64__) || defined(__riscv)
        if (run->exit_reason == KVM_EXIT_MMIO) {
            // The exit device ends this vCPU; UART writes are dropped, reads (FR) give 0.
            if (run->mmio.is_write && run->mmio.phys_addr == EXIT_DEV) { v->code = run->mmio.data[0]; break; }
            if (!run->mmio.is_write) memset(run->mmio.data, 0, sizeof run->mmio.data);
            continue;
        }
#endif
        if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT) {
            if (run->io.port == 0xf4) { v->code = *((uint8_t *)run + run->io.data_offset); break; }
            continue;
        }
        if (run->exit_reason == KVM_EXIT_IO) { memset((uint8_t *)run + run->io.data_offset, 0xff, run->io.size); continue; }
        fprintf(stderr, "vCPU %ld: unexpected exit %u\n", (long)(v - vcpus), run->exit_reason);
        exit(3);
    }
    v->end_ns = now_ns();
    schedstat(gettid(), &v->cpu_ns, &v->wait_ns);
    return NULL;
}

int main(int argc, char **argv) {
    // `baseline hold-vm`: creates one empty VM and sleeps until killed. KVM 6.1 turns SVM on
    // when the first VM is created and off after the last is destroyed; the x86 rig keeps
    // this VM so that SVM is not toggled between its cases (rig/init.sh, setup).
    if (argc == 2 && strcmp(argv[1], "hold-vm") == 0) {
        int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC); CHECK(kvm);
        CHECK(ioctl(kvm, KVM_CREATE_VM, 0));
        for (;;) pause();
    }
    if (argc < 6) {
        fprintf(stderr, "usage: %s GUEST MiB lazy|populated ORDER SEED [VCPUS [FAULT_THREADS [split|overlap [BATCH [view|fallocate [poll|exclusive]]]]]]\n", argv[0]);
        return 2;
    }
    uint64_t mem = strtoull(argv[2], 0, 0) << 20;
    int lazy = strcmp(argv[3], "lazy") == 0;
    int nv = argc > 6 ? atoi(argv[6]) : 1, nt = argc > 7 ? atoi(argv[7]) : 1;
    int overlap = argc > 8 && strcmp(argv[8], "overlap") == 0;
    batch = argc > 9 ? atoi(argv[9]) : 1;
    fill_fallocate = argc > 10 && strcmp(argv[10], "fallocate") == 0;
    exclusive = argc > 11 && strcmp(argv[11], "exclusive") == 0;
    if (nv < 1 || nv > MAX_VCPUS || nt < 1 || nt > MAX_THREADS || (argc > 8 && !overlap && strcmp(argv[8], "split")) ||
        batch < 1 || batch > 64 || (argc > 10 && !fill_fallocate && strcmp(argv[10], "view")) ||
        (argc > 11 && !exclusive && strcmp(argv[11], "poll"))) {
        fprintf(stderr, "vCPUs and fault threads: 1 to 64; mode: split or overlap; batch: 1 to 64; "
                        "fill: view or fallocate; wait: poll or exclusive\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY); CHECK(fd);
    static uint8_t image[1 << 16];
    ssize_t n = read(fd, image, sizeof image); CHECK(n);
    uint64_t entry = *(uint64_t *)(image + 8);

    mfd = memfd_create("baseline", MFD_CLOEXEC); CHECK(mfd);
    CHECK(ftruncate(mfd, mem));
    view = mmap(0, mem, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    window = mmap(0, mem, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (view == MAP_FAILED || window == MAP_FAILED) { perror("mmap"); return 2; }
    if (!lazy) for (uint64_t o = 0; o < mem; o += 4096) view[o] = 0;

    // Boot data, as axvm lays it out (Sources/AxVMM/X86/X86Boot.swift).
    // The parameter page (GuestParams): magic, memory, test base, test size, order, stride,
    // seed, 3 unused results, hole start and size (no hole below 3 GiB), spacing 1, vCPUs,
    // mode (0 split, 1 overlap). vCPU i's results are at 0x100 + 48·i.
    // aarch64: the test base and the hole are guest-physical, RAM + 2 MiB; no hole (size 0).
#if defined(__aarch64__) || defined(__riscv)
    uint64_t hole_start = RAM_BASE + mem;
#else
    uint64_t hole_start = 0xc0000000ull;
#endif
    uint64_t params[15] = { 0x4d5241504d565841ull, mem, RAM_BASE + (2 << 20), mem - (2 << 20), strtoull(argv[4], 0, 0), 16,
                            strtoull(argv[5], 0, 0), 0, 0, 0, hole_start, 0, 1, (uint64_t)nv, (uint64_t)overlap };
    memcpy(view + PARAMS, params, sizeof params);
#if defined(__aarch64__)
    // Stage 1 identity map (guests/aarch64/defs.inc): 1 GiB blocks; block 0 (the devices, the
    // ROM) Device-nGnRnE (AttrIndx 0), the blocks of RAM Normal write-back (AttrIndx 1), inner
    // shareable; AF set on all, so the guest takes no access-flag faults.
    uint64_t *l1 = (uint64_t *)(view + L1_TABLE);
    l1[0] = 1ull << 10 | 1;
    for (uint64_t gib = 1; gib < (RAM_BASE + mem + (1ull << 30) - 1) >> 30; gib++)
        l1[gib] = gib << 30 | 1ull << 10 | 3ull << 8 | 1ull << 2 | 1;
#elif defined(__riscv)
    // No page tables: the guest runs with satp = 0.
#else
    uint64_t gdt[5] = { 0, 0x00af9b000000ffffull, 0x00cf93000000ffffull, 0x00affb000000ffffull, 0x00cff3000000ffffull };
    memcpy(view + 0x500, gdt, sizeof gdt);
    *(uint64_t *)(view + 0x9000) = 0xa000 | 7;
    for (int i = 0; i < 4; i++) ((uint64_t *)(view + 0xa000))[i] = (0xb000 + i * 0x1000) | 7;
    for (int i = 0; i < 2048; i++) ((uint64_t *)(view + 0xb000))[i] = ((uint64_t)i << 21) | 0x87;
#endif
    memcpy(view + 0x100000, image, n);

    if (lazy) {
        uffd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (uffd >= 0) uffd = ioctl(uffd, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        else uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        CHECK(uffd);
        struct uffdio_api api = { UFFD_API, UFFD_FEATURE_MINOR_SHMEM, 0 };
        CHECK(ioctl(uffd, UFFDIO_API, &api));
        struct uffdio_register reg = { { (uint64_t)window, mem }, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR, 0 };
        CHECK(ioctl(uffd, UFFDIO_REGISTER, &reg));
        for (int i = 0; i < nt; i++) {
            pthread_t t;
            if (pthread_create(&t, 0, fault_thread, &hstats[i])) { fprintf(stderr, "pthread_create failed\n"); return 2; }
        }
    }

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC); CHECK(kvm);
    int vm = ioctl(kvm, KVM_CREATE_VM, 0); CHECK(vm);
#if !defined(__aarch64__) && !defined(__riscv)
    CHECK(ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000));
#endif
    struct kvm_userspace_memory_region region = { 0, 0, RAM_BASE, mem, (uint64_t)window };
    CHECK(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region));
    int runsize = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0); CHECK(runsize);
#if defined(__aarch64__)
    struct kvm_vcpu_init init;
    CHECK(ioctl(vm, KVM_ARM_PREFERRED_TARGET, &init));
#endif
    // No KVM_SET_CPUID2: the guest needs no CPUID leaf, and the identity map's physical
    // addresses stay far below the default MAXPHYADDR.
    for (int i = 0; i < nv; i++) {
        struct vcpu *v = &vcpus[i];
        v->fd = ioctl(vm, KVM_CREATE_VCPU, i); CHECK(v->fd);
        v->run = mmap(0, runsize, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
        if (v->run == MAP_FAILED) { perror("mmap(kvm_run)"); return 2; }
#if defined(__aarch64__)
        CHECK(ioctl(v->fd, KVM_ARM_VCPU_INIT, &init));
        // MAIR: attr 0 Device-nGnRnE, attr 1 Normal WB. TCR: T0SZ 25 (39-bit VA), walks inner
        // and outer write-back, inner shareable, 4 KiB granule, EPD1 (no TTBR1 walks), IPS
        // 40 bits. SCTLR: M, C, I and the RES1 bits.
        struct { uint64_t id, value; } regs[] = {
            { ARM64_SYS_REG(3, 0, 10, 2, 0), 0xff00 },                                                // MAIR_EL1
            { ARM64_SYS_REG(3, 0, 2, 0, 2), 25 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 23 | 2ull << 32 }, // TCR_EL1
            { ARM64_SYS_REG(3, 0, 2, 0, 0), RAM_BASE + L1_TABLE },                                    // TTBR0_EL1
            { ARM64_SYS_REG(3, 0, 1, 0, 0), 0x30d01805 },                                             // SCTLR_EL1
            { CORE_REG(regs.pstate), 0x3c5 },                                                         // EL1h, DAIF masked
            { CORE_REG(sp_el1), RAM_BASE + STACK_TOP - 0x400 * (uint64_t)i },
            { CORE_REG(regs.regs[0]), RAM_BASE + PARAMS },
            { CORE_REG(regs.regs[1]), (uint64_t)i },
            { CORE_REG(regs.pc), RAM_BASE + 0x100000 + entry },
        };
        for (size_t k = 0; k < sizeof regs / sizeof regs[0]; k++) {
            struct kvm_one_reg r = { regs[k].id, (uint64_t)&regs[k].value };
            if (ioctl(v->fd, KVM_SET_ONE_REG, &r) < 0) { fprintf(stderr, "KVM_SET_ONE_REG %#llx: %s\n", (unsigned long long)regs[k].id, strerror(errno)); return 2; }
        }
#elif defined(__riscv)
        // KVM's reset state is S-mode (VS), sstatus.SIE clear, satp 0: only pc, sp, a0, a1.
        struct { uint64_t id, value; } regs[] = {
            { CORE_REG(mode), KVM_RISCV_MODE_S },
            { CORE_REG(regs.sp), RAM_BASE + STACK_TOP - 0x400 * (uint64_t)i },
            { CORE_REG(regs.a0), RAM_BASE + PARAMS },
            { CORE_REG(regs.a1), (uint64_t)i },
            { CORE_REG(regs.pc), RAM_BASE + 0x100000 + entry },
        };
        for (size_t k = 0; k < sizeof regs / sizeof regs[0]; k++) {
            struct kvm_one_reg r = { regs[k].id, (uint64_t)&regs[k].value };
            if (ioctl(v->fd, KVM_SET_ONE_REG, &r) < 0) { fprintf(stderr, "KVM_SET_ONE_REG %#llx: %s\n", (unsigned long long)regs[k].id, strerror(errno)); return 2; }
        }
        // Harts other than 0 start powered off (waiting for SBI HSM hart_start): all run now.
        struct kvm_mp_state mp = { KVM_MP_STATE_RUNNABLE };
        CHECK(ioctl(v->fd, KVM_SET_MP_STATE, &mp));
#else
        struct kvm_sregs s; CHECK(ioctl(v->fd, KVM_GET_SREGS, &s));
        struct kvm_segment code = { .base = 0, .limit = 0xffffffff, .selector = 8, .type = 11, .present = 1, .s = 1, .l = 1, .g = 1 };
        struct kvm_segment data = code; data.selector = 0x10; data.type = 3; data.db = 1; data.l = 0;
        s.cs = code; s.ds = s.es = s.fs = s.gs = s.ss = data;
        s.gdt.base = 0x500; s.gdt.limit = 39;
        s.cr3 = 0x9000; s.cr4 = 1 << 5; s.cr0 = 1 | 1 << 4 | 1 << 5 | 1u << 31; s.efer = 1 << 8 | 1 << 10;
        CHECK(ioctl(v->fd, KVM_SET_SREGS, &s));
        struct kvm_regs r = { 0 };
        r.rflags = 2; r.rip = 0x100000 + entry; r.rsp = 0x80000 - 0x400 * (uint64_t)i; r.rdi = PARAMS; r.rsi = i;
        CHECK(ioctl(v->fd, KVM_SET_REGS, &r));
#endif
    }

    pthread_barrier_init(&start_line, 0, nv);
    for (int i = 0; i < nv; i++)
        if (pthread_create(&vcpus[i].thread, 0, vcpu_thread, &vcpus[i])) { fprintf(stderr, "pthread_create failed\n"); return 2; }
    uint64_t t_end = 0;
    for (int i = 0; i < nv; i++) {
        pthread_join(vcpus[i].thread, 0);
        if (vcpus[i].end_ns > t_end) t_end = vcpus[i].end_ns;
    }

    uint64_t sum = 0, mismatches = 0;
    for (int i = 0; i < nv; i++) {
        sum += *(uint64_t *)(view + SLOT(i));
        mismatches += *(uint64_t *)(view + SLOT(i) + 8);
    }
    uint64_t checksum = overlap ? *(uint64_t *)(view + SLOT(0)) : sum;
    long missing = 0, minor = 0, eexist = 0, eagain = 0, batched = 0;
    for (int i = 0; i < nt; i++) {
        missing += hstats[i].missing; minor += hstats[i].minor; eexist += hstats[i].eexist; eagain += hstats[i].eagain;
        batched += hstats[i].batched;
    }
    printf("pages=%llu faults=%ld run_ns=%llu checksum=%llx vcpus=%d threads=%d mode=%s mismatches=%llu minor=%ld eexist=%ld eagain=%ld batched=%ld",
           (unsigned long long)((mem - (2 << 20)) >> 12), missing, (unsigned long long)(t_end - t_start),
           (unsigned long long)checksum, nv, lazy ? nt : 0, overlap ? "overlap" : "split",
           (unsigned long long)mismatches, minor, eexist, eagain, batched);
    for (int i = 0; i < nv; i++)
        printf(" v%d=%llx:%llu:%llu:%llu:%llu", i, (unsigned long long)*(uint64_t *)(view + SLOT(i)),
               (unsigned long long)*(uint64_t *)(view + SLOT(i) + 16), (unsigned long long)(vcpus[i].end_ns - t_start),
               (unsigned long long)vcpus[i].cpu_ns, (unsigned long long)vcpus[i].wait_ns);
    for (int i = 0; lazy && i < nt; i++) {
        uint64_t cpu, wait;
        schedstat(hstats[i].tid, &cpu, &wait);
        printf(" t%d=%ld:%llu:%llu:%llu:%ld", i, hstats[i].events, (unsigned long long)hstats[i].busy_ns,
               (unsigned long long)cpu, (unsigned long long)wait, preemptions(hstats[i].tid));
    }
    printf("\n");
    for (int i = 0; i < nv; i++) if (vcpus[i].code) return 1;
    return mismatches ? 1 : 0;
}
