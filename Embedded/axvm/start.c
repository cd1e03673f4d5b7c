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
