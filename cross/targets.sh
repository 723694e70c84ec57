# shellcheck shell=bash
# Per-target settings for cross-building on an x86_64 Debian host and for
# running the result under qemu-user. cross/build.sh and tests/arm/run-qemu.sh
# source it. It only defines functions.

# The sourcing scripts read these variables, which shellcheck cannot see.
# shellcheck disable=SC2034
readonly CROSS_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

# Sets these variables for the Rust target given as $1, or returns 1 when
# edgedet does not support that target:
#   gcc_package   Debian package of the cross gcc
#   libc_package  Debian package of the target's glibc for linking, which
#                 the cross gcc only recommends
#   gcc_prefix    command prefix of the cross gcc and binutils
#   qemu          qemu-user emulator for the target (Debian package qemu-user)
#   qemu_cpu      CPU that qemu emulates in the tests, an old core of the
#                 boards in cross/README.md. An instruction that those boards
#                 lack then stops the test with SIGILL.
#   sysroot       the target's glibc and loader from Debian's cross packages
#   elf_magic, elf_mask
#                 binfmt_misc pattern of the target's ELF executables, in the
#                 escaped form that /proc/sys/fs/binfmt_misc/register reads
# shellcheck disable=SC2034
cross_target_settings() {
    case "$1" in
        aarch64-unknown-linux-gnu)
            gcc_package="gcc-aarch64-linux-gnu"
            libc_package="libc6-dev-arm64-cross"
            gcc_prefix="aarch64-linux-gnu"
            qemu="qemu-aarch64"
            # Raspberry Pi 3 (Cortex-A53) and 4 (Cortex-A72) lack FP16 and dot
            # product instructions, and so does the A72 model of qemu 7.2.
            qemu_cpu="cortex-a72"
            sysroot="/usr/aarch64-linux-gnu"
            # ELFCLASS64, little endian, executable or shared object, machine 0xb7.
            elf_magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
            elf_mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
            ;;
        armv7-unknown-linux-gnueabihf)
            gcc_package="gcc-arm-linux-gnueabihf"
            libc_package="libc6-dev-armhf-cross"
            gcc_prefix="arm-linux-gnueabihf"
            qemu="qemu-arm"
            # Raspberry Pi 2 (Cortex-A7), the oldest armv7 board in the table.
            qemu_cpu="cortex-a7"
            sysroot="/usr/arm-linux-gnueabihf"
            # ELFCLASS32, little endian, executable or shared object, machine 0x28.
            elf_magic='\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00'
            elf_mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
            ;;
        *)
            return 1
            ;;
    esac
}

# Exports the variables through which Cargo finds the linker for the target
# given as $1 and the cc crate (tract-linalg's assembly kernels, the bundled
# libjpeg-turbo) finds its C compiler and archiver. Call cross_target_settings
# for the same target first.
cross_export_toolchain() {
    local triple_upper triple_lower
    triple_upper=$(tr 'a-z-' 'A-Z_' <<<"$1")
    triple_lower=${1//-/_}
    export "CARGO_TARGET_${triple_upper}_LINKER=$gcc_prefix-gcc"
    export "CC_${triple_lower}=$gcc_prefix-gcc"
    export "AR_${triple_lower}=$gcc_prefix-ar"
}
