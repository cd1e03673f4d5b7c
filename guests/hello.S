// Real-mode guest: prints a line over the 8250 serial port and exits with code 0.
// Loaded at 0x10000 with CS = DS = 0x1000, so offsets from the header are addresses.
    .code16
    .text
header:
    .ascii "AXG1"
    .long 16
    .quad entry - header
entry:
    mov $(msg - header), %si
    mov $0x3f8, %dx
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  xor %al, %al
    out %al, $0xf4
    hlt
msg:
    .asciz "Hello from a real-mode guest on axvm\n"
