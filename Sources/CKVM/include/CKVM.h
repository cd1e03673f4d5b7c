// C shim for the KVM and userfaultfd APIs: function-like macros (ioctl request numbers)
// do not import into Swift, so they are exported as constants; variadic ioctl(2) gets
// fixed-signature wrappers. Constants newer than the installed 6.1 headers are defined
// here with the kernel version that introduced them.
#ifndef CKVM_H
#define CKVM_H

#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/mman.h>
// The rest of libc the VMM calls. A SwiftPM build also has them from Glibc; the Embedded
// build (scripts/build-static.sh) has no Glibc module and sees libc through this header only.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

/// errno of the calling thread (a macro in glibc and musl, so not a Swift value by itself).
int ckvm_errno(void);
/// open(2) is variadic in C (no Swift import without the Glibc overlay): fixed forms.
int ckvm_open(const char *path, int flags);
int ckvm_open_mode(const char *path, int flags, unsigned int mode);
/// renameat2(2) with RENAME_EXCHANGE (Linux 3.15): swaps two paths atomically (a snapshot
/// directory and its replacement). -1 with errno on failure.
int ckvm_rename_exchange(const char *from, const char *to);
/// close(2) and write(2) under names no Swift type member shadows.
int ckvm_close(int fd);
/// S_ISREG(mode): S_IFMT is a mode_t in Glibc's overlay but an int macro here, and both
/// would be visible to Swift.
int ckvm_is_regular_file(unsigned int mode);
int ckvm_is_directory(unsigned int mode);
int ckvm_is_symlink(unsigned int mode);
/// mkostemp(template, O_CLOEXEC): a new file named from `template` (its XXXXXX replaced).
int ckvm_mkstemp_cloexec(char *template_);
/// signal(SIGPIPE, SIG_IGN): a write to a closed pipe returns EPIPE instead of killing the process.
void ckvm_ignore_sigpipe(void);
long ckvm_write(int fd, const void *buffer, size_t count);
void ckvm_set_errno(int value);

// --- The sandbox (Sources/AxVMM/Sandbox): seccomp-BPF after set-up ------------------------
/// AUDIT_ARCH_* of the architecture this is compiled for (seccomp_data.arch): a filter checks
/// it first, so that a syscall made through another ABI cannot pass under a number of ours.
extern const uint32_t CKVM_AUDIT_ARCH;
/// The syscall number of another ABI on this host that seccomp sees with the same arch value
/// (x86_64's x32 sets bit 30, __X32_SYSCALL_BIT): numbers at or above it are refused. 0 if none.
extern const uint32_t CKVM_SYSCALL_ABI_LIMIT;
/// PR_SET_NO_NEW_PRIVS, then seccomp(SECCOMP_SET_MODE_FILTER) with `count` instructions on the
/// calling thread only (each thread installs the filter of its role). 0, or -1 and errno.
int ckvm_seccomp_install(const struct sock_filter *filter, unsigned short count);
/// Drops every capability of the calling thread: the bounding set (while CAP_SETPCAP is
/// still held), the ambient set, then effective, permitted and inheritable (capset).
/// 0, or -1 and errno from capset; the bounding set's EPERM (no CAP_SETPCAP: an
/// unprivileged process, nothing to drop) is not an error.
int ckvm_drop_capabilities(void);
/// Names the calling thread (PR_SET_NAME, 15 bytes shown) and keeps `role` (a static string)
/// for the SIGSYS report.
void ckvm_sandbox_set_thread(const char *name, const char *role);
/// Installs the SIGSYS handler for SECCOMP_RET_TRAP: it writes "axvm: sandbox: the ROLE thread
/// made system call NAME (N), which its filter does not allow" to standard error and ends the
/// process with SIGSYS (its default action: status 128 + 31 in a shell). `names[i]` (static
/// strings) names syscall `numbers[i]`. Async-signal-safe: fixed buffers, write(2), tgkill(2).
void ckvm_sandbox_report_violations(const char *const *names, const int *numbers, int count);
/// A request number with its name (the sandbox's ioctl lists).
struct ckvm_named_request { const char *name; unsigned long request; };
/// Every ioctl the VMM may make after set-up on this architecture (KVM's on the system, VM,
/// vCPU and device fds; userfaultfd's), once each; creation and set-up-only ones are not here.
/// Entry `index`, NULL past the last.
const struct ckvm_named_request *ckvm_runtime_ioctl(int index);
/// Makes system call `number` with no arguments that matter (the tests' forbidden calls).
long ckvm_raw_syscall3(long number, long a, long b, long c);

// Linux 6.8: KVM_EXIT_MEMORY_FAULT (guest_memfd / private memory faults).
#ifndef KVM_EXIT_MEMORY_FAULT
#define KVM_EXIT_MEMORY_FAULT 39
#endif

extern const unsigned long CKVM_KVM_GET_API_VERSION;
extern const unsigned long CKVM_KVM_CREATE_VM;
extern const unsigned long CKVM_KVM_CHECK_EXTENSION;
extern const unsigned long CKVM_KVM_GET_VCPU_MMAP_SIZE;
extern const unsigned long CKVM_KVM_CREATE_VCPU;
extern const unsigned long CKVM_KVM_SET_USER_MEMORY_REGION;
extern const unsigned long CKVM_KVM_SET_TSS_ADDR;
extern const unsigned long CKVM_KVM_IRQFD;
extern const unsigned long CKVM_KVM_IOEVENTFD;
extern const unsigned long CKVM_KVM_RUN;
extern const unsigned long CKVM_KVM_GET_REGS;
extern const unsigned long CKVM_KVM_SET_REGS;
extern const unsigned long CKVM_KVM_GET_SREGS;
extern const unsigned long CKVM_KVM_SET_SREGS;

extern const unsigned long CKVM_USERFAULTFD_IOC_NEW;
extern const unsigned long CKVM_UFFDIO_API;
extern const unsigned long CKVM_UFFDIO_REGISTER;
extern const unsigned long CKVM_UFFDIO_UNREGISTER;
extern const unsigned long CKVM_UFFDIO_WAKE;
extern const unsigned long CKVM_UFFDIO_COPY;
extern const unsigned long CKVM_UFFDIO_ZEROPAGE;
extern const unsigned long CKVM_UFFDIO_CONTINUE;
extern const int CKVM_KVM_EXIT_MEMORY_FAULT;

// --- arm64 (compiled on every host: the numbers are computed here, not taken from the
// arch's <asm/kvm.h>, so x86 builds type-check and unit-test the arm64 code too) -----------
/// struct kvm_vcpu_init (arch/arm64/include/uapi/asm/kvm.h): target and feature bits.
struct ckvm_arm_vcpu_init { uint32_t target; uint32_t features[7]; };
extern const unsigned long CKVM_KVM_ARM_PREFERRED_TARGET;
extern const unsigned long CKVM_KVM_ARM_VCPU_INIT;
extern const unsigned long CKVM_KVM_GET_ONE_REG;
extern const unsigned long CKVM_KVM_SET_ONE_REG;
extern const unsigned long CKVM_KVM_ENABLE_CAP;
/// KVM_IRQ_LINE: sets interrupt `irq` to `level` (x86: a GSI, routed to the PIC and the
/// IOAPIC; arm64: type << 24 | vCPU << 16 | number, e.g. an SPI's INTID with type 1).
int ckvm_irq_line(int vm_fd, uint32_t irq, uint32_t level);
/// KVM_CREATE_DEVICE of `type` (enum kvm_device_type): the device fd, or -1 and errno.
int ckvm_create_device(int vm_fd, uint32_t type);
/// KVM_HAS_DEVICE_ATTR (`op` 0), KVM_SET_DEVICE_ATTR (1) or KVM_GET_DEVICE_ATTR (2) on a
/// device (or vCPU) fd; `addr`: the user address of the attribute's value.
int ckvm_device_attr(int device_fd, int op, uint32_t group, uint64_t attr, uint64_t addr);
/// KVM_ENABLE_CAP on a VM or vCPU fd with args[0] = `arg0`.
int ckvm_enable_cap(int fd, uint32_t cap, uint64_t arg0);
/// KVM_EXIT_ARM_NISV: a data abort outside the memslots that KVM cannot emulate (no valid
/// instruction syndrome); ESR_EL2's ISS bits and the faulting IPA.
uint64_t ckvm_run_arm_nisv_esr_iss(const struct kvm_run *run);
uint64_t ckvm_run_arm_nisv_fault_ipa(const struct kvm_run *run);
/// KVM_EXIT_RISCV_SBI: the SBI call KVM hands to user space (extension, function, a0-a5),
/// and the (error, value) pair the guest gets back in a0/a1 when the vCPU runs again.
struct ckvm_sbi_call { uint64_t extension_id, function_id, args[6]; };
struct ckvm_sbi_call ckvm_run_riscv_sbi(const struct kvm_run *run);
void ckvm_run_riscv_sbi_return(struct kvm_run *run, uint64_t error, uint64_t value);
/// KVM_EXIT_SYSTEM_EVENT's first data word (the PSCI reset type on arm64), 0 if none.
uint64_t ckvm_run_system_event_data0(const struct kvm_run *run);
/// Pins the calling thread to `cpu` (sched_setaffinity); -1 and errno on failure.
int ckvm_pin_thread(int cpu);
/// The CPU the calling thread runs on now (sched_getcpu), -1 if unknown.
int ckvm_current_cpu(void);

#if defined(__x86_64__)
/// KVM_GET_SUPPORTED_CPUID on the system fd, then KVM_SET_CPUID2 on the vCPU: the guest
/// sees what this KVM can offer (without it KVM assumes, among others, a 36-bit
/// MAXPHYADDR and treats guest page-table entries above 64 GiB as reserved).
int ckvm_set_supported_cpuid(int kvm_fd, int vcpu_fd);
#endif
/// A new pseudo-terminal: returns the master fd (close-on-exec) and writes the slave's
/// path into `slave_name` (posix_openpt needs _XOPEN_SOURCE, which this header cannot set
/// for Swift). For tests that drive axvm from a terminal.
int ckvm_open_pty(char *slave_name, size_t length);
/// ioctl(2) with a pointer argument; returns -1 and sets errno on failure.
int ckvm_ioctl_ptr(int fd, unsigned long request, void *arg);
/// ioctl(2) with an integer argument.
int ckvm_ioctl_int(int fd, unsigned long request, unsigned long arg);

/// memfd_create(2).
int ckvm_memfd_create(const char *name, unsigned int flags);
/// fallocate(2), mode 0: allocates the file's pages (shmem: in the page cache, zero on
/// first use) without mapping them anywhere.
int ckvm_allocate(int fd, int64_t offset, int64_t length);
/// fallocate(2) with FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: frees the pages.
int ckvm_punch_hole(int fd, int64_t offset, int64_t length);

/// A userfaultfd from /dev/userfaultfd (USERFAULTFD_IOC_NEW, Linux 6.1), falling back to
/// the userfaultfd(2) syscall. `flags`: O_CLOEXEC | O_NONBLOCK. -1 and errno on failure.
int ckvm_userfaultfd(int flags);

/// Fields of `struct kvm_run` inside anonymous unions, read without layout guesses.
struct kvm_run;
uint32_t ckvm_run_exit_reason(const struct kvm_run *run);
void ckvm_run_set_immediate_exit(struct kvm_run *run, uint8_t value);
struct ckvm_io { uint8_t direction; uint8_t size; uint16_t port; uint32_t count; uint64_t data_offset; };
struct ckvm_io ckvm_run_io(const struct kvm_run *run);
struct ckvm_mmio { uint64_t phys_addr; uint32_t len; uint8_t is_write; uint8_t *data; /* points into kvm_run */ };
struct ckvm_mmio ckvm_run_mmio(struct kvm_run *run);
uint64_t ckvm_run_fail_entry_reason(const struct kvm_run *run);
uint32_t ckvm_run_internal_suberror(const struct kvm_run *run);
uint32_t ckvm_run_internal_ndata(const struct kvm_run *run);
uint64_t ckvm_run_internal_data(const struct kvm_run *run, uint32_t i);
uint32_t ckvm_run_system_event_type(const struct kvm_run *run);

/// One userfaultfd page-fault message: address and flags (UFFD_PAGEFAULT_FLAG_*).
struct ckvm_uffd_fault { uint8_t event; uint64_t flags; uint64_t address; };
/// Decodes a `struct uffd_msg` read from the descriptor.
struct ckvm_uffd_fault ckvm_uffd_decode(const void *msg);
size_t ckvm_uffd_msg_size(void);

/// KVM_GET_DIRTY_LOG: the slot's bitmap of pages written since the last call (or since
/// KVM_MEM_LOG_DIRTY_PAGES was set), one bit per page, into `bitmap` (64-bit words).
int ckvm_get_dirty_log(int vm_fd, uint32_t slot, uint64_t *bitmap);

// --- threads and signals, the same on glibc and musl ------------------------------------------
/// pthread_t is an integer in glibc and a pointer in musl: Swift keeps it as a uintptr_t.
int ckvm_thread_create(uintptr_t *handle, void *(*start)(void *), void *arg);
int ckvm_thread_join(uintptr_t handle);
int ckvm_thread_detach(uintptr_t handle);
/// Installs a handler that does nothing for `sig`, without SA_RESTART (a blocking call the
/// signal lands in returns EINTR). sigaction's handler union is named differently by each libc.
int ckvm_install_noop_handler(int sig);
/// 1 when built against musl (the static riscv64 build), 0 against glibc (which defines
/// __GLIBC__; musl defines no macro of its own): the sandbox allows the calls musl makes
/// where glibc makes others.
static inline int ckvm_libc_is_musl(void) {
#ifdef __GLIBC__
    return 0;
#else
    return 1;
#endif
}
/// KVM_INTERRUPT on riscv64: raises (`set` 1) or lowers (0) the hart's supervisor external
/// interrupt (KVM_INTERRUPT_SET / _UNSET, arch/riscv/include/uapi/asm/kvm.h); callable from
/// any thread (an asynchronous vCPU ioctl there).
int ckvm_riscv_external_interrupt(int vcpu_fd, int set);
/// KVM_SET_MP_STATE (x86; riscv64: RUNNABLE 0, STOPPED 5).
int ckvm_set_mp_state(int vcpu_fd, uint32_t state);
/// KVM_GET_MP_STATE: KVM_MP_STATE_RUNNABLE (0), _HALTED (3), _STOPPED (5), …; -1 and errno
/// on failure.
int ckvm_get_mp_state(int vcpu_fd);
/// KVM_GET_REG_LIST (arm64, riscv64): up to `capacity` register ids into `ids`; returns how
/// many the vCPU has (more than `capacity`: nothing was written, call again with room), or
/// -1 and errno.
int64_t ckvm_get_reg_list(int vcpu_fd, uint64_t *ids, uint64_t capacity);
/// KVM_GET_ONE_REG (`set` 0) or KVM_SET_ONE_REG (1) of a register of any size: `value` holds
/// as many bytes as the id's size field says (1 << ((id >> 52) & 0xf)).
int ckvm_one_reg(int vcpu_fd, int set, uint64_t id, void *value);

#if defined(__x86_64__)
// --- Linux guests (axvm boot): in-kernel irqchip, PIT, LAPIC LVTs, MSRs -------------------
/// KVM_CREATE_IRQCHIP: in-kernel 8259 PICs, IOAPIC and a LAPIC per vCPU (before any vCPU).
int ckvm_create_irqchip(int vm_fd);
/// KVM_CREATE_PIT2 with KVM_PIT_SPEAKER_DUMMY (port 0x61 reads handled in the kernel).
int ckvm_create_pit2(int vm_fd);
/// KVM_SET_IDENTITY_MAP_ADDR: the page KVM uses for real mode on VMX without unrestricted guest.
int ckvm_set_identity_map_addr(int vm_fd, uint64_t addr);
/// KVM_GET_LAPIC, LVT LINT0 := ExtINT and LINT1 := NMI (as a PC BIOS leaves them for virtual
/// wire mode), KVM_SET_LAPIC.
int ckvm_set_lapic_lint(int vcpu_fd);
/// KVM_SET_MSRS with `n` (index, value) pairs; returns how many KVM set (or -1, errno).
int ckvm_set_msrs(int vcpu_fd, const uint32_t *index, const uint64_t *value, uint32_t n);
/// As ckvm_set_supported_cpuid, plus CPUID.1:ECX bit 31 (hypervisor present), which KVM does
/// not report itself: without it Linux never looks at the KVM leaves (0x40000000), so it
/// finds no kvm-clock and must calibrate the TSC against the PIT.
/// `apic_id` goes where CPUID reports the CPU's own APIC id (leaf 1 EBX[31:24]; the x2APIC
/// id in EDX of leaves 0xB and 0x1F; AMD's extended APIC id in 0x8000001E EAX), which KVM
/// leaves to userspace: Linux checks it against the APIC ("APIC id mismatch").
int ckvm_set_supported_cpuid_hypervisor(int kvm_fd, int vcpu_fd, uint32_t apic_id);
/// Whether a vCPU can still run by itself: 1 halted for good (KVM_MP_STATE_HALTED with
/// RFLAGS.IF clear and no NMI or SMI pending: only INIT from another CPU can wake it), 2 an
/// application processor waiting for INIT/SIPI (UNINITIALIZED, INIT_RECEIVED), 0 anything
/// else; -1 and errno on failure.
int ckvm_halt_state(int vcpu_fd);
/// Where a device interrupt stands, for a report on a guest that waits for it: the master
/// 8259's registers (KVM_GET_IRQCHIP; Linux without an MP table or ACPI uses the PIC through
/// LINT0), IOAPIC pin `pin`'s entry, the LAPIC's LVT0, TPR, SVR, timer and highest
/// requested/in-service vectors (KVM_GET_LAPIC), RFLAGS and RIP, KVM's pending event state
/// (KVM_GET_VCPU_EVENTS: an injected interrupt, the STI/MOV SS shadow) and the mp state.
/// 0, or -1 and errno.
struct ckvm_intr_snapshot {
    uint8_t pic_irr, pic_imr, pic_isr, pic_last_irr, pic_irq_base, pic_special_mask, pic_auto_eoi;
    uint8_t ioapic_vector, ioapic_masked, ioapic_irr;
    uint8_t interrupt_injected, interrupt_nr, interrupt_shadow, nmi_pending;
    uint32_t lapic_svr, lapic_tpr, lapic_lvt0, lapic_lvt_timer, lapic_timer_current;
    int32_t lapic_irr_highest, lapic_isr_highest;
    uint32_t mp_state;
    uint64_t rflags, rip;
};
int ckvm_intr_snapshot(int vm_fd, int vcpu_fd, uint32_t pin, struct ckvm_intr_snapshot *out);
// --- Snapshots: the whole architectural state of a vCPU and of the VM's in-kernel devices --
/// Most MSRs one snapshot keeps (KVM_GET_MSR_INDEX_LIST lists about 100 on 6.1).
#define CKVM_MAX_MSRS 512
/// One vCPU as KVM holds it, in one flat block (no pointers): what a snapshot saves and a
/// restore sets back. `parts` says which optional parts were read.
struct ckvm_x86_vcpu_state {
    uint32_t parts;      // CKVM_PART_*
    uint32_t nmsrs;
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    /// KVM_GET_XSAVE's 4096-byte region (`struct kvm_xsave` without its flexible `extra`:
    /// the size as long as no dynamic XSAVE feature such as AMX is enabled for the guest,
    /// which axvm never asks for); with KVM_CAP_XSAVE, else `fpu`.
    uint32_t xsave[1024];
    struct kvm_fpu fpu;
    struct kvm_xcrs xcrs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_mp_state mp_state;
    struct kvm_debugregs debugregs;
    struct kvm_msr_entry msrs[CKVM_MAX_MSRS];
};
enum { CKVM_PART_XSAVE = 1, CKVM_PART_XCRS = 2, CKVM_PART_LAPIC = 4, CKVM_PART_DEBUGREGS = 8 };
/// The VM's in-kernel devices and clock: the 8259 pair and IOAPIC (KVM_GET_IRQCHIP), the PIT
/// (KVM_GET_PIT2) when they exist, and kvmclock (KVM_GET_CLOCK).
struct ckvm_x86_vm_state {
    uint32_t parts;      // CKVM_VM_*
    uint32_t pad;
    struct kvm_irqchip chips[3];
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock;
};
enum { CKVM_VM_IRQCHIP = 1, CKVM_VM_PIT = 2 };
/// Reads every part of the vCPU's state, and every MSR of the host KVM's list (kvm_fd) that
/// it can read. 0, or -1 and errno, with `*step` naming the ioctl that failed.
int ckvm_x86_save_vcpu(int kvm_fd, int vcpu_fd, struct ckvm_x86_vcpu_state *s, const char **step);
/// Sets it back, in the order Firecracker restores (mp state, regs, sregs, FPU, XCRs, debug
/// registers, LAPIC, MSRs, events). An MSR KVM refuses is skipped; `*skipped` counts them.
int ckvm_x86_restore_vcpu(int vcpu_fd, const struct ckvm_x86_vcpu_state *s, uint32_t *skipped, const char **step);
int ckvm_x86_save_vm(int vm_fd, struct ckvm_x86_vm_state *s, const char **step);
/// Sets the irqchip, PIT and clock back (the clock with no flags: it goes on from the value
/// saved, as if the VM had been paused).
int ckvm_x86_restore_vm(int vm_fd, const struct ckvm_x86_vm_state *s, const char **step);
#endif

/// A Unix stream socket bound to `path` and listening (close-on-exec): the fd, or -1 and errno
/// (ENAMETOOLONG for a path longer than sockaddr_un holds).
int ckvm_unix_listen(const char *path);
/// accept4(fd, close-on-exec): a connection's fd, or -1 and errno.
int ckvm_unix_accept(int fd);
/// A connection to the Unix stream socket at `path` (tests, clients): the fd, or -1 and errno.
int ckvm_unix_connect(const char *path);

#endif
