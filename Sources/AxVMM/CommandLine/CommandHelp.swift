/// Help text beside the option table (`CommandDocs`): what axvm and each subcommand is,
/// examples for each subcommand, the exit statuses, and the version line.
public enum CommandHelp {
    /// `axvm --version`: the commit the binary was built from (`git describe`, "-dirty" for
    /// uncommitted changes; "unknown" outside a git checkout) and which build it is.
    public static func version(commit: String, build: String) -> String {
        "axvm commit \(commit) (\(build))"
    }

    /// What axvm is, for `axvm --help` and the manual's NAME.
    public static let abstract = "A KVM hypervisor whose guest memory is an AxAddrSpace address space."

    /// A subcommand's examples.
    public static func examples(_ s: Subcommand) -> String {
        switch s {
        case .check: checkExamples
        case .run: runExamples
        case .boot: bootExamples
        case .restore: restoreExamples
        }
    }

    /// What a subcommand's help says beyond its one line (nil: nothing).
    public static func discussion(_ s: Subcommand) -> String? {
        switch s {
        case .check, .run: nil
        case .boot:
            """
            x86_64 devices: an 8250 UART on COM1 (console=ttyS0, IRQ 4), the in-kernel PIC, IOAPIC, \
            LAPIC and PIT, an i8042 whose reset line ends the VM (reboot=k). arm64: a device \
            tree written by axvm, an in-kernel GICv3 (or GICv2), PSCI, an ns16550a UART \
            (console=ttyS0). The run ends normally (status 0) when the guest reboots or \
            powers off.
            Needs KVM with hardware virtualization (kvm_amd, kvm_intel): on kvm_pvm a stock \
            kernel cannot run, and axvm boot says so at once.
            """
        case .restore:
            """
            The vCPUs start at once; with --lazy (the default) each page the snapshot holds is \
            copied in on the guest's first touch of it, and pages it does not hold are fresh \
            zero pages. A damaged, truncated or foreign snapshot is refused before a VM is made.
            """
        }
    }

    public static let checkExamples = """
        EXAMPLES:
          axvm check                    # KVM flavour, paging, userfaultfd, CPU
          axvm check --kvm /dev/kvm-2   # another KVM device node
        """

    public static let runExamples = """
        EXAMPLES:
          axvm run guests/build/memtest.bin --memory 1G --order random --stats
          axvm run guests/build/memtest.bin --fault-around 2M --stats-json out.json
          axvm run guests/build/memtest.bin --populate --stats
          axvm run guests/build/memtest.bin --vcpus 2 --memtest-mode overlap --stats
          axvm run guests/build/spin.bin --timeout 2          # exit status 124
        """

    public static let bootExamples = """
        EXAMPLES:
          axvm boot --kernel bzImage --initrd initramfs.cpio.gz --memory 512M --stats
          axvm boot --kernel Image.gz --initrd initramfs.cpio.gz --fault-around 64K --vcpus 2
          axvm boot --kernel bzImage --cmdline "console=ttyS0 panic=-1" --populate --quiet
          axvm boot --kernel x86/apic.flat --cmdline "" --vcpus 2 --initrd environ   # kvm-unit-tests: exit status 0 = PASS
        """

    public static let restoreExamples = """
        EXAMPLES:
          axvm run guests/build/memtest.bin --snapshot snap --snapshot-on halfway
          axvm restore snap --stats             # pages copied in on first touch
          axvm restore snap --populate          # all pages copied in first
          axvm restore snap --snapshot s2 --snapshot-diff --snapshot-after 0.5
          kill -USR1 PID                        # snapshot a run given --snapshot
        """

    /// Where a subcommand's help points for the exit statuses.
    public static let seeExitStatuses = "Exit statuses: axvm --help (and man axvm)."

    /// The exit statuses of `check`, `run`, `boot` and `restore` (the README has the same table).
    public static let exitStatuses = """
        EXIT STATUS:
          code   run: the code the guest wrote to its exit device (0: success)
          0      boot: Linux rebooted or powered off; check: KVM is usable;
                 a snapshot was written and the run ended (--snapshot-and-exit)
          1      check: KVM or userfaultfd is not usable here
          2      cannot set up: a missing, unreadable or malformed guest image,
                 kernel, initrd or command line; a damaged, truncated or foreign
                 snapshot; no KVM device; no permission
          3      the guest ended badly: unmapped access, triple fault, pager
                 failure (e.g. --max-resident)
          4      the guest halted for good: every vCPU stopped with interrupts
                 off (boot: Linux's `halt`; run: cli; hlt)
          64     usage: an option value that does not parse or is out of range
          74     the results could not be written (stdout, statistics file)
          124    timeout
          128+N  ended by signal N (SIGINT 130, SIGTERM 143, SIGHUP 129)
          141    standard output is a pipe whose reader has gone
          159    killed by SIGSYS: a thread made a system call its sandbox
                 filter refuses (the line before names it; --no-sandbox)
        """
}
