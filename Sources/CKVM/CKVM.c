#define _GNU_SOURCE 1  // memfd_create, fallocate; not in the header: it changes glibc struct layouts seen by other modules
#include "CKVM.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sched.h>
#include <sys/stat.h>
#include <signal.h>

const unsigned long CKVM_KVM_GET_API_VERSION = KVM_GET_API_VERSION;
const unsigned long CKVM_KVM_CREATE_VM = KVM_CREATE_VM;
const unsigned long CKVM_KVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
const unsigned long CKVM_KVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
const unsigned long CKVM_KVM_CREATE_VCPU = KVM_CREATE_VCPU;
const unsigned long CKVM_KVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
const unsigned long CKVM_KVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
const unsigned long CKVM_KVM_IRQFD = KVM_IRQFD;
const unsigned long CKVM_KVM_IOEVENTFD = KVM_IOEVENTFD;
const unsigned long CKVM_KVM_RUN = KVM_RUN;
const unsigned long CKVM_KVM_GET_REGS = KVM_GET_REGS;    // struct kvm_regs differs per arch:
const unsigned long CKVM_KVM_SET_REGS = KVM_SET_REGS;    // the Swift side uses these on x86 only
const unsigned long CKVM_KVM_GET_SREGS = KVM_GET_SREGS;
const unsigned long CKVM_KVM_SET_SREGS = KVM_SET_SREGS;

const unsigned long CKVM_USERFAULTFD_IOC_NEW = USERFAULTFD_IOC_NEW;
const unsigned long CKVM_UFFDIO_API = UFFDIO_API;
const unsigned long CKVM_UFFDIO_REGISTER = UFFDIO_REGISTER;
const unsigned long CKVM_UFFDIO_UNREGISTER = UFFDIO_UNREGISTER;
const unsigned long CKVM_UFFDIO_WAKE = UFFDIO_WAKE;
const unsigned long CKVM_UFFDIO_COPY = UFFDIO_COPY;
const unsigned long CKVM_UFFDIO_ZEROPAGE = UFFDIO_ZEROPAGE;
const unsigned long CKVM_UFFDIO_CONTINUE = UFFDIO_CONTINUE;
const int CKVM_KVM_EXIT_MEMORY_FAULT = KVM_EXIT_MEMORY_FAULT;

int ckvm_errno(void) { return errno; }
void ckvm_set_errno(int value) { errno = value; }
int ckvm_open(const char *path, int flags) { return open(path, flags); }
int ckvm_open_mode(const char *path, int flags, unsigned int mode) { return open(path, flags, (mode_t)mode); }
int ckvm_rename_exchange(const char *from, const char *to) {
    return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, 2 /* RENAME_EXCHANGE */);
}
int ckvm_close(int fd) { return close(fd); }
int ckvm_is_regular_file(unsigned int mode) { return S_ISREG(mode); }
int ckvm_is_directory(unsigned int mode) { return S_ISDIR(mode); }
int ckvm_is_symlink(unsigned int mode) { return S_ISLNK(mode); }
int ckvm_mkstemp_cloexec(char *template_) { return mkostemp(template_, O_CLOEXEC); }
void ckvm_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }
long ckvm_write(int fd, const void *buffer, size_t count) { return write(fd, buffer, count); }

// arm64 ioctls, from the generic _IOR/_IOW with our copy of struct kvm_vcpu_init (same size).
const unsigned long CKVM_KVM_ARM_PREFERRED_TARGET = _IOR(KVMIO, 0xaf, struct ckvm_arm_vcpu_init);
const unsigned long CKVM_KVM_ARM_VCPU_INIT = _IOW(KVMIO, 0xae, struct ckvm_arm_vcpu_init);
const unsigned long CKVM_KVM_GET_ONE_REG = KVM_GET_ONE_REG;
const unsigned long CKVM_KVM_SET_ONE_REG = KVM_SET_ONE_REG;
const unsigned long CKVM_KVM_ENABLE_CAP = KVM_ENABLE_CAP;

int ckvm_irq_line(int vm_fd, uint32_t irq, uint32_t level) {
    struct kvm_irq_level l = { .irq = irq, .level = level };
    return ioctl(vm_fd, KVM_IRQ_LINE, &l);
}

int ckvm_create_device(int vm_fd, uint32_t type) {
    struct kvm_create_device d = { .type = type };
    if (ioctl(vm_fd, KVM_CREATE_DEVICE, &d) != 0) return -1;
    return (int)d.fd;
}

int ckvm_device_attr(int device_fd, int op, uint32_t group, uint64_t attr, uint64_t addr) {
    struct kvm_device_attr a = { .group = group, .attr = attr, .addr = addr };
    unsigned long request = op == 1 ? KVM_SET_DEVICE_ATTR : op == 2 ? KVM_GET_DEVICE_ATTR : KVM_HAS_DEVICE_ATTR;
    return ioctl(device_fd, request, &a);
}

int ckvm_enable_cap(int fd, uint32_t cap, uint64_t arg0) {
    struct kvm_enable_cap c;
    memset(&c, 0, sizeof c);
    c.cap = cap;
    c.args[0] = arg0;
    return ioctl(fd, KVM_ENABLE_CAP, &c);
}
uint64_t ckvm_run_arm_nisv_esr_iss(const struct kvm_run *run) { return run->arm_nisv.esr_iss; }
uint64_t ckvm_run_arm_nisv_fault_ipa(const struct kvm_run *run) { return run->arm_nisv.fault_ipa; }
struct ckvm_sbi_call ckvm_run_riscv_sbi(const struct kvm_run *run) {
    struct ckvm_sbi_call c = { run->riscv_sbi.extension_id, run->riscv_sbi.function_id, { 0 } };
    for (int i = 0; i < 6; i++) c.args[i] = run->riscv_sbi.args[i];
    return c;
}
void ckvm_run_riscv_sbi_return(struct kvm_run *run, uint64_t error, uint64_t value) {
    run->riscv_sbi.ret[0] = (unsigned long)error;
    run->riscv_sbi.ret[1] = (unsigned long)value;
}
uint64_t ckvm_run_system_event_data0(const struct kvm_run *run) {
    return run->system_event.ndata > 0 ? run->system_event.data[0] : 0;
}

int ckvm_pin_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}
int ckvm_current_cpu(void) { return sched_getcpu(); }

int ckvm_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
int ckvm_ioctl_int(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }

int ckvm_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }

int ckvm_allocate(int fd, int64_t offset, int64_t length) {
    return fallocate(fd, 0, offset, length);
}

int ckvm_punch_hole(int fd, int64_t offset, int64_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

int ckvm_userfaultfd(int flags) {
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
        int fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
        int saved = errno;
        close(dev);
        errno = saved;
        return fd;
    }
    // Without /dev/userfaultfd, the syscall (needs vm.unprivileged_userfaultfd or
    // CAP_SYS_PTRACE to catch faults raised inside the kernel, as KVM's are).
    return (int)syscall(SYS_userfaultfd, flags);
}

uint32_t ckvm_run_exit_reason(const struct kvm_run *run) { return run->exit_reason; }
void ckvm_run_set_immediate_exit(struct kvm_run *run, uint8_t value) {
    __atomic_store_n(&run->immediate_exit, value, __ATOMIC_SEQ_CST);
}
struct ckvm_io ckvm_run_io(const struct kvm_run *run) {
    struct ckvm_io io = { run->io.direction, run->io.size, run->io.port, run->io.count, run->io.data_offset };
    return io;
}
struct ckvm_mmio ckvm_run_mmio(struct kvm_run *run) {
    struct ckvm_mmio m = { run->mmio.phys_addr, run->mmio.len, run->mmio.is_write, run->mmio.data };
    return m;
}
uint64_t ckvm_run_fail_entry_reason(const struct kvm_run *run) {
    return run->fail_entry.hardware_entry_failure_reason;
}
uint32_t ckvm_run_internal_suberror(const struct kvm_run *run) { return run->internal.suberror; }
uint32_t ckvm_run_internal_ndata(const struct kvm_run *run) { return run->internal.ndata; }
uint64_t ckvm_run_internal_data(const struct kvm_run *run, uint32_t i) {
    return i < 16 && i < run->internal.ndata ? run->internal.data[i] : 0;
}
uint32_t ckvm_run_system_event_type(const struct kvm_run *run) { return run->system_event.type; }

struct ckvm_uffd_fault ckvm_uffd_decode(const void *msg) {
    const struct uffd_msg *m = msg;
    struct ckvm_uffd_fault f = { m->event, 0, 0 };
    if (m->event == UFFD_EVENT_PAGEFAULT) {
        f.flags = m->arg.pagefault.flags;
        f.address = m->arg.pagefault.address;
    }
    return f;
}
size_t ckvm_uffd_msg_size(void) { return sizeof(struct uffd_msg); }

int ckvm_get_dirty_log(int vm_fd, uint32_t slot, uint64_t *bitmap) {
    struct kvm_dirty_log log;
    memset(&log, 0, sizeof log);
    log.slot = slot;
    log.dirty_bitmap = bitmap;
    return ioctl(vm_fd, KVM_GET_DIRTY_LOG, &log);
}

#if defined(__x86_64__)
int ckvm_set_supported_cpuid(int kvm_fd, int vcpu_fd) {
    // 256 entries: more than any CPU reports (KVM_MAX_CPUID_ENTRIES is 256 in 6.x).
    enum { N = 256 };
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + N * sizeof(struct kvm_cpuid_entry2));
    if (!c) { errno = ENOMEM; return -1; }
    c->nent = N;
    int r = ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c);
    if (r == 0) r = ioctl(vcpu_fd, KVM_SET_CPUID2, c);
    int saved = errno;
    free(c);
    errno = saved;
    return r;
}

#endif

int ckvm_open_pty(char *slave_name, size_t length) {
    int fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return -1;
    if (grantpt(fd) != 0 || unlockpt(fd) != 0 || ptsname_r(fd, slave_name, length) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

#if defined(__x86_64__)
// --- Linux guests (axvm boot) ----------------------------------------------------------------

int ckvm_create_irqchip(int vm_fd) { return ioctl(vm_fd, KVM_CREATE_IRQCHIP, 0); }

int ckvm_create_pit2(int vm_fd) {
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    return ioctl(vm_fd, KVM_CREATE_PIT2, &pit);
}

int ckvm_set_identity_map_addr(int vm_fd, uint64_t addr) {
    return ioctl(vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &addr);
}

int ckvm_set_lapic_lint(int vcpu_fd) {
    struct kvm_lapic_state s;
    if (ioctl(vcpu_fd, KVM_GET_LAPIC, &s) != 0) return -1;
    // Intel SDM vol. 3A §11.5.1: LVT LINT0 at 0x350, LINT1 at 0x360; delivery mode in bits
    // 8-10 (ExtINT 7, NMI 4), mask bit 16 clear.
    uint32_t lint0, lint1;
    memcpy(&lint0, s.regs + 0x350, 4);
    memcpy(&lint1, s.regs + 0x360, 4);
    lint0 = (lint0 & ~0x10700u) | (7u << 8);
    lint1 = (lint1 & ~0x10700u) | (4u << 8);
    memcpy(s.regs + 0x350, &lint0, 4);
    memcpy(s.regs + 0x360, &lint1, 4);
    return ioctl(vcpu_fd, KVM_SET_LAPIC, &s);
}

int ckvm_set_msrs(int vcpu_fd, const uint32_t *index, const uint64_t *value, uint32_t n) {
    struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(struct kvm_msr_entry));
    if (!m) { errno = ENOMEM; return -1; }
    m->nmsrs = n;
    for (uint32_t i = 0; i < n; i++) { m->entries[i].index = index[i]; m->entries[i].data = value[i]; }
    int r = ioctl(vcpu_fd, KVM_SET_MSRS, m);
    int saved = errno;
    free(m);
    errno = saved;
    return r;
}

int ckvm_set_supported_cpuid_hypervisor(int kvm_fd, int vcpu_fd, uint32_t apic_id) {
    enum { N = 256 };
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + N * sizeof(struct kvm_cpuid_entry2));
    if (!c) { errno = ENOMEM; return -1; }
    c->nent = N;
    int r = ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c);
    if (r == 0) {
        for (uint32_t i = 0; i < c->nent; i++) {
            struct kvm_cpuid_entry2 *e = &c->entries[i];
            switch (e->function) {
            case 1:
                // Intel SDM vol. 2A, CPUID leaf 1: ECX bit 31 is reserved for hypervisor use;
                // EBX[31:24] is the initial APIC id.
                e->ecx |= 1u << 31;
                e->ebx = (e->ebx & 0x00ffffffu) | (apic_id << 24);
                break;
            case 0xb: case 0x1f: e->edx = apic_id; break;      // x2APIC id, every sub-leaf
            case 0x8000001e: e->eax = apic_id; break;          // AMD: extended APIC id
            }
        }
        r = ioctl(vcpu_fd, KVM_SET_CPUID2, c);
    }
    int saved = errno;
    free(c);
    errno = saved;
    return r;
}

static uint32_t lapic_reg(const struct kvm_lapic_state *l, unsigned offset) {
    uint32_t v;
    memcpy(&v, l->regs + offset, 4);
    return v;
}

// The highest vector set in one of the LAPIC's 256-bit registers (IRR at 0x200, ISR at 0x100:
// eight 32-bit words 16 bytes apart), -1 if none.
static int lapic_highest(const struct kvm_lapic_state *l, unsigned base) {
    for (int w = 7; w >= 0; w--) {
        uint32_t v = lapic_reg(l, base + (unsigned)w * 0x10);
        if (v) return w * 32 + 31 - __builtin_clz(v);
    }
    return -1;
}

int ckvm_intr_snapshot(int vm_fd, int vcpu_fd, uint32_t pin, struct ckvm_intr_snapshot *out) {
    if (pin >= KVM_IOAPIC_NUM_PINS) { errno = EINVAL; return -1; }
    memset(out, 0, sizeof *out);
    struct kvm_irqchip chip;
    memset(&chip, 0, sizeof chip);
    chip.chip_id = KVM_IRQCHIP_PIC_MASTER;
    if (ioctl(vm_fd, KVM_GET_IRQCHIP, &chip) < 0) return -1;
    out->pic_irr = chip.chip.pic.irr;
    out->pic_imr = chip.chip.pic.imr;
    out->pic_isr = chip.chip.pic.isr;
    out->pic_last_irr = chip.chip.pic.last_irr;
    out->pic_irq_base = chip.chip.pic.irq_base;
    out->pic_special_mask = chip.chip.pic.special_mask;
    out->pic_auto_eoi = chip.chip.pic.auto_eoi;
    memset(&chip, 0, sizeof chip);
    chip.chip_id = KVM_IRQCHIP_IOAPIC;
    if (ioctl(vm_fd, KVM_GET_IRQCHIP, &chip) < 0) return -1;
    out->ioapic_vector = chip.chip.ioapic.redirtbl[pin].fields.vector;
    out->ioapic_masked = chip.chip.ioapic.redirtbl[pin].fields.mask;
    out->ioapic_irr = (chip.chip.ioapic.irr >> pin) & 1;
    struct kvm_lapic_state lapic;
    if (ioctl(vcpu_fd, KVM_GET_LAPIC, &lapic) < 0) return -1;
    out->lapic_svr = lapic_reg(&lapic, 0xf0);
    out->lapic_tpr = lapic_reg(&lapic, 0x80);
    out->lapic_lvt0 = lapic_reg(&lapic, 0x350);
    out->lapic_lvt_timer = lapic_reg(&lapic, 0x320);
    out->lapic_timer_current = lapic_reg(&lapic, 0x390);
    out->lapic_irr_highest = lapic_highest(&lapic, 0x200);
    out->lapic_isr_highest = lapic_highest(&lapic, 0x100);
    struct kvm_regs regs;
    if (ioctl(vcpu_fd, KVM_GET_REGS, &regs) < 0) return -1;
    out->rflags = regs.rflags;
    out->rip = regs.rip;
    struct kvm_vcpu_events ev;
    memset(&ev, 0, sizeof ev);
    if (ioctl(vcpu_fd, KVM_GET_VCPU_EVENTS, &ev) < 0) return -1;
    out->interrupt_injected = ev.interrupt.injected;
    out->interrupt_nr = ev.interrupt.nr;
    out->interrupt_shadow = ev.interrupt.shadow;
    out->nmi_pending = ev.nmi.pending;
    int mp = ckvm_get_mp_state(vcpu_fd);
    if (mp < 0) return -1;
    out->mp_state = (uint32_t)mp;
    return 0;
}

int ckvm_halt_state(int vcpu_fd) {
    int mp = ckvm_get_mp_state(vcpu_fd);
    if (mp < 0) return -1;
    if (mp == KVM_MP_STATE_UNINITIALIZED || mp == KVM_MP_STATE_INIT_RECEIVED) return 2;
    if (mp != KVM_MP_STATE_HALTED) return 0;
    struct kvm_regs regs;
    if (ioctl(vcpu_fd, KVM_GET_REGS, &regs) < 0) return -1;
    if (regs.rflags & (1u << 9)) return 0;  // IF set: an interrupt can wake it
    struct kvm_vcpu_events ev;
    memset(&ev, 0, sizeof ev);
    if (ioctl(vcpu_fd, KVM_GET_VCPU_EVENTS, &ev) < 0) return -1;
    if (ev.nmi.pending || ev.nmi.injected || ev.smi.pending) return 0;
    return 1;
}

#define STEP(name, call) do { if ((call) < 0) { *step = name; return -1; } } while (0)

int ckvm_x86_save_vcpu(int kvm_fd, int vcpu_fd, struct ckvm_x86_vcpu_state *s, const char **step) {
    memset(s, 0, sizeof *s);
    STEP("KVM_GET_MP_STATE", ioctl(vcpu_fd, KVM_GET_MP_STATE, &s->mp_state));
    STEP("KVM_GET_REGS", ioctl(vcpu_fd, KVM_GET_REGS, &s->regs));
    STEP("KVM_GET_SREGS", ioctl(vcpu_fd, KVM_GET_SREGS, &s->sregs));
    if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0) {
        STEP("KVM_GET_XSAVE", ioctl(vcpu_fd, KVM_GET_XSAVE, (struct kvm_xsave *)s->xsave));
        s->parts |= CKVM_PART_XSAVE;
    } else {
        STEP("KVM_GET_FPU", ioctl(vcpu_fd, KVM_GET_FPU, &s->fpu));
    }
    if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0) {
        STEP("KVM_GET_XCRS", ioctl(vcpu_fd, KVM_GET_XCRS, &s->xcrs));
        s->parts |= CKVM_PART_XCRS;
    }
    // Without an in-kernel irqchip there is no LAPIC to read (x86.c: EINVAL).
    if (ioctl(vcpu_fd, KVM_GET_LAPIC, &s->lapic) == 0) s->parts |= CKVM_PART_LAPIC;
    else if (errno != EINVAL && errno != ENXIO) { *step = "KVM_GET_LAPIC"; return -1; }
    STEP("KVM_GET_VCPU_EVENTS", ioctl(vcpu_fd, KVM_GET_VCPU_EVENTS, &s->events));
    if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DEBUGREGS) > 0) {
        STEP("KVM_GET_DEBUGREGS", ioctl(vcpu_fd, KVM_GET_DEBUGREGS, &s->debugregs));
        s->parts |= CKVM_PART_DEBUGREGS;
    }
    // The MSR list, then one KVM_GET_MSRS for all of them. KVM stops at the first MSR it
    // cannot read (it returns how many it read): that one is dropped and the rest asked again.
    struct kvm_msr_list *list = calloc(1, sizeof(*list) + CKVM_MAX_MSRS * sizeof(uint32_t));
    struct kvm_msrs *m = calloc(1, sizeof(*m) + CKVM_MAX_MSRS * sizeof(struct kvm_msr_entry));
    if (!list || !m) { free(list); free(m); errno = ENOMEM; *step = "calloc"; return -1; }
    list->nmsrs = CKVM_MAX_MSRS;
    if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) { free(list); free(m); *step = "KVM_GET_MSR_INDEX_LIST"; return -1; }
    uint32_t next = 0;
    while (next < list->nmsrs) {
        uint32_t n = list->nmsrs - next;
        m->nmsrs = n;
        for (uint32_t i = 0; i < n; i++) { m->entries[i].index = list->indices[next + i]; m->entries[i].data = 0; }
        int r = ioctl(vcpu_fd, KVM_GET_MSRS, m);
        if (r < 0) { free(list); free(m); *step = "KVM_GET_MSRS"; return -1; }
        for (int i = 0; i < r; i++) s->msrs[s->nmsrs++] = m->entries[i];
        next += (uint32_t)r + 1;  // past the ones read and the one refused
    }
    free(list);
    free(m);
    return 0;
}

int ckvm_x86_restore_vcpu(int vcpu_fd, const struct ckvm_x86_vcpu_state *s, uint32_t *skipped, const char **step) {
    *skipped = 0;
    STEP("KVM_SET_MP_STATE", ioctl(vcpu_fd, KVM_SET_MP_STATE, &s->mp_state));
    STEP("KVM_SET_REGS", ioctl(vcpu_fd, KVM_SET_REGS, &s->regs));
    STEP("KVM_SET_SREGS", ioctl(vcpu_fd, KVM_SET_SREGS, &s->sregs));
    if (s->parts & CKVM_PART_XSAVE) STEP("KVM_SET_XSAVE", ioctl(vcpu_fd, KVM_SET_XSAVE, (const struct kvm_xsave *)s->xsave));
    else STEP("KVM_SET_FPU", ioctl(vcpu_fd, KVM_SET_FPU, &s->fpu));
    if (s->parts & CKVM_PART_XCRS) STEP("KVM_SET_XCRS", ioctl(vcpu_fd, KVM_SET_XCRS, &s->xcrs));
    if (s->parts & CKVM_PART_DEBUGREGS) STEP("KVM_SET_DEBUGREGS", ioctl(vcpu_fd, KVM_SET_DEBUGREGS, &s->debugregs));
    if (s->parts & CKVM_PART_LAPIC) STEP("KVM_SET_LAPIC", ioctl(vcpu_fd, KVM_SET_LAPIC, &s->lapic));
    uint32_t total = s->nmsrs < CKVM_MAX_MSRS ? s->nmsrs : CKVM_MAX_MSRS;
    struct kvm_msrs *m = calloc(1, sizeof(*m) + CKVM_MAX_MSRS * sizeof(struct kvm_msr_entry));
    if (!m) { errno = ENOMEM; *step = "calloc"; return -1; }
    uint32_t next = 0;
    while (next < total) {
        m->nmsrs = total - next;
        memcpy(m->entries, &s->msrs[next], m->nmsrs * sizeof(struct kvm_msr_entry));
        int r = ioctl(vcpu_fd, KVM_SET_MSRS, m);
        if (r < 0) { free(m); *step = "KVM_SET_MSRS"; return -1; }
        next += (uint32_t)r;
        if (next < total) { next++; (*skipped)++; }
    }
    free(m);
    STEP("KVM_SET_VCPU_EVENTS", ioctl(vcpu_fd, KVM_SET_VCPU_EVENTS, &s->events));
    return 0;
}

int ckvm_x86_save_vm(int vm_fd, struct ckvm_x86_vm_state *s, const char **step) {
    memset(s, 0, sizeof *s);
    s->chips[0].chip_id = KVM_IRQCHIP_PIC_MASTER;
    if (ioctl(vm_fd, KVM_GET_IRQCHIP, &s->chips[0]) == 0) {
        s->chips[1].chip_id = KVM_IRQCHIP_PIC_SLAVE;
        s->chips[2].chip_id = KVM_IRQCHIP_IOAPIC;
        STEP("KVM_GET_IRQCHIP(PIC slave)", ioctl(vm_fd, KVM_GET_IRQCHIP, &s->chips[1]));
        STEP("KVM_GET_IRQCHIP(IOAPIC)", ioctl(vm_fd, KVM_GET_IRQCHIP, &s->chips[2]));
        s->parts |= CKVM_VM_IRQCHIP;
    } else if (errno != ENXIO) { *step = "KVM_GET_IRQCHIP(PIC master)"; return -1; }
    if (ioctl(vm_fd, KVM_GET_PIT2, &s->pit) == 0) s->parts |= CKVM_VM_PIT;
    else if (errno != ENXIO) { *step = "KVM_GET_PIT2"; return -1; }
    STEP("KVM_GET_CLOCK", ioctl(vm_fd, KVM_GET_CLOCK, &s->clock));
    return 0;
}

int ckvm_x86_restore_vm(int vm_fd, const struct ckvm_x86_vm_state *s, const char **step) {
    if (s->parts & CKVM_VM_IRQCHIP) {
        for (int i = 0; i < 3; i++) STEP("KVM_SET_IRQCHIP", ioctl(vm_fd, KVM_SET_IRQCHIP, &s->chips[i]));
    }
    if (s->parts & CKVM_VM_PIT) STEP("KVM_SET_PIT2", ioctl(vm_fd, KVM_SET_PIT2, &s->pit));
    struct kvm_clock_data clock;
    memset(&clock, 0, sizeof clock);
    clock.clock = s->clock.clock;
    STEP("KVM_SET_CLOCK", ioctl(vm_fd, KVM_SET_CLOCK, &clock));
    return 0;
}
#undef STEP
#endif

// --- The sandbox -------------------------------------------------------------------------
#include <linux/audit.h>
#include <linux/capability.h>
#include <sys/prctl.h>

#if defined(__x86_64__)
const uint32_t CKVM_AUDIT_ARCH = AUDIT_ARCH_X86_64;
const uint32_t CKVM_SYSCALL_ABI_LIMIT = 0x40000000;  // __X32_SYSCALL_BIT
#elif defined(__aarch64__)
const uint32_t CKVM_AUDIT_ARCH = AUDIT_ARCH_AARCH64;
const uint32_t CKVM_SYSCALL_ABI_LIMIT = 0;
#elif defined(__riscv) && __riscv_xlen == 64
const uint32_t CKVM_AUDIT_ARCH = AUDIT_ARCH_RISCV64;
const uint32_t CKVM_SYSCALL_ABI_LIMIT = 0;
#else
#error "the sandbox needs this architecture's AUDIT_ARCH"
#endif

int ckvm_seccomp_install(const struct sock_filter *filter, unsigned short count) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    struct sock_fprog program = { .len = count, .filter = (struct sock_filter *)filter };
    // SECCOMP_FILTER_FLAG_LOG: a refused call is also in the kernel's log (audit type 1326),
    // whatever happens to the process after.
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_LOG, &program);
}

int ckvm_drop_capabilities(void) {
    for (int cap = 0; cap <= 63; cap++) {
        // EINVAL past the kernel's last capability; EPERM without CAP_SETPCAP.
        if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) (void)prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    }
    (void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    return (int)syscall(SYS_capset, &header, data);
}

static __thread const char *sandbox_role = "main";
static const char *const *sandbox_names;
static const int *sandbox_numbers;
static int sandbox_count;

void ckvm_sandbox_set_thread(const char *name, const char *role) {
    (void)prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
    sandbox_role = role;
}

// Appends `text` to buffer[*used ..< size].
static void append(char *buffer, size_t size, size_t *used, const char *text) {
    while (*text && *used < size) buffer[(*used)++] = *text++;
}

static void append_number(char *buffer, size_t size, size_t *used, long value) {
    char digits[24];
    int n = 0;
    unsigned long v = value < 0 ? (unsigned long)(-value) : (unsigned long)value;
    do { digits[n++] = (char)('0' + v % 10); v /= 10; } while (v && n < 23);
    if (value < 0) digits[n++] = '-';
    while (n > 0 && *used < size) buffer[(*used)++] = digits[--n];
}

static void append_hex(char *buffer, size_t size, size_t *used, unsigned long value) {
    char digits[17];
    int n = 0;
    do { digits[n++] = "0123456789abcdef"[value & 15]; value >>= 4; } while (value && n < 16);
    append(buffer, size, used, "0x");
    while (n > 0 && *used < size) buffer[(*used)++] = digits[--n];
}

#include <ucontext.h>
// The call's first two arguments, from the registers the trap saved (ioctl's request,
// prctl's option); 0 on an architecture not listed.
static void call_arguments(const void *context, unsigned long *first, unsigned long *second) {
    const ucontext_t *uc = context;
#if defined(__x86_64__)
    *first = (unsigned long)uc->uc_mcontext.gregs[REG_RDI];
    *second = (unsigned long)uc->uc_mcontext.gregs[REG_RSI];
#elif defined(__aarch64__)
    *first = uc->uc_mcontext.regs[0];
    *second = uc->uc_mcontext.regs[1];
#elif defined(__riscv)
    *first = uc->uc_mcontext.__gregs[10];
    *second = uc->uc_mcontext.__gregs[11];
#else
    (void)uc; *first = 0; *second = 0;
#endif
}

static void sandbox_violation(int signal, siginfo_t *info, void *context) {
    unsigned long first, second;
    call_arguments(context, &first, &second);
    char message[256];
    size_t used = 0;
    int number = info->si_syscall;
    const char *name = "not one axvm knows";
    for (int i = 0; i < sandbox_count; i++) if (sandbox_numbers[i] == number) { name = sandbox_names[i]; break; }
    append(message, sizeof message, &used, "axvm: sandbox: the ");
    append(message, sizeof message, &used, sandbox_role);
    append(message, sizeof message, &used, " thread made system call ");
    append(message, sizeof message, &used, name);
    append(message, sizeof message, &used, " (");
    append_number(message, sizeof message, &used, number);
    append(message, sizeof message, &used, ", arguments ");
    append_hex(message, sizeof message, &used, first);
    append(message, sizeof message, &used, ", ");
    append_hex(message, sizeof message, &used, second);
    append(message, sizeof message, &used, ", …), which its filter does not allow: stopping with SIGSYS (--no-sandbox turns the filters off)\n");
    (void)syscall(SYS_write, 2, message, used);
    // The default action now, delivered at once (SA_NODEFER): the process ends by SIGSYS.
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    (void)sigaction(signal, &dfl, NULL);
    (void)syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), signal);
}

void ckvm_sandbox_report_violations(const char *const *names, const int *numbers, int count) {
    sandbox_names = names;
    sandbox_numbers = numbers;
    sandbox_count = count;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = sandbox_violation;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    (void)sigaction(SIGSYS, &action, NULL);
}

long ckvm_raw_syscall3(long number, long a, long b, long c) { return syscall(number, a, b, c); }

#define REQUEST(r) { #r, r }
static const struct ckvm_named_request runtime_ioctls[] = {
    REQUEST(KVM_RUN),
    REQUEST(KVM_CHECK_EXTENSION),
    REQUEST(KVM_SET_USER_MEMORY_REGION),
    REQUEST(KVM_GET_DIRTY_LOG),
    REQUEST(KVM_IRQ_LINE),
    REQUEST(KVM_INTERRUPT),  // riscv64: the PLIC in the VMM raising a hart's external interrupt
    REQUEST(KVM_IRQFD),      // deassigned when the run ends
    REQUEST(KVM_IOEVENTFD),
    REQUEST(KVM_GET_MP_STATE),
    REQUEST(KVM_SET_MP_STATE),
    REQUEST(KVM_GET_ONE_REG),
    REQUEST(KVM_SET_ONE_REG),
    REQUEST(KVM_GET_REG_LIST),  // arm64, riscv64: a snapshot lists a vCPU's registers
    { "KVM_ARM_VCPU_INIT", _IOW(KVMIO, 0xae, struct ckvm_arm_vcpu_init) },
#if defined(__aarch64__)
    REQUEST(KVM_GET_DEVICE_ATTR), REQUEST(KVM_SET_DEVICE_ATTR),  // a snapshot saves the vGIC's state
#endif
#if defined(__x86_64__)
    REQUEST(KVM_GET_REGS), REQUEST(KVM_SET_REGS),
    REQUEST(KVM_GET_SREGS), REQUEST(KVM_SET_SREGS),
    REQUEST(KVM_GET_FPU), REQUEST(KVM_SET_FPU),
    REQUEST(KVM_GET_MSRS), REQUEST(KVM_SET_MSRS),
    REQUEST(KVM_GET_LAPIC), REQUEST(KVM_SET_LAPIC),
    REQUEST(KVM_GET_XSAVE), REQUEST(KVM_SET_XSAVE),
    REQUEST(KVM_GET_XCRS), REQUEST(KVM_SET_XCRS),
    REQUEST(KVM_GET_DEBUGREGS), REQUEST(KVM_SET_DEBUGREGS),
    REQUEST(KVM_GET_VCPU_EVENTS), REQUEST(KVM_SET_VCPU_EVENTS),
    REQUEST(KVM_GET_IRQCHIP), REQUEST(KVM_SET_IRQCHIP),
    REQUEST(KVM_GET_PIT2), REQUEST(KVM_SET_PIT2),
    REQUEST(KVM_GET_CLOCK), REQUEST(KVM_SET_CLOCK),
    REQUEST(KVM_GET_MSR_INDEX_LIST),  // a snapshot reads the MSR list when it saves
#endif
    REQUEST(UFFDIO_UNREGISTER),  // a pager that stops, or fails, lets go of RAM
    REQUEST(UFFDIO_WAKE), REQUEST(UFFDIO_CONTINUE),
};
const struct ckvm_named_request *ckvm_runtime_ioctl(int index) {
    if (index < 0 || (size_t)index >= sizeof runtime_ioctls / sizeof runtime_ioctls[0]) return NULL;
    return &runtime_ioctls[index];
}
#undef REQUEST

int ckvm_thread_create(uintptr_t *handle, void *(*start)(void *), void *arg) {
    pthread_t t;
    int r = pthread_create(&t, NULL, start, arg);
    if (r == 0) *handle = (uintptr_t)t;
    return r;
}
int ckvm_thread_join(uintptr_t handle) { return pthread_join((pthread_t)handle, NULL); }
int ckvm_thread_detach(uintptr_t handle) { return pthread_detach((pthread_t)handle); }

static void ckvm_noop_handler(int sig) { (void)sig; }
int ckvm_install_noop_handler(int sig) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ckvm_noop_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    return sigaction(sig, &sa, NULL);
}

int ckvm_set_mp_state(int vcpu_fd, uint32_t state) {
    struct kvm_mp_state s = { .mp_state = state };
    return ioctl(vcpu_fd, KVM_SET_MP_STATE, &s);
}

int ckvm_get_mp_state(int vcpu_fd) {
    struct kvm_mp_state s;
    if (ioctl(vcpu_fd, KVM_GET_MP_STATE, &s) != 0) return -1;
    return (int)s.mp_state;
}

int64_t ckvm_get_reg_list(int vcpu_fd, uint64_t *ids, uint64_t capacity) {
    /* struct kvm_reg_list ends in a flexible array: n, then n ids. KVM answers E2BIG with
       n set to the count when the array is too small. */
    struct kvm_reg_list *list = calloc(1, sizeof *list + capacity * sizeof(uint64_t));
    if (!list) return -1;
    list->n = capacity;
    int64_t r;
    if (ioctl(vcpu_fd, KVM_GET_REG_LIST, list) == 0) {
        memcpy(ids, list->reg, list->n * sizeof(uint64_t));
        r = (int64_t)list->n;
    } else {
        r = errno == E2BIG ? (int64_t)list->n : -1;
    }
    int saved = errno;
    free(list);
    errno = saved;
    return r;
}

int ckvm_one_reg(int vcpu_fd, int set, uint64_t id, void *value) {
    struct kvm_one_reg reg = { .id = id, .addr = (uint64_t)(uintptr_t)value };
    return ioctl(vcpu_fd, set ? KVM_SET_ONE_REG : KVM_GET_ONE_REG, &reg);
}

int ckvm_riscv_external_interrupt(int vcpu_fd, int set) {
    struct kvm_interrupt irq = { .irq = set ? (uint32_t)-1 : (uint32_t)-2 };  /* _SET, _UNSET */
    return ioctl(vcpu_fd, KVM_INTERRUPT, &irq);
}

#include <sys/socket.h>
#include <sys/un.h>

/* A Unix stream socket (close-on-exec) and `path` as its address, or -1 and errno. */
static int unix_socket(const char *path, struct sockaddr_un *a) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a->sun_path) { errno = ENAMETOOLONG; return -1; }
    strcpy(a->sun_path, path);
    return socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
}

/* Closes `fd` keeping errno; -1. */
static int close_failed(int fd) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

int ckvm_unix_listen(const char *path) {
    struct sockaddr_un a;
    int fd = unix_socket(path, &a);
    if (fd < 0) return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 8) != 0) return close_failed(fd);
    return fd;
}

int ckvm_unix_accept(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }

int ckvm_unix_connect(const char *path) {
    struct sockaddr_un a;
    int fd = unix_socket(path, &a);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) return close_failed(fd);
    return fd;
}
