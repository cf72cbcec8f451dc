; kvmctl's functional KVM probe: a boot sector that does what every 64-bit guest kernel
; needs early on (timer interrupts that arrive, protected mode, paging, long mode) and then
; writes a marker to the first serial port. Where /dev/kvm exists but guests hang, this never prints the marker under KVM while
; it prints it at once under TCG. Assembled with `nasm -f bin probe.asm -o probe.bin`; the
; bytes are embedded in kvmctl (src/probe.rs) and a test checks they match this source.
bits 16
org 0x7c00
start:
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7c00
    ; Wait for 4 ticks of the BIOS timer (IRQ 0 from the PIT, 18.2 Hz): guests whose timer
    ; interrupts never arrive hang exactly like this.
    sti
    mov bx, [0x46c]
.tick:
    hlt
    mov ax, [0x46c]
    sub ax, bx
    cmp ax, 4
    jb .tick
    cli
    ; page tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD): identity-map 2 MiB
    mov di, 0x1000
    mov cx, 0x1800
    xor ax, ax
    rep stosw
    mov dword [0x1000], 0x2003
    mov dword [0x2000], 0x3003
    mov dword [0x3000], 0x0083
    lgdt [gdt_desc]
    mov eax, cr4
    or eax, 1 << 5              ; PAE
    mov cr4, eax
    mov eax, 0x1000
    mov cr3, eax
    mov ecx, 0xC0000080         ; EFER
    rdmsr
    or eax, 1 << 8              ; LME
    wrmsr
    mov eax, cr0
    or eax, (1 << 31) | 1       ; PG | PE
    mov cr0, eax
    jmp 0x08:long_mode
bits 64
long_mode:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    ; Work a small kernel's decompressor would do: write 1 MiB of memory 64 times. Where
    ; KVM is present but broken (nested without support), this crawls for minutes while
    ; TCG finishes it in well under a second.
    mov r8, 64
.pass:
    mov rdi, 0x100000
    mov rcx, 0x20000
    mov rax, r8
    rep stosq
    dec r8
    jnz .pass
    mov dx, 0x3f8
    mov rsi, msg
.next:
    lodsb
    test al, al
    jz .done
    out dx, al
    jmp .next
.done:
    hlt
    jmp .done
align 8
gdt:
    dq 0
    dq 0x00209A0000000000       ; 64-bit code
    dq 0x0000920000000000       ; data
gdt_desc:
    dw gdt_desc - gdt - 1
    dd gdt
msg:
    db "KVMCTL-PROBE-OK", 13, 10, 0
times 510 - ($ - $$) db 0
dw 0xaa55
