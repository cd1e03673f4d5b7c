// C entry of the Embedded Swift axvm (scripts/build-static.sh): Embedded Swift has no
// CommandLine, so main hands argc/argv to the Swift front end.
#include <stdint.h>

int32_t axvm_main(int32_t argc, char **argv);

int main(int argc, char **argv) { return axvm_main(argc, argv); }

// Double(String) in Embedded Swift calls this runtime hook (the full runtime has it in
// libswiftCore). The process never calls setlocale, so strtod parses in the C locale.
#include <stdlib.h>
const char *_swift_stdlib_strtod_clocale(const char *nptr, double *outResult) {
    char *end;
    *outResult = strtod(nptr, &end);
    return end;
}

// Embedded Swift seeds hashing and SystemRandomNumberGenerator through arc4random_buf.
// glibc (2.36+) has it; musl (the riscv64 build, scripts/build-static.sh) does not, so it is
// built here on getrandom(2), which blocks only until the kernel's pool is first ready.
#if !defined(__GLIBC__)
#include <errno.h>
#include <stddef.h>
#include <sys/random.h>
void arc4random_buf(void *buf, size_t n) {
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            abort();  // no randomness at all: nothing sound to hand back
        }
        p += got;
        n -= (size_t)got;
    }
}
#endif
